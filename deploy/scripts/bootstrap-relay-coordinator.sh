#!/usr/bin/env bash
# Seeds what the Relay Coordinator needs in OpenBao and Keycloak (the
# deployment guide's "Bootstrap" step). Idempotent: each object is read first
# and written only when missing or different, so a second run changes nothing
# and ends with "changed: 0".
#
#   bootstrap-relay-coordinator.sh [--out DIR] [--only openbao|keycloak]
#                                  [--caller-client CLIENT_ID]... [--dry-run]
#
# OpenBao (OPENBAO_ENDPOINT, OPENBAO_TOKEN):
#   - Transit mount `transit` and key `edge-enrollment-token` (rsa-2048);
#   - policy `relay-coordinator`: sign and verify with that key, read its public keys;
#   - AppRole `relay-coordinator` with that policy; its role_id and a secret_id
#     written to DIR/role_id and DIR/secret_id (mode 0600), the files
#     `openbao.approle.role_id_file` / `secret_id_file` name. A new secret_id is
#     issued only when the stored one no longer works;
#   - KV v2 entries under `aegis-system/relay-coordinator/`: `signing-key` (the
#     Transit key reference) and, when Keycloak is bootstrapped in the same run,
#     `keycloak-client` (the client id and secret).
# Keycloak (KEYCLOAK_ENDPOINT, KEYCLOAK_ADMIN, KEYCLOAK_ADMIN_PASSWORD), realm
# `aegis-system`, through the admin REST API:
#   - realm roles aegis.edge.fleet.manage, aegis.edge.enroll, aegis.edge.heartbeat;
#   - client scope `aegis-relay` with the mappers the relay reads: `tenant_id`
#     and `aegis_role` (user attributes) and an audience mapper adding
#     `relay-coordinator` to `aud`; a realm default scope, and a default scope
#     of the relay's client and of every --caller-client;
#   - the user-profile attributes tenant_id and aegis_role (Keycloak 24+);
#   - confidential client `relay-coordinator` with a service account granted
#     the three roles (tenant_id attribute: aegis-system).
#
# Options:
#   --out DIR             where role_id and secret_id go (created if missing;
#                         default ${AEGIS_DEPLOY_STATE:-/var/lib/aegis-deploy}/approle)
#   --only openbao        OpenBao only (no Keycloak variable needed)
#   --only keycloak       Keycloak only (no OpenBao variable needed)
#   --only keycloak-roles the roles, scope and mappers alone (bootstrap-keycloak.sh)
#   --caller-client ID    also add the `aegis-relay` scope to this existing client
#   --dry-run             read everything, change nothing, print what would change
#
# Names follow the relay's defaults; override with KEYCLOAK_REALM,
# KEYCLOAK_ADMIN_REALM (default master), OPENBAO_TRANSIT_MOUNT,
# OPENBAO_TRANSIT_KEY, OPENBAO_APPROLE_MOUNT, OPENBAO_KV_MOUNT (default secret).
# Needs bash, curl and python3. Exit 0 on success, 1 on a failure, 2 on usage.
set -euo pipefail

ONLY=all
DRY_RUN=0
OUT=""
CALLER_CLIENTS=()

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
}

die() {
  echo "bootstrap: error: $*" >&2
  exit 1
}

while (($#)); do
  case $1 in
    --out) OUT=${2:?--out needs a directory}; shift 2 ;;
    --out=*) OUT=${1#--out=}; shift ;;
    --only) ONLY=${2:?--only needs openbao, keycloak or keycloak-roles}; shift 2 ;;
    --only=*) ONLY=${1#--only=}; shift ;;
    --caller-client) CALLER_CLIENTS+=("${2:?--caller-client needs a client id}"); shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bootstrap: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
case $ONLY in
  all | openbao | keycloak | keycloak-roles) ;;
  *) echo "bootstrap: --only takes openbao, keycloak or keycloak-roles, not '$ONLY'" >&2; exit 2 ;;
esac
DO_OPENBAO=0
DO_KEYCLOAK=0
[[ $ONLY == all || $ONLY == openbao ]] && DO_OPENBAO=1
[[ $ONLY != openbao ]] && DO_KEYCLOAK=1

for tool in curl python3; do
  command -v "$tool" >/dev/null || die "$tool is not on PATH (this script needs bash, curl and python3)"
done

# Names: the relay's config defaults (src/config/model.rs and identity.rs).
REALM=${KEYCLOAK_REALM:-aegis-system}
ADMIN_REALM=${KEYCLOAK_ADMIN_REALM:-master}
CLIENT_ID=relay-coordinator
AUDIENCE=relay-coordinator # the relay's keycloak.audience default (DEFAULT_AUDIENCE)
SCOPE_NAME=aegis-relay
SA_TENANT=aegis-system
ROLES=(aegis.edge.fleet.manage aegis.edge.enroll aegis.edge.heartbeat)
TRANSIT_MOUNT=${OPENBAO_TRANSIT_MOUNT:-transit}
TRANSIT_KEY=${OPENBAO_TRANSIT_KEY:-edge-enrollment-token}
APPROLE_MOUNT=${OPENBAO_APPROLE_MOUNT:-approle}
APPROLE_ROLE=relay-coordinator
POLICY=relay-coordinator
KV_MOUNT=${OPENBAO_KV_MOUNT:-secret}
KV_PREFIX=aegis-system/relay-coordinator
OUT=${OUT:-${AEGIS_DEPLOY_STATE:-/var/lib/aegis-deploy}/approle}

for name in "$REALM" "$ADMIN_REALM" "$TRANSIT_MOUNT" "$TRANSIT_KEY" "$APPROLE_MOUNT" "$KV_MOUNT" \
  ${CALLER_CLIENTS[@]+"${CALLER_CLIENTS[@]}"}; do
  [[ $name =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || die "'$name' is not a plain name ([A-Za-z0-9._-])"
done

missing=()
if ((DO_OPENBAO)); then
  [[ -n ${OPENBAO_ENDPOINT:-} ]] || missing+=(OPENBAO_ENDPOINT)
  [[ -n ${OPENBAO_TOKEN:-} ]] || missing+=(OPENBAO_TOKEN)
fi
if ((DO_KEYCLOAK)); then
  [[ -n ${KEYCLOAK_ENDPOINT:-} ]] || missing+=(KEYCLOAK_ENDPOINT)
  [[ -n ${KEYCLOAK_ADMIN:-} ]] || missing+=(KEYCLOAK_ADMIN)
  [[ -n ${KEYCLOAK_ADMIN_PASSWORD:-} ]] || missing+=(KEYCLOAK_ADMIN_PASSWORD)
fi
if ((${#missing[@]})); then
  die "set ${missing[*]} (--only openbao needs only the OpenBao ones, --only keycloak only the Keycloak ones)"
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/bootstrap-relay.XXXXXX")
chmod 700 "$TMP"
trap 'rm -rf "$TMP"' EXIT
BODY=$TMP/body
CHANGED=0

# JSON work without jq: `json SUBCOMMAND FILE ARGS...` (see below).
cat >"$TMP/jsontool.py" <<'PY'
import json, sys

def load(path):
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    return json.loads(text) if text.strip() else None

def at(value, path):
    for part in [p for p in path.split(".") if p]:
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value

def show(value):
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))

def covers(actual, desired):
    """Whether `actual` already has every key and value of `desired`."""
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(
            k in actual and covers(actual[k], v) for k, v in desired.items())
    if isinstance(desired, list) and all(not isinstance(v, (dict, list)) for v in desired):
        return isinstance(actual, list) and sorted(map(show, actual)) == sorted(map(show, desired))
    return actual == desired

def merge(actual, desired):
    if isinstance(actual, dict) and isinstance(desired, dict):
        out = dict(actual)
        for k, v in desired.items():
            out[k] = merge(actual.get(k), v)
        return out
    return desired

cmd, path, args = sys.argv[1], sys.argv[2], sys.argv[3:]
doc = load(path)
if cmd == "field":          # field FILE DOTTED.PATH -> the value ("" when absent)
    print(show(at(doc, args[0])))
elif cmd == "covers":       # covers FILE DESIRED_JSON [DOTTED.PATH] -> exit 0 or 1
    sys.exit(0 if covers(at(doc, args[1]) if len(args) > 1 else doc, json.loads(args[0])) else 1)
elif cmd == "equals":       # equals FILE JSON DOTTED.PATH -> exit 0 when equal
    sys.exit(0 if at(doc, args[1]) == json.loads(args[0]) else 1)
elif cmd == "find":         # find FILE KEY VALUE [DOTTED.PATH] -> the first element with KEY == VALUE
    items = at(doc, args[2]) if len(args) > 2 else doc
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and item.get(args[0]) == args[1]:
            print(show(item))
            break
elif cmd == "keys":         # keys FILE [DOTTED.PATH] -> one key (or list item) per line
    value = at(doc, args[0]) if args else doc
    for key in (value if isinstance(value, (dict, list)) else []):
        print(show(key))
elif cmd == "merge":        # merge FILE DESIRED_JSON -> FILE's object with DESIRED set over it
    print(show(merge(doc if doc is not None else {}, json.loads(args[0]))))
elif cmd == "set":          # set FILE KEY VALUE_JSON -> FILE's object with KEY set
    doc[args[0]] = json.loads(args[1])
    print(show(doc))
elif cmd == "string":       # string - TEXT -> TEXT as a JSON string
    print(json.dumps(args[0]))
else:
    sys.exit("jsontool: unknown command " + cmd)
PY
json() { python3 "$TMP/jsontool.py" "$@"; }

# ---- reporting ---------------------------------------------------------------

ok() { echo "  ok       $*"; }
# will VERB WHAT: count a change and say it; returns 1 (skip the write) in a dry run.
will() {
  CHANGED=$((CHANGED + 1))
  if ((DRY_RUN)); then
    echo "  would $1 $2"
    return 1
  fi
  local past
  case $1 in
    write) past=wrote ;;
    set) past="set" ;;
    *e) past=${1}d ;;
    *) past=${1}ed ;;
  esac
  printf '  %-8s %s\n' "$past" "$2"
}

# ---- HTTP --------------------------------------------------------------------

# call SERVICE METHOD URL [JSON]: one request. Sets STATUS; the response body is
# in $BODY. Credentials travel in header files, never on the command line.
call() {
  local service=$1 method=$2 url=$3 data=${4-}
  local args=(-sS --max-time 30 -o "$BODY" -w '%{http_code}' -X "$method" -H "@$TMP/auth-$service")
  if [[ -n $data ]]; then
    printf '%s' "$data" >"$TMP/request"
    args+=(-H 'Content-Type: application/json' --data-binary "@$TMP/request")
  fi
  : >"$BODY"
  if ! STATUS=$(curl "${args[@]}" "$url" 2>"$TMP/curl-error"); then
    die "$(service_name "$service") is unreachable at $(base_url "$service"): $(tr -d '\n' <"$TMP/curl-error")"
  fi
  if [[ $service == keycloak && $STATUS == 401 && -z ${RETRIED:-} ]]; then
    # The admin token is short-lived (60 s by default): log in again once.
    keycloak_login
    RETRIED=1 call "$@"
    return
  fi
  case $STATUS in
    401 | 403)
      if [[ $service == openbao ]]; then
        die "OpenBao refused OPENBAO_TOKEN ($STATUS on $method ${url#"$OPENBAO_ENDPOINT"}): use a token whose policy manages mounts, auth methods, policies and the relay's KV path (e.g. an admin token)"
      fi
      die "Keycloak refused the admin token ($STATUS on $method ${url#"$KEYCLOAK_ENDPOINT"}): KEYCLOAK_ADMIN needs the realm-admin rights of realm $REALM (the master realm's admin has them)"
      ;;
  esac
  return 0
}

service_name() { if [[ $1 == openbao ]]; then echo OpenBao; else echo Keycloak; fi; }
base_url() { if [[ $1 == openbao ]]; then echo "$OPENBAO_ENDPOINT"; else echo "$KEYCLOAK_ENDPOINT"; fi; }

# expect CODE...: fail with the request and the answer unless STATUS is one of CODE.
expect() {
  local code
  for code in "$@"; do [[ $STATUS == "$code" ]] && return 0; done
  die "unexpected answer $STATUS (wanted $*): $(head -c 400 "$BODY")"
}

bao() { call openbao "$1" "$OPENBAO_ENDPOINT/v1/$2" "${3-}"; }
kc() { call keycloak "$1" "$KEYCLOAK_ENDPOINT/admin/realms/$2" "${3-}"; }

# write_file PATH CONTENT: a 0600 file, replaced atomically; returns 1 if unchanged.
write_secret_file() {
  local path=$1 content=$2
  if [[ -f $path && "$(cat "$path")" == "$content" ]]; then return 1; fi
  (umask 077 && printf '%s\n' "$content" >"$path.tmp" && mv "$path.tmp" "$path")
}

# ---- OpenBao -----------------------------------------------------------------

openbao_ready() {
  OPENBAO_ENDPOINT=${OPENBAO_ENDPOINT%/}
  printf 'X-Vault-Token: %s\n' "$OPENBAO_TOKEN" >"$TMP/auth-openbao"
  call openbao GET "$OPENBAO_ENDPOINT/v1/sys/health"
  case $STATUS in
    200 | 429 | 472 | 473) ;;
    501) die "OpenBao at $OPENBAO_ENDPOINT is not initialised: run 'bao operator init' first" ;;
    503) die "OpenBao at $OPENBAO_ENDPOINT is sealed: unseal it ('bao operator unseal') first" ;;
    *) die "OpenBao at $OPENBAO_ENDPOINT answered sys/health with $STATUS: is OPENBAO_ENDPOINT an OpenBao server?" ;;
  esac
  bao GET auth/token/lookup-self
  expect 200
}

# ensure_mount KIND(secrets|auth) PATH TYPE [OPTIONS_JSON]
ensure_mount() {
  local kind=$1 path=$2 type=$3 options=${4-}
  local list=sys/mounts
  [[ $kind == auth ]] && list=sys/auth
  bao GET "$list"
  expect 200
  local have
  have=$(json field "$BODY" "data.$path/.type")
  if [[ -z $have ]]; then
    have=$(json field "$BODY" "$path/.type") # older servers answer without `data`
  fi
  if [[ $have == "$type" ]]; then
    if [[ -n $options ]] && ! json covers "$BODY" "$options" "data.$path/.options"; then
      die "$kind mount $path/ exists with other options than $options; change it by hand"
    fi
    ok "$kind mount $path/ ($type)"
    return
  fi
  [[ -z $have ]] || die "$kind mount $path/ exists with type $have, not $type; set another mount name"
  local body="{\"type\":\"$type\"${options:+,\"options\":$options}}"
  if will create "$kind mount $path/ ($type)"; then
    bao POST "$list/$path" "$body"
    expect 200 204
  fi
}

openbao_policy_text() {
  cat <<EOF
# The Relay Coordinator: sign enrollment tokens, verify them, read the public keys.
path "$TRANSIT_MOUNT/sign/$TRANSIT_KEY" {
  capabilities = ["update"]
}
path "$TRANSIT_MOUNT/verify/$TRANSIT_KEY" {
  capabilities = ["update"]
}
path "$TRANSIT_MOUNT/keys/$TRANSIT_KEY" {
  capabilities = ["read"]
}
EOF
}

# kv_put NAME JSON: the KV v2 entry $KV_PREFIX/NAME holds exactly JSON.
kv_put() {
  local name=$1 data=$2 path="$KV_MOUNT/data/$KV_PREFIX/$1"
  bao GET "$path"
  expect 200 404
  if [[ $STATUS == 200 ]] && json equals "$BODY" "$data" data.data; then
    ok "KV $KV_MOUNT/$KV_PREFIX/$name"
    return
  fi
  local verb=update
  [[ $STATUS == 404 ]] && verb=create
  if will "$verb" "KV $KV_MOUNT/$KV_PREFIX/$name"; then
    bao POST "$path" "{\"data\":$data}"
    expect 200 204
  fi
}

bootstrap_openbao() {
  echo "OpenBao ($OPENBAO_ENDPOINT):"
  openbao_ready

  ensure_mount secrets "$TRANSIT_MOUNT" transit
  local key_path="$TRANSIT_MOUNT/keys/$TRANSIT_KEY"
  if ((DRY_RUN)) && ! bao_mount_exists secrets "$TRANSIT_MOUNT"; then STATUS=404; else
    bao GET "$key_path"
    expect 200 404 400
  fi
  if [[ $STATUS == 200 ]]; then
    local type
    type=$(json field "$BODY" data.type)
    [[ $type == rsa-2048 ]] ||
      die "transit key $TRANSIT_KEY exists with type $type; the relay needs rsa-2048 (a key's type cannot change: name another with OPENBAO_TRANSIT_KEY)"
    ok "transit key $TRANSIT_KEY (rsa-2048)"
  elif will create "transit key $TRANSIT_KEY (rsa-2048)"; then
    bao POST "$key_path" '{"type":"rsa-2048"}'
    expect 200 204
  fi

  local policy
  policy=$(openbao_policy_text)
  bao GET "sys/policies/acl/$POLICY"
  expect 200 404
  if [[ $STATUS == 200 && $(json field "$BODY" data.policy) == "$policy" ]]; then
    ok "policy $POLICY"
  elif will "$([[ $STATUS == 404 ]] && echo create || echo update)" "policy $POLICY"; then
    bao PUT "sys/policies/acl/$POLICY" "{\"policy\":$(json string - "$policy")}"
    expect 200 204
  fi

  ensure_mount auth "$APPROLE_MOUNT" approle
  local role_path="auth/$APPROLE_MOUNT/role/$APPROLE_ROLE"
  # Token lifetimes the relay renews and re-logs in within (src/auth/openbao.rs).
  local role="{\"token_policies\":[\"$POLICY\"],\"token_ttl\":3600,\"token_max_ttl\":14400,\"token_type\":\"default\",\"bind_secret_id\":true,\"secret_id_num_uses\":0}"
  local role_exists=0
  if ((DRY_RUN)) && ! bao_mount_exists auth "$APPROLE_MOUNT"; then STATUS=404; else
    bao GET "$role_path"
    expect 200 404
  fi
  if [[ $STATUS == 200 ]]; then
    role_exists=1
    if json covers "$BODY" "$role" data; then
      ok "AppRole $APPROLE_ROLE"
    elif will update "AppRole $APPROLE_ROLE"; then
      bao POST "$role_path" "$role"
      expect 200 204
    fi
  elif will create "AppRole $APPROLE_ROLE"; then
    bao POST "$role_path" "$role"
    expect 200 204
    role_exists=1
  fi

  if ((!DRY_RUN)); then
    mkdir -p "$OUT" || die "cannot create --out $OUT"
    chmod 700 "$OUT"
  fi
  if ((role_exists)); then
    bao GET "$role_path/role-id"
    expect 200
    local role_id
    role_id=$(json field "$BODY" data.role_id)
    if [[ -f $OUT/role_id && "$(cat "$OUT/role_id")" == "$role_id" ]]; then
      ok "$OUT/role_id"
    elif will write "$OUT/role_id"; then
      write_secret_file "$OUT/role_id" "$role_id" || true
    fi
    if secret_id_works; then
      ok "$OUT/secret_id (the stored secret_id is still valid)"
    elif will issue "a new secret_id into $OUT/secret_id"; then
      bao POST "$role_path/secret-id" '{"metadata":"{\"issued_by\":\"bootstrap-relay-coordinator\"}"}'
      expect 200
      write_secret_file "$OUT/secret_id" "$(json field "$BODY" data.secret_id)" || true
    fi
  else
    will write "$OUT/role_id" || true
    will issue "a new secret_id into $OUT/secret_id" || true
  fi

  ensure_mount secrets "$KV_MOUNT" kv '{"version":"2"}'
  if ((DRY_RUN)) && ! bao_mount_exists secrets "$KV_MOUNT"; then
    will create "KV $KV_MOUNT/$KV_PREFIX/signing-key" || true
  else
    kv_put signing-key "{\"transit_mount\":\"$TRANSIT_MOUNT\",\"transit_key\":\"$TRANSIT_KEY\",\"key_type\":\"rsa-2048\",\"approle\":\"$APPROLE_MOUNT/$APPROLE_ROLE\"}"
  fi
}

bao_mount_exists() {
  local list=sys/mounts
  [[ $1 == auth ]] && list=sys/auth
  bao GET "$list"
  [[ -n $(json field "$BODY" "data.$2/.type") ]]
}

# Whether $OUT/secret_id still logs in for this role: it exists, is not expired
# and has uses left. Looked up with the admin token, so no login token is made.
secret_id_works() {
  [[ -s $OUT/secret_id ]] || return 1
  local lookup
  lookup="{\"secret_id\":$(json string - "$(cat "$OUT/secret_id")")}"
  bao POST "auth/$APPROLE_MOUNT/role/$APPROLE_ROLE/secret-id/lookup" "$lookup"
  [[ $STATUS == 200 ]] || return 1
  python3 - "$BODY" <<'PY'
import datetime, json, re, sys
data = (json.load(open(sys.argv[1])) or {}).get("data") or {}
expires = data.get("expiration_time") or "0001-01-01T00:00:00Z"
if not expires.startswith("0001-"):
    when = datetime.datetime.fromisoformat(re.sub(r"\.\d+", "", expires).replace("Z", "+00:00"))
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=5)
    sys.exit(0 if when > soon else 1)
sys.exit(0 if data else 1)
PY
}

# ---- Keycloak ----------------------------------------------------------------

keycloak_login() {
  printf '%s' "$KEYCLOAK_ADMIN" >"$TMP/kc-user"
  printf '%s' "$KEYCLOAK_ADMIN_PASSWORD" >"$TMP/kc-password"
  local status
  if ! status=$(curl -sS --max-time 30 -o "$TMP/kc-token" -w '%{http_code}' \
    --data-urlencode grant_type=password --data-urlencode client_id=admin-cli \
    --data-urlencode "username@$TMP/kc-user" --data-urlencode "password@$TMP/kc-password" \
    "$KEYCLOAK_ENDPOINT/realms/$ADMIN_REALM/protocol/openid-connect/token" 2>"$TMP/curl-error"); then
    die "Keycloak is unreachable at $KEYCLOAK_ENDPOINT: $(tr -d '\n' <"$TMP/curl-error")"
  fi
  case $status in
    200) ;;
    400 | 401) die "Keycloak refused KEYCLOAK_ADMIN / KEYCLOAK_ADMIN_PASSWORD for realm $ADMIN_REALM ($status: $(json field "$TMP/kc-token" error_description))" ;;
    404) die "Keycloak at $KEYCLOAK_ENDPOINT has no realm $ADMIN_REALM (is KEYCLOAK_ENDPOINT the server's base URL, without /realms/...?)" ;;
    *) die "Keycloak's token endpoint answered $status: $(head -c 300 "$TMP/kc-token")" ;;
  esac
  local token
  token=$(json field "$TMP/kc-token" access_token)
  [[ -n $token ]] || die "Keycloak's token endpoint answered without an access_token"
  printf 'Authorization: Bearer %s\n' "$token" >"$TMP/auth-keycloak"
}

# The client scope's mappers: name, then the full representation.
mapper_json() {
  local name=$1 type=$2 config=$3
  printf '{"name":"%s","protocol":"openid-connect","protocolMapper":"%s","config":%s}' "$name" "$type" "$config"
}
attribute_mapper() {
  mapper_json "$1" oidc-usermodel-attribute-mapper \
    "{\"user.attribute\":\"$1\",\"claim.name\":\"$1\",\"jsonType.label\":\"String\",\"access.token.claim\":\"true\",\"id.token.claim\":\"false\",\"userinfo.token.claim\":\"true\",\"introspection.token.claim\":\"true\",\"multivalued\":\"false\"}"
}
audience_mapper() {
  mapper_json "audience $AUDIENCE" oidc-audience-mapper \
    "{\"included.client.audience\":\"$AUDIENCE\",\"access.token.claim\":\"true\",\"id.token.claim\":\"false\",\"introspection.token.claim\":\"true\"}"
}

role_description() {
  case $1 in
    aegis.edge.fleet.manage) echo "Manage and invoke the edge fleet (aegis.edge.fleet.* tools)" ;;
    aegis.edge.enroll) echo "Issue edge enrollment tokens" ;;
    aegis.edge.heartbeat) echo "Granted to the Relay Coordinator's service account" ;;
  esac
}

ensure_realm() {
  kc GET "$REALM"
  expect 200 404
  if [[ $STATUS == 200 ]]; then
    ok "realm $REALM"
    return 0
  fi
  if will create "realm $REALM"; then
    call keycloak POST "$KEYCLOAK_ENDPOINT/admin/realms" "{\"realm\":\"$REALM\",\"enabled\":true}"
    expect 201
    return 0
  fi
  return 1
}

ensure_roles() {
  local role desired
  for role in "${ROLES[@]}"; do
    desired="{\"name\":\"$role\",\"description\":\"$(role_description "$role")\"}"
    if ((!REALM_EXISTS)); then will create "realm role $role" || true; continue; fi
    kc GET "$REALM/roles/$role"
    expect 200 404
    if [[ $STATUS == 200 ]] && json covers "$BODY" "$desired"; then
      ok "realm role $role"
    elif [[ $STATUS == 200 ]]; then
      if will update "realm role $role"; then
        kc PUT "$REALM/roles/$role" "$(json merge "$BODY" "$desired")"
        expect 204
      fi
    elif will create "realm role $role"; then
      kc POST "$REALM/roles" "$desired"
      expect 201
    fi
  done
}

# Keycloak 24+ refuses user attributes its user profile does not declare.
ensure_profile_attributes() {
  if ((!REALM_EXISTS)); then
    will update "user profile: add attributes tenant_id aegis_role" || true
    return 0
  fi
  kc GET "$REALM/users/profile"
  expect 200 404
  if [[ $STATUS == 404 ]]; then
    ok "user profile (not served by this Keycloak: attributes are free-form)"
    return
  fi
  local attribute missing=()
  for attribute in tenant_id aegis_role; do
    [[ -n $(json find "$BODY" name "$attribute" attributes) ]] || missing+=("$attribute")
  done
  if ((${#missing[@]} == 0)); then
    ok "user profile attributes tenant_id, aegis_role"
    return
  fi
  if will update "user profile: add attributes ${missing[*]}"; then
    local attributes
    attributes=$(python3 - "$BODY" "${missing[@]}" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
for name in sys.argv[2:]:
    doc.setdefault("attributes", []).append({
        "name": name,
        "displayName": {"tenant_id": "AEGIS tenant", "aegis_role": "AEGIS operator level"}[name],
        "permissions": {"view": ["admin"], "edit": ["admin"]},
        "multivalued": False,
    })
print(json.dumps(doc))
PY
)
    kc PUT "$REALM/users/profile" "$attributes"
    expect 200
  fi
}

# Sets SCOPE_ID (empty in a dry run where the scope does not exist yet).
ensure_scope() {
  SCOPE_ID=""
  local desired="{\"name\":\"$SCOPE_NAME\",\"protocol\":\"openid-connect\",\"description\":\"Claims the AEGIS Relay Coordinator reads: tenant_id, aegis_role, aud $AUDIENCE\",\"attributes\":{\"include.in.token.scope\":\"false\",\"display.on.consent.screen\":\"false\"}}"
  if ((REALM_EXISTS)); then
    kc GET "$REALM/client-scopes"
    expect 200
    local found
    found=$(json find "$BODY" name "$SCOPE_NAME")
    if [[ -n $found ]]; then
      printf '%s' "$found" >"$TMP/scope"
      SCOPE_ID=$(json field "$TMP/scope" id)
      if json covers "$TMP/scope" "$desired"; then
        ok "client scope $SCOPE_NAME"
      elif will update "client scope $SCOPE_NAME"; then
        kc PUT "$REALM/client-scopes/$SCOPE_ID" "$(json merge "$TMP/scope" "$desired")"
        expect 204
      fi
    elif will create "client scope $SCOPE_NAME"; then
      kc POST "$REALM/client-scopes" "$desired"
      expect 201
      kc GET "$REALM/client-scopes"
      expect 200
      printf '%s' "$(json find "$BODY" name "$SCOPE_NAME")" >"$TMP/scope"
      SCOPE_ID=$(json field "$TMP/scope" id)
      [[ -n $SCOPE_ID ]] || die "client scope $SCOPE_NAME was created but is not listed"
    fi
  else
    will create "client scope $SCOPE_NAME" || true
  fi

  local mapper name
  for mapper in "$(attribute_mapper tenant_id)" "$(attribute_mapper aegis_role)" "$(audience_mapper)"; do
    printf '%s' "$mapper" >"$TMP/mapper"
    name=$(json field "$TMP/mapper" name)
    if [[ -z $SCOPE_ID ]]; then will create "mapper '$name'" || true; continue; fi
    kc GET "$REALM/client-scopes/$SCOPE_ID/protocol-mappers/models"
    expect 200
    local existing
    existing=$(json find "$BODY" name "$name")
    if [[ -z $existing ]]; then
      if will create "mapper '$name'"; then
        kc POST "$REALM/client-scopes/$SCOPE_ID/protocol-mappers/models" "$mapper"
        expect 201
      fi
      continue
    fi
    printf '%s' "$existing" >"$TMP/existing"
    if json covers "$TMP/existing" "$mapper"; then
      ok "mapper '$name'"
    elif will update "mapper '$name'"; then
      local id
      id=$(json field "$TMP/existing" id)
      kc PUT "$REALM/client-scopes/$SCOPE_ID/protocol-mappers/models/$id" "$(json merge "$TMP/existing" "$mapper")"
      expect 204
    fi
  done

  if [[ -z $SCOPE_ID ]]; then
    will add "$SCOPE_NAME to the realm's default client scopes" || true
    return
  fi
  kc GET "$REALM/default-default-client-scopes"
  expect 200
  if [[ -n $(json find "$BODY" id "$SCOPE_ID") ]]; then
    ok "$SCOPE_NAME is a realm default client scope"
  elif will add "$SCOPE_NAME to the realm's default client scopes"; then
    kc PUT "$REALM/default-default-client-scopes/$SCOPE_ID"
    expect 204
  fi
}

# client_uuid CLIENT_ID: the internal id of a client ("" when absent).
client_uuid() {
  kc GET "$REALM/clients?clientId=$1"
  expect 200
  json field "$BODY" 0.id
}

# client_has_scope CLIENT_UUID CLIENT_ID: add $SCOPE_NAME to its default scopes.
client_has_scope() {
  local uuid=$1 client=$2
  if [[ -z $uuid || -z $SCOPE_ID ]]; then
    will add "$SCOPE_NAME to client $client's default scopes" || true
    return
  fi
  kc GET "$REALM/clients/$uuid/default-client-scopes"
  expect 200
  if [[ -n $(json find "$BODY" id "$SCOPE_ID") ]]; then
    ok "client $client has default scope $SCOPE_NAME"
  elif will add "$SCOPE_NAME to client $client's default scopes"; then
    kc PUT "$REALM/clients/$uuid/default-client-scopes/$SCOPE_ID"
    expect 204
  fi
}

ensure_client() {
  local desired="{\"clientId\":\"$CLIENT_ID\",\"name\":\"AEGIS Relay Coordinator\",\"enabled\":true,\"protocol\":\"openid-connect\",\"publicClient\":false,\"bearerOnly\":false,\"serviceAccountsEnabled\":true,\"standardFlowEnabled\":false,\"implicitFlowEnabled\":false,\"directAccessGrantsEnabled\":false,\"clientAuthenticatorType\":\"client-secret\"}"
  CLIENT_UUID=""
  ((REALM_EXISTS)) && CLIENT_UUID=$(client_uuid "$CLIENT_ID")
  if [[ -z $CLIENT_UUID ]]; then
    if will create "client $CLIENT_ID (confidential, service account)"; then
      kc POST "$REALM/clients" "$desired"
      expect 201
      CLIENT_UUID=$(client_uuid "$CLIENT_ID")
      [[ -n $CLIENT_UUID ]] || die "client $CLIENT_ID was created but is not listed"
    fi
  else
    kc GET "$REALM/clients/$CLIENT_UUID"
    expect 200
    if json covers "$BODY" "$desired"; then
      ok "client $CLIENT_ID"
    elif will update "client $CLIENT_ID"; then
      kc PUT "$REALM/clients/$CLIENT_UUID" "$(json merge "$BODY" "$desired")"
      expect 204
    fi
  fi
  client_has_scope "$CLIENT_UUID" "$CLIENT_ID"

  if [[ -z $CLIENT_UUID ]]; then
    will set "service account attribute tenant_id=$SA_TENANT" || true
    will grant "${ROLES[*]} to the service account" || true
    return
  fi
  kc GET "$REALM/clients/$CLIENT_UUID/service-account-user"
  expect 200
  local user_id
  user_id=$(json field "$BODY" id)
  [[ -n $user_id ]] || die "client $CLIENT_ID has no service-account user"
  kc GET "$REALM/users/$user_id"
  expect 200
  if json covers "$BODY" "[\"$SA_TENANT\"]" attributes.tenant_id; then
    ok "service account attribute tenant_id=$SA_TENANT"
  elif will set "service account attribute tenant_id=$SA_TENANT"; then
    local attributes
    attributes=$(python3 - "$BODY" "$SA_TENANT" <<'PY'
import json, sys
user = json.load(open(sys.argv[1]))
attributes = user.get("attributes") or {}
attributes["tenant_id"] = [sys.argv[2]]
print(json.dumps({"attributes": attributes}))
PY
)
    kc PUT "$REALM/users/$user_id" "$(json merge "$BODY" "$attributes")"
    expect 204
  fi

  kc GET "$REALM/users/$user_id/role-mappings/realm"
  expect 200
  local role grant=()
  for role in "${ROLES[@]}"; do
    if [[ -n $(json find "$BODY" name "$role") ]]; then ok "service account has $role"; else grant+=("$role"); fi
  done
  ((${#grant[@]})) || return 0
  local reps=() rep
  for role in "${grant[@]}"; do
    if will grant "$role to the service account"; then
      kc GET "$REALM/roles/$role"
      expect 200
      rep=$(json field "$BODY" id)
      reps+=("{\"id\":\"$rep\",\"name\":\"$role\"}")
    fi
  done
  if ((${#reps[@]})); then
    local IFS=,
    kc POST "$REALM/users/$user_id/role-mappings/realm" "[${reps[*]}]"
    expect 204
  fi
}

bootstrap_keycloak() {
  KEYCLOAK_ENDPOINT=${KEYCLOAK_ENDPOINT%/}
  echo "Keycloak ($KEYCLOAK_ENDPOINT, realm $REALM):"
  keycloak_login
  REALM_EXISTS=0
  ensure_realm && REALM_EXISTS=1
  ensure_roles
  ensure_profile_attributes
  ensure_scope
  local caller uuid
  for caller in ${CALLER_CLIENTS[@]+"${CALLER_CLIENTS[@]}"}; do
    uuid=""
    ((REALM_EXISTS)) && uuid=$(client_uuid "$caller")
    if [[ -z $uuid ]] && ((REALM_EXISTS)); then
      die "--caller-client $caller: no such client in realm $REALM"
    fi
    client_has_scope "$uuid" "$caller"
  done
  [[ $ONLY == keycloak-roles ]] && return
  ensure_client
}

# The Keycloak client secret into OpenBao, when both halves ran.
store_client_secret() {
  echo "Keycloak client secret in OpenBao:"
  if [[ -z ${CLIENT_UUID:-} ]]; then
    will create "KV $KV_MOUNT/$KV_PREFIX/keycloak-client" || true
    return
  fi
  kc GET "$REALM/clients/$CLIENT_UUID/client-secret"
  expect 200
  local secret
  secret=$(json field "$BODY" value)
  [[ -n $secret ]] || die "Keycloak returned no secret for client $CLIENT_ID"
  kv_put keycloak-client "{\"client_id\":\"$CLIENT_ID\",\"client_secret\":$(json string - "$secret"),\"realm\":\"$REALM\",\"token_endpoint\":\"$KEYCLOAK_ENDPOINT/realms/$REALM/protocol/openid-connect/token\"}"
}

((DRY_RUN)) && echo "dry run: nothing is changed"
((DO_OPENBAO)) && bootstrap_openbao
((DO_KEYCLOAK)) && bootstrap_keycloak
((DO_OPENBAO && DO_KEYCLOAK)) && store_client_secret
((DO_KEYCLOAK)) && [[ $ONLY == keycloak ]] &&
  echo "note: the client secret is stored in OpenBao only when both halves run (no --only)"
echo "changed: $CHANGED"
