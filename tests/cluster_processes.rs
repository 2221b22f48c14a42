//! Several `aegis-relay run` processes on one machine with no other set-up:
//! their own `relay.name` and ports, one `relay.data_dir` (SQLite store and
//! signing key), one secret file and two seeds form a cluster; a replica
//! killed with SIGKILL leaves every survivor's `members` within 3 s (the
//! failure detector's defaults, on real processes and real UDP).
//!
//! Prints the convergence and detection times and the gossip traffic per
//! replica. `cargo test --test cluster_processes -- --ignored --nocapture`
//! runs the five-replica measurement quoted in the README.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::replica_processes::{members, write_configs, Layout, ReplicaProcess};
use common::{counter_value, eventually, http_get_url};

type Error = Box<dyn std::error::Error>;

/// The detection target on real processes.
const DETECTION_LIMIT: Duration = Duration::from_secs(3);

/// Every replica sees every name serving, with one epoch.
async fn converged(replicas: &[ReplicaProcess], bearer: &str) -> Option<String> {
    let all: BTreeSet<String> = replicas.iter().map(|r| r.name.clone()).collect();
    let mut epochs = BTreeSet::new();
    for replica in replicas {
        let status = replica.status(bearer).await?;
        let serving: BTreeSet<String> = status["ring"]["shares"]
            .as_object()?
            .keys()
            .cloned()
            .collect();
        (members(&status) == all && serving == all).then_some(())?;
        epochs.insert(status["ring"]["epoch"].as_str()?.to_owned());
    }
    (epochs.len() == 1).then(|| epochs.into_iter().next())?
}

async fn sent_bytes(replica: &ReplicaProcess) -> Result<f64, Error> {
    let (_, body) = http_get_url(&format!("{}/metrics", replica.http())).await?;
    Ok(counter_value(&body, "aegis_relay_gossip_sent_bytes_total"))
}

async fn cluster_of(count: usize) -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let names: Vec<String> = (0..count).map(|index| format!("relay-{index}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let replicas = write_configs(
        dir.path(),
        &Layout {
            names: &names,
            gossip: true,
            ..Layout::default()
        },
    )?;
    // Migrated before any replica starts: replicas starting together would
    // race to migrate one SQLite file and to create one signing key.
    replicas[0].migrate()?;
    let bearer = replicas[0].bearer(None)?;
    let started = tokio::time::Instant::now();
    let mut processes = Vec::new();
    for replica in &replicas {
        processes.push(replica.spawn()?);
    }
    let epoch = eventually(Duration::from_secs(60), "the replicas to converge", || {
        let exited = processes
            .iter_mut()
            .any(|p| p.0.try_wait().ok().flatten().is_some());
        let check = converged(&replicas, &bearer);
        async move {
            if exited {
                return Some(Err("a replica exited".to_owned()));
            }
            check.await.map(Ok)
        }
    })
    .await
    .and_then(|result| result)
    .map_err(|err| {
        let logs: String = replicas.iter().map(|r| r.with_log("")).collect();
        format!("{err}\n{logs}")
    })?;
    eprintln!(
        "{count} run processes converged (epoch {epoch}) {:?} after spawning",
        started.elapsed()
    );

    // Gossip traffic at steady state, per replica.
    let window = Duration::from_secs(5);
    let before = sent_bytes(&replicas[0]).await?;
    tokio::time::sleep(window).await;
    let rate = (sent_bytes(&replicas[0]).await? - before) / window.as_secs_f64();
    eprintln!(
        "{count} replicas: relay-0 sends {rate:.0} gossip bytes/s (UDP payload, authenticated)"
    );

    // SIGKILL the last one; every survivor drops it from `members`.
    let victim = &replicas[count - 1];
    let mut killed = processes.pop().ok_or("no process")?;
    killed.0.kill()?;
    let killed_at = tokio::time::Instant::now();
    let survivors = &replicas[..count - 1];
    eventually(
        Duration::from_secs(30),
        "the survivors to drop the killed replica",
        || async {
            for replica in survivors {
                let status = replica.status(&bearer).await?;
                members(&status)
                    .contains(&victim.name)
                    .then_some(())
                    .map_or(Some(()), |()| None)?;
            }
            Some(())
        },
    )
    .await?;
    let detected = killed_at.elapsed();
    eprintln!(
        "{} (gossip port {}) killed with SIGKILL: gone from every survivor's members after {detected:?}",
        victim.name,
        victim.gossip_port.unwrap_or_default()
    );
    assert!(
        detected <= DETECTION_LIMIT,
        "detection took {detected:?}, over {DETECTION_LIMIT:?}"
    );
    for survivor in survivors {
        let status = survivor.status(&bearer).await.ok_or("no status")?;
        assert_eq!(
            status["ring"]["shares"].as_object().map(|s| s.len()),
            Some(count - 1)
        );
    }
    drop(killed);
    Ok(())
}

#[tokio::test]
async fn three_run_processes_form_a_cluster_and_detect_a_kill_within_3_s() -> Result<(), Error> {
    cluster_of(3).await
}

#[tokio::test]
#[ignore = "measurement for the README: five processes"]
async fn five_run_processes_measurement() -> Result<(), Error> {
    cluster_of(5).await
}
