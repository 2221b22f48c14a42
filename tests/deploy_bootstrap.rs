//! deploy/scripts/bootstrap-relay-coordinator.sh's OpenBao half against a
//! fresh OpenBao dev server (the binary cluster/openbao.sh installs), run
//! twice: the second run changes nothing, the relay signs through the AppRole
//! the first run made, a changed setting is put back, a dead secret_id is
//! replaced, and failures say what to fix.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use aegis_relay::auth::{OpenBaoSigner, Signer};
use aegis_relay::config::{self, SigningScheme};
use common::binary::Process;
use common::deploy::{bootstrap, changed, failure, free_port_pair, stdout};
use serde_json::{json, Value};

type Error = Box<dyn std::error::Error>;

/// A fresh OpenBao dev server of its own (the shared one is bootstrapped already).
struct Bao {
    client: common::bao::BaoApi,
    _process: Process,
    _home: tempfile::TempDir,
}

impl std::ops::Deref for Bao {
    type Target = common::bao::BaoApi;
    fn deref(&self) -> &common::bao::BaoApi {
        &self.client
    }
}

impl Bao {
    async fn start() -> Result<Option<Self>, Error> {
        let Some(bin) = common::required_tool("AEGIS_RELAY_TEST_BAO")? else {
            return Ok(None);
        };
        let home = tempfile::tempdir()?;
        let port = free_port_pair()?;
        let token = format!("root-{}", aegis_relay::runtime::OsEntropy.uuid().simple());
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
            client: common::bao::BaoApi::new(format!("http://127.0.0.1:{port}"), token)?,
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

#[test]
fn usage_errors_exit_2() -> Result<(), Error> {
    for args in [&["--only", "vault"][..], &["--bogus"][..]] {
        let output = bootstrap("bootstrap-relay-coordinator.sh", args, &[])?;
        assert_eq!(output.status.code(), Some(2), "{args:?}");
    }
    Ok(())
}
