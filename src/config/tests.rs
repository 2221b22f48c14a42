//! Config loading against the rules of the deployment guide and issue text:
//! one test per kind of bad input, each asserting the key path and reason.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

const GUIDE_EXAMPLE: &str = include_str!("../../deploy/aegis-config.yaml");

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn error_text(text: &str, env: &BTreeMap<String, String>) -> String {
    match parse_str(text, env) {
        Ok(config) => format!("unexpectedly valid: {config:?}"),
        Err(err) => err.to_string(),
    }
}

const MINIMAL: &str =
    "cluster:\n  role: relay-coordinator\n  ingress:\n    public_endpoint: relay.example.com\n";

#[test]
fn guide_example_loads_when_postgres_dsn_is_set() -> Result<(), ConfigError> {
    let env = env(&[("POSTGRES_DSN", "postgres://relay:pw@db:5432/aegis")]);
    let config = parse_str(GUIDE_EXAMPLE, &env)?;
    assert_eq!(config.cluster.grpc_port, 50056);
    assert_eq!(config.cluster.public_endpoint, "relay.example.com");
    assert_eq!(
        config.keycloak.as_ref().map(|kc| kc.issuer_url()),
        Some("https://auth.example.com/realms/aegis-system".to_owned())
    );
    assert_eq!(config.relay.signer, SignerKind::Local);
    assert_eq!(config.relay.rotation_overlap, Duration::from_secs(60));
    assert_eq!(config.relay.attest_rate_limit.burst, 50);
    assert_eq!(
        config.postgres.as_ref().map(|pg| pg.dsn.expose()),
        Some("postgres://relay:pw@db:5432/aegis")
    );
    assert_eq!(
        config.postgres.as_ref().map(|pg| pg.shared_with_aegis),
        Some(false)
    );
    assert_eq!(config.relay.bind_address.to_string(), "0.0.0.0");
    assert_eq!(config.relay.http_port, 8080);
    assert_eq!(config.relay.drain_timeout, Duration::from_secs(20));
    Ok(())
}

#[test]
fn guide_example_without_postgres_dsn_names_the_variable() {
    let text = error_text(GUIDE_EXAMPLE, &env(&[]));
    assert!(text.starts_with("postgres.dsn:"), "{text}");
    assert!(text.contains("POSTGRES_DSN is not set"), "{text}");
}

#[test]
fn unknown_key_is_refused_with_its_path() {
    let text = error_text(
        "cluster:\n  role: relay-coordinator\n  colour: blue\n  ingress:\n    public_endpoint: r\n",
        &env(&[]),
    );
    assert!(text.starts_with("cluster.colour:"), "{text}");
    assert!(text.contains("unknown field"), "{text}");
}

#[test]
fn unknown_top_level_block_is_refused() {
    let text = error_text(&format!("{MINIMAL}relays:\n  name: x\n"), &env(&[]));
    assert!(text.starts_with("relays:"), "{text}");
}

#[test]
fn wrong_type_names_the_key_and_expected_type() {
    let text = error_text(
        &format!("{MINIMAL}relay:\n  drain_timeout: [1, 2]\n"),
        &env(&[]),
    );
    assert!(text.starts_with("relay.drain_timeout:"), "{text}");
    assert!(text.contains("invalid type"), "{text}");
    let text = error_text(
        "cluster:\n  enabled: maybe\n  role: relay-coordinator\n  ingress:\n    public_endpoint: r\n",
        &env(&[]),
    );
    assert!(text.starts_with("cluster.enabled:"), "{text}");
}

#[test]
fn bad_ports_are_refused() {
    for port in ["0", "70000", "-5", "http"] {
        let text = error_text(
            &format!("cluster:\n  role: relay-coordinator\n  cluster_grpc_port: {port}\n  ingress:\n    public_endpoint: r\n"),
            &env(&[]),
        );
        assert!(
            text.starts_with("cluster.cluster_grpc_port:"),
            "{port}: {text}"
        );
    }
    let text = error_text(&format!("{MINIMAL}relay:\n  http_port: 50056\n"), &env(&[]));
    assert!(text.starts_with("relay.http_port:"), "{text}");
}

#[test]
fn role_other_than_relay_coordinator_is_refused() {
    let text = error_text(
        "cluster:\n  role: controller\n  ingress:\n    public_endpoint: r\n",
        &env(&[]),
    );
    assert!(text.starts_with("cluster.role:"), "{text}");
    assert!(text.contains("relay-coordinator"), "{text}");
}

#[test]
fn aegis_role_env_overrides_the_file() {
    let text = error_text(MINIMAL, &env(&[("AEGIS_ROLE", "worker")]));
    assert!(text.starts_with("cluster.role:"), "{text}");
    let no_role = "cluster:\n  ingress:\n    public_endpoint: r\n";
    assert!(parse_str(no_role, &env(&[("AEGIS_ROLE", "relay-coordinator")])).is_ok());
}

#[test]
fn endpoint_env_overrides_apply() -> Result<(), ConfigError> {
    let config = parse_str(
        MINIMAL,
        &env(&[
            ("KEYCLOAK_ENDPOINT", "https://auth.test"),
            ("OPENBAO_ENDPOINT", "http://127.0.0.1:8200"),
            ("POSTGRES_DSN", "postgresql://localhost/db"),
        ]),
    )?;
    assert_eq!(
        config.keycloak.as_ref().map(|kc| kc.endpoint.as_str()),
        Some("https://auth.test")
    );
    assert_eq!(
        config.openbao.as_ref().map(|bao| bao.endpoint.as_str()),
        Some("http://127.0.0.1:8200")
    );
    assert!(config.postgres.is_some());
    Ok(())
}

#[test]
fn unset_variable_is_refused_with_path() {
    let text = error_text(
        "cluster:\n  role: relay-coordinator\n  ingress:\n    public_endpoint: ${PUBLIC_HOST}\n",
        &env(&[]),
    );
    assert!(
        text.starts_with("cluster.ingress.public_endpoint:"),
        "{text}"
    );
    assert!(text.contains("PUBLIC_HOST"), "{text}");
}

#[test]
fn variables_expand_including_numbers() -> Result<(), ConfigError> {
    let config = parse_str(
        "cluster:\n  role: relay-coordinator\n  cluster_grpc_port: $PORT\n  ingress:\n    public_endpoint: $HOST\n",
        &env(&[("PORT", "50099"), ("HOST", "relay.test")]),
    )?;
    assert_eq!(config.cluster.grpc_port, 50099);
    assert_eq!(config.cluster.public_endpoint, "relay.test");
    Ok(())
}

#[test]
fn aegis_node_config_shape_is_refused_with_the_expected_shape() {
    let text = error_text(
        "apiVersion: 100monkeys.ai/v1\nkind: NodeConfig\nspec:\n  cluster:\n    role: relay-coordinator\n",
        &env(&[]),
    );
    assert!(text.contains("AEGIS NodeConfig"), "{text}");
    assert!(text.contains("cluster"), "{text}");
}

#[test]
fn controller_blocks_are_ignored_with_a_warning() -> Result<(), ConfigError> {
    let config = parse_str(
        &format!("{MINIMAL}mcp_servers: []\nsecurity_contexts:\n  - name: zaru-free\n"),
        &env(&[]),
    )?;
    assert_eq!(config.warnings.len(), 2);
    assert!(config.warnings[0].starts_with("mcp_servers: ignored"));
    Ok(())
}

#[test]
fn caller_settings_default_to_the_relay_client_and_no_local_tokens() -> Result<(), ConfigError> {
    let env = env(&[("POSTGRES_DSN", "postgres://relay:pw@db:5432/aegis")]);
    let guide = parse_str(GUIDE_EXAMPLE, &env)?;
    let audience = |config: &Config| config.keycloak.as_ref().and_then(|kc| kc.audience.clone());
    assert_eq!(audience(&guide).as_deref(), Some(DEFAULT_AUDIENCE));
    assert!(!guide.relay.accept_local_admin_tokens);
    assert!(guide.warnings.is_empty(), "{:?}", guide.warnings);

    let keycloak = |audience: &str| {
        format!("{MINIMAL}keycloak:\n  endpoint: https://kc\n  audience: {audience}\n")
    };
    let any = parse_str(&keycloak("\"*\""), &env)?;
    assert_eq!(audience(&any), None);
    assert_eq!(any.warnings.len(), 1);
    assert!(
        any.warnings[0].starts_with("keycloak.audience:"),
        "{:?}",
        any.warnings
    );
    let own = parse_str(&keycloak("my-relay"), &env)?;
    assert_eq!(audience(&own).as_deref(), Some("my-relay"));
    let text = error_text(&keycloak("\"\""), &env);
    assert!(text.starts_with("keycloak.audience:"), "{text}");

    let local = parse_str(
        &format!("{MINIMAL}relay:\n  accept_local_admin_tokens: true\n"),
        &env,
    )?;
    assert!(local.relay.accept_local_admin_tokens);
    Ok(())
}

#[test]
fn relay_block_is_read() -> Result<(), ConfigError> {
    let config = parse_str(
        &format!(
            "{MINIMAL}relay:\n  name: relay-2\n  bind_address: 127.0.0.1\n  http_port: 18080\n  \
             peer_port: 50058\n  gossip_port: 7947\n  gossip_seeds: [\"10.0.0.1:7946\"]\n  \
             cluster_id: prod\n  cluster_secret_file: /run/secret\n  drain_timeout: 500ms\n  \
             heartbeat_timeout: 45\n  log_format: json\n"
        ),
        &env(&[]),
    )?;
    assert_eq!(config.relay.name, "relay-2");
    assert_eq!(config.relay.http_port, 18080);
    assert_eq!(config.relay.gossip_seeds, vec!["10.0.0.1:7946".to_owned()]);
    assert_eq!(config.relay.drain_timeout, Duration::from_millis(500));
    assert_eq!(config.relay.heartbeat_timeout, Duration::from_secs(45));
    assert_eq!(config.relay.log_format, LogFormat::Json);
    assert_eq!(
        config.relay.sessions.heartbeat_timeout,
        Duration::from_secs(45)
    );
    Ok(())
}

#[test]
fn edge_session_and_fleet_history_settings_are_read() -> Result<(), ConfigError> {
    let config = parse_str(
        &format!(
            "{MINIMAL}relay:\n  edges:\n    clock_skew: 2m\n    max_message_bytes: 1048576\n    \
             idempotency_retention: 30m\n  fleet_runs:\n    per_tenant: 5\n    max_age: 1h\n    \
             flush_interval: 100ms\n    lost_after: 30s\n"
        ),
        &env(&[]),
    )?;
    assert_eq!(config.relay.sessions.clock_skew, Duration::from_secs(120));
    assert_eq!(
        config.relay.sessions.idempotency_retention,
        Duration::from_secs(1800)
    );
    assert_eq!(config.relay.max_message_bytes, 1_048_576);
    assert_eq!(config.relay.fleet_runs.per_tenant, 5);
    assert_eq!(config.relay.fleet_runs.max_age, Duration::from_secs(3600));
    assert_eq!(
        config.relay.fleet_runs.flush_interval,
        Duration::from_millis(100)
    );
    assert_eq!(config.relay.fleet_runs.lost_after, Duration::from_secs(30));
    Ok(())
}

#[test]
fn bad_relay_values_name_their_keys() {
    for (snippet, key) in [
        ("relay:\n  bind_address: localhost\n", "relay.bind_address:"),
        ("relay:\n  name: Relay_1\n", "relay.name:"),
        (
            "relay:\n  gossip_seeds: [\"10.0.0.1\"]\n",
            "relay.gossip_seeds[0]:",
        ),
        ("relay:\n  drain_timeout: soon\n", "relay.drain_timeout:"),
        ("relay:\n  log_format: xml\n", "relay.log_format:"),
        (
            "relay:\n  edges:\n    clock_skew: 0s\n",
            "relay.edges.clock_skew:",
        ),
        (
            "relay:\n  edges:\n    max_message_bytes: 10\n",
            "relay.edges.max_message_bytes:",
        ),
        (
            "relay:\n  edges:\n    store_flush_interval: 2m\n",
            "relay.edges.store_flush_interval:",
        ),
        ("relay:\n  edges:\n    colour: red\n", "relay.edges"),
        (
            "relay:\n  fleet_runs:\n    per_tenant: 0\n",
            "relay.fleet_runs.per_tenant:",
        ),
        (
            "relay:\n  fleet_runs:\n    flush_interval: 1m\n",
            "relay.fleet_runs.flush_interval:",
        ),
        (
            "relay:\n  fleet_runs:\n    lost_after: 100ms\n",
            "relay.fleet_runs.lost_after:",
        ),
    ] {
        let text = error_text(&format!("{MINIMAL}{snippet}"), &env(&[]));
        assert!(text.starts_with(key), "{snippet}: {text}");
    }
}

#[test]
fn postgres_dsn_is_never_echoed() {
    let text = error_text(
        &format!("{MINIMAL}postgres:\n  dsn: mysql://user:hunter2@db\n"),
        &env(&[]),
    );
    assert!(text.starts_with("postgres.dsn:"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn missing_cluster_and_endpoint_say_what_to_set() {
    let text = error_text("keycloak:\n  endpoint: https://a\n", &env(&[]));
    assert!(text.starts_with("cluster:"), "{text}");
    let text = error_text("cluster:\n  role: relay-coordinator\n", &env(&[]));
    assert!(
        text.starts_with("cluster.ingress.public_endpoint:"),
        "{text}"
    );
}

#[test]
fn shared_mode_needs_a_dsn_and_data_dir_defaults() -> Result<(), ConfigError> {
    let text = error_text(
        &format!("{MINIMAL}postgres:\n  shared_with_aegis: true\n"),
        &env(&[]),
    );
    assert!(text.starts_with("postgres.shared_with_aegis:"), "{text}");
    let config = parse_str(
        &format!("{MINIMAL}postgres:\n  dsn: postgres://db/aegis\n  shared_with_aegis: true\n"),
        &env(&[]),
    )?;
    assert_eq!(config.postgres.map(|pg| pg.shared_with_aegis), Some(true));
    assert_eq!(
        config.relay.data_dir,
        std::path::PathBuf::from(DEFAULT_DATA_DIR)
    );
    Ok(())
}

#[test]
fn openbao_signer_names_missing_approle_settings() -> Result<(), ConfigError> {
    let text = format!(
        "{MINIMAL}openbao:\n  endpoint: http://127.0.0.1:8200\nrelay:\n  signer: openbao\n"
    );
    let error = error_text(&text, &env(&[]));
    assert!(error.starts_with("relay.signer:"), "{error}");
    assert!(
        error.contains("openbao.approle.role_id_file (or env OPENBAO_ROLE_ID)"),
        "{error}"
    );
    assert!(error.contains("OPENBAO_SECRET_ID"), "{error}");
    let config = parse_str(
        &text,
        &env(&[("OPENBAO_ROLE_ID", "r"), ("OPENBAO_SECRET_ID", "s")]),
    )?;
    assert_eq!(config.relay.signer, SignerKind::OpenBao);
    let no_endpoint = error_text(&format!("{MINIMAL}relay:\n  signer: openbao\n"), &env(&[]));
    assert!(no_endpoint.contains("openbao.endpoint"), "{no_endpoint}");
    Ok(())
}

#[test]
fn identity_keys_are_checked() {
    for (snippet, key) in [
        ("relay:\n  signer: vault\n", "relay.signer:"),
        ("relay:\n  signing_scheme: ps256\n", "relay.signing_scheme:"),
        (
            "relay:\n  attest_rate_limit:\n    per_second: 0\n",
            "relay.attest_rate_limit.per_second:",
        ),
        (
            "relay:\n  attest_rate_limit:\n    trusted_proxies: [proxy]\n",
            "relay.attest_rate_limit.trusted_proxies[0]:",
        ),
        ("keycloak:\n  realm: aegis\n", "keycloak.endpoint:"),
        (
            "keycloak:\n  endpoint: https://kc\n  claims:\n    tenant: a..b\n",
            "keycloak.claims.tenant:",
        ),
    ] {
        let text = error_text(&format!("{MINIMAL}{snippet}"), &env(&[]));
        assert!(text.starts_with(key), "{snippet}: {text}");
    }
}
