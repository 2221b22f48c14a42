//! Validation of `relay.edges:` (edge session timing and limits) and
//! `relay.fleet_runs:` (how much fleet history is kept).

use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;
use super::values::ConfigDuration;
use crate::fleet::RunRetention;
use crate::session::SessionSettings;

/// `relay.edges:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEdges {
    pub clock_skew: Option<ConfigDuration>,
    pub hello_timeout: Option<ConfigDuration>,
    pub max_message_bytes: Option<u64>,
    pub idempotency_retention: Option<ConfigDuration>,
    pub store_flush_interval: Option<ConfigDuration>,
    pub idempotency_bytes_per_tenant: Option<u64>,
    pub call_grace: Option<ConfigDuration>,
}

/// `relay.fleet_runs:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileFleetRuns {
    pub per_tenant: Option<usize>,
    pub max_age: Option<ConfigDuration>,
    pub running_per_tenant: Option<usize>,
    pub sse_buffer_bytes: Option<u64>,
    pub flush_interval: Option<ConfigDuration>,
    pub lost_after: Option<ConfigDuration>,
}

/// Largest accepted `relay.edges.max_message_bytes` (tonic's own ceiling is
/// far above; this keeps one edge from pinning gigabytes).
const MAX_MESSAGE_LIMIT: u64 = 256 * 1024 * 1024;

fn at_least(key: &str, value: Duration, min: Duration, why: &str) -> Result<Duration, ConfigError> {
    if value < min {
        return Err(ConfigError::invalid(
            key,
            format!("must be at least {min:?} ({why})"),
        ));
    }
    Ok(value)
}

/// Session settings from `relay.edges` and `relay.heartbeat_timeout`, and
/// the gRPC message limit.
pub fn sessions(
    block: Option<FileEdges>,
    heartbeat_timeout: Duration,
) -> Result<(SessionSettings, usize), ConfigError> {
    let block = block.unwrap_or_default();
    let defaults = SessionSettings::default();
    let pick = |value: Option<ConfigDuration>, default: Duration| value.map_or(default, |d| d.0);
    let clock_skew = at_least(
        "relay.edges.clock_skew",
        pick(block.clock_skew, defaults.clock_skew),
        Duration::from_secs(1),
        "edges use their own clocks",
    )?;
    if clock_skew > Duration::from_secs(3600) {
        return Err(ConfigError::invalid(
            "relay.edges.clock_skew",
            "must be at most 1h (a captured event stays valid this long)",
        ));
    }
    let hello_timeout = at_least(
        "relay.edges.hello_timeout",
        pick(block.hello_timeout, defaults.hello_timeout),
        Duration::from_millis(100),
        "a Hello needs a round trip",
    )?;
    let idempotency_retention = at_least(
        "relay.edges.idempotency_retention",
        pick(block.idempotency_retention, defaults.idempotency_retention),
        Duration::from_secs(60),
        "retries must find the first outcome",
    )?;
    let store_flush_interval = at_least(
        "relay.edges.store_flush_interval",
        pick(block.store_flush_interval, defaults.store_flush_interval),
        Duration::from_millis(10),
        "each flush is one statement",
    )?;
    if store_flush_interval >= heartbeat_timeout {
        return Err(ConfigError::invalid(
            "relay.edges.store_flush_interval",
            "must be shorter than relay.heartbeat_timeout",
        ));
    }
    let max_message = block.max_message_bytes.unwrap_or(16 * 1024 * 1024);
    if !(64 * 1024..=MAX_MESSAGE_LIMIT).contains(&max_message) {
        return Err(ConfigError::invalid(
            "relay.edges.max_message_bytes",
            format!(
                "must be between 65536 and {MAX_MESSAGE_LIMIT} (edge results carry whole outputs)"
            ),
        ));
    }
    let per_tenant = block
        .idempotency_bytes_per_tenant
        .unwrap_or(defaults.idempotency_bytes_per_tenant as u64);
    if !(64 * 1024..=1024 * 1024 * 1024).contains(&per_tenant) {
        return Err(ConfigError::invalid(
            "relay.edges.idempotency_bytes_per_tenant",
            format!("must be between 65536 and 1073741824 (1 GiB), got {per_tenant}"),
        ));
    }
    let call_grace = pick(block.call_grace, defaults.call_grace);
    if call_grace > Duration::from_secs(600) {
        return Err(ConfigError::invalid(
            "relay.edges.call_grace",
            "must be at most 10m (an unanswered call holds its caller this long past its deadline)",
        ));
    }
    let settings = SessionSettings {
        idempotency_bytes_per_tenant: usize::try_from(per_tenant).unwrap_or(usize::MAX),
        call_grace,
        clock_skew,
        heartbeat_timeout,
        hello_timeout,
        idempotency_retention,
        store_flush_interval,
        ..defaults
    };
    Ok((settings, usize::try_from(max_message).unwrap_or(usize::MAX)))
}

/// Retention from `relay.fleet_runs`.
pub fn fleet_runs(block: Option<FileFleetRuns>) -> Result<RunRetention, ConfigError> {
    let block = block.unwrap_or_default();
    let defaults = RunRetention::default();
    let per_tenant = block.per_tenant.unwrap_or(defaults.per_tenant);
    if !(1..=10_000).contains(&per_tenant) {
        return Err(ConfigError::invalid(
            "relay.fleet_runs.per_tenant",
            "must be between 1 and 10000",
        ));
    }
    let max_age = at_least(
        "relay.fleet_runs.max_age",
        block.max_age.map_or(defaults.max_age, |d| d.0),
        Duration::from_secs(60),
        "operators look back at recent runs",
    )?;
    let running_per_tenant = block
        .running_per_tenant
        .unwrap_or(defaults.running_per_tenant);
    if !(1..=1_000).contains(&running_per_tenant) {
        return Err(ConfigError::invalid(
            "relay.fleet_runs.running_per_tenant",
            format!("must be between 1 and 1000, got {running_per_tenant}"),
        ));
    }
    let sse_buffer_bytes = block
        .sse_buffer_bytes
        .unwrap_or(defaults.sse_buffer_bytes as u64);
    if !(64 * 1024..=256 * 1024 * 1024).contains(&sse_buffer_bytes) {
        return Err(ConfigError::invalid(
            "relay.fleet_runs.sse_buffer_bytes",
            format!("must be between 65536 and 268435456 (256 MiB), got {sse_buffer_bytes}"),
        ));
    }
    let flush_interval = block
        .flush_interval
        .map_or(defaults.flush_interval, |d| d.0);
    if !(Duration::from_millis(10)..=Duration::from_secs(10)).contains(&flush_interval) {
        return Err(ConfigError::invalid(
            "relay.fleet_runs.flush_interval",
            format!("must be between 10ms and 10s, got {flush_interval:?}"),
        ));
    }
    let lost_after = at_least(
        "relay.fleet_runs.lost_after",
        block.lost_after.map_or(defaults.lost_after, |d| d.0),
        Duration::from_secs(1),
        "a replica that just started must first hear from the others",
    )?;
    Ok(RunRetention {
        per_tenant,
        max_age,
        running_per_tenant,
        sse_buffer_bytes: usize::try_from(sse_buffer_bytes).unwrap_or(usize::MAX),
        flush_interval,
        lost_after,
    })
}
