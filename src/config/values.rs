//! Scalar types of the config file with their own parsing rules and messages:
//! ports, durations (`20s`, `500ms`, or whole seconds) and log formats.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A TCP or UDP port between 1 and 65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port(pub u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PortVisitor;
        impl Visitor<'_> for PortVisitor {
            type Value = Port;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number between 1 and 65535")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Port, E> {
                match u16::try_from(v) {
                    Ok(port) if port > 0 => Ok(Port(port)),
                    _ => Err(E::custom(format!(
                        "port must be between 1 and 65535, got {v}"
                    ))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Port, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!(
                        "port must be between 1 and 65535, got {v}"
                    ))),
                }
            }
        }
        deserializer.deserialize_any(PortVisitor)
    }
}

/// A duration written as `20s`, `500ms`, `2m` or a whole number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

/// Longest duration any config key accepts (365 days). Timers and
/// timestamps add durations to "now"; a bound keeps that from overflowing,
/// and no setting of the relay means anything past a year.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

fn bounded(duration: Duration, text: &dyn fmt::Display) -> Result<Duration, String> {
    if duration > MAX_DURATION {
        return Err(format!(
            "{text} is longer than the largest accepted duration, 365d (8760h)"
        ));
    }
    Ok(duration)
}

/// Parses the textual duration forms accepted in the config (at most
/// [`MAX_DURATION`]).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if let Ok(seconds) = trimmed.parse::<u64>() {
        return bounded(Duration::from_secs(seconds), &format_args!("{text:?}"));
    }
    let parsed = humantime::parse_duration(trimmed).map_err(|err| {
        format!("{text:?} is not a duration ({err}); write it like 20s, 500ms, 2m or 20")
    })?;
    bounded(parsed, &format_args!("{text:?}"))
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = ConfigDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 20s, 500ms or a whole number of seconds")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ConfigDuration, E> {
                bounded(Duration::from_secs(v), &format_args!("{v} seconds"))
                    .map(ConfigDuration)
                    .map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ConfigDuration, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!(
                        "a duration can not be negative, got {v}"
                    ))),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ConfigDuration, E> {
                parse_duration(v).map(ConfigDuration).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// A value that must never reach a log line or an error message (a DSN with a
/// password, a secret). `Debug` prints a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_units_and_whole_seconds() {
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_duration("365d"), Ok(MAX_DURATION));
        for huge in ["9999999999s", "9999999999", "18446744073709551615", "400d"] {
            let err = parse_duration(huge).err().unwrap_or_default();
            assert!(err.contains("365d"), "{huge}: {err}");
        }
        let huge: Result<ConfigDuration, _> = serde_norway::from_str("9999999999");
        assert!(huge.is_err());
    }

    #[test]
    fn ports_are_range_checked() {
        let ok: Result<Port, _> = serde_norway::from_str("8080");
        assert_eq!(ok.ok(), Some(Port(8080)));
        for bad in ["0", "70000", "-1", "\"http\""] {
            let parsed: Result<Port, _> = serde_norway::from_str(bad);
            assert!(parsed.is_err(), "{bad} should be refused");
        }
    }
}
