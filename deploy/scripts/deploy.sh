#!/usr/bin/env bash
# Brings up a profile's pods with podman (the deployment guide's
# scripts/deploy.sh):
#
#   deploy.sh --profile full|relay-coordinator [--dry-run] [--state-dir DIR]
#
# In order: the podman network `aegis`; the profile's service pods (only those
# not running yet, so a re-run never restarts OpenBao, which would seal it);
# the bootstrap (bootstrap-relay-coordinator.sh, idempotent); the Secrets the
# relay mounts (from the environment and the bootstrap's AppRole files); then
# the relay (and Caddy) with `podman kube play --replace`, which is also how a
# new image is rolled out.
#
# --dry-run prints every command it would run, each on a line starting with
# "+ ", and the files it would write ("# write ..."), and changes nothing; it
# needs neither podman nor any variable.
#
# The state directory (default ${AEGIS_DEPLOY_STATE:-/var/lib/aegis-deploy},
# mode 0700) keeps the AppRole files, the generated cluster secret and
# PostgreSQL password, and the Secret and ConfigMap manifests written from them.
#
# Environment: the bootstrap's variables (OPENBAO_TOKEN, KEYCLOAK_ADMIN,
# KEYCLOAK_ADMIN_PASSWORD, and OPENBAO_ENDPOINT / KEYCLOAK_ENDPOINT unless the
# profile sets them); POSTGRES_DSN for the relay-coordinator profile;
# POSTGRES_PASSWORD optionally for full (generated once otherwise).
set -euo pipefail

DEPLOY=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PODS_DIR=$DEPLOY/podman/pods
PROFILE=""
DRY_RUN=0
STATE=${AEGIS_DEPLOY_STATE:-/var/lib/aegis-deploy}
NETWORK=aegis

die() {
  echo "deploy: error: $*" >&2
  exit 1
}
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }

while (($#)); do
  case $1 in
    --profile) PROFILE=${2:?--profile needs a name}; shift 2 ;;
    --profile=*) PROFILE=${1#--profile=}; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    --state-dir) STATE=${2:?--state-dir needs a directory}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "deploy: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
profiles=""
for conf in "$DEPLOY"/profiles/*.conf; do
  conf=${conf##*/}
  profiles+="${conf%.conf} "
done
if [[ -z $PROFILE ]]; then
  echo "deploy: --profile is required: one of ${profiles% }" >&2
  exit 2
fi
if [[ ! $PROFILE =~ ^[a-z0-9-]+$ || ! -f $DEPLOY/profiles/$PROFILE.conf ]]; then
  echo "deploy: no profile '$PROFILE': one of ${profiles% }" >&2
  exit 2
fi
# shellcheck source=/dev/null
source "$DEPLOY/profiles/$PROFILE.conf"

# ---- what a real run needs ---------------------------------------------------

# The profile's endpoints (its own pods) win; else the environment's. A dry
# run without them shows the variable's name.
OPENBAO_ENDPOINT=${PROFILE_OPENBAO_ENDPOINT:-${OPENBAO_ENDPOINT:-}}
KEYCLOAK_ENDPOINT=${PROFILE_KEYCLOAK_ENDPOINT:-${KEYCLOAK_ENDPOINT:-}}
needed=(OPENBAO_TOKEN KEYCLOAK_ADMIN KEYCLOAK_ADMIN_PASSWORD)
[[ -n $PROFILE_OPENBAO_ENDPOINT ]] || needed+=(OPENBAO_ENDPOINT)
[[ -n $PROFILE_KEYCLOAK_ENDPOINT ]] || needed+=(KEYCLOAK_ENDPOINT)
[[ -n $PROFILE_POSTGRES_DSN ]] || needed+=(POSTGRES_DSN)
missing=()
for var in "${needed[@]}"; do [[ -n ${!var:-} ]] || missing+=("$var"); done

echo "# profile $PROFILE: $PROFILE_DESCRIPTION"
echo "# not started here: $PROFILE_EXTERNAL"
if ((DRY_RUN)); then
  echo "# dry run: nothing is run or written"
  ((${#missing[@]} == 0)) || echo "# a real run also needs: ${missing[*]}"
  # shellcheck disable=SC2016 # the variable's name, shown literally
  OPENBAO_ENDPOINT=${OPENBAO_ENDPOINT:-'$OPENBAO_ENDPOINT'}
  # shellcheck disable=SC2016
  KEYCLOAK_ENDPOINT=${KEYCLOAK_ENDPOINT:-'$KEYCLOAK_ENDPOINT'}
else
  command -v podman >/dev/null || die "podman is not on PATH (deploy.sh runs podman kube play)"
  ((${#missing[@]} == 0)) || die "set ${missing[*]} (see deploy/README.md, \"Deploy\")"
  mkdir -p "$STATE"
  chmod 700 "$STATE"
fi

# run CMD...: print it, then run it (not in a dry run).
run() {
  printf '+'
  printf ' %q' "$@"
  printf '\n'
  ((DRY_RUN)) || "$@"
}
# run_sh 'A || B': the same for a small shell expression.
run_sh() {
  printf '+ %s\n' "$1"
  ((DRY_RUN)) || bash -c "$1"
}

# once FILE: a random secret kept in FILE (made on first use).
once() {
  if [[ ! -s $1 ]]; then
    (umask 077 && python3 -c 'import secrets; print(secrets.token_hex(32))' >"$1")
  fi
  cat "$1"
}

# secret_manifest NAME KEY=VALUE...: a Kubernetes Secret, written to the state
# directory (0600) and played, replacing an older one.
secret_manifest() {
  local name=$1
  local file=$STATE/secret-$name.yaml
  shift
  local keys=() pair
  for pair in "$@"; do keys+=("${pair%%=*}"); done
  echo "# write $file (Secret $name: ${keys[*]})"
  if ((!DRY_RUN)); then
    (umask 077 && python3 - "$name" "$@" >"$file" <<'PY'
import base64, sys
name, pairs = sys.argv[1], sys.argv[2:]
print("apiVersion: v1\nkind: Secret\nmetadata:\n  name: %s\ntype: Opaque\ndata:" % name)
for pair in pairs:
    key, value = pair.split("=", 1)
    print("  %s: %s" % (key, base64.b64encode(value.encode()).decode()))
PY
    )
  fi
  run_sh "podman secret exists $name && podman secret rm $name || true"
  run podman kube play "$file"
}

# configmaps POD: --configmap options for the pod's ConfigMap files.
configmap_args() {
  local pod=$1 file
  CONFIGMAPS=()
  for file in "$PODS_DIR/$pod"/configmap-*.yaml; do
    [[ -f $file ]] && CONFIGMAPS+=(--configmap "$file")
  done
  if [[ $pod == caddy ]]; then
    CONFIGMAPS+=(--configmap "$STATE/configmap-caddy-config.yaml")
  fi
  return 0
}

wait_for() {
  local url=$1 what=$2
  echo "# wait for $what at $url (up to 180 s)"
  ((DRY_RUN)) && return 0
  local deadline=$((SECONDS + 180)) code
  while :; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "$url" || true)
    [[ $code != 000 ]] && return 0
    ((SECONDS < deadline)) || die "$what did not answer at $url within 180 s (podman pod logs)"
    sleep 2
  done
}

# ---- the steps ---------------------------------------------------------------

run_sh "podman network exists $NETWORK || podman network create $NETWORK"

if [[ -n $PROFILE_SERVICES ]]; then
  POSTGRES_PASSWORD=${POSTGRES_PASSWORD:-}
  if [[ -z $POSTGRES_PASSWORD ]] && ((!DRY_RUN)); then
    POSTGRES_PASSWORD=$(once "$STATE/postgres-password")
  fi
  secret_manifest postgres-credentials "password=$POSTGRES_PASSWORD"
  secret_manifest keycloak-admin "username=${KEYCLOAK_ADMIN:-}" "password=${KEYCLOAK_ADMIN_PASSWORD:-}"
  for pod in $PROFILE_SERVICES; do
    configmap_args "$pod"
    cmd=$(printf ' %q' podman kube play --network "$NETWORK" ${CONFIGMAPS[@]+"${CONFIGMAPS[@]}"} "$PODS_DIR/$pod/pod-$pod.yaml")
    run_sh "podman pod exists $pod || ${cmd# }"
  done
  wait_for "$OPENBAO_ENDPOINT/v1/sys/health" OpenBao
  wait_for "$KEYCLOAK_ENDPOINT/realms/master" Keycloak
fi

run env "OPENBAO_ENDPOINT=$OPENBAO_ENDPOINT" "KEYCLOAK_ENDPOINT=$KEYCLOAK_ENDPOINT" \
  "$DEPLOY/scripts/bootstrap-relay-coordinator.sh" --out "$STATE/approle"

dsn=${POSTGRES_DSN:-}
if [[ -n $PROFILE_POSTGRES_DSN ]]; then
  dsn=${PROFILE_POSTGRES_DSN//\$\{POSTGRES_PASSWORD\}/${POSTGRES_PASSWORD:-}}
fi
role_id="" secret_id="" cluster_secret=""
if ((!DRY_RUN)); then
  role_id=$(cat "$STATE/approle/role_id")
  secret_id=$(cat "$STATE/approle/secret_id")
  cluster_secret=$(once "$STATE/cluster-secret")
fi
secret_manifest relay-postgres "dsn=$dsn"
secret_manifest relay-openbao-approle "role_id=$role_id" "secret_id=$secret_id"
secret_manifest relay-cluster-secret "secret=$cluster_secret"

for pod in $PROFILE_PODS; do
  if [[ $pod == caddy ]]; then
    echo "# write $STATE/configmap-caddy-config.yaml (ConfigMap caddy-config: Caddyfile from $DEPLOY/Caddyfile)"
    if ((!DRY_RUN)); then
      python3 - "$DEPLOY/Caddyfile" >"$STATE/configmap-caddy-config.yaml" <<'PY'
import sys
text = open(sys.argv[1]).read()
print("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: caddy-config\ndata:\n  Caddyfile: |")
for line in text.splitlines():
    print("    " + line if line else "")
PY
    fi
  fi
  configmap_args "$pod"
  run podman kube play --replace --network "$NETWORK" ${CONFIGMAPS[@]+"${CONFIGMAPS[@]}"} "$PODS_DIR/$pod/pod-$pod.yaml"
done
echo "# done: profile $PROFILE"
