//! The change feed's records: every change another replica must apply to
//! the sessions it holds (enrollment, key rotation, revocation, tags,
//! rename), numbered by `seq` in commit order.
//!
//! Each backend writes a change in the same transaction as the change
//! itself, and takes its `seq` from a one-row counter (`edge_feed_head`)
//! updated by the transaction's last statement: the counter's row lock is
//! held until commit, so `seq`s become visible in order and without gaps
//! (ARCHITECTURE.md, "The change feed").

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// What happened to an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// Enrolled, or re-enrolled with a new key (`replace_node`).
    Enrolled,
    /// Its key was rotated (the old one stays valid for the overlap).
    KeyRotated,
    /// Revoked (the row is gone).
    Revoked,
    /// Its server-side tags changed.
    Tags,
    /// Its display name changed.
    Renamed,
}

impl ChangeKind {
    /// Every kind, in declaration order.
    pub const ALL: [Self; 5] = [
        Self::Enrolled,
        Self::KeyRotated,
        Self::Revoked,
        Self::Tags,
        Self::Renamed,
    ];

    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enrolled => "enrolled",
            Self::KeyRotated => "key_rotated",
            Self::Revoked => "revoked",
            Self::Tags => "tags",
            Self::Renamed => "renamed",
        }
    }

    /// Parses the stored text.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

/// One row of `edge_changes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeChange {
    /// Position in the feed: 1, 2, 3, ... in commit order, no gaps.
    pub seq: i64,
    /// The edge.
    pub node_id: Uuid,
    /// Its tenant.
    pub tenant_id: String,
    /// What happened.
    pub kind: ChangeKind,
    /// When (the writing replica's clock).
    pub at: DateTime<Utc>,
}

/// What one read of the feed returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedPage {
    /// Changes after the asked `seq`, in order, at most the asked number.
    pub changes: Vec<EdgeChange>,
    /// The latest `seq` committed (0 before the first change).
    pub head: i64,
    /// The smallest `seq` still kept; `head + 1` when the feed is empty.
    /// Older changes were purged by retention.
    pub oldest: i64,
}

impl FeedPage {
    /// Whether a reader that has applied every change up to `after` missed
    /// some that were purged (it must resync).
    pub fn missed(&self, after: i64) -> bool {
        after < self.head && after.saturating_add(1) < self.oldest
    }
}

/// The current key of an edge (the shared-mode check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeKey {
    /// The edge.
    pub node_id: Uuid,
    /// Its current public key.
    pub public_key: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_purged_changes_are_noticed() {
        for kind in ChangeKind::ALL {
            assert_eq!(ChangeKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(ChangeKind::parse("deleted"), None);
        let page = |head, oldest| FeedPage {
            changes: Vec::new(),
            head,
            oldest,
        };
        assert!(!page(0, 1).missed(0), "an empty feed");
        assert!(!page(10, 11).missed(10), "all purged, nothing missed");
        assert!(page(10, 11).missed(9), "seq 10 purged unseen");
        assert!(!page(10, 5).missed(4));
        assert!(page(10, 5).missed(3));
    }
}
