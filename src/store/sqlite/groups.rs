//! SQLite: edge groups, unique per (tenant, name).

use sqlx::SqlitePool;
use uuid::Uuid;

use super::codec::{self, id, json, millis, uuid_list};
use crate::store::types::{EdgeGroup, GroupUpdate};
use crate::store::{StoreError, StoreResult};

pub async fn create_group(pool: &SqlitePool, group: &EdgeGroup) -> StoreResult<EdgeGroup> {
    let inserted = sqlx::query(
        "INSERT INTO edge_groups (id, tenant_id, name, selector_json, pinned_members, created_by, \
         created_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING *",
    )
    .bind(id(group.id))
    .bind(&group.tenant_id)
    .bind(&group.name)
    .bind(json(&group.selector)?)
    .bind(uuid_list(&group.pinned_members)?)
    .bind(&group.created_by)
    .bind(millis(group.created_at))
    .fetch_one(pool)
    .await
    .map_err(|err| duplicate_name(err, &group.tenant_id, &group.name))?;
    codec::group(&inserted)
}

fn duplicate_name(err: sqlx::Error, tenant: &str, name: &str) -> StoreError {
    match StoreError::from(err) {
        StoreError::Conflict(_) => {
            StoreError::Conflict(format!("group {name:?} already exists in tenant {tenant}"))
        }
        other => other,
    }
}

pub async fn get_group(
    pool: &SqlitePool,
    tenant: Option<&str>,
    group_id: Uuid,
) -> StoreResult<Option<EdgeGroup>> {
    let row =
        sqlx::query("SELECT * FROM edge_groups WHERE id = ?1 AND (?2 IS NULL OR tenant_id = ?2)")
            .bind(id(group_id))
            .bind(tenant)
            .fetch_optional(pool)
            .await?;
    row.as_ref().map(codec::group).transpose()
}

pub async fn list_groups(pool: &SqlitePool, tenant: Option<&str>) -> StoreResult<Vec<EdgeGroup>> {
    let rows = sqlx::query(
        "SELECT * FROM edge_groups WHERE (?1 IS NULL OR tenant_id = ?1) ORDER BY tenant_id, name",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await?;
    rows.iter().map(codec::group).collect()
}

pub async fn update_group(
    pool: &SqlitePool,
    tenant: Option<&str>,
    group_id: Uuid,
    update: &GroupUpdate,
) -> StoreResult<Option<EdgeGroup>> {
    let selector = update.selector.as_ref().map(json).transpose()?;
    let pinned = update
        .pinned_members
        .as_deref()
        .map(uuid_list)
        .transpose()?;
    let row = sqlx::query(
        "UPDATE edge_groups SET name = COALESCE(?1, name), selector_json = COALESCE(?2, selector_json), \
         pinned_members = COALESCE(?3, pinned_members) \
         WHERE id = ?4 AND (?5 IS NULL OR tenant_id = ?5) RETURNING *",
    )
    .bind(update.name.as_deref())
    .bind(selector)
    .bind(pinned)
    .bind(id(group_id))
    .bind(tenant)
    .fetch_optional(pool)
    .await
    .map_err(|err| duplicate_name(err, tenant.unwrap_or("?"), update.name.as_deref().unwrap_or("?")))?;
    row.as_ref().map(codec::group).transpose()
}

pub async fn delete_group(
    pool: &SqlitePool,
    tenant: Option<&str>,
    group_id: Uuid,
) -> StoreResult<bool> {
    let result =
        sqlx::query("DELETE FROM edge_groups WHERE id = ?1 AND (?2 IS NULL OR tenant_id = ?2)")
            .bind(id(group_id))
            .bind(tenant)
            .execute(pool)
            .await?;
    Ok(result.rows_affected() > 0)
}
