//! Tests of the registry: one stream per node, replays refused, and changes
//! applied by `seq`, including those that land while a Hello is checked.

use tokio::sync::mpsc;

use super::*;
use crate::hop::{IngressId, Tagged};

fn key(node_id: Uuid, stream: &str, connection: u64) -> SessionKey {
    SessionKey {
        node_id,
        tenant: "t-a".into(),
        stream_id: stream.into(),
        ingress: IngressId::new("r-1", 1),
        connection,
    }
}

fn entry(key: SessionKey) -> (SessionEntry, mpsc::Receiver<Tagged>) {
    let (commands, rx) = mpsc::channel(1);
    let commands = DownLink::in_process(commands, 0);
    let entry = SessionEntry {
        key,
        tenant_id: "t-a".into(),
        capabilities: Arc::default(),
        tags: Arc::from(Vec::<String>::new()),
        commands,
        connected_at: DateTime::<Utc>::UNIX_EPOCH,
        hello_ms: 0,
        seq: 0,
        public_key: Arc::from(vec![1u8; 32]),
    };
    (entry, rx)
}

const WINDOW: Duration = Duration::from_secs(600);

fn register(
    registry: &Registry,
    key: SessionKey,
) -> (Result<Registered, Refusal>, mpsc::Receiver<Tagged>) {
    let (entry, rx) = entry(key);
    let result = registry.register(entry, Some(registry.epoch()), WINDOW);
    (result.map_err(|(refusal, _)| refusal), rx)
}

fn change(node_id: Uuid, seq: i64, kind: ChangeKind) -> EdgeChange {
    EdgeChange {
        seq,
        node_id,
        tenant_id: "t-a".to_owned(),
        kind,
        at: DateTime::<Utc>::UNIX_EPOCH,
    }
}

fn record(node_id: Uuid, seq: i64, tags: &[&str], public_key: u8) -> EdgeRecord {
    EdgeRecord {
        node_id,
        tenant_id: "t-a".to_owned(),
        public_key: vec![public_key; 32],
        capabilities: EdgeCapabilities::default(),
        tags: tags.iter().map(|tag| (*tag).to_owned()).collect(),
        status: crate::store::EdgeStatus::Active,
        display_name: String::new(),
        enrolled_at: DateTime::<Utc>::UNIX_EPOCH,
        last_heartbeat_at: None,
        seq,
    }
}

fn tags_of(registry: &Registry, node: Uuid) -> Option<Vec<String>> {
    registry.get(node).map(|entry| entry.tags.to_vec())
}

#[tokio::test]
async fn a_replaced_key_removes_the_session_and_makes_late_hellos_reload() {
    let registry = Registry::default();
    let node = crate::runtime::test_id();
    let before = registry.epoch();
    let (first, _rx) = register(&registry, key(node, "s1", 1));
    assert!(first.is_ok());
    let removed = registry.key_replaced(node);
    assert_eq!(removed.map(|entry| entry.key), Some(key(node, "s1", 1)));
    assert!(!registry.contains(node));
    assert!(registry.sessions(None).is_empty());
    // A Hello that read the old key before the replacement registers, but
    // its first command is to reload.
    let (late, mut rx) = entry(key(node, "s2", 2));
    let late = registry.register(late, Some(before), WINDOW);
    assert!(matches!(&late, Ok(r) if r.reload && r.replaced.is_none()));
    assert!(matches!(
        rx.try_recv(),
        Ok(Tagged {
            down: Down::Reload,
            ..
        })
    ));
    assert!(registry.key_replaced(crate::runtime::test_id()).is_none());
}

#[tokio::test]
async fn a_hello_that_read_before_a_revocation_reloads_and_one_after_does_not() {
    let registry = Registry::default();
    let node = crate::runtime::test_id();
    let (first, _rx1) = register(&registry, key(node, "s-1", 1));
    assert!(matches!(
        first,
        Ok(Registered {
            replaced: None,
            reload: false
        })
    ));
    let before = registry.epoch();
    let revoked = registry.revoke(node);
    assert_eq!(revoked.map(|e| e.key), Some(key(node, "s-1", 1)));
    assert!(!registry.contains(node));
    assert!(registry.sessions(Some("t-a")).is_empty());
    // A Hello that read the store before the revocation: it reloads (and
    // finds no row) before any command can reach it.
    let (late, mut rx) = entry(key(node, "s-2", 2));
    assert!(matches!(
        registry.register(late, Some(before), WINDOW),
        Ok(Registered { reload: true, .. })
    ));
    assert!(matches!(
        rx.try_recv(),
        Ok(Tagged {
            down: Down::Reload,
            ..
        })
    ));
    // One that read after it has nothing to reload.
    let (fresh, mut rx) = entry(key(node, "s-3", 3));
    assert!(matches!(
        registry.register(fresh, Some(registry.epoch()), WINDOW),
        Ok(Registered { reload: false, .. })
    ));
    assert!(rx.try_recv().is_err());
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
    assert!(registry.register(a, Some(0), WINDOW).is_ok());
    let (b, _rx_b) = with_ts("b", 2, 2_000);
    assert!(registry.register(b, Some(0), WINDOW).is_ok());
    // A's Hello again: its stream id was seen, and it is older than B's.
    let (replay, _rx) = with_ts("a", 3, 1_000);
    let refused = registry.register(replay, Some(0), WINDOW);
    assert!(matches!(refused, Err((Refusal::Replayed, _))));
    // A new stream id with an older signed timestamp.
    let (older, _rx) = with_ts("c", 4, 1_500);
    let refused = registry.register(older, Some(0), WINDOW);
    assert!(matches!(refused, Err((Refusal::Older, _))));
    assert!(registry.is_current(&key(node, "b", 2)));
    // Once the window is over, an old stream id is forgotten (a Hello
    // that old fails the clock-skew check anyway).
    let (short, _rx) = with_ts("d", 5, 3_000);
    assert!(registry.register(short, Some(0), Duration::ZERO).is_ok());
    let (again, _rx) = with_ts("d", 6, 3_000);
    let refused = registry.register(again, Some(0), WINDOW);
    assert!(
        matches!(refused, Err((Refusal::Replayed, _))),
        "the live stream's own id stays refused"
    );
}

#[tokio::test]
async fn changes_apply_in_seq_order_and_once() {
    let registry = Registry::default();
    let node = crate::runtime::test_id();
    let (hello, _rx) = entry(key(node, "s-1", 1));
    let hello = SessionEntry { seq: 5, ..hello };
    assert!(registry
        .register(hello, Some(registry.epoch()), WINDOW)
        .is_ok());
    // The Hello read seq 5: older changes are already in what it read.
    assert!(registry.apply(&change(node, 4, ChangeKind::Tags)).is_none());
    assert!(matches!(
        registry.apply(&change(node, 6, ChangeKind::KeyRotated)),
        Some(Applied::Reload(entry)) if entry.seq == 6
    ));
    assert!(
        registry
            .apply(&change(node, 6, ChangeKind::KeyRotated))
            .is_none(),
        "applied once (own write, then the feed)"
    );
    // Two tag writes whose results arrive in the opposite order of their
    // commits: the later commit wins.
    registry.set_tags(&record(node, 8, &["second"], 1));
    registry.set_tags(&record(node, 7, &["first"], 1));
    assert_eq!(tags_of(&registry, node), Some(vec!["second".to_owned()]));
    // A reload that read the store before seq 8 changes nothing.
    registry.reloaded(&key(node, "s-1", 1), &["stale".to_owned()], &[2; 32], 6);
    assert_eq!(tags_of(&registry, node), Some(vec!["second".to_owned()]));
    registry.reloaded(&key(node, "s-1", 1), &["new".to_owned()], &[2; 32], 9);
    assert_eq!(tags_of(&registry, node), Some(vec!["new".to_owned()]));
    assert!(registry
        .apply(&change(node, 10, ChangeKind::Renamed))
        .is_none());
    assert!(matches!(
        registry.apply(&change(node, 11, ChangeKind::Revoked)),
        Some(Applied::Revoked(entry)) if entry.key == key(node, "s-1", 1)
    ));
    assert!(!registry.contains(node));
    // A change of a node held nowhere here still counts for Hellos.
    let before = registry.epoch();
    assert!(registry
        .apply(&change(crate::runtime::test_id(), 12, ChangeKind::Enrolled))
        .is_none());
    assert_ne!(registry.epoch(), before);
}

#[tokio::test]
async fn a_resync_ends_gone_nodes_takes_tags_and_reloads_changed_keys() {
    let registry = Registry::default();
    let (gone, kept, rotated) = (
        crate::runtime::test_id(),
        crate::runtime::test_id(),
        crate::runtime::test_id(),
    );
    let mut queues = Vec::new();
    for (node, connection) in [(gone, 1), (kept, 2), (rotated, 3)] {
        let (entry, rx) = register(&registry, key(node, "s", connection));
        assert!(entry.is_ok());
        queues.push(rx);
    }
    let applied = registry.resync(&[record(kept, 0, &["new"], 1), record(rotated, 40, &[], 2)]);
    assert_eq!(applied.len(), 2);
    assert!(applied
        .iter()
        .any(|a| matches!(a, Applied::Revoked(e) if e.key.node_id == gone)));
    assert!(applied
        .iter()
        .any(|a| matches!(a, Applied::Reload(e) if e.key.node_id == rotated)));
    assert!(!registry.contains(gone));
    assert_eq!(tags_of(&registry, kept), Some(vec!["new".to_owned()]));
    assert_eq!(registry.get(rotated).map(|e| e.seq), Some(40));
}

#[tokio::test]
async fn the_shared_check_ends_deleted_rows_and_reloads_changed_keys() {
    let registry = Registry::default();
    let (deleted, rekeyed, same) = (
        crate::runtime::test_id(),
        crate::runtime::test_id(),
        crate::runtime::test_id(),
    );
    let mut queues = Vec::new();
    for (node, connection) in [(deleted, 1), (rekeyed, 2), (same, 3)] {
        let (entry, rx) = register(&registry, key(node, "s", connection));
        assert!(entry.is_ok());
        queues.push(rx);
    }
    let asked = registry.keys();
    // A session registered after the query was asked is left alone.
    let late = crate::runtime::test_id();
    let (entry, _rx) = register(&registry, key(late, "s", 4));
    assert!(entry.is_ok());
    let keys = [
        EdgeKey {
            node_id: rekeyed,
            public_key: vec![9; 32],
        },
        EdgeKey {
            node_id: same,
            public_key: vec![1; 32],
        },
    ];
    let applied = registry.check_keys(&asked, &keys);
    assert_eq!(applied.len(), 2, "{applied:?}");
    assert!(!registry.contains(deleted));
    assert!(registry.contains(rekeyed) && registry.contains(same) && registry.contains(late));
    assert!(applied
        .iter()
        .any(|a| matches!(a, Applied::Reload(e) if e.key.node_id == rekeyed)));
}

#[tokio::test]
async fn a_hello_that_read_before_a_tag_write_or_rotation_ends_with_the_newer_state() {
    let registry = Registry::default();
    let node = crate::runtime::test_id();
    // The Hello read tags [] and seq 3 (epoch taken before that read)...
    let before = registry.epoch();
    // ...then a tag write (here) and a rotation (from the feed) commit and
    // are applied while it is not registered yet.
    registry.set_tags(&record(node, 4, &["new"], 1));
    assert!(registry
        .apply(&change(node, 5, ChangeKind::KeyRotated))
        .is_none());
    let (hello, mut rx) = entry(key(node, "s-1", 1));
    let hello = SessionEntry { seq: 3, ..hello };
    let registered = registry.register(hello, Some(before), WINDOW);
    assert!(matches!(registered, Ok(Registered { reload: true, .. })));
    // Its first command is to reload; the reload reads seq 5 and the new
    // tags and key, which the registry takes.
    assert!(matches!(
        rx.try_recv(),
        Ok(Tagged {
            down: Down::Reload,
            ..
        })
    ));
    assert_eq!(tags_of(&registry, node), Some(Vec::new()));
    registry.reloaded(&key(node, "s-1", 1), &["new".to_owned()], &[2; 32], 5);
    assert_eq!(tags_of(&registry, node), Some(vec!["new".to_owned()]));
    assert_eq!(
        registry.get(node).map(|e| e.public_key.to_vec()),
        Some(vec![2; 32])
    );
}
