//! Metrics of edge sessions: connected edges, refused handshakes, events by
//! kind, refused events, and batched store writes. Names follow the AEGIS
//! relay's pre-registered ones where they exist (protocol.md §12.3).

use super::metrics::Metrics;

/// Gauge of edges connected to this replica.
pub const EDGES_CONNECTED: &str = "aegis_relay_edge_nodes_connected";
/// Counter of refused Hellos by reason.
pub const HANDSHAKE_FAILURES: &str = "aegis_relay_handshake_failures_total";
/// Counter of verified edge events by kind.
pub const EDGE_EVENTS: &str = "aegis_relay_edge_events_total";
/// Counter of events that ended a stream by failing verification.
pub const EDGE_EVENTS_REFUSED: &str = "aegis_relay_edge_events_refused_total";
/// Counter of store flushes of heartbeats and capabilities.
pub const EDGE_UPDATE_FLUSHES: &str = "aegis_relay_edge_update_flushes_total";
/// Counter of edge rows written by those flushes.
pub const EDGE_UPDATES_WRITTEN: &str = "aegis_relay_edge_updates_written_total";
/// Counter of commands sent to edges by kind.
pub const EDGE_COMMANDS: &str = "aegis_relay_edge_commands_total";

/// Event kinds counted through pre-registered handles.
const EVENT_KINDS: [&str; 4] = ["hello", "heartbeat", "command_progress", "command_result"];

/// Registers the per-kind event counters with the current recorder.
pub(super) fn event_counters() -> Vec<(&'static str, metrics::Counter)> {
    EVENT_KINDS
        .iter()
        .map(|kind| (*kind, metrics::counter!(EDGE_EVENTS, "kind" => *kind)))
        .collect()
}

impl Metrics {
    /// Sets the number of connected edges.
    pub fn edges_connected(&self, count: usize) {
        self.record(|| metrics::gauge!(EDGES_CONNECTED).set(count as f64));
    }

    /// Counts a refused Hello.
    pub fn handshake_failure(&self, reason: &'static str) {
        self.record(|| metrics::counter!(HANDSHAKE_FAILURES, "reason" => reason).increment(1));
    }

    /// Counts a verified event. Runs for every heartbeat of every edge, so
    /// it uses handles registered up front instead of a labelled lookup.
    pub fn edge_event(&self, kind: &'static str) {
        match self
            .inner
            .edge_events
            .iter()
            .find(|(known, _)| *known == kind)
        {
            Some((_, counter)) => counter.increment(1),
            None => self.record(|| metrics::counter!(EDGE_EVENTS, "kind" => kind).increment(1)),
        }
    }

    /// Counts an event refused by verification.
    pub fn edge_event_refused(&self, kind: &'static str) {
        self.record(|| metrics::counter!(EDGE_EVENTS_REFUSED, "kind" => kind).increment(1));
    }

    /// Counts one batched flush of `rows` edges.
    pub fn edge_updates_flushed(&self, rows: usize) {
        self.record(|| {
            metrics::counter!(EDGE_UPDATE_FLUSHES).increment(1);
            metrics::counter!(EDGE_UPDATES_WRITTEN).increment(rows as u64);
        });
    }

    /// Counts a command sent to an edge.
    pub fn edge_command(&self, kind: &'static str) {
        self.record(|| metrics::counter!(EDGE_COMMANDS, "kind" => kind).increment(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_counts_reach_the_replicas_own_registry() {
        let (one, other) = (Metrics::new("one"), Metrics::new("other"));
        one.edge_event("heartbeat");
        one.edge_event("heartbeat");
        one.edge_event("command_result");
        one.edge_event("unlisted");
        let text = one.render();
        for line in [
            r#"aegis_relay_edge_events_total{kind="heartbeat"} 2"#,
            r#"aegis_relay_edge_events_total{kind="command_result"} 1"#,
            r#"aegis_relay_edge_events_total{kind="unlisted"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line} in:\n{text}");
        }
        let untouched = other.render();
        assert!(
            untouched.contains(r#"aegis_relay_edge_events_total{kind="heartbeat"} 0"#),
            "{untouched}"
        );
    }
}
