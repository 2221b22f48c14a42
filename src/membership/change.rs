//! `MembershipChange`: what differs between two snapshots, as a pure
//! function (members keyed by name and generation; how long ago a member
//! was heard is not a change).

use super::member::{Member, Snapshot};

/// One difference between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipChange {
    /// A member appeared (a new replica, or a new start of one).
    Added(Member),
    /// A member's published state changed (phase, addresses, versions, keys).
    Updated {
        /// Before.
        before: Box<Member>,
        /// After.
        after: Box<Member>,
    },
    /// A member left (declared dead, or gone from gossip).
    Removed(Member),
}

impl MembershipChange {
    /// The metric label of this kind of change.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Added(_) => "added",
            Self::Updated { .. } => "updated",
            Self::Removed(_) => "removed",
        }
    }
}

/// The changes that turn `before` into `after`, ordered by member.
pub fn diff(before: &Snapshot, after: &Snapshot) -> Vec<MembershipChange> {
    let mut changes = Vec::new();
    let (mut old, mut new) = (
        before.members().iter().peekable(),
        after.members().iter().peekable(),
    );
    loop {
        match (old.peek(), new.peek()) {
            (None, None) => return changes,
            (Some(gone), None) => {
                changes.push(MembershipChange::Removed((*gone).clone()));
                old.next();
            }
            (None, Some(came)) => {
                changes.push(MembershipChange::Added((*came).clone()));
                new.next();
            }
            (Some(a), Some(b)) => match a.key().cmp(&b.key()) {
                std::cmp::Ordering::Less => {
                    changes.push(MembershipChange::Removed((*a).clone()));
                    old.next();
                }
                std::cmp::Ordering::Greater => {
                    changes.push(MembershipChange::Added((*b).clone()));
                    new.next();
                }
                std::cmp::Ordering::Equal => {
                    if !same_state(a, b) {
                        changes.push(MembershipChange::Updated {
                            before: Box::new((*a).clone()),
                            after: Box::new((*b).clone()),
                        });
                    }
                    old.next();
                    new.next();
                }
            },
        }
    }
}

fn same_state(a: &Member, b: &Member) -> bool {
    Member {
        last_heard: b.last_heard,
        ..a.clone()
    } == *b
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;
    use crate::membership::member::KEY_PHASE;

    fn member(name: &str, generation: u64, phase: &str) -> Member {
        Member::from_keys(
            name,
            generation,
            SocketAddr::from(([10, 0, 0, 1], 7946)),
            [(KEY_PHASE, phase)],
        )
    }

    #[test]
    fn identical_snapshots_have_no_changes_even_if_heard_at_other_times() {
        let a = Snapshot::new(vec![member("relay-0", 1, "serving")]);
        let mut heard = member("relay-0", 1, "serving");
        heard.last_heard = Duration::from_millis(900);
        assert!(diff(&a, &Snapshot::new(vec![heard])).is_empty());
        assert!(diff(&Snapshot::default(), &Snapshot::default()).is_empty());
    }

    #[test]
    fn joins_leaves_restarts_and_phase_changes_are_reported() {
        let before = Snapshot::new(vec![
            member("relay-0", 1, "serving"),
            member("relay-1", 1, "serving"),
            member("relay-2", 1, "joining"),
        ]);
        let after = Snapshot::new(vec![
            member("relay-0", 1, "serving"),
            // relay-1 restarted: old start removed, new one added.
            member("relay-1", 2, "joining"),
            member("relay-2", 1, "serving"),
            member("relay-3", 1, "joining"),
        ]);
        let changes = diff(&before, &after);
        let summary: Vec<(&str, &str, u64)> = changes
            .iter()
            .map(|change| match change {
                MembershipChange::Added(m) | MembershipChange::Removed(m) => {
                    (change.kind(), m.name.as_str(), m.generation)
                }
                MembershipChange::Updated { after, .. } => {
                    (change.kind(), after.name.as_str(), after.generation)
                }
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("removed", "relay-1", 1),
                ("added", "relay-1", 2),
                ("updated", "relay-2", 1),
                ("added", "relay-3", 1),
            ]
        );
        // Applying the reverse diff gives the mirror image.
        let back = diff(&after, &before);
        assert_eq!(back.len(), changes.len());
        assert!(matches!(
            &changes[2],
            MembershipChange::Updated { before, after }
                if before.phase.as_str() == "joining" && after.phase.as_str() == "serving"
        ));
    }
}
