//! The group part of the store contract: groups unique per (tenant, name),
//! tenant-scoped reads and updates.

use aegis_relay::store::{EdgeGroup, GroupUpdate, Store, StoreError};
use uuid::Uuid;

use super::{at, TestResult};

fn group(tenant: &str, name: &str) -> EdgeGroup {
    EdgeGroup {
        id: aegis_relay::runtime::OsEntropy.uuid(),
        tenant_id: tenant.into(),
        name: name.into(),
        selector: serde_json::json!({"os": "linux", "tools": [], "labels": [], "tags": []}),
        pinned_members: vec![Uuid::from_u128(5)],
        created_by: "alice".into(),
        created_at: at(0),
    }
}

pub async fn groups_are_unique_per_tenant_and_name(store: &dyn Store) -> TestResult {
    let web = store.create_group(&group("t-a", "web")).await?;
    assert_eq!(web.pinned_members, vec![Uuid::from_u128(5)]);
    let duplicate = store.create_group(&group("t-a", "web")).await;
    assert!(
        matches!(duplicate, Err(StoreError::Conflict(_))),
        "{duplicate:?}"
    );
    store.create_group(&group("t-b", "web")).await?;
    store.create_group(&group("t-a", "db")).await?;
    let names: Vec<String> = store
        .list_groups(Some("t-a"))
        .await?
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert_eq!(names, vec!["db".to_owned(), "web".to_owned()]);
    assert_eq!(store.list_groups(None).await?.len(), 3);
    assert_eq!(
        store.get_group(Some("t-b"), web.id).await?,
        None,
        "scoped to tenant"
    );
    assert_eq!(store.get_group(None, web.id).await?, Some(web.clone()));
    let renamed = store
        .update_group(
            Some("t-a"),
            web.id,
            &GroupUpdate {
                name: Some("frontend".into()),
                pinned_members: Some(vec![]),
                ..Default::default()
            },
        )
        .await?
        .ok_or("not updated")?;
    assert_eq!(
        (renamed.name.as_str(), renamed.pinned_members.len()),
        ("frontend", 0)
    );
    assert_eq!(renamed.selector, web.selector);
    let clash = store
        .update_group(
            Some("t-a"),
            web.id,
            &GroupUpdate {
                name: Some("db".into()),
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(clash, Err(StoreError::Conflict(_))), "{clash:?}");
    assert!(!store.delete_group(Some("t-b"), web.id).await?);
    assert!(store.delete_group(Some("t-a"), web.id).await?);
    assert_eq!(store.get_group(None, web.id).await?, None);
    Ok(())
}

pub async fn group_ids_are_unique_and_a_rename_to_the_same_name_is_no_clash(
    store: &dyn Store,
) -> TestResult {
    let ops = store.create_group(&group("t-ids", "ops")).await?;
    let same_id = store
        .create_group(&EdgeGroup {
            name: "other".into(),
            ..ops.clone()
        })
        .await;
    assert!(
        matches!(same_id, Err(StoreError::Conflict(_))),
        "{same_id:?}"
    );
    let unchanged_name = GroupUpdate {
        name: Some("ops".into()),
        selector: Some(serde_json::json!({"os": "macos"})),
        ..Default::default()
    };
    let updated = store
        .update_group(None, ops.id, &unchanged_name)
        .await?
        .ok_or("not updated")?;
    assert_eq!(updated.name, "ops");
    assert_eq!(updated.selector, serde_json::json!({"os": "macos"}));
    assert_eq!(updated.pinned_members, ops.pinned_members);
    assert_eq!(
        store
            .update_group(Some("t-else"), ops.id, &unchanged_name)
            .await?,
        None
    );
    // A freed name can be taken again.
    let renamed = GroupUpdate {
        name: Some("sre".into()),
        ..Default::default()
    };
    store.update_group(Some("t-ids"), ops.id, &renamed).await?;
    let reused = store.create_group(&group("t-ids", "ops")).await?;
    let names: Vec<(String, uuid::Uuid)> = store
        .list_groups(Some("t-ids"))
        .await?
        .into_iter()
        .map(|g| (g.name, g.id))
        .collect();
    assert_eq!(
        names,
        vec![("ops".to_owned(), reused.id), ("sre".to_owned(), ops.id)]
    );
    Ok(())
}
