//! Memory store: edge groups, unique by id and by (tenant, name), listed
//! bytewise by tenant then name as the SQL backends list them.

use uuid::Uuid;

use super::{in_scope, Tables};
use crate::store::types::{EdgeGroup, GroupUpdate};
use crate::store::{StoreError, StoreResult};

fn name_taken(tenant: &str, name: &str) -> StoreError {
    StoreError::Conflict(format!("group {name:?} already exists in tenant {tenant}"))
}

impl Tables {
    pub(super) fn create_group(&mut self, group: &EdgeGroup) -> StoreResult<EdgeGroup> {
        if self.groups.contains_key(&group.id) {
            return Err(StoreError::Conflict(format!(
                "group id {} already exists",
                group.id
            )));
        }
        let key = (group.tenant_id.clone(), group.name.clone());
        if self.group_names.contains_key(&key) {
            return Err(name_taken(&group.tenant_id, &group.name));
        }
        self.group_names.insert(key, group.id);
        self.groups.insert(group.id, group.clone());
        Ok(group.clone())
    }

    pub(super) fn get_group(&self, tenant: Option<&str>, id: Uuid) -> Option<EdgeGroup> {
        self.groups
            .get(&id)
            .filter(|group| in_scope(tenant, &group.tenant_id))
            .cloned()
    }

    pub(super) fn list_groups(&self, tenant: Option<&str>) -> Vec<EdgeGroup> {
        self.group_names
            .iter()
            .filter(|((group_tenant, _), _)| in_scope(tenant, group_tenant))
            .filter_map(|(_, id)| self.groups.get(id).cloned())
            .collect()
    }

    pub(super) fn update_group(
        &mut self,
        tenant: Option<&str>,
        id: Uuid,
        update: &GroupUpdate,
    ) -> StoreResult<Option<EdgeGroup>> {
        let Some(group) = self
            .groups
            .get_mut(&id)
            .filter(|group| in_scope(tenant, &group.tenant_id))
        else {
            return Ok(None);
        };
        if let Some(name) = update.name.as_ref().filter(|name| **name != group.name) {
            let key = (group.tenant_id.clone(), name.clone());
            if self.group_names.contains_key(&key) {
                return Err(name_taken(&group.tenant_id, name));
            }
            self.group_names
                .remove(&(group.tenant_id.clone(), group.name.clone()));
            self.group_names.insert(key, id);
            name.clone_into(&mut group.name);
        }
        if let Some(selector) = &update.selector {
            group.selector.clone_from(selector);
        }
        if let Some(pinned) = &update.pinned_members {
            group.pinned_members.clone_from(pinned);
        }
        Ok(Some(group.clone()))
    }

    pub(super) fn delete_group(&mut self, tenant: Option<&str>, id: Uuid) -> bool {
        if self.get_group(tenant, id).is_none() {
            return false;
        }
        if let Some(group) = self.groups.remove(&id) {
            self.group_names.remove(&(group.tenant_id, group.name));
        }
        true
    }
}
