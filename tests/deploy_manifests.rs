//! The files under deploy/ against the relay's own code: every manifest
//! parses; the relay's ports, probes, env, secret references, mounts and grace
//! period match the config its ConfigMap holds, as `aegis_relay::config` loads
//! it (defaults included); the Caddyfile passes `caddy validate` and routes
//! what it should; deploy.sh's dry run names the right steps for each profile.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aegis_relay::config::{self, Config, SignerKind};
use aegis_relay::grpc::{LIVENESS_SERVICES, READINESS_SERVICE};
use serde::Deserialize;
use serde_yaml_ng::Value;

type Error = Box<dyn std::error::Error>;

/// Seconds a stopping pod keeps beyond `relay.drain_timeout` at least.
const GRACE_MARGIN: Duration = Duration::from_secs(5);

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// Every YAML document in `path`.
fn documents(path: &Path) -> Result<Vec<Value>, Error> {
    let text = std::fs::read_to_string(path)?;
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let value = Value::deserialize(doc).map_err(|err| format!("{}: {err}", path.display()))?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(yaml_files(&path)?);
        } else if path.extension().is_some_and(|ext| ext == "yaml") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// `value` at a path of mapping keys and sequence indexes.
fn at<'a>(value: &'a Value, path: &str) -> &'a Value {
    let mut current = value;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        current = match part.parse::<usize>() {
            Ok(index) => current.get(index),
            Err(_) => current.get(part),
        }
        .unwrap_or(&Value::Null);
    }
    current
}

fn text<'a>(value: &'a Value, path: &str) -> Result<&'a str, Error> {
    at(value, path)
        .as_str()
        .ok_or_else(|| format!("{path}: not a string in {value:?}").into())
}

fn number(value: &Value, path: &str) -> Result<u64, Error> {
    at(value, path)
        .as_u64()
        .ok_or_else(|| format!("{path}: not a number").into())
}

fn seq<'a>(value: &'a Value, path: &str) -> Result<&'a Vec<Value>, Error> {
    at(value, path)
        .as_sequence()
        .ok_or_else(|| format!("{path}: not a list").into())
}

/// The one document of `kind` (and `name`, when given) in `path`.
fn find(path: &Path, kind: &str, name: Option<&str>) -> Result<Value, Error> {
    documents(path)?
        .into_iter()
        .find(|doc| {
            at(doc, "kind").as_str() == Some(kind)
                && name.is_none_or(|name| at(doc, "metadata.name").as_str() == Some(name))
        })
        .ok_or_else(|| format!("{}: no {kind} {name:?}", path.display()).into())
}

/// The relay's config from a ConfigMap, loaded by the relay's own loader with
/// the container's plain env values (and a test DSN for the secret one).
fn relay_config(configmap: &Value, container: &Value, hostname: &str) -> Result<Config, Error> {
    let file = at(configmap, "data")
        .get("aegis-config.yaml")
        .and_then(Value::as_str)
        .ok_or("the ConfigMap has no aegis-config.yaml")?;
    let mut env = BTreeMap::new();
    env.insert("HOSTNAME".to_owned(), hostname.to_owned());
    env.insert(
        "POSTGRES_DSN".to_owned(),
        "postgres://relay:pw@postgres:5432/aegis".to_owned(),
    );
    for var in seq(container, "env")? {
        if let Some(value) = at(var, "value").as_str() {
            env.insert(text(var, "name")?.to_owned(), value.to_owned());
        }
    }
    Ok(config::parse_str(file, &env)?)
}

fn container_port(container: &Value, name: &str) -> Result<(u64, String), Error> {
    let port = seq(container, "ports")?
        .iter()
        .find(|port| at(port, "name").as_str() == Some(name))
        .ok_or_else(|| format!("no container port named {name}"))?;
    Ok((
        number(port, "containerPort")?,
        text(port, "protocol")?.to_owned(),
    ))
}

fn mount_path(container: &Value, volume: &str) -> Result<String, Error> {
    Ok(text(
        seq(container, "volumeMounts")?
            .iter()
            .find(|mount| at(mount, "name").as_str() == Some(volume))
            .ok_or_else(|| format!("no volume mount {volume}"))?,
        "mountPath",
    )?
    .to_owned())
}

fn volume<'a>(pod_spec: &'a Value, name: &str) -> Result<&'a Value, Error> {
    seq(pod_spec, "volumes")?
        .iter()
        .find(|volume| at(volume, "name").as_str() == Some(name))
        .ok_or_else(|| format!("no volume {name}").into())
}

/// Everything the relay's pod spec must agree on with its config.
fn check_relay_pod(pod_spec: &Value, configmap: &Value, hostname: &str) -> Result<(), Error> {
    let container = seq(pod_spec, "containers")?
        .first()
        .ok_or("no container")?;
    let config = relay_config(configmap, container, hostname)?;

    // The guide's command line, reading the ConfigMap's file.
    let args: Vec<&str> = seq(container, "args")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(args, ["run", "--config", "/etc/aegis/aegis-config.yaml"]);
    assert_eq!(mount_path(container, "config")?, "/etc/aegis");
    assert_eq!(
        text(volume(pod_spec, "config")?, "configMap.name")?,
        text(configmap, "metadata.name")?
    );

    // Ports: the relay's own (defaults unless the ConfigMap sets them).
    assert_eq!(
        container_port(container, "grpc")?,
        (u64::from(config.cluster.grpc_port), "TCP".to_owned())
    );
    assert_eq!(
        container_port(container, "http")?,
        (u64::from(config.relay.http_port), "TCP".to_owned())
    );
    assert_eq!(
        container_port(container, "peer")?,
        (u64::from(config.relay.peer_port), "TCP".to_owned())
    );
    assert_eq!(
        container_port(container, "gossip")?,
        (u64::from(config.relay.gossip_port), "UDP".to_owned())
    );

    // Probes: liveness on "" and readiness on the cluster service, both on
    // the gRPC port.
    assert_eq!(
        number(container, "livenessProbe.grpc.port")?,
        u64::from(config.cluster.grpc_port)
    );
    assert!(LIVENESS_SERVICES.contains(&text(container, "livenessProbe.grpc.service")?));
    assert_eq!(text(container, "livenessProbe.grpc.service")?, "");
    assert_eq!(
        number(container, "readinessProbe.grpc.port")?,
        u64::from(config.cluster.grpc_port)
    );
    assert_eq!(
        text(container, "readinessProbe.grpc.service")?,
        READINESS_SERVICE
    );

    // Env: the guide's four, the DSN from the relay-postgres Secret.
    let env = seq(container, "env")?;
    let var = |name: &str| env.iter().find(|v| at(v, "name").as_str() == Some(name));
    for (name, _) in config::ENV_OVERRIDES {
        assert!(var(name).is_some(), "env {name} missing");
    }
    assert_eq!(
        at(var("AEGIS_ROLE").ok_or("AEGIS_ROLE")?, "value").as_str(),
        Some(config::RELAY_ROLE)
    );
    let dsn = var("POSTGRES_DSN").ok_or("POSTGRES_DSN")?;
    assert_eq!(
        text(dsn, "valueFrom.secretKeyRef.name")?,
        "relay-postgres"
    );
    assert_eq!(text(dsn, "valueFrom.secretKeyRef.key")?, "dsn");
    assert!(at(dsn, "value").is_null(), "the DSN is never inline");

    // Secrets: the AppRole files and the cluster secret where the config reads them.
    assert_eq!(config.relay.signer, SignerKind::OpenBao);
    let openbao = config.openbao.as_ref().ok_or("no openbao block")?;
    let approle_dir = mount_path(container, "openbao-approle")?;
    for (file, key) in [
        (&openbao.role_id_file, "role_id"),
        (&openbao.secret_id_file, "secret_id"),
    ] {
        let file = file.as_ref().ok_or("AppRole file not set")?;
        assert_eq!(file, &Path::new(&approle_dir).join(key));
    }
    assert_eq!(
        text(volume(pod_spec, "openbao-approle")?, "secret.secretName")?,
        "relay-openbao-approle"
    );
    let cluster_secret = config
        .relay
        .cluster_secret_file
        .as_ref()
        .ok_or("relay.cluster_secret_file not set")?;
    assert_eq!(
        cluster_secret,
        &Path::new(&mount_path(container, "cluster-secret")?).join("secret")
    );
    assert_eq!(
        text(volume(pod_spec, "cluster-secret")?, "secret.secretName")?,
        "relay-cluster-secret"
    );

    // State: relay.data_dir lives on the state volume.
    assert!(config
        .relay
        .data_dir
        .starts_with(mount_path(container, "state")?));

    // A stopping pod has the drain and a margin.
    let grace = Duration::from_secs(number(pod_spec, "terminationGracePeriodSeconds")?);
    assert!(
        grace >= config.relay.drain_timeout + GRACE_MARGIN,
        "terminationGracePeriodSeconds {grace:?} must exceed relay.drain_timeout {:?} by {GRACE_MARGIN:?}",
        config.relay.drain_timeout
    );
    let non_root = at(container, "securityContext.runAsNonRoot")
        .as_bool()
        .or_else(|| at(pod_spec, "securityContext.runAsNonRoot").as_bool());
    assert_eq!(non_root, Some(true));
    Ok(())
}

#[test]
fn every_manifest_parses_and_names_its_kind() -> Result<(), Error> {
    let mut seen = 0;
    for dir in ["podman", "kubernetes"] {
        for file in yaml_files(&deploy_dir().join(dir))? {
            for doc in documents(&file)? {
                let kind = text(&doc, "kind")?;
                assert!(
                    at(&doc, "apiVersion").as_str().is_some(),
                    "{}",
                    file.display()
                );
                if kind != "Kustomization" {
                    assert!(
                        at(&doc, "metadata.name").as_str().is_some(),
                        "{}",
                        file.display()
                    );
                }
                seen += 1;
            }
        }
    }
    assert!(seen >= 12, "only {seen} manifests found");
    Ok(())
}

#[test]
fn podman_relay_pod_matches_the_relays_config() -> Result<(), Error> {
    let dir = deploy_dir().join("podman/pods/relay-coordinator");
    let pod = find(&dir.join("pod-relay-coordinator.yaml"), "Pod", None)?;
    let configmap = find(
        &dir.join("configmap-relay-config.yaml"),
        "ConfigMap",
        Some("relay-config"),
    )?;
    assert_eq!(text(&pod, "metadata.name")?, "relay-coordinator");
    assert_eq!(text(&pod, "metadata.labels.role")?, "relay-coordinator");
    check_relay_pod(at(&pod, "spec"), &configmap, "relay-coordinator")
}

#[test]
fn kubernetes_statefulset_services_and_budget_fit_together() -> Result<(), Error> {
    let dir = deploy_dir().join("kubernetes");
    let sts = find(&dir.join("statefulset.yaml"), "StatefulSet", None)?;
    let configmap = find(&dir.join("configmap.yaml"), "ConfigMap", Some("relay-config"))?;
    let name = text(&sts, "metadata.name")?;
    let spec = at(&sts, "spec.template.spec");
    check_relay_pod(spec, &configmap, &format!("{name}-0"))?;

    // One pod at a time on update.
    assert_eq!(text(&sts, "spec.updateStrategy.type")?, "RollingUpdate");
    assert_eq!(
        number(&sts, "spec.updateStrategy.rollingUpdate.maxUnavailable")?,
        1
    );
    let labels = at(&sts, "spec.template.metadata.labels");
    assert_eq!(at(&sts, "spec.selector.matchLabels"), labels);

    // The headless Service the StatefulSet names, with the internal ports.
    let services = documents(&dir.join("services.yaml"))?;
    let headless_name = text(&sts, "spec.serviceName")?;
    let headless = services
        .iter()
        .find(|svc| at(svc, "metadata.name").as_str() == Some(headless_name))
        .ok_or("the StatefulSet's serviceName has no Service")?;
    assert_eq!(text(headless, "spec.clusterIP")?, "None");
    assert_eq!(
        at(headless, "spec.publishNotReadyAddresses").as_bool(),
        Some(true)
    );
    assert_eq!(at(headless, "spec.selector"), labels);

    let container = at(spec, "containers.0");
    let config = relay_config(&configmap, container, &format!("{name}-0"))?;
    let port_names = |svc: &Value| -> Result<Vec<(String, u64)>, Error> {
        seq(svc, "spec.ports")?
            .iter()
            .map(|p| Ok((text(p, "name")?.to_owned(), number(p, "port")?)))
            .collect()
    };
    assert_eq!(
        port_names(headless)?,
        [
            ("peer".to_owned(), u64::from(config.relay.peer_port)),
            ("gossip".to_owned(), u64::from(config.relay.gossip_port))
        ]
    );
    let public = services
        .iter()
        .find(|svc| at(svc, "spec.clusterIP").as_str() != Some("None"))
        .ok_or("no public Service")?;
    assert_eq!(
        port_names(public)?,
        [
            ("grpc".to_owned(), u64::from(config.cluster.grpc_port)),
            ("http".to_owned(), u64::from(config.relay.http_port))
        ],
        "the public Service carries the gRPC and HTTP ports only"
    );
    assert_eq!(at(public, "spec.selector"), labels);

    // Gossip seeds: one per replica, through the headless Service.
    let replicas = number(&sts, "spec.replicas")?;
    let expected: Vec<String> = (0..replicas)
        .map(|i| format!("{name}-{i}.{headless_name}:{}", config.relay.gossip_port))
        .collect();
    assert_eq!(config.relay.gossip_seeds, expected);
    assert_eq!(
        config.relay.gossip_advertise_address.as_deref(),
        Some(format!("{name}-0.{headless_name}:{}", config.relay.gossip_port).as_str())
    );
    assert_eq!(config.relay.name, format!("{name}-0"), "stable name = pod name");

    let pdb = find(&dir.join("poddisruptionbudget.yaml"), "PodDisruptionBudget", None)?;
    assert_eq!(number(&pdb, "spec.maxUnavailable")?, 1);
    assert_eq!(at(&pdb, "spec.selector.matchLabels"), labels);

    // The kustomization lists every other manifest here.
    let kustomization = find(&dir.join("kustomization.yaml"), "Kustomization", None)?;
    let mut listed: Vec<&str> = seq(&kustomization, "resources")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    listed.sort_unstable();
    let mut present: Vec<String> = yaml_files(&dir)?
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
        .filter(|f| f != "kustomization.yaml")
        .collect();
    present.sort();
    assert_eq!(listed, present);
    Ok(())
}

#[test]
fn guide_example_config_loads_with_its_env() -> Result<(), Error> {
    let text = std::fs::read_to_string(deploy_dir().join("aegis-config.yaml"))?;
    let mut env = BTreeMap::new();
    env.insert(
        "POSTGRES_DSN".to_owned(),
        "postgres://relay:pw@db:5432/aegis".to_owned(),
    );
    let config = config::parse_str(&text, &env)?;
    assert_eq!(config.cluster.grpc_port, config::DEFAULT_GRPC_PORT);
    Ok(())
}

#[test]
fn caddy_pod_points_at_the_relays_ports() -> Result<(), Error> {
    let pod = find(
        &deploy_dir().join("podman/pods/caddy/pod-caddy.yaml"),
        "Pod",
        None,
    )?;
    let env = seq(&pod, "spec.containers.0.env")?;
    let value = |name: &str| -> Result<String, Error> {
        Ok(text(
            env.iter()
                .find(|v| at(v, "name").as_str() == Some(name))
                .ok_or_else(|| format!("no {name}"))?,
            "value",
        )?
        .to_owned())
    };
    assert_eq!(
        value("RELAY_GRPC_UPSTREAMS")?,
        format!("relay-coordinator:{}", config::DEFAULT_GRPC_PORT)
    );
    assert_eq!(
        value("RELAY_HTTP_UPSTREAMS")?,
        format!("relay-coordinator:{}", config::DEFAULT_HTTP_PORT)
    );
    assert_eq!(value("RELAY_TLS")?, "");
    Ok(())
}

#[test]
fn containerfile_runs_the_binary_as_non_root_from_scratch() -> Result<(), Error> {
    let text = std::fs::read_to_string(deploy_dir().join("Containerfile"))?;
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.last().copied(), Some("FROM scratch"));
    let user = text
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .ok_or("no USER")?;
    assert!(!user.contains(" 0") && !user.contains("root"), "{user}");
    let expose = text
        .lines()
        .find(|l| l.starts_with("EXPOSE "))
        .ok_or("no EXPOSE")?;
    for port in [
        format!("{}/tcp", config::DEFAULT_GRPC_PORT),
        format!("{}/tcp", config::DEFAULT_HTTP_PORT),
        format!("{}/tcp", config::DEFAULT_PEER_PORT),
        format!("{}/udp", config::DEFAULT_GOSSIP_PORT),
    ] {
        assert!(expose.contains(&port), "{expose} lacks {port}");
    }
    Ok(())
}

/// The Caddyfile's placeholders, set as a test of the full profile would.
fn caddy_env(tls: &str) -> Vec<(&'static str, String)> {
    vec![
        ("DOMAIN_RELAY", "relay.example.com".to_owned()),
        (
            "RELAY_GRPC_UPSTREAMS",
            "relay-0:50056 relay-1:50056".to_owned(),
        ),
        ("RELAY_HTTP_UPSTREAMS", "relay-0:8080 relay-1:8080".to_owned()),
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
        if name.rsplit('/').next().is_some_and(|f| f.contains("caddyfile")) {
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
    assert!(text.contains("application/grpc*"), "gRPC matched by content type");
    assert!(text.contains("\"/v1/*\""));
    assert!(!text.contains("/metrics"), "/metrics is never routed");
    assert!(!text.contains("50057"), "the peer port is never routed");
    assert!(!json["apps"]["tls"].is_object(), "RELAY_TLS empty = ACME defaults");

    let internal: serde_json::Value = serde_json::from_slice(&caddy(&bin, "adapt", "internal")?.stdout)?;
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
            file.strip_prefix("pod-")?.strip_suffix(".yaml").map(str::to_owned)
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
            vec!["postgres", "openbao", "keycloak", "relay-coordinator", "caddy"],
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
        for secret in ["relay-postgres", "relay-openbao-approle", "relay-cluster-secret"] {
            let at = commands
                .iter()
                .position(|c| c.ends_with(&format!("secret-{secret}.yaml")))
                .ok_or_else(|| format!("{profile}: Secret {secret} not played"))?;
            assert!(bootstrap < at && at < relay, "{secret} between bootstrap and relay");
        }
        // Services come before the bootstrap and are never replaced.
        for service in ["postgres", "openbao", "keycloak"] {
            if let Some(at) = commands.iter().position(|c| c.ends_with(&format!("pod-{service}.yaml"))) {
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
