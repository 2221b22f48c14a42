//! deploy/scripts/bootstrap-relay-coordinator.sh's Keycloak half and
//! bootstrap-keycloak.sh against cluster/keycloak-fake, a strict fake of
//! Keycloak's admin API (no real Keycloak runs here): run twice, the second
//! run writes nothing; roles, client, service-account grants and mappers match
//! the relay's claim and audience settings; a changed mapper is put back.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use aegis_relay::config;
use common::binary::Process;
use common::deploy::{bootstrap, changed, failure, free_port_pair, root, stdout};
use serde_json::{json, Value};

type Error = Box<dyn std::error::Error>;

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
        BufReader::new(stdout).read_line(&mut line)?;
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .ok_or_else(|| format!("keycloak-fake said {line:?} instead of its port"))?;
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
    // The relay's `keycloak.audience`, its default unchanged.
    assert_eq!(defaults.audience.as_deref(), Some(config::DEFAULT_AUDIENCE));
    assert_eq!(
        audience["config"]["included.client.audience"],
        config::DEFAULT_AUDIENCE
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
