//! Node ids remembered for a while after something happened to them. The
//! registry keeps recent revocations, key rotations and tag changes here:
//! a Hello is checked against the store before its stream registers, so a
//! change landing in between must still reach the new session.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

/// Values by node id, each forgotten `memory` after its last write.
#[derive(Debug)]
pub struct Recent<V> {
    memory: Duration,
    entries: HashMap<Uuid, (V, Instant)>,
    /// Writes in time order, for expiry without scanning every entry.
    order: VecDeque<(Instant, Uuid)>,
}

impl<V> Recent<V> {
    /// An empty map forgetting entries after `memory`.
    pub fn new(memory: Duration) -> Self {
        Self {
            memory,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Remembers `value` for `node_id` from `now`.
    pub fn insert(&mut self, node_id: Uuid, value: V, now: Instant) {
        self.expire(now);
        self.entries.insert(node_id, (value, now));
        self.order.push_back((now, node_id));
    }

    /// The value written for `node_id` less than `memory` before `now`.
    pub fn get(&self, node_id: Uuid, now: Instant) -> Option<&V> {
        self.entry(node_id, now).map(|(value, _)| value)
    }

    /// The value written for `node_id` at or after `since`, if still
    /// remembered at `now`.
    pub fn written_since(&self, node_id: Uuid, since: Instant, now: Instant) -> Option<&V> {
        self.entry(node_id, now)
            .filter(|(_, at)| *at >= since)
            .map(|(value, _)| value)
    }

    fn entry(&self, node_id: Uuid, now: Instant) -> Option<&(V, Instant)> {
        self.entries
            .get(&node_id)
            .filter(|(_, at)| now.saturating_duration_since(*at) < self.memory)
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(at, node_id)) = self.order.front() {
            if now.saturating_duration_since(at) < self.memory {
                break;
            }
            self.order.pop_front();
            // A later write of the same node keeps its entry.
            if self
                .entries
                .get(&node_id)
                .is_some_and(|(_, last)| *last == at)
            {
                self.entries.remove(&node_id);
            }
        }
    }

    /// Entries currently held (expired ones may linger until the next write).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_forgotten_after_their_last_write() {
        let mut recent = Recent::new(Duration::from_secs(10));
        let (a, b) = (crate::runtime::test_id(), crate::runtime::test_id());
        let start = Instant::now();
        recent.insert(a, 1, start);
        recent.insert(b, 2, start + Duration::from_secs(5));
        recent.insert(a, 3, start + Duration::from_secs(8));
        let later = start + Duration::from_secs(12);
        assert_eq!(recent.get(a, later), Some(&3), "rewritten at 8 s");
        let at_7 = start + Duration::from_secs(7);
        assert_eq!(recent.written_since(a, at_7, later), Some(&3));
        assert_eq!(recent.written_since(b, at_7, later), None, "written at 5 s");
        assert_eq!(recent.get(b, later), Some(&2));
        let much_later = start + Duration::from_secs(16);
        assert_eq!(recent.get(b, much_later), None);
        recent.insert(crate::runtime::test_id(), 4, much_later);
        assert_eq!(recent.held(), 2, "b expired, a (written at 8 s) kept");
        assert_eq!(recent.get(a, much_later), Some(&3));
    }
}
