//! Edge groups in PostgreSQL (`edge_groups`), scoped by tenant, with the
//! per-tenant unique name turned into a readable conflict.

use sqlx::PgPool;
use uuid::Uuid;

use super::rows::{self, GroupRow, GROUP_COLUMNS};
use super::tenant_clause;
use crate::store::{EdgeGroup, GroupUpdate, StoreError, StoreResult};

pub(super) async fn create_group(pool: &PgPool, group: &EdgeGroup) -> StoreResult<EdgeGroup> {
    let row: Result<GroupRow, sqlx::Error> = sqlx::query_as(&format!(
        "INSERT INTO edge_groups (id, tenant_id, name, selector_json, pinned_members, \
         created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {GROUP_COLUMNS}"
    ))
    .bind(group.id)
    .bind(&group.tenant_id)
    .bind(&group.name)
    .bind(&group.selector)
    .bind(&group.pinned_members)
    .bind(&group.created_by)
    .bind(group.created_at)
    .fetch_one(pool)
    .await;
    match row {
        Ok(row) => row.try_into(),
        Err(err) => Err(conflict(err, group.id, &group.name, Some(&group.tenant_id))),
    }
}

pub(super) async fn get_group(
    pool: &PgPool,
    tenant: Option<&str>,
    id: Uuid,
) -> StoreResult<Option<EdgeGroup>> {
    let sql = format!(
        "SELECT {GROUP_COLUMNS} FROM edge_groups WHERE id = $1{}",
        tenant_clause(tenant, 2)
    );
    let mut query = sqlx::query_as::<_, GroupRow>(&sql).bind(id);
    if let Some(tenant) = tenant {
        query = query.bind(tenant);
    }
    query
        .fetch_optional(pool)
        .await?
        .map(EdgeGroup::try_from)
        .transpose()
}

/// Ordered bytewise (`COLLATE "C"`), like SQLite, whatever the database's
/// collation.
pub(super) async fn list_groups(
    pool: &PgPool,
    tenant: Option<&str>,
) -> StoreResult<Vec<EdgeGroup>> {
    let filter = match tenant {
        Some(_) => " WHERE tenant_id = $1",
        None => "",
    };
    let sql = format!(
        "SELECT {GROUP_COLUMNS} FROM edge_groups{filter} \
         ORDER BY tenant_id COLLATE \"C\", name COLLATE \"C\""
    );
    let mut query = sqlx::query_as::<_, GroupRow>(&sql);
    if let Some(tenant) = tenant {
        query = query.bind(tenant);
    }
    rows::groups(query.fetch_all(pool).await?)
}

pub(super) async fn update_group(
    pool: &PgPool,
    tenant: Option<&str>,
    id: Uuid,
    update: &GroupUpdate,
) -> StoreResult<Option<EdgeGroup>> {
    let sql = format!(
        "UPDATE edge_groups SET name = COALESCE($2, name), \
         selector_json = COALESCE($3, selector_json), \
         pinned_members = COALESCE($4, pinned_members) \
         WHERE id = $1{} RETURNING {GROUP_COLUMNS}",
        tenant_clause(tenant, 5)
    );
    let mut query = sqlx::query_as::<_, GroupRow>(&sql)
        .bind(id)
        .bind(update.name.as_deref())
        .bind(update.selector.as_ref())
        .bind(update.pinned_members.as_deref());
    if let Some(tenant) = tenant {
        query = query.bind(tenant);
    }
    match query.fetch_optional(pool).await {
        Ok(row) => row.map(EdgeGroup::try_from).transpose(),
        Err(err) => {
            let name = update.name.as_deref().unwrap_or_default();
            Err(conflict(err, id, name, tenant))
        }
    }
}

pub(super) async fn delete_group(
    pool: &PgPool,
    tenant: Option<&str>,
    id: Uuid,
) -> StoreResult<bool> {
    let sql = format!(
        "DELETE FROM edge_groups WHERE id = $1{}",
        tenant_clause(tenant, 2)
    );
    let mut query = sqlx::query(&sql).bind(id);
    if let Some(tenant) = tenant {
        query = query.bind(tenant);
    }
    Ok(query.execute(pool).await?.rows_affected() > 0)
}

/// A unique violation as [`StoreError::Conflict`] (id or tenant+name); any
/// other error mapped as usual.
fn conflict(err: sqlx::Error, id: Uuid, name: &str, tenant: Option<&str>) -> StoreError {
    let sqlx::Error::Database(db) = &err else {
        return err.into();
    };
    if !db.is_unique_violation() {
        return err.into();
    }
    if db.constraint().is_some_and(|c| c.ends_with("_pkey")) {
        return StoreError::Conflict(format!("group id {id} already exists"));
    }
    match tenant {
        Some(tenant) => {
            StoreError::Conflict(format!("group {name} already exists in tenant {tenant}"))
        }
        None => StoreError::Conflict(format!("group {name} already exists in its tenant")),
    }
}
