//! `aegis-relay check-config` and `run` on bad configs: exit code 2 and a
//! message naming the key path and the reason, one test per kind of mistake.

use std::path::Path;
use std::process::{Command, Output};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const BIN: &str = env!("CARGO_BIN_EXE_aegis-relay");

const VALID: &str = "cluster:\n  enabled: true\n  role: relay-coordinator\n  cluster_grpc_port: 50056\n  ingress:\n    public_endpoint: relay.example.com\n";

fn run_with(
    args: &[&str],
    config_text: &str,
    env: &[(&str, &str)],
) -> Result<Output, std::io::Error> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("aegis-config.yaml");
    std::fs::write(&path, config_text)?;
    let mut command = Command::new(BIN);
    command.args(args).arg("--config").arg(&path);
    for var in [
        "AEGIS_ROLE",
        "KEYCLOAK_ENDPOINT",
        "OPENBAO_ENDPOINT",
        "POSTGRES_DSN",
        "AEGIS_RELAY_CONFIG",
    ] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    command.output()
}

fn assert_config_error(output: &Output, key: &str, reason: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!("{key}:")),
        "expected key {key}: {stderr}"
    );
    assert!(stderr.contains(reason), "expected {reason:?}: {stderr}");
}

#[test]
fn valid_config_checks_out() -> TestResult {
    let output = run_with(&["check-config"], VALID, &[])?;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("valid aegis-relay config"));
    Ok(())
}

#[test]
fn unknown_key() -> TestResult {
    let text = VALID.replace("  enabled: true\n", "  enabled: true\n  replicas: 3\n");
    let output = run_with(&["check-config"], &text, &[])?;
    assert_config_error(&output, "cluster.replicas", "unknown field");
    Ok(())
}

#[test]
fn wrong_type() -> TestResult {
    let text = format!("{VALID}relay:\n  gossip_seeds: 10.0.0.1:7946\n");
    let output = run_with(&["check-config"], &text, &[])?;
    assert_config_error(&output, "relay.gossip_seeds", "invalid type");
    Ok(())
}

#[test]
fn bad_port() -> TestResult {
    let text = VALID.replace("50056", "70000");
    let output = run_with(&["check-config"], &text, &[])?;
    assert_config_error(&output, "cluster.cluster_grpc_port", "between 1 and 65535");
    Ok(())
}

#[test]
fn role_other_than_relay_coordinator() -> TestResult {
    let output = run_with(
        &["check-config"],
        &VALID.replace("relay-coordinator", "controller"),
        &[],
    )?;
    assert_config_error(&output, "cluster.role", "relay-coordinator");
    let output = run_with(&["check-config"], VALID, &[("AEGIS_ROLE", "edge")])?;
    assert_config_error(&output, "cluster.role", "\"edge\"");
    Ok(())
}

#[test]
fn unset_variable() -> TestResult {
    let text = format!("{VALID}keycloak:\n  endpoint: ${{KC_URL_NOT_SET}}\n");
    let output = run_with(&["check-config"], &text, &[])?;
    assert_config_error(&output, "keycloak.endpoint", "KC_URL_NOT_SET is not set");
    Ok(())
}

#[test]
fn aegis_node_config_shape() -> TestResult {
    let text = "apiVersion: 100monkeys.ai/v1\nkind: NodeConfig\nmetadata:\n  name: relay\nspec:\n  cluster:\n    role: relay-coordinator\n";
    let output = run_with(&["check-config"], text, &[])?;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("AEGIS NodeConfig"), "{stderr}");
    assert!(stderr.contains("role: relay-coordinator"), "{stderr}");
    Ok(())
}

#[test]
fn run_refuses_a_bad_config_at_start_with_code_2() -> TestResult {
    let output = run_with(&["run"], &VALID.replace("50056", "0"), &[])?;
    assert_config_error(&output, "cluster.cluster_grpc_port", "between 1 and 65535");
    Ok(())
}

#[test]
fn missing_file_is_a_config_error() -> TestResult {
    let output = Command::new(BIN)
        .args(["check-config", "--config", "/nonexistent/aegis-config.yaml"])
        .output()?;
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read config file"));
    Ok(())
}

#[test]
fn deploy_example_loads_when_postgres_dsn_is_set() -> TestResult {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/aegis-config.yaml");
    let text = std::fs::read_to_string(example)?;
    let output = run_with(
        &["check-config"],
        &text,
        &[("POSTGRES_DSN", "postgres://relay@db:5432/aegis")],
    )?;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = run_with(&["check-config"], &text, &[])?;
    assert_config_error(&output, "postgres.dsn", "POSTGRES_DSN is not set");
    Ok(())
}

#[test]
fn ignored_controller_blocks_warn() -> TestResult {
    let text = format!("{VALID}builtin_dispatchers: {{}}\n");
    let output = run_with(&["check-config"], &text, &[])?;
    assert_eq!(output.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("warning: builtin_dispatchers: ignored")
    );
    Ok(())
}

/// A clustered `run` (seeds set) needs a valid secret file before it
/// starts anything; the secret never appears in the message.
#[test]
fn clustered_run_without_a_valid_secret_file_exits_2_naming_the_key() -> TestResult {
    let dir = tempfile::tempdir()?;
    let clustered = |secret_file: &Path| {
        format!(
            "{VALID}relay:\n  data_dir: {}\n  gossip_seeds: [\"127.0.0.1:7946\"]\n  \
             gossip_advertise_address: 127.0.0.1:7946\n  bind_address: 127.0.0.1\n  \
             cluster_secret_file: {}\n",
            dir.path().display(),
            secret_file.display()
        )
    };
    let missing = dir.path().join("no-such-secret");
    let output = run_with(&["run"], &clustered(&missing), &[])?;
    assert_config_error(&output, "relay.cluster_secret_file", "cannot read");

    let short = dir.path().join("short-secret");
    std::fs::write(&short, "tiny-secret-value\n")?;
    let output = run_with(&["run"], &clustered(&short), &[])?;
    assert_config_error(&output, "relay.cluster_secret_file", "at least");
    assert!(!String::from_utf8_lossy(&output.stderr).contains("tiny-secret-value"));
    Ok(())
}
