//! deploy/Caddyfile and deploy/scripts/deploy.sh: the Caddyfile is the only
//! one, passes `caddy validate` (apt's Caddy) and adapts to the routes it
//! promises, with the relay's default ports; deploy.sh's dry run prints each
//! profile's steps in order and writes nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use aegis_relay::config;

type Error = Box<dyn std::error::Error>;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// The Caddyfile's placeholders, set as a test of the full profile would.
fn caddy_env(tls: &str) -> Vec<(&'static str, String)> {
    vec![
        ("DOMAIN_RELAY", "relay.example.com".to_owned()),
        (
            "RELAY_GRPC_UPSTREAMS",
            "relay-0:50056 relay-1:50056".to_owned(),
        ),
        (
            "RELAY_HTTP_UPSTREAMS",
            "relay-0:8080 relay-1:8080".to_owned(),
        ),
        ("RELAY_TLS", tls.to_owned()),
    ]
}

fn caddy(bin: &str, verb: &str, tls: &str) -> Result<std::process::Output, Error> {
    let home = tempfile::tempdir()?;
    let caddyfile = deploy_dir().join("Caddyfile");
    Ok(Command::new(bin)
        .args([verb, "--config"])
        .arg(&caddyfile)
        .args(["--adapter", "caddyfile"])
        .envs(caddy_env(tls))
        .env("HOME", home.path())
        .env("XDG_DATA_HOME", home.path().join("data"))
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .output()?)
}

#[test]
fn caddyfile_is_the_only_one_and_passes_caddy_validate() -> Result<(), Error> {
    let mut named = Vec::new();
    for entry in walk(&deploy_dir())? {
        let name = entry.to_string_lossy().to_ascii_lowercase();
        if name
            .rsplit('/')
            .next()
            .is_some_and(|f| f.contains("caddyfile"))
        {
            named.push(entry);
        }
    }
    assert_eq!(named, [deploy_dir().join("Caddyfile")]);

    let Some(bin) = common::required_tool("AEGIS_RELAY_TEST_CADDY")? else {
        return Ok(());
    };
    for tls in ["", "internal"] {
        let output = caddy(&bin, "validate", tls)?;
        assert!(
            output.status.success(),
            "caddy validate (RELAY_TLS={tls:?}): {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    // What it adapts to: gRPC to every replica over h2c, /v1/* to their
    // HTTP ports, both checked on /readyz of the relay's HTTP port.
    let output = caddy(&bin, "adapt", "")?;
    assert!(output.status.success());
    let json: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let text = json.to_string();
    let proxies = reverse_proxies(&json);
    assert_eq!(proxies.len(), 2, "{text}");
    let dials = |proxy: &serde_json::Value| -> Vec<String> {
        proxy["upstreams"]
            .as_array()
            .map(|ups| {
                ups.iter()
                    .filter_map(|u| u["dial"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let grpc = proxies
        .iter()
        .find(|p| p["transport"]["versions"] == serde_json::json!(["h2c"]))
        .ok_or("no h2c proxy")?;
    assert_eq!(dials(grpc), ["relay-0:50056", "relay-1:50056"]);
    let http = proxies
        .iter()
        .find(|p| p["transport"]["versions"].is_null())
        .ok_or("no HTTP proxy")?;
    assert_eq!(dials(http), ["relay-0:8080", "relay-1:8080"]);
    for proxy in [grpc, http] {
        let active = &proxy["health_checks"]["active"];
        assert_eq!(active["uri"], "/readyz");
        assert_eq!(active["port"], u64::from(config::DEFAULT_HTTP_PORT));
    }
    assert!(
        text.contains("application/grpc*"),
        "gRPC matched by content type"
    );
    assert!(text.contains("\"/v1/*\""));
    assert!(!text.contains("/metrics"), "/metrics is never routed");
    assert!(!text.contains("50057"), "the peer port is never routed");
    assert!(
        !json["apps"]["tls"].is_object(),
        "RELAY_TLS empty = ACME defaults"
    );

    let internal: serde_json::Value =
        serde_json::from_slice(&caddy(&bin, "adapt", "internal")?.stdout)?;
    assert!(internal["apps"]["tls"].to_string().contains("internal"));
    Ok(())
}

fn reverse_proxies(value: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut found = Vec::new();
    match value {
        serde_json::Value::Object(map) => {
            if map.get("handler").and_then(|h| h.as_str()) == Some("reverse_proxy") {
                found.push(value.clone());
            }
            for child in map.values() {
                found.extend(reverse_proxies(child));
            }
        }
        serde_json::Value::Array(items) => {
            for child in items {
                found.extend(reverse_proxies(child));
            }
        }
        _ => {}
    }
    found
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(walk(&path)?);
        } else {
            files.push(path);
        }
    }
    Ok(files)
}

/// deploy.sh --dry-run for `profile`, with none of the deployment's variables set.
fn dry_run(profile: &str, state: &Path) -> Result<Vec<String>, Error> {
    let mut command = Command::new(deploy_dir().join("scripts/deploy.sh"));
    command
        .args(["--profile", profile, "--dry-run", "--state-dir"])
        .arg(state);
    for var in [
        "OPENBAO_ENDPOINT",
        "OPENBAO_TOKEN",
        "KEYCLOAK_ENDPOINT",
        "KEYCLOAK_ADMIN",
        "KEYCLOAK_ADMIN_PASSWORD",
        "POSTGRES_DSN",
        "POSTGRES_PASSWORD",
        "AEGIS_DEPLOY_STATE",
    ] {
        command.env_remove(var);
    }
    let output = command.output()?;
    assert!(
        output.status.success(),
        "deploy.sh --profile {profile} --dry-run: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?
        .lines()
        .map(str::to_owned)
        .collect())
}

/// The pods `podman kube play` starts, in order, from the dry run's commands.
fn played_pods(commands: &[&String]) -> Vec<String> {
    commands
        .iter()
        .filter(|c| c.contains("podman kube play"))
        .filter_map(|c| {
            let last = c.split_whitespace().last()?;
            let file = Path::new(last).file_name()?.to_str()?;
            file.strip_prefix("pod-")?
                .strip_suffix(".yaml")
                .map(str::to_owned)
        })
        .collect()
}

#[test]
fn deploy_dry_run_prints_each_profiles_steps() -> Result<(), Error> {
    let scratch = tempfile::tempdir()?;
    let state = scratch.path().join("state");
    let deploy = deploy_dir().canonicalize()?;
    for (profile, pods) in [
        (
            "full",
            vec![
                "postgres",
                "openbao",
                "keycloak",
                "relay-coordinator",
                "caddy",
            ],
        ),
        ("relay-coordinator", vec!["relay-coordinator"]),
    ] {
        let lines = dry_run(profile, &state)?;
        let commands: Vec<&String> = lines.iter().filter(|l| l.starts_with("+ ")).collect();
        assert_eq!(played_pods(&commands), pods, "{profile}: {lines:#?}");

        // Every file a command names under deploy/ exists.
        for command in &commands {
            for word in command.split_whitespace() {
                if let Some(rest) = word.strip_prefix(deploy.to_string_lossy().as_ref()) {
                    assert!(deploy.join(rest.trim_start_matches('/')).exists(), "{word}");
                }
            }
        }

        // The bootstrap runs once, before the relay's pod, writing where the
        // Secret's files are read from.
        let bootstrap = commands
            .iter()
            .position(|c| c.contains("scripts/bootstrap-relay-coordinator.sh"))
            .ok_or("no bootstrap")?;
        assert!(commands[bootstrap].contains(&format!("--out {}", state.join("approle").display())));
        let relay = commands
            .iter()
            .position(|c| c.ends_with("pod-relay-coordinator.yaml"))
            .ok_or("no relay pod")?;
        assert!(bootstrap < relay);
        assert!(commands[relay].contains("--replace"));
        assert!(commands[relay].contains("configmap-relay-config.yaml"));
        for secret in [
            "relay-postgres",
            "relay-openbao-approle",
            "relay-cluster-secret",
        ] {
            let at = commands
                .iter()
                .position(|c| c.ends_with(&format!("secret-{secret}.yaml")))
                .ok_or_else(|| format!("{profile}: Secret {secret} not played"))?;
            assert!(
                bootstrap < at && at < relay,
                "{secret} between bootstrap and relay"
            );
        }
        // Services come before the bootstrap and are never replaced.
        for service in ["postgres", "openbao", "keycloak"] {
            if let Some(at) = commands
                .iter()
                .position(|c| c.ends_with(&format!("pod-{service}.yaml")))
            {
                assert!(at < bootstrap);
                assert!(commands[at].contains(&format!("podman pod exists {service} ||")));
                assert!(!commands[at].contains("--replace"));
            }
        }
        assert!(lines.iter().any(|l| l.contains("not started here")));
        assert!(!state.exists(), "a dry run writes nothing");
    }
    let lines = dry_run("full", &state)?;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("AEGIS controller") && l.contains("MCP server")),
        "full names the external AEGIS parts"
    );

    let output = Command::new(deploy_dir().join("scripts/deploy.sh"))
        .args(["--profile", "nope", "--dry-run"])
        .output()?;
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("full relay-coordinator"));
    Ok(())
}
