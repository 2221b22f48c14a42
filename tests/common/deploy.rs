//! Running the deploy scripts from tests: the bootstrap with a controlled
//! environment, its `changed: N` line, its failures, child processes that
//! end with the test.

use std::path::PathBuf;
use std::process::{Command, Output};

type Error = Box<dyn std::error::Error>;

pub const KEYCLOAK_VARS: [&str; 3] = [
    "KEYCLOAK_ENDPOINT",
    "KEYCLOAK_ADMIN",
    "KEYCLOAK_ADMIN_PASSWORD",
];
pub const OPENBAO_VARS: [&str; 2] = ["OPENBAO_ENDPOINT", "OPENBAO_TOKEN"];

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the bootstrap with exactly `env` among the deployment variables.
pub fn bootstrap(script: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Output, Error> {
    let mut command = Command::new(root().join("deploy/scripts").join(script));
    command.args(args);
    for var in OPENBAO_VARS.iter().chain(&KEYCLOAK_VARS) {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    Ok(command.output()?)
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The N of the closing `changed: N` line; the run must have succeeded.
pub fn changed(output: &Output) -> Result<u64, Error> {
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

pub fn failure(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(1), "{}", stdout(output));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn free_port_pair() -> Result<u16, Error> {
    for _ in 0..100 {
        let first = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = first.local_addr()?.port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return Ok(port);
        }
    }
    Err("no free pair of loopback ports".into())
}
