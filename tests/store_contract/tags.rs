//! The tag part of the store contract: a [`TagChange`] applies replace, then
//! add, then remove, and concurrent changes of one edge all land (the store
//! changes tags atomically, never read-modify-write from the caller).

use std::sync::Arc;

use aegis_relay::store::{Store, TagChange};
use uuid::Uuid;

use super::{at, enroll, TestResult};

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

/// A change that replaces the tags with `tags`.
pub fn replace(tags: &[&str]) -> TagChange {
    TagChange {
        replace: Some(strings(tags)),
        ..TagChange::default()
    }
}

async fn change(
    store: &dyn Store,
    node_id: Uuid,
    change: TagChange,
) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let updated = store
        .change_edge_tags(Some("t-tags"), node_id, &change, at(0))
        .await?
        .ok_or("edge not found")?;
    let stored = store.get_edge(node_id).await?.ok_or("edge missing")?;
    assert_eq!(stored.tags, updated.tags, "returned what was stored");
    Ok(updated.tags)
}

pub async fn tag_changes_replace_then_add_then_remove(store: &dyn Store) -> TestResult {
    let node_id = enroll(store, "t-tags", 1, at(0)).await?;
    assert_eq!(
        change(store, node_id, replace(&["a", "b"])).await?,
        strings(&["a", "b"])
    );
    let mixed = TagChange {
        replace: Some(strings(&["c", "a", "c"])),
        add: strings(&["b", "a", "d"]),
        remove: strings(&["c", "zz"]),
    };
    assert_eq!(
        change(store, node_id, mixed).await?,
        strings(&["a", "b", "d"])
    );
    let add = TagChange {
        add: strings(&["d", "e", "e"]),
        ..TagChange::default()
    };
    assert_eq!(
        change(store, node_id, add).await?,
        strings(&["a", "b", "d", "e"])
    );
    let remove = TagChange {
        remove: strings(&["a", "missing"]),
        ..TagChange::default()
    };
    assert_eq!(
        change(store, node_id, remove).await?,
        strings(&["b", "d", "e"])
    );
    let nothing = TagChange::default();
    assert_eq!(
        change(store, node_id, nothing).await?,
        strings(&["b", "d", "e"])
    );
    assert_eq!(
        change(store, node_id, replace(&[])).await?,
        Vec::<String>::new()
    );
    // Out of scope or unknown: nothing found, nothing written.
    let add_x = TagChange {
        add: strings(&["x"]),
        ..TagChange::default()
    };
    assert_eq!(
        store
            .change_edge_tags(Some("t-other"), node_id, &add_x, at(0))
            .await?,
        None
    );
    assert_eq!(
        store
            .change_edge_tags(None, aegis_relay::runtime::OsEntropy.uuid(), &add_x, at(0))
            .await?,
        None
    );
    let stored = store.get_edge(node_id).await?.ok_or("edge missing")?;
    assert!(stored.tags.is_empty(), "{:?}", stored.tags);
    Ok(())
}

/// Sixteen concurrent adds of distinct tags: every tag lands, and the
/// changes were applied one after another (each saw all earlier ones).
pub async fn concurrent_tag_changes_all_land(store: Arc<dyn Store>) -> TestResult {
    const WRITERS: usize = 16;
    let node_id = enroll(store.as_ref(), "t-tags", 1, at(0)).await?;
    change(store.as_ref(), node_id, replace(&["base"])).await?;
    let start = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..WRITERS {
        let store = Arc::clone(&store);
        let start = Arc::clone(&start);
        writers.spawn(async move {
            let add = TagChange {
                add: vec![format!("tag-{writer:02}")],
                ..TagChange::default()
            };
            start.wait().await;
            store
                .change_edge_tags(Some("t-tags"), node_id, &add, at(0))
                .await
        });
    }
    let mut seen_lengths = Vec::new();
    while let Some(joined) = writers.join_next().await {
        let updated = joined??.ok_or("edge not found")?;
        seen_lengths.push(updated.tags.len());
    }
    seen_lengths.sort_unstable();
    let serial: Vec<usize> = (2..=WRITERS + 1).collect();
    assert_eq!(seen_lengths, serial, "each change saw every earlier one");
    let mut tags = store.get_edge(node_id).await?.ok_or("edge missing")?.tags;
    assert_eq!(tags.first().map(String::as_str), Some("base"), "{tags:?}");
    tags.sort();
    let mut expected: Vec<String> = (0..WRITERS)
        .map(|writer| format!("tag-{writer:02}"))
        .collect();
    expected.push("base".to_owned());
    expected.sort();
    assert_eq!(tags, expected, "no change was lost");
    Ok(())
}
