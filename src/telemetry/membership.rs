//! Metrics of membership and gossip: members by phase, membership changes,
//! ring epoch changes, gossip bytes and dropped datagrams.

use std::collections::BTreeMap;

use super::metrics::Metrics;

/// Gauge of live members by `phase` (`joining`, `serving`, `draining`, `other`).
pub const MEMBERS: &str = "aegis_relay_members";
/// Counter of membership changes by `kind` (`added`, `updated`, `removed`).
pub const MEMBERSHIP_CHANGES: &str = "aegis_relay_membership_changes_total";
/// Counter of changes of the set of serving members (each one a new ring epoch).
pub const RING_EPOCH_CHANGES: &str = "aegis_relay_ring_epoch_changes_total";
/// Counter of gossip bytes received (every datagram, dropped ones included).
pub const GOSSIP_BYTES_IN: &str = "aegis_relay_gossip_received_bytes_total";
/// Counter of gossip bytes sent.
pub const GOSSIP_BYTES_OUT: &str = "aegis_relay_gossip_sent_bytes_total";
/// Counter of gossip datagrams dropped, by `reason` (`bad_tag`,
/// `wrong_cluster`, `malformed`).
pub const GOSSIP_DROPPED: &str = "aegis_relay_gossip_dropped_total";

const PHASES: [&str; 4] = ["joining", "serving", "draining", "other"];

impl Metrics {
    /// Sets the members-by-phase gauge (phases this build does not know
    /// count as `other`).
    pub fn members_by_phase(&self, counts: &BTreeMap<String, usize>) {
        let mut by_label = [0usize; 4];
        for (phase, count) in counts {
            let index = PHASES[..3]
                .iter()
                .position(|known| known == phase)
                .unwrap_or(3);
            by_label[index] += count;
        }
        self.record(|| {
            for (phase, count) in PHASES.iter().zip(by_label) {
                metrics::gauge!(MEMBERS, "phase" => *phase).set(count as f64);
            }
        });
    }

    /// Counts one membership change.
    pub fn membership_change(&self, kind: &'static str) {
        self.record(|| metrics::counter!(MEMBERSHIP_CHANGES, "kind" => kind).increment(1));
    }

    /// Counts a change of the serving set.
    pub fn ring_epoch_changed(&self) {
        self.record(|| metrics::counter!(RING_EPOCH_CHANGES).increment(1));
    }

    /// Counts gossip bytes received.
    pub fn gossip_bytes_in(&self, bytes: usize) {
        self.record(|| metrics::counter!(GOSSIP_BYTES_IN).increment(bytes as u64));
    }

    /// Counts gossip bytes sent.
    pub fn gossip_bytes_out(&self, bytes: usize) {
        self.record(|| metrics::counter!(GOSSIP_BYTES_OUT).increment(bytes as u64));
    }

    /// Counts one dropped gossip datagram.
    pub fn gossip_dropped(&self, reason: &'static str) {
        self.record(|| metrics::counter!(GOSSIP_DROPPED, "reason" => reason).increment(1));
    }
}
