//! The owner's registry of connected edges: one entry per node, keyed by
//! the stream that holds it, so a late-ending older stream can never remove
//! the newer stream's registration (protocol.md §7.2's race).
//!
//! A captured Hello stays valid for the clock-skew window, so the registry
//! refuses one whose stream id it registered lately for that node, or whose
//! signed timestamp is older than the live stream's Hello: a replay never
//! takes over a node's live stream.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use super::recent::Recent;
use crate::session::{Down, SessionKey};
use crate::store::EdgeCapabilities;

/// One connected edge as the owner sees it.
#[derive(Debug, Clone)]
pub struct SessionEntry {
    /// The stream holding it.
    pub key: SessionKey,
    /// Its tenant.
    pub tenant_id: Arc<str>,
    /// Reported capabilities.
    pub capabilities: Arc<EdgeCapabilities>,
    /// Server-side tags.
    pub tags: Arc<[String]>,
    /// Where its commands go.
    pub commands: mpsc::Sender<Down>,
    /// When the stream was opened.
    pub connected_at: DateTime<Utc>,
    /// The Hello's signed timestamp (Unix ms).
    pub hello_ms: i64,
}

struct Inner {
    sessions: HashMap<Uuid, SessionEntry>,
    by_tenant: HashMap<Arc<str>, HashSet<Uuid>>,
    /// Nodes revoked lately: a Hello checked against the store just before
    /// the revocation must not register after it.
    revoked: Recent<()>,
    /// Nodes whose key was rotated lately: a Hello that loaded the old key
    /// must reload once registered.
    rotated: Recent<()>,
    /// The latest server-side tags written lately: a Hello that read older
    /// ones registers with these.
    tags: Recent<Arc<[String]>>,
    /// Stream ids registered lately, per node.
    seen: SeenStreams,
}

/// Stream ids each node registered, each until its replay window ends.
#[derive(Debug, Default)]
struct SeenStreams {
    by_node: HashMap<Uuid, Vec<(Arc<str>, Instant)>>,
    /// (expiry, node) in registration order, for expiry without scanning.
    order: VecDeque<(Instant, Uuid)>,
}

impl SeenStreams {
    fn expire(&mut self, now: Instant) {
        while let Some(&(expires, node_id)) = self.order.front() {
            if expires > now {
                break;
            }
            self.order.pop_front();
            if let Some(streams) = self.by_node.get_mut(&node_id) {
                streams.retain(|(_, until)| *until > now);
                if streams.is_empty() {
                    self.by_node.remove(&node_id);
                }
            }
        }
    }

    fn contains(&self, node_id: Uuid, stream_id: &str, now: Instant) -> bool {
        self.by_node.get(&node_id).is_some_and(|streams| {
            streams
                .iter()
                .any(|(seen, until)| **seen == *stream_id && *until > now)
        })
    }

    fn insert(&mut self, node_id: Uuid, stream_id: Arc<str>, until: Instant) {
        self.by_node
            .entry(node_id)
            .or_default()
            .push((stream_id, until));
        self.order.push_back((until, node_id));
    }
}

/// How long a revoked node id is remembered here (the store's tombstone
/// refuses it at Hello from then on).
const REVOKED_MEMORY: Duration = Duration::from_secs(600);
/// How long key rotations and tag changes are remembered: well beyond the
/// longest time between a Hello's store read and its registration.
const CHANGE_MEMORY: Duration = Duration::from_secs(60);

/// Why a session may not register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The node was revoked.
    Revoked,
    /// The node registered a stream with this id within the replay window
    /// (a replayed Hello): the live one stays.
    Replayed,
    /// The live stream's Hello is newer: the live one stays.
    Older,
}

/// What a registration found.
#[derive(Debug)]
pub struct Registered {
    /// The older stream of the node it replaced, which the caller closes.
    pub replaced: Option<SessionEntry>,
    /// The node's key changed lately: the new session must reload its keys.
    pub keys_rotated: bool,
}

/// Connected edges by node and by tenant.
pub struct Registry {
    inner: Mutex<Inner>,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                sessions: HashMap::new(),
                by_tenant: HashMap::new(),
                revoked: Recent::new(REVOKED_MEMORY),
                rotated: Recent::new(CHANGE_MEMORY),
                tags: Recent::new(CHANGE_MEMORY),
                seen: SeenStreams::default(),
            }),
        }
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("connected", &self.len())
            .finish()
    }
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers `entry` for `node_id`, with tags written since its Hello
    /// read the store at `read_at`, and refuses its stream id for the node
    /// for `replay_window`; gives `entry` back with the reason when it may
    /// not register.
    pub fn register(
        &self,
        mut entry: SessionEntry,
        read_at: Instant,
        replay_window: Duration,
    ) -> Result<Registered, (Refusal, SessionEntry)> {
        let node_id = entry.key.node_id;
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.revoked.get(node_id, now).is_some() {
            return Err((Refusal::Revoked, entry));
        }
        inner.seen.expire(now);
        if inner.seen.contains(node_id, &entry.key.stream_id, now) {
            return Err((Refusal::Replayed, entry));
        }
        if let Some(live) = inner.sessions.get(&node_id) {
            if live.key.stream_id == entry.key.stream_id {
                return Err((Refusal::Replayed, entry));
            }
            if entry.hello_ms < live.hello_ms {
                return Err((Refusal::Older, entry));
            }
        }
        let until = now.checked_add(replay_window).unwrap_or(now);
        inner
            .seen
            .insert(node_id, Arc::clone(&entry.key.stream_id), until);
        if let Some(tags) = inner.tags.written_since(node_id, read_at, now) {
            entry.tags = Arc::clone(tags);
        }
        let keys_rotated = inner.rotated.written_since(node_id, read_at, now).is_some();
        let tenant = Arc::clone(&entry.tenant_id);
        let previous = inner.sessions.insert(node_id, entry);
        if let Some(previous) = &previous {
            if previous.tenant_id != tenant {
                remove_from_tenant(&mut inner, &previous.tenant_id, node_id);
            }
        }
        inner.by_tenant.entry(tenant).or_default().insert(node_id);
        Ok(Registered {
            replaced: previous,
            keys_rotated,
        })
    }

    /// Records that `node_id` was revoked (no stream of it registers from
    /// now on) and removes its session, which it returns for closing.
    pub fn revoke(&self, node_id: Uuid) -> Option<SessionEntry> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.revoked.insert(node_id, (), now);
        let entry = inner.sessions.remove(&node_id)?;
        remove_from_tenant(&mut inner, &entry.tenant_id, node_id);
        Some(entry)
    }

    /// Removes the registration of `key`'s stream; false when the node is
    /// held by another (newer) stream or not at all.
    pub fn unregister(&self, key: &SessionKey) -> bool {
        let mut inner = self.lock();
        match inner.sessions.get(&key.node_id) {
            Some(entry) if entry.key == *key => {
                let tenant = Arc::clone(&entry.tenant_id);
                inner.sessions.remove(&key.node_id);
                remove_from_tenant(&mut inner, &tenant, key.node_id);
                true
            }
            _ => false,
        }
    }

    /// The session of `node_id`.
    pub fn get(&self, node_id: Uuid) -> Option<SessionEntry> {
        self.lock().sessions.get(&node_id).cloned()
    }

    /// Whether `key`'s stream is the registered one.
    pub fn is_current(&self, key: &SessionKey) -> bool {
        self.lock()
            .sessions
            .get(&key.node_id)
            .is_some_and(|entry| entry.key == *key)
    }

    /// Whether `node_id` is connected.
    pub fn contains(&self, node_id: Uuid) -> bool {
        self.lock().sessions.contains_key(&node_id)
    }

    /// Connected edges of `tenant` (every tenant for `None`), by node id.
    pub fn sessions(&self, tenant: Option<&str>) -> Vec<(Uuid, SessionEntry)> {
        let inner = self.lock();
        let mut out: Vec<(Uuid, SessionEntry)> = match tenant {
            Some(tenant) => inner
                .by_tenant
                .get(tenant)
                .into_iter()
                .flatten()
                .filter_map(|id| inner.sessions.get(id).map(|entry| (*id, entry.clone())))
                .collect(),
            None => inner
                .sessions
                .iter()
                .map(|(id, entry)| (*id, entry.clone()))
                .collect(),
        };
        out.sort_by_key(|(id, _)| *id);
        out
    }

    /// Replaces the capabilities of `key`'s session.
    pub fn set_capabilities(&self, key: &SessionKey, capabilities: EdgeCapabilities) {
        let mut inner = self.lock();
        if let Some(entry) = inner.sessions.get_mut(&key.node_id) {
            if entry.key == *key {
                entry.capabilities = Arc::new(capabilities);
            }
        }
    }

    /// Replaces the server-side tags of a node, connected or about to be
    /// (callers apply store writes in commit order).
    pub fn set_tags(&self, node_id: Uuid, tags: &[String]) {
        let tags: Arc<[String]> = tags.into();
        let mut inner = self.lock();
        inner
            .tags
            .insert(node_id, Arc::clone(&tags), Instant::now());
        if let Some(entry) = inner.sessions.get_mut(&node_id) {
            entry.tags = tags;
        }
    }

    /// Records that `node_id`'s key was rotated; returns its session, which
    /// the caller tells to reload (a session registering later learns it
    /// from `register`).
    pub fn keys_rotated(&self, node_id: Uuid) -> Option<SessionEntry> {
        let mut inner = self.lock();
        inner.rotated.insert(node_id, (), Instant::now());
        inner.sessions.get(&node_id).cloned()
    }

    /// Records that `node_id` was re-enrolled with a new key (a session
    /// registering later reloads its keys, as after a rotation) and removes
    /// its session, which it returns for closing: that stream proved the old
    /// key.
    pub fn key_replaced(&self, node_id: Uuid) -> Option<SessionEntry> {
        let mut inner = self.lock();
        inner.rotated.insert(node_id, (), Instant::now());
        let entry = inner.sessions.remove(&node_id)?;
        remove_from_tenant(&mut inner, &entry.tenant_id, node_id);
        Some(entry)
    }

    /// Connected edges.
    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Whether no edge is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn remove_from_tenant(inner: &mut Inner, tenant: &Arc<str>, node_id: Uuid) {
    if let Some(nodes) = inner.by_tenant.get_mut(tenant) {
        nodes.remove(&node_id);
        if nodes.is_empty() {
            inner.by_tenant.remove(tenant);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(node_id: Uuid, stream: &str, connection: u64) -> SessionKey {
        SessionKey {
            node_id,
            stream_id: stream.into(),
            connection,
        }
    }

    fn entry(key: SessionKey) -> (SessionEntry, mpsc::Receiver<Down>) {
        let (commands, rx) = mpsc::channel(1);
        let entry = SessionEntry {
            key,
            tenant_id: "t-a".into(),
            capabilities: Arc::default(),
            tags: Arc::from(Vec::<String>::new()),
            commands,
            connected_at: DateTime::<Utc>::UNIX_EPOCH,
            hello_ms: 0,
        };
        (entry, rx)
    }

    const WINDOW: Duration = Duration::from_secs(600);

    fn register(
        registry: &Registry,
        key: SessionKey,
    ) -> (Result<Registered, Refusal>, mpsc::Receiver<Down>) {
        let (entry, rx) = entry(key);
        let result = registry.register(entry, Instant::now(), WINDOW);
        (result.map_err(|(refusal, _)| refusal), rx)
    }

    #[tokio::test]
    async fn a_replaced_key_removes_the_session_and_makes_late_hellos_reload() {
        let registry = Registry::default();
        let node = crate::runtime::test_id();
        let read_at = Instant::now();
        let (first, _rx) = register(&registry, key(node, "s1", 1));
        assert!(first.is_ok());
        let removed = registry.key_replaced(node);
        assert_eq!(removed.map(|entry| entry.key), Some(key(node, "s1", 1)));
        assert!(!registry.contains(node));
        assert!(registry.sessions(None).is_empty());
        // A Hello that read the old key before the replacement registers, but
        // must reload its keys.
        let (entry, _rx) = entry(key(node, "s2", 2));
        let late = registry.register(entry, read_at, WINDOW);
        assert!(matches!(&late, Ok(r) if r.keys_rotated && r.replaced.is_none()));
        assert!(registry.key_replaced(crate::runtime::test_id()).is_none());
    }

    #[tokio::test]
    async fn a_revoked_node_cannot_register_even_after_its_hello_passed() {
        let registry = Registry::default();
        let node = crate::runtime::test_id();
        let (first, _rx1) = register(&registry, key(node, "s-1", 1));
        assert!(matches!(first, Ok(Registered { replaced: None, .. })));
        let revoked = registry.revoke(node);
        assert_eq!(revoked.map(|e| e.key), Some(key(node, "s-1", 1)));
        assert!(!registry.contains(node));
        assert!(registry.sessions(Some("t-a")).is_empty());
        // A Hello checked against the store before the revocation.
        let (late, _rx2) = register(&registry, key(node, "s-2", 2));
        assert!(matches!(late, Err(Refusal::Revoked)));
        assert!(!registry.contains(node));
    }

    #[tokio::test]
    async fn only_the_current_stream_unregisters() {
        let registry = Registry::default();
        let node = crate::runtime::test_id();
        let old_key = key(node, "old", 1);
        let (old, _rx1) = register(&registry, old_key.clone());
        assert!(matches!(old, Ok(Registered { replaced: None, .. })));
        let (new, _rx2) = register(&registry, key(node, "new", 2));
        assert!(matches!(new, Ok(Registered { replaced: Some(e), .. }) if e.key == old_key));
        assert!(!registry.unregister(&old_key));
        assert!(registry.contains(node));
        // A Hello replaying the live stream's id is refused, and its end
        // does not touch the live registration.
        let replayed = key(node, "new", 3);
        let (copy, _rx3) = register(&registry, replayed.clone());
        assert!(matches!(copy, Err(Refusal::Replayed)));
        assert!(!registry.unregister(&replayed));
        assert!(registry.is_current(&key(node, "new", 2)));
    }

    #[tokio::test]
    async fn an_older_or_replayed_hello_never_takes_over() {
        let registry = Registry::default();
        let node = crate::runtime::test_id();
        let with_ts = |stream: &str, connection: u64, hello_ms: i64| {
            let (mut entry, rx) = entry(key(node, stream, connection));
            entry.hello_ms = hello_ms;
            (entry, rx)
        };
        let (a, _rx_a) = with_ts("a", 1, 1_000);
        assert!(registry.register(a, Instant::now(), WINDOW).is_ok());
        let (b, _rx_b) = with_ts("b", 2, 2_000);
        assert!(registry.register(b, Instant::now(), WINDOW).is_ok());
        // A's Hello again: its stream id was seen, and it is older than B's.
        let (replay, _rx) = with_ts("a", 3, 1_000);
        let refused = registry.register(replay, Instant::now(), WINDOW);
        assert!(matches!(refused, Err((Refusal::Replayed, _))));
        // A new stream id with an older signed timestamp.
        let (older, _rx) = with_ts("c", 4, 1_500);
        let refused = registry.register(older, Instant::now(), WINDOW);
        assert!(matches!(refused, Err((Refusal::Older, _))));
        assert!(registry.is_current(&key(node, "b", 2)));
        // Once the window is over, an old stream id is forgotten (a Hello
        // that old fails the clock-skew check anyway).
        let (short, _rx) = with_ts("d", 5, 3_000);
        assert!(registry
            .register(short, Instant::now(), Duration::ZERO)
            .is_ok());
        let (again, _rx) = with_ts("d", 6, 3_000);
        let refused = registry.register(again, Instant::now(), WINDOW);
        assert!(
            matches!(refused, Err((Refusal::Replayed, _))),
            "the live stream's own id stays refused"
        );
    }

    #[tokio::test]
    async fn changes_after_a_hellos_store_read_reach_its_session() {
        let registry = Registry::default();
        let node = crate::runtime::test_id();
        // The Hello read tags ["old"] and the old key at `read_at`; then
        // these landed.
        let read_at = Instant::now();
        registry.set_tags(node, &["new".to_owned()]);
        assert!(
            registry.keys_rotated(node).is_none(),
            "nothing connected yet"
        );
        let (mut hello, _rx) = entry(key(node, "s-1", 1));
        hello.tags = Arc::from(vec!["old".to_owned()]);
        let registered = registry.register(hello, read_at, WINDOW);
        assert!(matches!(&registered, Ok(r) if r.keys_rotated && r.replaced.is_none()));
        let tags = registry.get(node).map(|entry| entry.tags.to_vec());
        assert_eq!(tags, Some(vec!["new".to_owned()]));
        // Once connected, a rotation is told to the session itself.
        assert!(registry.keys_rotated(node).is_some());

        // A Hello that read the store after the last write keeps what it read
        // (the store may have changed without this registry, e.g. re-enrollment).
        let read_later = Instant::now() + Duration::from_millis(1);
        let (mut later, _rx2) = entry(key(node, "s-2", 2));
        later.tags = Arc::from(Vec::<String>::new());
        let registered = registry.register(later, read_later, WINDOW);
        assert!(matches!(&registered, Ok(r) if !r.keys_rotated && r.replaced.is_some()));
        let tags = registry.get(node).map(|entry| entry.tags.to_vec());
        assert_eq!(tags, Some(Vec::new()));
    }
}
