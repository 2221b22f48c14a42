//! Validation of `relay.change_feed:` (how the replica follows the store's
//! change feed, how long changes are kept, and the shared-mode check).

use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;
use super::values::ConfigDuration;
use crate::change_feed::FeedSettings;

/// `relay.change_feed:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileChangeFeed {
    pub poll_interval: Option<ConfigDuration>,
    pub retention: Option<ConfigDuration>,
    pub shared_check_interval: Option<ConfigDuration>,
}

fn within(
    key: &str,
    value: Duration,
    min: Duration,
    max: Duration,
    why: &str,
) -> Result<Duration, ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::invalid(
            key,
            format!("must be between {min:?} and {max:?} ({why}), got {value:?}"),
        ));
    }
    Ok(value)
}

/// Feed settings from `relay.change_feed`.
pub fn change_feed(block: Option<FileChangeFeed>) -> Result<FeedSettings, ConfigError> {
    let block = block.unwrap_or_default();
    let defaults = FeedSettings::default();
    let pick = |value: Option<ConfigDuration>, default: Duration| value.map_or(default, |d| d.0);
    let poll_interval = within(
        "relay.change_feed.poll_interval",
        pick(block.poll_interval, defaults.poll_interval),
        Duration::from_millis(50),
        Duration::from_secs(60),
        "a revoke reaches other replicas' edges within one poll; each poll is one query",
    )?;
    let retention = within(
        "relay.change_feed.retention",
        pick(block.retention, defaults.retention),
        Duration::from_secs(60),
        Duration::from_secs(30 * 24 * 3600),
        "a replica further behind resyncs every session it holds",
    )?;
    if retention < poll_interval.saturating_mul(10) {
        return Err(ConfigError::invalid(
            "relay.change_feed.retention",
            "must be at least ten times relay.change_feed.poll_interval",
        ));
    }
    let shared_check_interval = within(
        "relay.change_feed.shared_check_interval",
        pick(block.shared_check_interval, defaults.shared_check_interval),
        Duration::from_millis(100),
        Duration::from_secs(600),
        "how long an AEGIS-side revoke may take to end a stream (shared mode)",
    )?;
    Ok(FeedSettings {
        poll_interval,
        retention,
        shared_check_interval,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(poll: u64, retention: u64, shared: u64) -> Option<FileChangeFeed> {
        Some(FileChangeFeed {
            poll_interval: Some(ConfigDuration(Duration::from_millis(poll))),
            retention: Some(ConfigDuration(Duration::from_secs(retention))),
            shared_check_interval: Some(ConfigDuration(Duration::from_millis(shared))),
        })
    }

    #[test]
    fn defaults_and_bounds() -> Result<(), ConfigError> {
        assert_eq!(change_feed(None)?, FeedSettings::default());
        let set = change_feed(block(250, 600, 2_000))?;
        assert_eq!(set.poll_interval, Duration::from_millis(250));
        assert_eq!(set.retention, Duration::from_secs(600));
        assert_eq!(set.shared_check_interval, Duration::from_secs(2));
        for (bad, key) in [
            (block(10, 600, 2_000), "poll_interval"),
            (block(250, 10, 2_000), "retention"),
            (block(30_000, 120, 2_000), "retention"),
            (block(250, 600, 10), "shared_check_interval"),
        ] {
            let err = change_feed(bad).err().map(|err| err.to_string());
            assert!(
                err.as_deref().is_some_and(|err| err.contains(key)),
                "{key}: {err:?}"
            );
        }
        Ok(())
    }
}
