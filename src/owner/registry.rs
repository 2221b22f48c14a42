//! The owner's registry of connected edges: one entry per node, keyed by
//! the stream that holds it, so a late-ending older stream can never remove
//! the newer stream's registration (protocol.md §7.2's race).
//!
//! A captured Hello stays valid for the clock-skew window, so the registry
//! refuses one whose stream id it registered lately for that node, or whose
//! signed timestamp is older than the live stream's Hello: a replay never
//! takes over a node's live stream.
//!
//! Changes from the feed (and this replica's own writes) reach sessions
//! here, ordered by `seq`: each entry remembers the `seq` it reflects and
//! ignores older changes. A Hello reads the store before it registers, so
//! the registry counts every change it applies (`epoch`): a Hello that
//! began before the last one reloads from the store first thing.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;
use uuid::Uuid;

use crate::hop::{Down, DownLink, IngressId, SessionKey};
use crate::store::{ChangeKind, EdgeCapabilities, EdgeChange, EdgeKey, EdgeRecord};

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
    pub commands: DownLink,
    /// When the stream was opened.
    pub connected_at: DateTime<Utc>,
    /// The Hello's signed timestamp (Unix ms).
    pub hello_ms: i64,
    /// `seq` of the node's latest change this session reflects.
    pub seq: i64,
    /// The node's current key, as this session loaded it.
    pub public_key: Arc<[u8]>,
}

struct Inner {
    sessions: HashMap<Uuid, SessionEntry>,
    by_tenant: HashMap<Arc<str>, HashSet<Uuid>>,
    /// Stream ids registered lately, per node.
    seen: SeenStreams,
    /// Changes applied so far (from the feed or this replica's writes).
    epoch: u64,
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

/// Why a session may not register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
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
    /// A change was applied after the Hello read the store: the session
    /// was told to reload (its first command).
    pub reload: bool,
}

/// What applying a change asks of the owner.
#[derive(Debug)]
pub enum Applied {
    /// The node is gone (revoked, or its row deleted): end this session.
    Revoked(SessionEntry),
    /// The node was re-enrolled with a new key: end this session.
    KeyReplaced(SessionEntry),
    /// The node's keys or tags changed: tell this session to reload.
    Reload(SessionEntry),
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
                seen: SeenStreams::default(),
                epoch: 0,
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

    /// Changes applied so far; a Hello takes this before it reads the store.
    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// Registers `entry` for `node_id`, whose Hello read the store after
    /// [`Self::epoch`] was `epoch`, and refuses its stream id for the node
    /// for `replay_window`; gives its command queue back with the reason when it may
    /// not register. If a change was applied since `epoch`, the session may
    /// hold older keys, tags or a revoked node: its queue gets
    /// [`Down::Reload`] before any command can be queued.
    pub fn register(
        &self,
        entry: SessionEntry,
        epoch: Option<u64>,
        replay_window: Duration,
    ) -> Result<Registered, (Refusal, DownLink)> {
        let node_id = entry.key.node_id;
        let now = Instant::now();
        let mut inner = self.lock();
        inner.seen.expire(now);
        if inner.seen.contains(node_id, &entry.key.stream_id, now) {
            return Err((Refusal::Replayed, entry.commands));
        }
        if let Some(live) = inner.sessions.get(&node_id) {
            if live.key.stream_id == entry.key.stream_id {
                return Err((Refusal::Replayed, entry.commands));
            }
            if entry.hello_ms < live.hello_ms {
                return Err((Refusal::Older, entry.commands));
            }
        }
        let until = now.checked_add(replay_window).unwrap_or(now);
        inner
            .seen
            .insert(node_id, Arc::clone(&entry.key.stream_id), until);
        // The queue is new, so there is room; a full one would mean a closed
        // session, which never runs a command.
        let reload = epoch != Some(inner.epoch) && entry.commands.try_send(Down::Reload).is_ok();
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
            reload,
        })
    }

    /// Applies one change of the feed (or of this replica's own write) to
    /// the node's session, unless the session already reflects it.
    pub fn apply(&self, change: &EdgeChange) -> Option<Applied> {
        let mut inner = self.lock();
        inner.epoch += 1;
        let entry = inner.sessions.get_mut(&change.node_id)?;
        if entry.seq >= change.seq {
            return None;
        }
        entry.seq = change.seq;
        match change.kind {
            ChangeKind::Revoked => remove(&mut inner, change.node_id).map(Applied::Revoked),
            ChangeKind::Enrolled => remove(&mut inner, change.node_id).map(Applied::KeyReplaced),
            ChangeKind::KeyRotated | ChangeKind::Tags => Some(Applied::Reload(entry.clone())),
            ChangeKind::Renamed => None,
        }
    }

    /// Removes `node_id`'s session (it was revoked here), which it returns
    /// for closing; a Hello already past its store read reloads and ends.
    pub fn revoke(&self, node_id: Uuid) -> Option<SessionEntry> {
        let mut inner = self.lock();
        inner.epoch += 1;
        remove(&mut inner, node_id)
    }

    /// Brings every session up to date with `edges`, the stored rows read
    /// after the feed's changes were lost (a resync): a node without a row
    /// is gone, new tags are taken, a session whose key differs reloads.
    pub fn resync(&self, edges: &[EdgeRecord]) -> Vec<Applied> {
        let rows: HashMap<Uuid, &EdgeRecord> =
            edges.iter().map(|edge| (edge.node_id, edge)).collect();
        let mut inner = self.lock();
        inner.epoch += 1;
        let held: Vec<Uuid> = inner.sessions.keys().copied().collect();
        let mut applied = Vec::new();
        for node_id in held {
            let Some(edge) = rows.get(&node_id) else {
                applied.extend(remove(&mut inner, node_id).map(Applied::Revoked));
                continue;
            };
            let Some(entry) = inner.sessions.get_mut(&node_id) else {
                continue;
            };
            entry.seq = entry.seq.max(edge.seq);
            if *entry.tags != *edge.tags {
                entry.tags = edge.tags.as_slice().into();
            }
            if *entry.public_key != *edge.public_key {
                applied.push(Applied::Reload(entry.clone()));
            }
        }
        applied
    }

    /// The shared-mode check: `keys` are the stored keys of the nodes of
    /// `asked`, read in one query. A session asked about whose row is gone
    /// ends; one whose key changed reloads.
    pub fn check_keys(&self, asked: &[SessionKey], keys: &[EdgeKey]) -> Vec<Applied> {
        let keys: HashMap<Uuid, &[u8]> = keys
            .iter()
            .map(|key| (key.node_id, key.public_key.as_slice()))
            .collect();
        let mut inner = self.lock();
        let mut applied = Vec::new();
        for key in asked {
            let Some(entry) = inner.sessions.get(&key.node_id).filter(|e| e.key == *key) else {
                continue;
            };
            match keys.get(&key.node_id) {
                Some(stored) if **stored == *entry.public_key => {}
                Some(_) => {
                    applied.push(Applied::Reload(entry.clone()));
                    inner.epoch += 1;
                }
                None => {
                    inner.epoch += 1;
                    applied.extend(remove(&mut inner, key.node_id).map(Applied::Revoked));
                }
            }
        }
        applied
    }

    /// The sessions held now.
    pub fn keys(&self) -> Vec<SessionKey> {
        self.lock()
            .sessions
            .values()
            .map(|entry| entry.key.clone())
            .collect()
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

    /// Removes every session held through `ingress`, which it returns (by
    /// node id) for ending.
    pub fn remove_ingress(&self, ingress: &IngressId) -> Vec<SessionEntry> {
        let mut inner = self.lock();
        let mut nodes: Vec<Uuid> = inner
            .sessions
            .iter()
            .filter(|(_, entry)| entry.key.ingress == *ingress)
            .map(|(node_id, _)| *node_id)
            .collect();
        nodes.sort_unstable();
        nodes
            .into_iter()
            .filter_map(|node_id| remove(&mut inner, node_id))
            .collect()
    }

    /// The tenant of `node_id`, while a session holds it.
    pub fn tenant_of(&self, node_id: Uuid) -> Option<Arc<str>> {
        self.lock()
            .sessions
            .get(&node_id)
            .map(|entry| Arc::clone(&entry.tenant_id))
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
    pub fn set_capabilities(&self, key: &SessionKey, capabilities: Arc<EdgeCapabilities>) {
        let mut inner = self.lock();
        if let Some(entry) = inner.sessions.get_mut(&key.node_id) {
            if entry.key == *key {
                entry.capabilities = capabilities;
            }
        }
    }

    /// Takes the tags of `edge`, a write of this replica committed as
    /// `edge.seq`, unless the node's session reflects a later change.
    pub fn set_tags(&self, edge: &EdgeRecord) {
        let mut inner = self.lock();
        inner.epoch += 1;
        if let Some(entry) = inner.sessions.get_mut(&edge.node_id) {
            if edge.seq >= entry.seq {
                entry.tags = edge.tags.as_slice().into();
                entry.seq = edge.seq;
            }
        }
    }

    /// What `key`'s session reloaded from the store (tags and key as of
    /// `seq`), unless it reflects a later change by now.
    pub fn reloaded(&self, key: &SessionKey, tags: &[String], public_key: &[u8], seq: i64) {
        let mut inner = self.lock();
        if let Some(entry) = inner.sessions.get_mut(&key.node_id) {
            if entry.key == *key && seq >= entry.seq {
                entry.tags = tags.into();
                entry.public_key = public_key.into();
                entry.seq = seq;
            }
        }
    }

    /// Counts a key rotation written here; returns the node's session, which
    /// the caller tells to reload.
    pub fn keys_rotated(&self, node_id: Uuid) -> Option<SessionEntry> {
        let mut inner = self.lock();
        inner.epoch += 1;
        inner.sessions.get(&node_id).cloned()
    }

    /// Removes `node_id`'s session, which it returns for closing: the node
    /// was re-enrolled here with a new key, and that stream proved the old
    /// one.
    pub fn key_replaced(&self, node_id: Uuid) -> Option<SessionEntry> {
        let mut inner = self.lock();
        inner.epoch += 1;
        remove(&mut inner, node_id)
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

fn remove(inner: &mut Inner, node_id: Uuid) -> Option<SessionEntry> {
    let entry = inner.sessions.remove(&node_id)?;
    remove_from_tenant(inner, &entry.tenant_id, node_id);
    Some(entry)
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
#[path = "registry_tests.rs"]
mod tests;
