//! Membership on simulated time and network: five replicas run the real
//! membership module (chitchat over the turmoil UDP seam, authenticated
//! transport) and the failure detector's default settings.
//!
//! - a crashed replica is seen dead by every survivor within 2.5 s, and a
//!   new one is seen by all within 2 s;
//! - 10 simulated minutes at 30 % UDP loss bring no false dead verdict;
//! - a replica with another secret or cluster id never appears, and its
//!   datagrams are counted dropped;
//! - rotating the secret replica by replica never splits the cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aegis_relay::membership::{
    ClusterSecrets, FailureDetectorSettings, GossipSettings, Membership, MembershipSettings, Phase,
    View,
};
use aegis_relay::telemetry::Metrics;
use aegis_relay_simulation::sim_runtime;

const PORT: u16 = 7946;
const CLUSTER: &str = "sim";
const OLD: &str = "old-cluster-secret-0123456789abcdef0123456789";
const NEW: &str = "new-cluster-secret-0123456789abcdef0123456789";
const SEEDS: [&str; 2] = ["r0", "r1"];

type Error = Box<dyn std::error::Error>;

/// A host's secret file lines and cluster id.
type HostConfig = (Vec<&'static str>, &'static str);

/// What each host publishes for the test to read (turmoil runs every host
/// on the test's thread).
#[derive(Default, Clone)]
struct Shared {
    views: Arc<Mutex<BTreeMap<String, Arc<View>>>>,
    metrics: Arc<Mutex<BTreeMap<String, Metrics>>>,
    /// Per host: the secret file's lines and the cluster id it starts with.
    configs: Arc<Mutex<BTreeMap<String, HostConfig>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn view(&self, host: &str) -> Option<Arc<View>> {
        lock(&self.views).get(host).cloned()
    }

    /// Names of the members `host` sees.
    fn seen_by(&self, host: &str) -> BTreeSet<String> {
        self.view(host)
            .map(|view| {
                view.snapshot
                    .members()
                    .iter()
                    .map(|m| m.name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn serving_seen_by(&self, host: &str) -> BTreeSet<String> {
        self.view(host)
            .map(|view| view.snapshot.serving_names())
            .unwrap_or_default()
    }

    fn counter(&self, host: &str, line: &str) -> f64 {
        let rendered = lock(&self.metrics)
            .get(host)
            .map(Metrics::render)
            .unwrap_or_default();
        rendered
            .lines()
            .find_map(|l| l.strip_prefix(line).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }
}

fn names(hosts: &[&str]) -> BTreeSet<String> {
    hosts.iter().map(|h| (*h).to_owned()).collect()
}

/// A replica running only membership, reading its secret lines and cluster
/// id from `shared` at every (re)start.
fn add_replica(sim: &mut turmoil::Sim<'_>, name: &'static str, seed: u64, shared: &Shared) {
    let shared = shared.clone();
    sim.host(name, move || {
        let shared = shared.clone();
        async move {
            let (lines, cluster) = lock(&shared.configs)
                .get(name)
                .cloned()
                .unwrap_or((vec![OLD], CLUSTER));
            let seeds = SEEDS
                .iter()
                .map(|host| SocketAddr::new(turmoil::lookup(*host), PORT).to_string())
                .collect();
            let settings = MembershipSettings {
                name: name.to_owned(),
                peer_url: format!("http://{name}:50057"),
                gossip: Some(GossipSettings {
                    listen: SocketAddr::from(([0, 0, 0, 0], PORT)),
                    advertise: SocketAddr::new(turmoil::lookup(name), PORT),
                    seeds,
                    cluster_id: cluster.to_owned(),
                    secrets: ClusterSecrets::parse(&lines.join("\n"))?,
                    interval: Duration::from_millis(300),
                    failure_detector: FailureDetectorSettings::default(),
                }),
            };
            let metrics = Metrics::new(name);
            let runtime = sim_runtime(seed);
            let (membership, task) = Membership::start(settings, &runtime, metrics.clone()).await?;
            lock(&shared.metrics).insert(name.to_owned(), metrics);
            membership.set_phase(Phase::Serving).await;
            publish_views(&membership, &shared, name).await;
            drop(task);
            Ok(())
        }
    });
}

async fn publish_views(membership: &Membership, shared: &Shared, name: &str) {
    let mut views = membership.subscribe();
    loop {
        let view = Arc::clone(&views.borrow_and_update());
        lock(&shared.views).insert(name.to_owned(), view);
        if views.changed().await.is_err() {
            return;
        }
    }
}

fn sim(seed: u64) -> turmoil::Sim<'static> {
    turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(Duration::from_secs(3600))
        .tick_duration(Duration::from_millis(2))
        .max_message_latency(Duration::from_millis(10))
        .build()
}

/// Steps until `done` holds; returns the simulated time it took.
fn run_until(
    sim: &mut turmoil::Sim<'_>,
    limit: Duration,
    what: &str,
    mut done: impl FnMut() -> bool,
) -> Result<Duration, Error> {
    let start = sim.elapsed();
    while !done() {
        if sim.elapsed() - start > limit {
            return Err(format!("not within {limit:?} of simulated time: {what}").into());
        }
        sim.step()?;
    }
    Ok(sim.elapsed() - start)
}

/// Steps for `duration`, failing as soon as `invariant` breaks.
fn run_keeping(
    sim: &mut turmoil::Sim<'_>,
    duration: Duration,
    what: &str,
    mut invariant: impl FnMut() -> Result<(), String>,
) -> Result<(), Error> {
    let start = sim.elapsed();
    while sim.elapsed() - start < duration {
        sim.step()?;
        invariant().map_err(|why| format!("{what} at {:?}: {why}", sim.elapsed()))?;
    }
    Ok(())
}

fn converge(
    sim: &mut turmoil::Sim<'_>,
    shared: &Shared,
    hosts: &[&str],
    limit: Duration,
) -> Result<Duration, Error> {
    let all = names(hosts);
    run_until(sim, limit, "every replica serving in every view", || {
        hosts.iter().all(|host| shared.serving_seen_by(host) == all)
    })
}

const FIVE: [&str; 5] = ["r0", "r1", "r2", "r3", "r4"];

#[test]
fn a_crash_is_seen_within_2_5_s_and_a_newcomer_within_2_s() -> Result<(), Error> {
    let mut sim = sim(1);
    let shared = Shared::default();
    for (seed, name) in FIVE.iter().enumerate() {
        add_replica(&mut sim, name, seed as u64, &shared);
    }
    let converged = converge(&mut sim, &shared, &FIVE, Duration::from_secs(10))?;
    eprintln!("5 replicas converged in {converged:?} (simulated)");
    // Ten quiet seconds: the failure detector settles, gossip traffic is
    // measured (goal: at most 6 KB/s per replica at N = 5, authenticated).
    let sent = |shared: &Shared| -> f64 {
        FIVE.iter()
            .map(|host| shared.counter(host, "aegis_relay_gossip_sent_bytes_total"))
            .sum()
    };
    let (before, started) = (sent(&shared), sim.elapsed());
    run_keeping(
        &mut sim,
        Duration::from_secs(10),
        "steady membership",
        || Ok(()),
    )?;
    let per_replica = (sent(&shared) - before) / (sim.elapsed() - started).as_secs_f64() / 5.0;
    eprintln!("gossip sent per replica at N=5: {per_replica:.0} B/s (simulated)");
    assert!(per_replica <= 6000.0, "{per_replica:.0} B/s per replica");

    sim.crash("r4");
    let survivors = &FIVE[..4];
    let detected = run_until(
        &mut sim,
        Duration::from_millis(2500),
        "r4 seen dead by all",
        || {
            survivors
                .iter()
                .all(|host| !shared.seen_by(host).contains("r4"))
        },
    )?;
    eprintln!("crash of r4 seen by every survivor after {detected:?} (simulated)");

    add_replica(&mut sim, "r5", 5, &shared);
    let joined = run_until(&mut sim, Duration::from_secs(2), "r5 seen by all", || {
        survivors
            .iter()
            .all(|host| shared.serving_seen_by(host).contains("r5"))
    })?;
    eprintln!("newcomer r5 seen serving by every replica after {joined:?} (simulated)");
    Ok(())
}

#[test]
fn thirty_percent_loss_for_ten_minutes_brings_no_false_dead_verdict() -> Result<(), Error> {
    let mut sim = sim(2);
    let shared = Shared::default();
    for (seed, name) in FIVE.iter().enumerate() {
        add_replica(&mut sim, name, seed as u64, &shared);
    }
    converge(&mut sim, &shared, &FIVE, Duration::from_secs(10))?;
    sim.set_fail_rate(0.3);
    let all = names(&FIVE);
    let sent_before = shared.counter("r2", "aegis_relay_gossip_sent_bytes_total");
    let started = sim.elapsed();
    run_keeping(
        &mut sim,
        Duration::from_secs(600),
        "no false dead verdict",
        || {
            for host in FIVE {
                let seen = shared.serving_seen_by(host);
                if seen != all {
                    return Err(format!("{host} sees only {seen:?}"));
                }
            }
            Ok(())
        },
    )?;
    let seconds = (sim.elapsed() - started).as_secs_f64();
    let rate =
        (shared.counter("r2", "aegis_relay_gossip_sent_bytes_total") - sent_before) / seconds;
    eprintln!("r2 sent {rate:.0} gossip bytes/s at N=5 with 30 % loss (simulated)");
    Ok(())
}

#[test]
fn another_secret_or_cluster_never_joins_and_is_counted() -> Result<(), Error> {
    let mut sim = sim(3);
    let shared = Shared::default();
    lock(&shared.configs).insert("intruder".to_owned(), (vec![NEW], CLUSTER));
    lock(&shared.configs).insert("stranger".to_owned(), (vec![OLD], "other-cluster"));
    let members = ["r0", "r1", "r2"];
    for (seed, name) in members.iter().enumerate() {
        add_replica(&mut sim, name, seed as u64, &shared);
    }
    add_replica(&mut sim, "intruder", 10, &shared);
    add_replica(&mut sim, "stranger", 11, &shared);
    let all = names(&members);
    run_keeping(
        &mut sim,
        Duration::from_secs(20),
        "only members in views",
        || {
            for host in members {
                let seen = shared.seen_by(host);
                if !seen.is_subset(&all) {
                    return Err(format!("{host} sees {seen:?}"));
                }
            }
            for outsider in ["intruder", "stranger"] {
                let seen = shared.seen_by(outsider);
                if seen.len() > 1 {
                    return Err(format!("{outsider} sees {seen:?}"));
                }
            }
            Ok(())
        },
    )?;
    assert!(members.iter().all(|host| shared.seen_by(host) == all));
    let bad_tag = shared.counter("r0", "aegis_relay_gossip_dropped_total{reason=\"bad_tag\"}");
    let wrong = shared.counter(
        "r0",
        "aegis_relay_gossip_dropped_total{reason=\"wrong_cluster\"}",
    );
    assert!(bad_tag > 0.0, "no bad_tag drops counted on r0");
    assert!(wrong > 0.0, "no wrong_cluster drops counted on r0");
    Ok(())
}

#[test]
fn rotating_the_secret_replica_by_replica_never_splits_the_cluster() -> Result<(), Error> {
    let mut sim = sim(4);
    let shared = Shared::default();
    let hosts = ["r0", "r1", "r2", "r3"];
    for (seed, name) in hosts.iter().enumerate() {
        add_replica(&mut sim, name, seed as u64, &shared);
    }
    converge(&mut sim, &shared, &hosts, Duration::from_secs(10))?;
    let all = names(&hosts);
    for lines in [vec![OLD, NEW], vec![NEW, OLD], vec![NEW]] {
        for host in hosts {
            lock(&shared.configs).insert(host.to_owned(), (lines.clone(), CLUSTER));
            let before = shared.view(host).map(|v| v.snapshot.members().len());
            lock(&shared.views).remove(host);
            sim.bounce(host);
            // While one replica restarts, the others never lose each other.
            let others: Vec<&str> = hosts.iter().copied().filter(|h| *h != host).collect();
            let restarted = run_until(
                &mut sim,
                Duration::from_secs(10),
                "the restart rejoining",
                || {
                    hosts.iter().all(|h| shared.serving_seen_by(h) == all)
                        && others
                            .iter()
                            .all(|h| shared.seen_by(h).len() == hosts.len())
                },
            );
            restarted.map_err(|err| {
                format!(
                    "{host} with {} secret line(s): {err} (had {before:?} members)",
                    lines.len()
                )
            })?;
            run_keeping(
                &mut sim,
                Duration::from_secs(2),
                "stable after the restart",
                || {
                    for h in hosts {
                        let seen = shared.serving_seen_by(h);
                        if seen != all {
                            return Err(format!("{h} sees {seen:?}: {:?}", shared.view(h)));
                        }
                    }
                    Ok(())
                },
            )?;
        }
    }
    Ok(())
}
