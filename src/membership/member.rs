//! The typed view of membership: gossip key names, phases, one member's
//! published state, and a snapshot of every live member. Reading is
//! tolerant (a replica of a newer version may publish keys and values this
//! one does not know): unknown keys are kept, unknown values are shown as
//! they are, nothing here fails.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

/// Gossip key: the URL other replicas reach this one's peer service at.
pub const KEY_PEER: &str = "peer";
/// Gossip key: the build version (`CARGO_PKG_VERSION`).
pub const KEY_VERSION: &str = "version";
/// Gossip key: the internal protocol version this replica speaks.
pub const KEY_PROTOCOL: &str = "protocol";
/// Gossip key: the phase (`joining`, `serving`, `draining`).
pub const KEY_PHASE: &str = "phase";
/// Gossip key: why a replica is not in the phase it asked for, if it is not.
pub const KEY_PHASE_REASON: &str = "phase_reason";

/// The internal protocol version of this build (peer messages, gossip keys).
pub const PROTOCOL_VERSION: u32 = 1;

/// A replica's place in its life cycle.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Started, not yet taking tenants.
    Joining,
    /// Owns tenants (on the ring).
    Serving,
    /// Shutting down; off the ring.
    Draining,
    /// A phase this build does not know (a newer replica's); never on the ring.
    Other(String),
}

impl Phase {
    /// The gossip value.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Joining => "joining",
            Self::Serving => "serving",
            Self::Draining => "draining",
            Self::Other(other) => other,
        }
    }

    /// Reads a gossip value; never fails.
    pub fn parse(value: &str) -> Self {
        match value {
            "joining" => Self::Joining,
            "serving" => Self::Serving,
            "draining" => Self::Draining,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One live replica as gossip shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Stable name (`relay.name`).
    pub name: String,
    /// Start time in ms; grows on every start.
    pub generation: u64,
    /// Where it gossips.
    pub gossip_addr: SocketAddr,
    /// Its phase (`joining` until it publishes one).
    pub phase: Phase,
    /// Why it is not serving, when it says so.
    pub phase_reason: Option<String>,
    /// Build version, if published.
    pub version: Option<String>,
    /// Internal protocol version, if published and numeric (higher ones kept).
    pub protocol: Option<u32>,
    /// Peer service URL, if published.
    pub peer: Option<String>,
    /// Keys this build does not know, kept as published.
    pub extra: BTreeMap<String, String>,
    /// Time since its heartbeat last advanced, as this replica observed it
    /// (zero for this replica itself).
    pub last_heard: Duration,
}

impl Member {
    /// Decodes a member's key/values tolerantly.
    pub fn from_keys<'a>(
        name: &str,
        generation: u64,
        gossip_addr: SocketAddr,
        keys: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        let mut member = Self {
            name: name.to_owned(),
            generation,
            gossip_addr,
            phase: Phase::Joining,
            phase_reason: None,
            version: None,
            protocol: None,
            peer: None,
            extra: BTreeMap::new(),
            last_heard: Duration::ZERO,
        };
        for (key, value) in keys {
            match key {
                KEY_PHASE => member.phase = Phase::parse(value),
                KEY_PHASE_REASON if !value.is_empty() => {
                    member.phase_reason = Some(value.to_owned())
                }
                KEY_PHASE_REASON => {}
                KEY_VERSION => member.version = Some(value.to_owned()),
                KEY_PROTOCOL => member.protocol = value.trim().parse().ok(),
                KEY_PEER => member.peer = Some(value.to_owned()),
                other => {
                    member.extra.insert(other.to_owned(), value.to_owned());
                }
            }
        }
        member
    }

    /// Whether this member takes tenants.
    pub fn is_serving(&self) -> bool {
        self.phase == Phase::Serving
    }

    /// Identity across restarts and within one start.
    pub fn key(&self) -> (&str, u64) {
        (&self.name, self.generation)
    }
}

/// Every live member as one replica sees them, this replica included,
/// ordered by name then generation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    members: Vec<Member>,
}

impl Snapshot {
    /// A snapshot of `members` (any order).
    pub fn new(mut members: Vec<Member>) -> Self {
        members.sort_by(|a, b| a.key().cmp(&b.key()));
        members.dedup_by(|a, b| a.key() == b.key());
        Self { members }
    }

    /// Live members, ordered by name then generation.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The member `(name, generation)`.
    pub fn get(&self, name: &str, generation: u64) -> Option<&Member> {
        self.members
            .iter()
            .find(|member| member.key() == (name, generation))
    }

    /// Names of the serving members: what the ring is built from.
    pub fn serving_names(&self) -> BTreeSet<String> {
        self.members
            .iter()
            .filter(|member| member.is_serving())
            .map(|member| member.name.clone())
            .collect()
    }

    /// Members per phase name.
    pub fn count_by_phase(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for member in &self.members {
            *counts.entry(member.phase.as_str().to_owned()).or_insert(0) += 1;
        }
        counts
    }
}

/// The duplicate-name rule: a replica may not serve while an older start
/// (lower generation) of its own name is live elsewhere; the older keeps its
/// tenants. An older start gossiping at this replica's own address is its
/// previous incarnation (two processes cannot hold one UDP port), dead
/// whatever gossip still says. Returns the older namesake.
pub fn older_namesake<'a>(
    snapshot: &'a Snapshot,
    name: &str,
    generation: u64,
    gossip_addr: SocketAddr,
) -> Option<&'a Member> {
    snapshot.members().iter().find(|member| {
        member.name == name && member.generation < generation && member.gossip_addr != gossip_addr
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    fn member(name: &str, generation: u64, phase: &str) -> Member {
        Member::from_keys(name, generation, addr(7946), [(KEY_PHASE, phase)])
    }

    #[test]
    fn decoding_keeps_unknown_keys_and_newer_values() {
        let member = Member::from_keys(
            "relay-1",
            42,
            addr(7946),
            [
                (KEY_PHASE, "serving"),
                (KEY_VERSION, "9.9.9"),
                (KEY_PROTOCOL, "7"),
                (KEY_PEER, "http://10.0.0.1:50057"),
                ("zone", "eu-west-1a"),
            ],
        );
        assert_eq!(member.phase, Phase::Serving);
        assert_eq!(member.protocol, Some(7));
        assert_eq!(member.version.as_deref(), Some("9.9.9"));
        assert_eq!(member.peer.as_deref(), Some("http://10.0.0.1:50057"));
        assert_eq!(
            member.extra.get("zone").map(String::as_str),
            Some("eu-west-1a")
        );

        let odd = Member::from_keys(
            "relay-2",
            1,
            addr(7946),
            [(KEY_PHASE, "hibernating"), (KEY_PROTOCOL, "two")],
        );
        assert_eq!(odd.phase, Phase::Other("hibernating".to_owned()));
        assert_eq!(odd.phase.as_str(), "hibernating");
        assert!(!odd.is_serving());
        assert_eq!(odd.protocol, None);

        let bare = Member::from_keys("relay-3", 1, addr(7946), []);
        assert_eq!(bare.phase, Phase::Joining);
        assert!(bare.peer.is_none() && bare.version.is_none());
    }

    #[test]
    fn phases_round_trip() {
        for phase in [Phase::Joining, Phase::Serving, Phase::Draining] {
            assert_eq!(Phase::parse(phase.as_str()), phase);
        }
    }

    #[test]
    fn snapshots_order_members_and_list_serving_names_once() {
        let snapshot = Snapshot::new(vec![
            member("relay-2", 5, "serving"),
            member("relay-1", 9, "draining"),
            member("relay-0", 3, "serving"),
            member("relay-2", 7, "joining"),
            member("relay-0", 3, "serving"),
        ]);
        let keys: Vec<_> = snapshot.members().iter().map(Member::key).collect();
        assert_eq!(
            keys,
            vec![
                ("relay-0", 3),
                ("relay-1", 9),
                ("relay-2", 5),
                ("relay-2", 7)
            ]
        );
        let serving: Vec<_> = snapshot.serving_names().into_iter().collect();
        assert_eq!(serving, vec!["relay-0", "relay-2"]);
        assert_eq!(snapshot.count_by_phase().get("serving"), Some(&2));
        assert_eq!(snapshot.count_by_phase().get("joining"), Some(&1));
    }

    #[test]
    fn the_younger_of_two_namesakes_yields() {
        let snapshot = Snapshot::new(vec![
            member("relay-1", 100, "serving"),
            member("relay-1", 200, "joining"),
            member("relay-2", 50, "serving"),
        ]);
        let elsewhere = addr(7000);
        let older = older_namesake(&snapshot, "relay-1", 200, elsewhere);
        assert_eq!(older.map(Member::key), Some(("relay-1", 100)));
        assert!(older_namesake(&snapshot, "relay-1", 100, elsewhere).is_none());
        assert!(older_namesake(&snapshot, "relay-2", 50, elsewhere).is_none());
        assert!(older_namesake(&snapshot, "relay-3", 1, elsewhere).is_none());
        // The older start at this replica's own address is its previous life.
        assert!(older_namesake(&snapshot, "relay-1", 200, addr(7946)).is_none());
    }
}
