#!/usr/bin/env python3
"""A small, strict fake of Keycloak's admin REST API for the bootstrap tests.

It serves the admin-cli password login of the admin realm and the admin
endpoints deploy/scripts/bootstrap-relay-coordinator.sh uses (realms, realm
roles, the user profile, clients, service-account users, role mappings, client
scopes and their protocol mappers, default client scopes, client secrets),
keeps their state in memory, and refuses what Keycloak would refuse: a missing
or unknown admin token (401), an unknown path (404), an unknown field or a
wrong type in a body (400), a duplicate (409), a user attribute the user
profile does not declare (400). It is not Keycloak: it checks the requests the
script makes, nothing more.

    python3 server.py [--port 0] [--admin admin] [--password admin]
                      [--seed-realm aegis-system] [--seed-client aegis-cli]

Prints "PORT <n>" on its first line once it listens (127.0.0.1 only).
Test hooks without a token: GET /__state (everything, as JSON), GET /__log
(every request that changed state: [method, path]).
"""

import argparse
import json
import re
import secrets
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

LOCK = threading.Lock()
TOKENS = set()
LOG = []
REALMS = {}

DEFAULT_PROFILE_ATTRIBUTES = ["username", "email", "firstName", "lastName"]
MAPPER_TYPES = {
    "oidc-usermodel-attribute-mapper": {"user.attribute", "claim.name"},
    "oidc-audience-mapper": {"included.client.audience"},
}


class Fail(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def new_realm(name):
    REALMS[name] = {
        "rep": {"id": str(uuid.uuid4()), "realm": name, "enabled": True},
        "roles": {},
        "clients": {},
        "secrets": {},
        "users": {},
        "role_mappings": {},
        "scopes": {},
        "default_scopes": [],
        "client_scopes": {},
        "profile": {
            "attributes": [{"name": n, "displayName": n} for n in DEFAULT_PROFILE_ATTRIBUTES],
            "groups": [],
        },
    }
    return REALMS[name]


def check_fields(body, allowed, required=(), what="representation"):
    """Keycloak's JSON binding: unknown fields and wrong types are 400s."""
    if not isinstance(body, dict):
        raise Fail(400, f"{what}: expected a JSON object")
    for key, value in body.items():
        if key not in allowed:
            raise Fail(400, f'Unrecognized field "{key}" in {what}')
        kind = allowed[key]
        if kind is not None and not isinstance(value, kind):
            raise Fail(400, f"{what}.{key}: expected {kind}")
    for key in required:
        if key not in body:
            raise Fail(400, f"{what}: {key} is required")


def check_string_map(value, what):
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise Fail(400, f"{what}: every value must be a string")


ROLE_FIELDS = {"id": str, "name": str, "description": str, "composite": bool,
               "clientRole": bool, "containerId": str, "attributes": dict}
CLIENT_FIELDS = {"id": str, "clientId": str, "name": str, "description": str, "enabled": bool,
                 "protocol": str, "publicClient": bool, "bearerOnly": bool,
                 "serviceAccountsEnabled": bool, "standardFlowEnabled": bool,
                 "implicitFlowEnabled": bool, "directAccessGrantsEnabled": bool,
                 "clientAuthenticatorType": str, "attributes": dict, "redirectUris": list,
                 "webOrigins": list, "defaultClientScopes": list, "optionalClientScopes": list,
                 "fullScopeAllowed": bool, "secret": str}
SCOPE_FIELDS = {"id": str, "name": str, "protocol": str, "description": str,
                "attributes": dict, "protocolMappers": list}
MAPPER_FIELDS = {"id": str, "name": str, "protocol": str, "protocolMapper": str, "config": dict}
USER_FIELDS = {"id": str, "username": str, "enabled": bool, "attributes": dict,
               "serviceAccountClientId": str, "email": str, "firstName": str, "lastName": str,
               "emailVerified": bool, "createdTimestamp": int, "requiredActions": list}


def check_mapper(body):
    check_fields(body, MAPPER_FIELDS, ("name", "protocol", "protocolMapper", "config"), "mapper")
    if body["protocol"] != "openid-connect":
        raise Fail(400, "mapper.protocol: only openid-connect is served")
    needed = MAPPER_TYPES.get(body["protocolMapper"])
    if needed is None:
        raise Fail(400, f"mapper.protocolMapper: unknown type {body['protocolMapper']}")
    check_string_map(body["config"], "mapper.config")
    missing = needed - body["config"].keys()
    if missing:
        raise Fail(400, f"mapper.config: {sorted(missing)} required for {body['protocolMapper']}")


class Handler(BaseHTTPRequestHandler):
    server_version = "keycloak-fake/1"

    def log_message(self, fmt, *args):  # quiet; the test reads /__log
        pass

    def reply(self, status, body=None, headers=None):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return raw

    def json_body(self):
        raw = self.body()
        if self.headers.get("Content-Type", "").split(";")[0] != "application/json":
            raise Fail(415, "Content-Type must be application/json")
        try:
            return json.loads(raw)
        except ValueError as err:
            raise Fail(400, f"body is not JSON: {err}") from err

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_PUT(self):
        self.handle_any("PUT")

    def do_DELETE(self):
        self.handle_any("DELETE")

    def handle_any(self, method):
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/") if p]
        try:
            with LOCK:
                status, body, headers = self.route(method, parts, parse_qs(url.query))
                if method != "GET" and status < 300 and parts[:1] == ["admin"]:
                    LOG.append([method, url.path])
        except Fail as fail:
            status, body, headers = fail.status, {"error": fail.message}, None
        self.reply(status, body, headers)

    def route(self, method, parts, query):
        if parts == ["__state"]:
            return 200, REALMS, None
        if parts == ["__log"]:
            return 200, LOG, None
        if (len(parts) == 5 and parts[0] == "realms" and parts[2:] == ["protocol", "openid-connect", "token"]
                and method == "POST"):
            return self.token(parts[1])
        if parts[:2] != ["admin", "realms"]:
            raise Fail(404, "not found")
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in TOKENS:
            raise Fail(401, "HTTP 401 Unauthorized")
        return self.admin(method, parts[2:], query)

    def token(self, realm):
        if realm != self.server.admin_realm:
            raise Fail(404, "Realm does not exist")
        if self.headers.get("Content-Type", "").split(";")[0] != "application/x-www-form-urlencoded":
            raise Fail(400, "token requests are form-encoded")
        form = {k: v[0] for k, v in parse_qs(self.body().decode()).items()}
        if form.get("grant_type") != "password" or form.get("client_id") != "admin-cli":
            raise Fail(400, "expected grant_type=password and client_id=admin-cli")
        if form.get("username") != self.server.admin or form.get("password") != self.server.password:
            return 401, {"error": "invalid_grant", "error_description": "Invalid user credentials"}, None
        token = secrets.token_urlsafe(24)
        TOKENS.add(token)
        return 200, {"access_token": token, "expires_in": 60, "token_type": "Bearer"}, None

    def admin(self, method, parts, query):
        if not parts:
            if method == "POST":
                body = self.json_body()
                check_fields(body, {"realm": str, "enabled": bool, "displayName": str}, ("realm",), "realm")
                if body["realm"] in REALMS:
                    raise Fail(409, "Conflict detected. See logs for details")
                new_realm(body["realm"])["rep"].update(body)
                return 201, None, {"Location": f"/admin/realms/{body['realm']}"}
            raise Fail(405, "method not allowed")
        realm = REALMS.get(parts[0])
        if realm is None:
            raise Fail(404, "Realm not found.")
        rest = parts[1:]
        if not rest and method == "GET":
            return 200, realm["rep"], None
        kind = rest[0] if rest else ""
        handler = {
            "roles": self.roles,
            "users": self.users,
            "clients": self.clients,
            "client-scopes": self.scopes,
            "default-default-client-scopes": self.realm_default_scopes,
        }.get(kind)
        if handler is None:
            raise Fail(404, "not found")
        return handler(realm, method, rest[1:], query)

    def roles(self, realm, method, rest, query):
        if not rest and method == "GET":
            return 200, list(realm["roles"].values()), None
        if not rest and method == "POST":
            body = self.json_body()
            check_fields(body, ROLE_FIELDS, ("name",), "role")
            if body["name"] in realm["roles"]:
                raise Fail(409, f"Role with name {body['name']} already exists")
            role = dict(body, id=str(uuid.uuid4()), composite=False, clientRole=False,
                        containerId=realm["rep"]["id"])
            realm["roles"][body["name"]] = role
            return 201, None, {"Location": f"roles/{body['name']}"}
        if len(rest) == 1:
            role = realm["roles"].get(rest[0])
            if role is None:
                raise Fail(404, "Could not find role")
            if method == "GET":
                return 200, role, None
            if method == "PUT":
                body = self.json_body()
                check_fields(body, ROLE_FIELDS, ("name",), "role")
                if body["name"] != rest[0]:
                    raise Fail(400, "renaming a role is not what the script does")
                role.update({k: v for k, v in body.items() if k != "id"})
                return 204, None, None
        raise Fail(404, "not found")

    def users(self, realm, method, rest, query):
        if rest == ["profile"]:
            if method == "GET":
                return 200, realm["profile"], None
            if method == "PUT":
                body = self.json_body()
                check_fields(body, {"attributes": list, "groups": list, "unmanagedAttributePolicy": str},
                             ("attributes",), "user profile")
                names = [a.get("name") for a in body["attributes"] if isinstance(a, dict)]
                if len(names) != len(body["attributes"]) or not all(names):
                    raise Fail(400, "every user-profile attribute needs a name")
                for builtin in DEFAULT_PROFILE_ATTRIBUTES:
                    if builtin not in names:
                        raise Fail(400, f"the user profile must keep attribute {builtin}")
                realm["profile"] = body
                return 200, body, None
        if not rest:
            raise Fail(404, "not found")
        user = realm["users"].get(rest[0])
        if user is None:
            raise Fail(404, "User not found")
        if len(rest) == 1 and method == "GET":
            return 200, user, None
        if len(rest) == 1 and method == "PUT":
            body = self.json_body()
            check_fields(body, USER_FIELDS, (), "user")
            declared = {a["name"] for a in realm["profile"]["attributes"]}
            for name, values in (body.get("attributes") or {}).items():
                if name not in declared:
                    raise Fail(400, f"error-user-attribute-read-only: {name} is not in the user profile")
                if not (isinstance(values, list) and all(isinstance(v, str) for v in values)):
                    raise Fail(400, f"user.attributes.{name}: expected a list of strings")
            if body.get("username", user["username"]) != user["username"]:
                raise Fail(400, "a service account's username cannot change")
            user.update({k: v for k, v in body.items() if k != "id"})
            return 204, None, None
        if rest[1:] == ["role-mappings", "realm"]:
            mapped = realm["role_mappings"].setdefault(user["id"], [])
            if method == "GET":
                by_id = {r["id"]: r for r in realm["roles"].values()}
                return 200, [by_id[i] for i in mapped], None
            if method == "POST":
                body = self.json_body()
                if not isinstance(body, list):
                    raise Fail(400, "role mappings: expected a list of roles")
                for rep in body:
                    check_fields(rep, ROLE_FIELDS, ("id", "name"), "role mapping")
                    role = realm["roles"].get(rep["name"])
                    if role is None or role["id"] != rep["id"]:
                        raise Fail(404, f"Could not find role {rep['name']} with id {rep['id']}")
                    if role["id"] not in mapped:
                        mapped.append(role["id"])
                return 204, None, None
        raise Fail(404, "not found")

    def clients(self, realm, method, rest, query):
        if not rest and method == "GET":
            wanted = query.get("clientId", [None])[0]
            return 200, [c for c in realm["clients"].values() if wanted in (None, c["clientId"])], None
        if not rest and method == "POST":
            body = self.json_body()
            check_fields(body, CLIENT_FIELDS, ("clientId",), "client")
            if any(c["clientId"] == body["clientId"] for c in realm["clients"].values()):
                raise Fail(409, f"Client {body['clientId']} already exists")
            client_id = str(uuid.uuid4())
            realm["clients"][client_id] = dict({"attributes": {}, "redirectUris": [], "fullScopeAllowed": True},
                                               **body, id=client_id)
            realm["client_scopes"][client_id] = list(realm["default_scopes"])
            if not body.get("publicClient", True):
                realm["secrets"][client_id] = secrets.token_urlsafe(24)
            self.sync_service_account(realm, client_id)
            return 201, None, {"Location": f"clients/{client_id}"}
        client = realm["clients"].get(rest[0]) if rest else None
        if client is None:
            raise Fail(404, "Could not find client")
        sub = rest[1:]
        if not sub and method == "GET":
            return 200, client, None
        if not sub and method == "PUT":
            body = self.json_body()
            check_fields(body, CLIENT_FIELDS, ("clientId",), "client")
            if body.get("id", client["id"]) != client["id"] or body["clientId"] != client["clientId"]:
                raise Fail(400, "id and clientId cannot change")
            client.update(body)
            if not client.get("publicClient", True):
                realm["secrets"].setdefault(client["id"], secrets.token_urlsafe(24))
            self.sync_service_account(realm, client["id"])
            return 204, None, None
        if sub == ["service-account-user"] and method == "GET":
            user = next((u for u in realm["users"].values() if u.get("serviceAccountClientId") == client["clientId"]), None)
            if user is None or not client.get("serviceAccountsEnabled"):
                raise Fail(400, "Service account not enabled for the client")
            return 200, user, None
        if sub == ["client-secret"] and method == "GET":
            if client["id"] not in realm["secrets"]:
                raise Fail(400, "a public client has no secret")
            return 200, {"type": "secret", "value": realm["secrets"][client["id"]]}, None
        if sub[:1] == ["default-client-scopes"]:
            attached = realm["client_scopes"].setdefault(client["id"], [])
            if len(sub) == 1 and method == "GET":
                return 200, [{"id": i, "name": realm["scopes"][i]["name"]} for i in attached], None
            if len(sub) == 2 and method == "PUT":
                if sub[1] not in realm["scopes"]:
                    raise Fail(404, "Client scope not found")
                if self.body():
                    raise Fail(400, "this PUT takes no body")
                if sub[1] not in attached:
                    attached.append(sub[1])
                return 204, None, None
        raise Fail(404, "not found")

    @staticmethod
    def sync_service_account(realm, client_id):
        client = realm["clients"][client_id]
        if not client.get("serviceAccountsEnabled"):
            return
        if any(u.get("serviceAccountClientId") == client["clientId"] for u in realm["users"].values()):
            return
        user_id = str(uuid.uuid4())
        realm["users"][user_id] = {"id": user_id, "enabled": True,
                                   "username": "service-account-" + client["clientId"],
                                   "serviceAccountClientId": client["clientId"]}

    def scopes(self, realm, method, rest, query):
        if not rest and method == "GET":
            return 200, list(realm["scopes"].values()), None
        if not rest and method == "POST":
            body = self.json_body()
            check_fields(body, SCOPE_FIELDS, ("name",), "client scope")
            if not re.fullmatch(r"[A-Za-z0-9._-]+", body["name"]):
                raise Fail(400, "client scope name: unexpected characters")
            if any(s["name"] == body["name"] for s in realm["scopes"].values()):
                raise Fail(409, f"Client Scope {body['name']} already exists")
            check_string_map(body.get("attributes", {}), "client scope.attributes")
            scope_id = str(uuid.uuid4())
            realm["scopes"][scope_id] = dict(body, id=scope_id, protocolMappers=[])
            return 201, None, {"Location": f"client-scopes/{scope_id}"}
        scope = realm["scopes"].get(rest[0]) if rest else None
        if scope is None:
            raise Fail(404, "Could not find client scope")
        sub = rest[1:]
        if not sub and method == "PUT":
            body = self.json_body()
            check_fields(body, SCOPE_FIELDS, ("name",), "client scope")
            check_string_map(body.get("attributes", {}), "client scope.attributes")
            if body.get("id", scope["id"]) != scope["id"]:
                raise Fail(400, "id cannot change")
            scope.update({k: v for k, v in body.items() if k != "protocolMappers"})
            return 204, None, None
        if sub == ["protocol-mappers", "models"]:
            if method == "GET":
                return 200, scope["protocolMappers"], None
            if method == "POST":
                body = self.json_body()
                check_mapper(body)
                if any(m["name"] == body["name"] for m in scope["protocolMappers"]):
                    raise Fail(409, f"Protocol mapper exists with same name: {body['name']}")
                mapper = dict(body, id=str(uuid.uuid4()))
                scope["protocolMappers"].append(mapper)
                return 201, None, {"Location": f"models/{mapper['id']}"}
        if len(sub) == 3 and sub[:2] == ["protocol-mappers", "models"] and method == "PUT":
            mapper = next((m for m in scope["protocolMappers"] if m["id"] == sub[2]), None)
            if mapper is None:
                raise Fail(404, "Model not found")
            body = self.json_body()
            check_mapper(body)
            if body.get("id") != mapper["id"]:
                raise Fail(400, "the mapper's id must be in the body and match the path")
            mapper.update(body)
            return 204, None, None
        raise Fail(404, "not found")

    def realm_default_scopes(self, realm, method, rest, query):
        if not rest and method == "GET":
            return 200, [{"id": i, "name": realm["scopes"][i]["name"]} for i in realm["default_scopes"]], None
        if len(rest) == 1 and method == "PUT":
            if rest[0] not in realm["scopes"]:
                raise Fail(404, "Client scope not found")
            if rest[0] not in realm["default_scopes"]:
                realm["default_scopes"].append(rest[0])
            return 204, None, None
        raise Fail(404, "not found")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--admin", default="admin")
    parser.add_argument("--password", default="admin")
    parser.add_argument("--admin-realm", default="master")
    parser.add_argument("--seed-realm", action="append", default=[])
    parser.add_argument("--seed-client", action="append", default=[],
                        help="a public client in every seeded realm")
    args = parser.parse_args()
    new_realm(args.admin_realm)
    for name in args.seed_realm:
        realm = new_realm(name)
        for client in args.seed_client:
            client_id = str(uuid.uuid4())
            realm["clients"][client_id] = {"id": client_id, "clientId": client, "enabled": True,
                                           "publicClient": True, "protocol": "openid-connect"}
            realm["client_scopes"][client_id] = []
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.admin, server.password, server.admin_realm = args.admin, args.password, args.admin_realm
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
