//! deploy/scripts/bootstrap-relay-coordinator.sh, run twice: the OpenBao half
//! against a fresh OpenBao dev server (the binary cluster/openbao.sh installs),
//! the Keycloak half against cluster/keycloak-fake (a strict fake of the admin
//! API; no real Keycloak runs here). The second run changes nothing, the
//! relay signs through the AppRole the first run made, and what the script
//! names matches the relay's config defaults.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use aegis_relay::auth::{OpenBaoSigner, Signer};
use aegis_relay::config::{self, SigningScheme};
use serde_json::{json, Value};

type Error = Box<dyn std::error::Error>;

const KEYCLOAK_VARS: [&str; 3] = [
    "KEYCLOAK_ENDPOINT",
    "KEYCLOAK_ADMIN",
    "KEYCLOAK_ADMIN_PASSWORD",
];
const OPENBAO_VARS: [&str; 2] = ["OPENBAO_ENDPOINT", "OPENBAO_TOKEN"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A child process killed when the test ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the bootstrap with exactly `env` among the deployment variables.
fn bootstrap(script: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Output, Error> {
    let mut command = Command::new(root().join("deploy/scripts").join(script));
    command.args(args);
    for var in OPENBAO_VARS.iter().chain(&KEYCLOAK_VARS) {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    Ok(command.output()?)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The N of the closing `changed: N` line; the run must have succeeded.
fn changed(output: &Output) -> Result<u64, Error> {
    assert!(
        output.status.success(),
        "bootstrap failed: {}\n{}",
        stdout(output),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = stdout(output);
    let last = text.lines().last().unwrap_or_default();
    Ok(last
        .strip_prefix("changed: ")
        .ok_or_else(|| format!("last line is not `changed: N`: {text}"))?
        .parse()?)
}

fn failure(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(1), "{}", stdout(output));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn free_port_pair() -> Result<u16, Error> {
    for _ in 0..100 {
        let first = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = first.local_addr()?.port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return Ok(port);
        }
    }
    Err("no free pair of loopback ports".into())
}

/// A fresh OpenBao dev server of its own (the shared one is bootstrapped already).
struct Bao {
    url: String,
    token: String,
    http: reqwest::Client,
    _process: Process,
    _home: tempfile::TempDir,
}

impl Bao {
    async fn start() -> Result<Option<Self>, Error> {
        let Some(bin) = common::required_tool("AEGIS_RELAY_TEST_BAO")? else {
            return Ok(None);
        };
        let home = tempfile::tempdir()?;
        let port = free_port_pair()?;
        let token = format!("root-{}", uuid::Uuid::new_v4().simple());
        let process = Process(
            Command::new(bin)
                .args(["server", "-dev"])
                .arg(format!("-dev-root-token-id={token}"))
                .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
                .env("HOME", home.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        let bao = Self {
            url: format!("http://127.0.0.1:{port}"),
            token,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            _process: process,
            _home: home,
        };
        let health = format!("{}/v1/sys/health", bao.url);
        common::eventually(Duration::from_secs(30), "OpenBao sys/health", || async {
            let response = bao.http.get(&health).send().await.ok()?;
            response.status().is_success().then_some(())
        })
        .await?;
        Ok(Some(bao))
    }

    fn env(&self) -> [(&'static str, &str); 2] {
        [
            ("OPENBAO_ENDPOINT", &self.url),
            ("OPENBAO_TOKEN", &self.token),
        ]
    }

    async fn api(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Error> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut request = self
            .http
            .request(method.clone(), format!("{}/v1/{path}", self.url))
            .header("X-Vault-Token", &self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            return Err(format!("{method} {path}: {status}: {text}").into());
        }
        Ok(if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str::<Value>(&text)?["data"].clone()
        })
    }

    /// Mounts, auth methods, policies, AppRole roles (settings, role id,
    /// secret-id accessors), transit keys and the relay's KV entries.
    async fn snapshot(&self) -> Result<Value, Error> {
        let mut state = BTreeMap::new();
        let mut mounts = self.api("GET", "sys/mounts", None).await?;
        let mut auth = self.api("GET", "sys/auth", None).await?;
        for table in [&mut mounts, &mut auth] {
            if let Some(map) = table.as_object_mut() {
                for mount in map.values_mut() {
                    // Version bookkeeping that changes with no write.
                    if let Some(mount) = mount.as_object_mut() {
                        mount.remove("running_sha256");
                    }
                }
            }
        }
        state.insert("mounts".to_owned(), mounts);
        state.insert("auth".to_owned(), auth);
        for name in self.list("sys/policies/acl").await? {
            let policy = self
                .api("GET", &format!("sys/policies/acl/{name}"), None)
                .await?;
            state.insert(format!("policy {name}"), policy["policy"].clone());
        }
        for role in self.list("auth/approle/role").await? {
            let base = format!("auth/approle/role/{role}");
            state.insert(format!("role {role}"), self.api("GET", &base, None).await?);
            state.insert(
                format!("role-id {role}"),
                self.api("GET", &format!("{base}/role-id"), None).await?,
            );
            state.insert(
                format!("secret-ids {role}"),
                json!(self.list(&format!("{base}/secret-id")).await?),
            );
        }
        for key in self.list("transit/keys").await? {
            let info = self
                .api("GET", &format!("transit/keys/{key}"), None)
                .await?;
            state.insert(format!("key {key}"), info);
        }
        for entry in self
            .list("secret/metadata/aegis-system/relay-coordinator")
            .await?
        {
            let meta = self
                .api(
                    "GET",
                    &format!("secret/metadata/aegis-system/relay-coordinator/{entry}"),
                    None,
                )
                .await?;
            state.insert(format!("kv {entry}"), meta["current_version"].clone());
        }
        Ok(json!(state))
    }

    /// A LIST's keys (none when the path is empty).
    async fn list(&self, path: &str) -> Result<Vec<String>, Error> {
        match self.api("LIST", path, None).await {
            Ok(data) => Ok(data["keys"]
                .as_array()
                .map(|keys| {
                    keys.iter()
                        .filter_map(|k| k.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()),
            Err(err) if err.to_string().contains("404") => Ok(Vec::new()),
            Err(err) => Err(err),
        }
    }
}

#[tokio::test]
async fn openbao_half_twice_changes_nothing_the_second_time_and_the_relay_signs(
) -> Result<(), Error> {
    let Some(bao) = Bao::start().await? else {
        return Ok(());
    };
    let scratch = tempfile::tempdir()?;
    let out = scratch.path().join("approle"); // created by the script
    let out_arg = out.to_string_lossy().into_owned();
    let args = ["--only", "openbao", "--out", &out_arg];

    // A dry run changes nothing but says what it would do.
    let dry = bootstrap(
        "bootstrap-relay-coordinator.sh",
        &[&args[..], &["--dry-run"]].concat(),
        &bao.env(),
    )?;
    assert!(changed(&dry)? >= 5, "{}", stdout(&dry));
    assert!(!out.exists(), "a dry run writes no file");
    assert!(bao.list("auth/approle/role").await?.is_empty());

    let first = bootstrap("bootstrap-relay-coordinator.sh", &args, &bao.env())?;
    assert!(changed(&first)? >= 7, "{}", stdout(&first));
    let before = bao.snapshot().await?;
    let second = bootstrap("bootstrap-relay-coordinator.sh", &args, &bao.env())?;
    assert_eq!(changed(&second)?, 0, "{}", stdout(&second));
    assert_eq!(
        bao.snapshot().await?,
        before,
        "the second run changed OpenBao"
    );
    assert_eq!(
        stdout(&dry).matches("would ").count() as u64,
        changed(&first)?
    );

    // What the relay expects, by its own defaults.
    let key = config::DEFAULT_TRANSIT_KEY;
    assert_eq!(before[format!("key {key}")]["type"], "rsa-2048");
    assert_eq!(
        before["role relay-coordinator"]["token_policies"],
        json!(["relay-coordinator"])
    );
    assert_eq!(
        before["secret-ids relay-coordinator"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let kv = bao
        .api(
            "GET",
            "secret/data/aegis-system/relay-coordinator/signing-key",
            None,
        )
        .await?;
    assert_eq!(kv["data"]["transit_key"], key);
    for file in ["role_id", "secret_id"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.join(file))?.permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }

    // The relay logs in with the files, as its config names them, and signs.
    let text = format!(
        "cluster:\n  role: relay-coordinator\n  ingress:\n    public_endpoint: relay.example.com\n\
         openbao:\n  endpoint: {}\n  approle:\n    role_id_file: {}\n    secret_id_file: {}\n\
         relay:\n  signer: openbao\n",
        bao.url,
        out.join("role_id").display(),
        out.join("secret_id").display()
    );
    let config = config::parse_str(&text, &BTreeMap::<String, String>::new())?;
    let openbao = config.openbao.ok_or("no openbao block")?;
    let (role_id, secret_id) = OpenBaoSigner::approle_credentials(&openbao)?;
    let signer = OpenBaoSigner::connect(&openbao, SigningScheme::Rs256, role_id, secret_id).await?;
    let input = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0";
    let signature = aegis_relay::auth::b64url_decode(&signer.sign(input).await?)
        .ok_or("signature is not base64url")?;
    assert!(signer.verify(input, &signature).await?);

    // A changed setting is put back in place; a dead secret_id is replaced.
    bao.api(
        "POST",
        "auth/approle/role/relay-coordinator",
        Some(json!({"token_ttl": "5m"})),
    )
    .await?;
    std::fs::write(out.join("secret_id"), "not-a-secret-id\n")?;
    let third = bootstrap("bootstrap-relay-coordinator.sh", &args, &bao.env())?;
    assert_eq!(changed(&third)?, 2, "{}", stdout(&third));
    assert!(stdout(&third).contains("updated  AppRole relay-coordinator"));
    let after = bao.snapshot().await?;
    assert_eq!(
        after["role relay-coordinator"],
        before["role relay-coordinator"]
    );
    assert_eq!(
        after["secret-ids relay-coordinator"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert_eq!(
        changed(&bootstrap(
            "bootstrap-relay-coordinator.sh",
            &args,
            &bao.env()
        )?)?,
        0
    );

    // Clear failures: a wrong token, an unreachable server, missing variables.
    let wrong = bootstrap(
        "bootstrap-relay-coordinator.sh",
        &args,
        &[("OPENBAO_ENDPOINT", &bao.url), ("OPENBAO_TOKEN", "wrong")],
    )?;
    assert!(failure(&wrong).contains("OpenBao refused OPENBAO_TOKEN"));
    let closed = format!("http://127.0.0.1:{}", free_port_pair()?);
    let unreachable = bootstrap(
        "bootstrap-relay-coordinator.sh",
        &args,
        &[("OPENBAO_ENDPOINT", &closed), ("OPENBAO_TOKEN", "x")],
    )?;
    assert!(failure(&unreachable).contains("OpenBao is unreachable at"));
    let missing = bootstrap("bootstrap-relay-coordinator.sh", &args, &[])?;
    assert!(failure(&missing).contains("set OPENBAO_ENDPOINT OPENBAO_TOKEN"));
    Ok(())
}

/// cluster/keycloak-fake on a free loopback port.
struct FakeKeycloak {
    url: String,
    _process: Process,
}

const ADMIN: &str = "admin";
const PASSWORD: &str = "fake-admin-password";

impl FakeKeycloak {
    fn start(extra: &[&str]) -> Result<Self, Error> {
        let mut child = Command::new("python3")
            .arg(root().join("cluster/keycloak-fake/server.py"))
            .args(["--admin", ADMIN, "--password", PASSWORD])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let process = Process(child);
        // The fake prints its port once it listens; read_line blocks until then.
        let mut line = String::new();
        let started = Instant::now();
        BufReader::new(stdout).read_line(&mut line)?;
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .ok_or_else(|| format!("keycloak-fake said {line:?} after {:?}", started.elapsed()))?;
        Ok(Self {
            url: format!("http://127.0.0.1:{port}"),
            _process: process,
        })
    }

    fn env(&self) -> [(&'static str, &str); 3] {
        [
            ("KEYCLOAK_ENDPOINT", &self.url),
            ("KEYCLOAK_ADMIN", ADMIN),
            ("KEYCLOAK_ADMIN_PASSWORD", PASSWORD),
        ]
    }

    async fn get(&self, path: &str) -> Result<Value, Error> {
        Ok(reqwest::get(format!("{}{path}", self.url))
            .await?
            .json()
            .await?)
    }
}

/// The relay's config with a Keycloak endpoint: its claim and audience settings.
fn relay_keycloak() -> Result<config::KeycloakConfig, Error> {
    let text =
        "cluster:\n  role: relay-coordinator\n  ingress:\n    public_endpoint: r.example.com\n\
                keycloak:\n  endpoint: https://auth.example.com\n";
    config::parse_str(text, &BTreeMap::<String, String>::new())?
        .keycloak
        .ok_or_else(|| "no keycloak block".into())
}

fn mapper<'a>(scope: &'a Value, name: &str) -> Result<&'a Value, Error> {
    scope["protocolMappers"]
        .as_array()
        .and_then(|mappers| mappers.iter().find(|m| m["name"] == name))
        .ok_or_else(|| format!("no mapper {name}").into())
}

#[tokio::test]
async fn keycloak_half_twice_against_the_fake_admin_api() -> Result<(), Error> {
    let keycloak = FakeKeycloak::start(&[])?;
    let args = ["--only", "keycloak"];
    let first = bootstrap("bootstrap-relay-coordinator.sh", &args, &keycloak.env())?;
    assert!(changed(&first)? >= 10, "{}", stdout(&first));
    let log = keycloak.get("/__log").await?;
    let state = keycloak.get("/__state").await?;
    let second = bootstrap("bootstrap-relay-coordinator.sh", &args, &keycloak.env())?;
    assert_eq!(changed(&second)?, 0, "{}", stdout(&second));
    assert_eq!(keycloak.get("/__log").await?, log, "the second run wrote");
    assert_eq!(keycloak.get("/__state").await?, state);

    let defaults = relay_keycloak()?;
    let realm = &state[defaults.realm.as_str()];
    let roles = [
        "aegis.edge.fleet.manage",
        "aegis.edge.enroll",
        "aegis.edge.heartbeat",
    ];
    for role in roles {
        assert!(realm["roles"][role].is_object(), "role {role}");
    }
    let clients: Vec<&Value> = realm["clients"]
        .as_object()
        .map(|c| c.values().collect())
        .unwrap_or_default();
    assert_eq!(clients.len(), 1);
    let client = clients[0];
    assert_eq!(client["clientId"], "relay-coordinator");
    assert_eq!(client["serviceAccountsEnabled"], true);
    assert_eq!(client["publicClient"], false);

    // The service account holds the three roles.
    let user = realm["users"]
        .as_object()
        .and_then(|users| {
            users
                .values()
                .find(|u| u["serviceAccountClientId"] == "relay-coordinator")
        })
        .ok_or("no service-account user")?;
    let user_id = user["id"].as_str().ok_or("user id")?;
    let mut granted: Vec<&str> = realm["role_mappings"][user_id]
        .as_array()
        .ok_or("no role mappings")?
        .iter()
        .filter_map(|id| {
            realm["roles"]
                .as_object()?
                .values()
                .find(|role| &role["id"] == id)?["name"]
                .as_str()
        })
        .collect();
    granted.sort_unstable();
    let mut expected = roles.to_vec();
    expected.sort_unstable();
    assert_eq!(granted, expected);

    // The scope's mappers put the claims where the relay reads them.
    let scope = realm["scopes"]
        .as_object()
        .and_then(|scopes| scopes.values().find(|s| s["name"] == "aegis-relay"))
        .ok_or("no aegis-relay scope")?;
    let scope_id = scope["id"].as_str().ok_or("scope id")?;
    assert_eq!(
        mapper(scope, "tenant_id")?["config"]["claim.name"],
        defaults.tenant_claim.as_str()
    );
    assert_eq!(
        mapper(scope, "aegis_role")?["config"]["claim.name"],
        defaults.operator_claim.as_str()
    );
    let audience = mapper(scope, "audience relay-coordinator")?;
    assert_eq!(audience["protocolMapper"], "oidc-audience-mapper");
    assert_eq!(audience["config"]["access.token.claim"], "true");
    // The relay's `keycloak.audience` (default relay-coordinator, once set).
    let wanted = defaults
        .audience
        .clone()
        .unwrap_or_else(|| config::RELAY_ROLE.to_owned());
    assert_eq!(
        audience["config"]["included.client.audience"],
        wanted.as_str()
    );
    assert_eq!(realm["default_scopes"], json!([scope_id]));
    assert!(realm["client_scopes"][client["id"].as_str().ok_or("id")?]
        .as_array()
        .is_some_and(|s| s.contains(&json!(scope_id))));

    // A changed mapper is updated in place.
    let token = admin_token(&keycloak).await?;
    let mut edited = mapper(scope, "audience relay-coordinator")?.clone();
    edited["config"]["included.client.audience"] = json!("something-else");
    let url = format!(
        "{}/admin/realms/{}/client-scopes/{scope_id}/protocol-mappers/models/{}",
        keycloak.url,
        defaults.realm,
        edited["id"].as_str().ok_or("mapper id")?
    );
    let status = reqwest::Client::new()
        .put(url)
        .bearer_auth(&token)
        .json(&edited)
        .send()
        .await?
        .status();
    assert_eq!(status.as_u16(), 204);
    let third = bootstrap("bootstrap-relay-coordinator.sh", &args, &keycloak.env())?;
    assert_eq!(changed(&third)?, 1, "{}", stdout(&third));
    assert!(stdout(&third).contains("updated  mapper 'audience relay-coordinator'"));
    assert_eq!(keycloak.get("/__state").await?, state);

    // Clear failures.
    let wrong = bootstrap(
        "bootstrap-relay-coordinator.sh",
        &args,
        &[
            ("KEYCLOAK_ENDPOINT", &keycloak.url),
            ("KEYCLOAK_ADMIN", ADMIN),
            ("KEYCLOAK_ADMIN_PASSWORD", "wrong"),
        ],
    )?;
    assert!(failure(&wrong).contains("Keycloak refused KEYCLOAK_ADMIN / KEYCLOAK_ADMIN_PASSWORD"));
    let closed = format!("http://127.0.0.1:{}", free_port_pair()?);
    let unreachable = bootstrap(
        "bootstrap-relay-coordinator.sh",
        &args,
        &[
            ("KEYCLOAK_ENDPOINT", &closed),
            ("KEYCLOAK_ADMIN", ADMIN),
            ("KEYCLOAK_ADMIN_PASSWORD", PASSWORD),
        ],
    )?;
    assert!(failure(&unreachable).contains("Keycloak is unreachable at"));
    Ok(())
}

async fn admin_token(keycloak: &FakeKeycloak) -> Result<String, Error> {
    let answer: Value = reqwest::Client::new()
        .post(format!(
            "{}/realms/master/protocol/openid-connect/token",
            keycloak.url
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=password&client_id=admin-cli&username={ADMIN}&password={PASSWORD}"
        ))
        .send()
        .await?
        .json()
        .await?;
    Ok(answer["access_token"]
        .as_str()
        .ok_or("no token")?
        .to_owned())
}

#[tokio::test]
async fn bootstrap_keycloak_sets_roles_and_mappers_alone_and_scopes_caller_clients(
) -> Result<(), Error> {
    let keycloak =
        FakeKeycloak::start(&["--seed-realm", "aegis-system", "--seed-client", "aegis-cli"])?;
    let args = ["--caller-client", "aegis-cli"];
    let first = bootstrap("bootstrap-keycloak.sh", &args, &keycloak.env())?;
    assert!(changed(&first)? >= 8, "{}", stdout(&first));
    assert_eq!(
        changed(&bootstrap("bootstrap-keycloak.sh", &args, &keycloak.env())?)?,
        0
    );
    let state = keycloak.get("/__state").await?;
    let realm = &state["aegis-system"];
    let clients: Vec<&Value> = realm["clients"]
        .as_object()
        .map(|c| c.values().collect())
        .unwrap_or_default();
    assert_eq!(
        clients.len(),
        1,
        "no relay-coordinator client from bootstrap-keycloak.sh"
    );
    let caller = clients[0]["id"].as_str().ok_or("id")?;
    assert_eq!(
        realm["client_scopes"][caller].as_array().map(Vec::len),
        Some(1)
    );
    assert!(realm["roles"]["aegis.edge.enroll"].is_object());

    let unknown = bootstrap(
        "bootstrap-keycloak.sh",
        &["--caller-client", "nobody"],
        &keycloak.env(),
    )?;
    assert!(failure(&unknown).contains("--caller-client nobody: no such client"));
    Ok(())
}

#[test]
fn usage_errors_exit_2() -> Result<(), Error> {
    for args in [&["--only", "vault"][..], &["--bogus"][..]] {
        let output = bootstrap("bootstrap-relay-coordinator.sh", args, &[])?;
        assert_eq!(output.status.code(), Some(2), "{args:?}");
    }
    Ok(())
}
