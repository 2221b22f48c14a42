//! The files under deploy/ against the relay's own code: every manifest
//! parses; the relay's ports, probes, env, secret references, mounts and grace
//! period match the config its ConfigMap holds, as `aegis_relay::config` loads
//! it (defaults included). The Caddyfile and deploy.sh are in deploy_scripts.rs.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aegis_relay::config::{self, Config, SignerKind};
use aegis_relay::grpc::{LIVENESS_SERVICES, READINESS_SERVICE};
use serde::Deserialize;
use serde_norway::Value;

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
    for doc in serde_norway::Deserializer::from_str(&text) {
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
    let container = seq(pod_spec, "containers")?.first().ok_or("no container")?;
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
    assert_eq!(text(dsn, "valueFrom.secretKeyRef.name")?, "relay-postgres");
    assert_eq!(text(dsn, "valueFrom.secretKeyRef.key")?, "dsn");
    assert!(at(dsn, "value").is_null(), "the DSN is never inline");

    // Callers' tokens carry the audience the bootstrap's mapper adds.
    let keycloak = config.keycloak.as_ref().ok_or("no keycloak block")?;
    assert_eq!(keycloak.audience.as_deref(), Some(config::DEFAULT_AUDIENCE));

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
    let configmap = find(
        &dir.join("configmap.yaml"),
        "ConfigMap",
        Some("relay-config"),
    )?;
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
    assert_eq!(
        config.relay.name,
        format!("{name}-0"),
        "stable name = pod name"
    );

    let pdb = find(
        &dir.join("poddisruptionbudget.yaml"),
        "PodDisruptionBudget",
        None,
    )?;
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
