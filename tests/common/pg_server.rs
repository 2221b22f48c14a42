//! A private PostgreSQL server for tests that stop and restart it (readiness
//! under a database outage). Needs the server binaries: cluster/test sets
//! AEGIS_RELAY_TEST_PG_BIN.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A PostgreSQL cluster in a temporary directory on a free loopback port.
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres_user: bool,
}

impl PgServer {
    /// Creates and starts a new cluster; `None` (skip) when the binaries are
    /// not configured outside CI.
    pub fn start_new() -> Result<Option<Self>, Box<dyn std::error::Error>> {
        let Some(bin) = super::required_tool("AEGIS_RELAY_TEST_PG_BIN")? else {
            return Ok(None);
        };
        let dir = tempfile::tempdir()?;
        let as_postgres_user = is_root()?;
        if as_postgres_user {
            run(Command::new("chown").arg("postgres").arg(dir.path()))?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let server = Self {
            dir,
            bin: PathBuf::from(bin),
            port,
            as_postgres_user,
        };
        let data = server.data_dir();
        let mut initdb = server.command("initdb");
        initdb.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ]);
        run(&mut initdb)?;
        server.start()?;
        Ok(Some(server))
    }

    /// URL of the `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&self) -> Result<(), Box<dyn std::error::Error>> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("pg.log");
        let mut start = self.command("pg_ctl");
        start
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(log)
            .args(["-w", "start", "-o", &options]);
        run(&mut start)
    }

    /// Stops the server at once (like a crash).
    pub fn stop(&self) -> Result<(), Box<dyn std::error::Error>> {
        let mut stop = self.command("pg_ctl");
        stop.arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "stop"]);
        run(&mut stop)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let path = Path::new(&self.bin).join(program);
        if self.as_postgres_user {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn is_root() -> Result<bool, Box<dyn std::error::Error>> {
    let output = Command::new("id").arg("-u").output()?;
    Ok(String::from_utf8_lossy(&output.stdout).trim() == "0")
}

fn run(command: &mut Command) -> Result<(), Box<dyn std::error::Error>> {
    let output = command.output()?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
        .into())
    }
}
