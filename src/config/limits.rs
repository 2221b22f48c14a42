//! Validation of `relay.limits:`: what a peer may hold before it has
//! authenticated (connections, time to send headers and bodies, time per
//! unary call).

use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;
use super::model::LimitsConfig;
use super::values::ConfigDuration;

/// `relay.limits:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    pub unary_timeout: Option<ConfigDuration>,
    pub header_read_timeout: Option<ConfigDuration>,
    pub request_body_timeout: Option<ConfigDuration>,
    pub write_stall_timeout: Option<ConfigDuration>,
    pub max_connections: Option<u64>,
    pub max_connections_per_source: Option<u64>,
}

/// Most connections one replica may be asked to hold (each is a file).
const CONNECTIONS_CEILING: u64 = 1_000_000;

fn between(
    key: &str,
    value: Option<ConfigDuration>,
    default: Duration,
    min: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    let value = value.map_or(default, |d| d.0);
    if value < min || value > max {
        return Err(ConfigError::invalid(
            key,
            format!(
                "must be between {} and {}, got {}",
                humantime::format_duration(min),
                humantime::format_duration(max),
                humantime::format_duration(value)
            ),
        ));
    }
    Ok(value)
}

/// Limits from `relay.limits`, defaults for what is not set.
pub fn limits(block: Option<FileLimits>) -> Result<LimitsConfig, ConfigError> {
    let block = block.unwrap_or_default();
    let defaults = LimitsConfig::default();
    let unary_timeout = between(
        "relay.limits.unary_timeout",
        block.unary_timeout,
        defaults.unary_timeout,
        Duration::from_secs(1),
        Duration::from_secs(600),
    )?;
    let header_read_timeout = between(
        "relay.limits.header_read_timeout",
        block.header_read_timeout,
        defaults.header_read_timeout,
        Duration::from_millis(100),
        Duration::from_secs(300),
    )?;
    let request_body_timeout = between(
        "relay.limits.request_body_timeout",
        block.request_body_timeout,
        defaults.request_body_timeout,
        Duration::from_secs(1),
        Duration::from_secs(600),
    )?;
    let write_stall_timeout = between(
        "relay.limits.write_stall_timeout",
        block.write_stall_timeout,
        defaults.write_stall_timeout,
        Duration::from_secs(1),
        Duration::from_secs(3600),
    )?;
    let max_connections = block
        .max_connections
        .map_or(Ok(defaults.max_connections), |value| {
            if (1..=CONNECTIONS_CEILING).contains(&value) {
                Ok(usize::try_from(value).unwrap_or(usize::MAX))
            } else {
                Err(ConfigError::invalid(
                    "relay.limits.max_connections",
                    format!("must be between 1 and {CONNECTIONS_CEILING}, got {value}"),
                ))
            }
        })?;
    let per_source = block.max_connections_per_source.unwrap_or(0);
    if per_source > CONNECTIONS_CEILING {
        return Err(ConfigError::invalid(
            "relay.limits.max_connections_per_source",
            format!("must be between 0 (no cap) and {CONNECTIONS_CEILING}, got {per_source}"),
        ));
    }
    Ok(LimitsConfig {
        unary_timeout,
        header_read_timeout,
        request_body_timeout,
        write_stall_timeout,
        max_connections,
        max_connections_per_source: usize::try_from(per_source).unwrap_or(usize::MAX),
    })
}

/// The token in `relay.metrics_token_file` (trimmed; at least 16 bytes).
pub fn metrics_token(file: Option<&std::path::Path>) -> Result<Option<super::Secret>, ConfigError> {
    let Some(file) = file else {
        return Ok(None);
    };
    let key = "relay.metrics_token_file";
    let text = std::fs::read_to_string(file).map_err(|err| {
        ConfigError::invalid(key, format!("cannot read {}: {err}", file.display()))
    })?;
    let token = text.trim();
    if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConfigError::invalid(
            key,
            format!(
                "{} must hold one token of at least 16 visible characters (e.g. `openssl rand -hex 32`)",
                file.display()
            ),
        ));
    }
    Ok(Some(super::Secret::new(token)))
}
