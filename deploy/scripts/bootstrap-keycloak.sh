#!/usr/bin/env bash
# The Keycloak roles and claim mappers alone (the deployment guide's
# scripts/bootstrap-keycloak.sh): realm roles aegis.edge.fleet.manage,
# aegis.edge.enroll and aegis.edge.heartbeat, and the `aegis-relay` client
# scope with the tenant_id, aegis_role and audience mappers. No client, no
# OpenBao. Same variables and options as bootstrap-relay-coordinator.sh:
#
#   KEYCLOAK_ENDPOINT=... KEYCLOAK_ADMIN=... KEYCLOAK_ADMIN_PASSWORD=... \
#     bootstrap-keycloak.sh [--caller-client CLIENT_ID]... [--dry-run]
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/bootstrap-relay-coordinator.sh" --only keycloak-roles "$@"
