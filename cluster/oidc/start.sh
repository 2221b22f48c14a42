# shellcheck shell=bash
# Starts the OIDC provider that stands in for Keycloak (server.mjs beside this
# file) for the tests. Meant to be sourced by cluster/test, which provides
# $WORK (a temporary directory) and runs "$WORK/stop.sh" at teardown:
#
#   source cluster/oidc/start.sh
#   start_oidc     # exports AEGIS_RELAY_TEST_OIDC_URL=http://127.0.0.1:PORT
#
# The realm is aegis-system, so the issuer is
# $AEGIS_RELAY_TEST_OIDC_URL/realms/aegis-system. Needs node (>= 20) and npm;
# dependencies go into cluster/oidc/node_modules (git-ignored).

AEGIS_OIDC_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

start_oidc() {
  local dir=$AEGIS_OIDC_DIR
  : "${WORK:?start_oidc needs WORK (a temporary directory)}"
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "node and npm are needed for the OIDC stand-in (apt-get install nodejs npm)" >&2
    return 1
  fi
  npm install --prefix "$dir" --no-audit --no-fund --loglevel=error >"$WORK/oidc-npm.log" 2>&1 || {
    cat "$WORK/oidc-npm.log" >&2
    echo "npm install in $dir failed" >&2
    return 1
  }

  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  node "$dir/server.mjs" "$port" >"$WORK/oidc.log" 2>&1 &
  local pid=$!
  echo "kill $pid 2>/dev/null || true" >>"$WORK/stop.sh"

  # Ready when the discovery document is served; bounded, polling.
  local url="http://127.0.0.1:$port"
  local discovery="$url/realms/aegis-system/.well-known/openid-configuration"
  local deadline=$((SECONDS + 30))
  until oidc_discovery_ready "$discovery"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      cat "$WORK/oidc.log" >&2
      echo "the OIDC stand-in exited before serving $discovery" >&2
      return 1
    fi
    if ((SECONDS >= deadline)); then
      cat "$WORK/oidc.log" >&2
      echo "the OIDC stand-in did not serve $discovery within 30 s" >&2
      return 1
    fi
    sleep 0.2
  done
  export AEGIS_RELAY_TEST_OIDC_URL=$url
  echo "OIDC stand-in (realm aegis-system) on $url"
}

# Whether `$1` answers 200 (2 s bound per try).
oidc_discovery_ready() {
  if command -v curl >/dev/null; then
    curl -fsS --max-time 2 -o /dev/null "$1" 2>/dev/null
  else
    node -e 'fetch(process.argv[1], { signal: AbortSignal.timeout(2000) })
      .then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))' "$1"
  fi
}
