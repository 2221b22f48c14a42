//! From a verified token's claims to a [`Caller`]: roles, tenant and
//! operator level read at the configured dotted claim paths (Keycloak puts
//! realm roles at `realm_access.roles`), and Keycloak's service-account
//! convention.

use serde_json::{Map, Value};

use crate::auth::{is_valid_tenant_id, Caller, CallerError, OperatorLevel};
use crate::config::KeycloakConfig;

/// Keycloak names the user behind a client's service account
/// `service-account-<client id>` (its `preferred_username`). Such callers may
/// act for another tenant with `X-Tenant-Id` (protocol.md §12.1). Keycloak
/// reserves the prefix for these users; a deployment that lets users pick
/// their own user name must keep it reserved.
pub const SERVICE_ACCOUNT_PREFIX: &str = "service-account-";

/// The value at `path` (names joined by `.`, each one level down).
pub fn claim_at<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut names = path.split('.');
    let mut value = claims.get(names.next()?)?;
    for name in names {
        value = value.as_object()?.get(name)?;
    }
    Some(value)
}

/// The caller `claims` describe, under `config`'s claim paths.
pub fn caller(claims: &Map<String, Value>, config: &KeycloakConfig) -> Result<Caller, CallerError> {
    let tenant_id = match claim_at(claims, &config.tenant_claim) {
        Some(Value::String(tenant)) if is_valid_tenant_id(tenant) => tenant.clone(),
        Some(Value::String(tenant)) => {
            return Err(CallerError::Invalid(format!(
                "tenant claim {} is {tenant:?}, not a tenant id (1-63 of a-z, 0-9 and '-')",
                config.tenant_claim
            )))
        }
        Some(_) => {
            return Err(CallerError::Invalid(format!(
                "tenant claim {} is not a string",
                config.tenant_claim
            )))
        }
        None => {
            return Err(CallerError::Invalid(format!(
                "token has no tenant claim {}; the identity provider must map the caller's tenant \
                 there",
                config.tenant_claim
            )))
        }
    };
    let roles = match claim_at(claims, &config.roles_claim) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                CallerError::Invalid(format!(
                    "roles claim {} holds something other than strings",
                    config.roles_claim
                ))
            })?,
        Some(_) => {
            return Err(CallerError::Invalid(format!(
                "roles claim {} is not an array of strings",
                config.roles_claim
            )))
        }
    };
    let operator = operator_level(claim_at(claims, &config.operator_claim));
    let preferred_username = claims.get("preferred_username").and_then(Value::as_str);
    let service_account =
        preferred_username.is_some_and(|name| name.starts_with(SERVICE_ACCOUNT_PREFIX));
    let subject = ["sub", "preferred_username", "azp", "client_id"]
        .iter()
        .find_map(|name| claims.get(*name).and_then(Value::as_str))
        .unwrap_or("unknown")
        .to_owned();
    Ok(Caller {
        subject,
        tenant_id,
        roles,
        operator,
        service_account,
    })
}

/// The operator level of a string claim, or the highest one of an array
/// (a multi-valued mapper); unknown values are ignored.
fn operator_level(value: Option<&Value>) -> Option<OperatorLevel> {
    let rank = |level: &OperatorLevel| match level {
        OperatorLevel::Admin => 3,
        OperatorLevel::Operator => 2,
        OperatorLevel::Readonly => 1,
    };
    match value? {
        Value::String(text) => OperatorLevel::parse(text),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .filter_map(OperatorLevel::parse)
            .max_by_key(rank),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn config() -> KeycloakConfig {
        KeycloakConfig {
            endpoint: "http://idp.test".into(),
            realm: "aegis-system".into(),
            audience: None,
            roles_claim: "realm_access.roles".into(),
            tenant_claim: "tenant_id".into(),
            operator_claim: "aegis_role".into(),
            jwks_refresh_interval: Duration::from_secs(300),
        }
    }

    fn claims(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn reads_roles_tenant_and_operator_at_their_paths() -> Result<(), CallerError> {
        let caller = caller(
            &claims(json!({
                "sub": "u1",
                "tenant_id": "t-acme",
                "realm_access": {"roles": ["aegis.edge.enroll", "offline_access"]},
                "aegis_role": "aegis:operator",
            })),
            &config(),
        )?;
        assert_eq!(caller.subject, "u1");
        assert_eq!(caller.tenant_id, "t-acme");
        assert_eq!(caller.roles, vec!["aegis.edge.enroll", "offline_access"]);
        assert_eq!(caller.operator, Some(OperatorLevel::Operator));
        assert!(!caller.service_account);
        Ok(())
    }

    #[test]
    fn custom_nested_paths() -> Result<(), CallerError> {
        let mut config = config();
        config.tenant_claim = "aegis.tenant".into();
        config.roles_claim = "resource_access.relay.roles".into();
        let caller = caller(
            &claims(json!({
                "aegis": {"tenant": "t-x"},
                "resource_access": {"relay": {"roles": ["r"]}},
            })),
            &config,
        )?;
        assert_eq!(
            (caller.tenant_id.as_str(), caller.roles),
            ("t-x", vec!["r".to_owned()])
        );
        Ok(())
    }

    #[test]
    fn missing_roles_are_empty_and_bad_roles_are_refused() {
        let ok = caller(&claims(json!({"tenant_id": "t-a"})), &config());
        assert!(ok.is_ok_and(|caller| caller.roles.is_empty() && caller.operator.is_none()));
        for roles in [json!("aegis.edge.enroll"), json!([1]), json!({"a": 1})] {
            let refused = caller(
                &claims(json!({"tenant_id": "t-a", "realm_access": {"roles": roles}})),
                &config(),
            );
            assert!(
                matches!(&refused, Err(CallerError::Invalid(why)) if why.contains("realm_access.roles")),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn tenant_is_required_and_checked() {
        for (value, needle) in [
            (json!({"sub": "x"}), "no tenant claim tenant_id"),
            (json!({"tenant_id": 7}), "not a string"),
            (json!({"tenant_id": "Not A Tenant"}), "not a tenant id"),
        ] {
            let refused = caller(&claims(value), &config());
            assert!(
                matches!(&refused, Err(CallerError::Invalid(why)) if why.contains(needle)),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn operator_levels_and_unknown_values() {
        let level = |value: Value| operator_level(Some(&value));
        assert_eq!(level(json!("aegis:admin")), Some(OperatorLevel::Admin));
        assert_eq!(
            level(json!("aegis:readonly")),
            Some(OperatorLevel::Readonly)
        );
        assert_eq!(level(json!("aegis:root")), None);
        assert_eq!(level(json!(1)), None);
        assert_eq!(
            level(json!(["aegis:readonly", "x", "aegis:admin"])),
            Some(OperatorLevel::Admin)
        );
        assert_eq!(operator_level(None), None);
    }

    #[test]
    fn service_accounts_by_keycloak_convention() -> Result<(), CallerError> {
        let service = caller(
            &claims(json!({"tenant_id": "t-a", "preferred_username": "service-account-ci"})),
            &config(),
        )?;
        assert!(service.service_account);
        assert_eq!(
            service.subject, "service-account-ci",
            "falls back when sub is absent"
        );
        let user = caller(
            &claims(json!({"tenant_id": "t-a", "preferred_username": "alice"})),
            &config(),
        )?;
        assert!(!user.service_account);
        Ok(())
    }
}
