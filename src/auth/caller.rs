//! Who is calling: bearer-token authentication of callers (operators, the
//! controller, CI jobs) and the tenant and role rules of protocol.md §12.1.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::tokens::{is_valid_tenant_id, AdminClaims, TokenIssuer, ADMIN_AUDIENCE};

/// Realm role that allows issuing enrollment tokens (deployment guide).
pub const ENROLL_ROLE: &str = "aegis.edge.enroll";
/// Realm role that allows running tools on a tenant's edges and changing
/// them (invoke, fleet calls, drain, revoke, tags, groups), and a service
/// account's acting for another tenant (deployment guide's bootstrap).
pub const FLEET_MANAGE_ROLE: &str = "aegis.edge.fleet.manage";

/// AEGIS operator levels (`aegis_role` claim).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorLevel {
    /// `aegis:admin`.
    Admin,
    /// `aegis:operator`.
    Operator,
    /// `aegis:readonly`.
    Readonly,
}

impl OperatorLevel {
    /// Parses the claim value.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "aegis:admin" => Some(Self::Admin),
            "aegis:operator" => Some(Self::Operator),
            "aegis:readonly" => Some(Self::Readonly),
            _ => None,
        }
    }
}

/// An authenticated caller.
#[derive(Clone, PartialEq, Eq)]
pub struct Caller {
    /// `sub` of the token.
    pub subject: String,
    /// Tenant from the token.
    pub tenant_id: String,
    /// Realm roles.
    pub roles: Vec<String>,
    /// Operator level, for operators.
    pub operator: Option<OperatorLevel>,
    /// Whether this is a service account (may delegate to another tenant).
    pub service_account: bool,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("subject", &self.subject)
            .field("tenant_id", &self.tenant_id)
            .field("operator", &self.operator)
            .finish_non_exhaustive()
    }
}

impl Caller {
    /// An `aegis:admin` operator.
    pub fn is_admin(&self) -> bool {
        self.operator == Some(OperatorLevel::Admin)
    }

    /// Whether the token carries realm role `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|held| held == role)
    }

    fn is_operator_writer(&self) -> bool {
        matches!(
            self.operator,
            Some(OperatorLevel::Admin | OperatorLevel::Operator)
        )
    }

    /// May issue enrollment tokens: the enroll role, or an admin or operator.
    pub fn may_enroll(&self) -> bool {
        self.has_role(ENROLL_ROLE) || self.is_operator_writer()
    }

    /// May run tools on edges and change them: `aegis:admin`,
    /// `aegis:operator` or the realm role [`FLEET_MANAGE_ROLE`]. Stricter
    /// than AEGIS, which asks for no role (protocol.md §12.1).
    pub fn may_manage_fleet(&self) -> bool {
        self.has_role(FLEET_MANAGE_ROLE) || self.is_operator_writer()
    }

    /// Refuses a caller who may not manage fleets, naming what `action`
    /// needs.
    pub fn require_fleet_manager(&self, action: &str) -> Result<(), CallerError> {
        if self.may_manage_fleet() {
            return Ok(());
        }
        let held = match self.operator {
            Some(OperatorLevel::Readonly) => "an aegis:readonly operator".to_owned(),
            _ => format!("caller {:?}", self.subject),
        };
        Err(CallerError::Forbidden(format!(
            "{held} may not {action}: it needs the realm role {FLEET_MANAGE_ROLE} (or operator \
             level aegis:admin or aegis:operator)"
        )))
    }
}

/// Why a caller was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallerError {
    /// No bearer token.
    #[error("missing bearer token: send Authorization: Bearer <token>")]
    Missing,
    /// The token did not verify.
    #[error("invalid bearer token: {0}")]
    Invalid(String),
    /// Authenticated but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// A tenant header could not be used.
    #[error("{0}")]
    BadRequest(String),
}

/// Authenticates bearer tokens.
#[async_trait]
pub trait CallerAuth: Send + Sync + 'static {
    /// The caller a bearer token proves, at `now`.
    async fn authenticate(&self, bearer: &str, now: DateTime<Utc>) -> Result<Caller, CallerError>;
}

/// Accepts the relay's own admin tokens (`dev`'s `admin.token`).
#[derive(Debug, Clone)]
pub struct LocalCallerAuth {
    issuer: Arc<TokenIssuer>,
}

impl LocalCallerAuth {
    /// Verifies with `issuer`'s signer.
    pub fn new(issuer: Arc<TokenIssuer>) -> Self {
        Self { issuer }
    }
}

/// Tolerated clock skew on caller tokens.
const CALLER_SKEW_SECS: i64 = 30;

#[async_trait]
impl CallerAuth for LocalCallerAuth {
    async fn authenticate(&self, bearer: &str, now: DateTime<Utc>) -> Result<Caller, CallerError> {
        let claims: AdminClaims = self
            .issuer
            .verify_own(bearer)
            .await
            .map_err(CallerError::Invalid)?;
        if claims.iss != self.issuer.issuer() || claims.aud != ADMIN_AUDIENCE {
            return Err(CallerError::Invalid(
                "not an operator token of this relay".to_owned(),
            ));
        }
        if claims.exp + CALLER_SKEW_SECS <= now.timestamp() {
            return Err(CallerError::Invalid("token expired".to_owned()));
        }
        Ok(Caller {
            subject: claims.sub,
            tenant_id: claims.tenant_id,
            roles: claims.realm_access.roles,
            operator: OperatorLevel::parse(&claims.aegis_role),
            service_account: false,
        })
    }
}

/// Extracts the token from an `Authorization: Bearer <token>` value.
pub fn bearer(authorization: Option<&str>) -> Result<&str, CallerError> {
    let value = authorization.ok_or(CallerError::Missing)?.trim();
    let (scheme, token) = value.split_once(' ').ok_or(CallerError::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(CallerError::Missing);
    }
    Ok(token.trim())
}

/// Authenticates a request's bearer token and resolves the tenant it acts
/// for: the one path both gRPC and REST take.
pub async fn authorize(
    callers: &dyn CallerAuth,
    now: DateTime<Utc>,
    authorization: Option<&str>,
    headers: TenantHeaders<'_>,
) -> Result<(Caller, String), CallerError> {
    let caller = callers.authenticate(bearer(authorization)?, now).await?;
    let tenant = resolve_tenant(&caller, headers)?;
    Ok((caller, tenant))
}

/// Tenant-selection headers of a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantHeaders<'a> {
    /// `x-aegis-tenant` (admin operators only; ignored for others).
    pub aegis_tenant: Option<&'a str>,
    /// `X-Tenant-Id` (the real CLI always sends it).
    pub tenant_id: Option<&'a str>,
}

/// The tenant a request acts for (protocol.md §12.1):
/// `x-aegis-tenant` for admin operators (ignored, not refused, for others);
/// `X-Tenant-Id` equal to the caller's tenant, or another tenant for admin
/// operators and for service accounts holding [`FLEET_MANAGE_ROLE`]
/// (refused for everyone else); else the token's.
pub fn resolve_tenant(caller: &Caller, headers: TenantHeaders<'_>) -> Result<String, CallerError> {
    if caller.is_admin() {
        if let Some(tenant) = headers.aegis_tenant.filter(|tenant| !tenant.is_empty()) {
            return checked(tenant, "x-aegis-tenant");
        }
    }
    match headers.tenant_id.filter(|tenant| !tenant.is_empty()) {
        None => Ok(caller.tenant_id.clone()),
        Some(tenant) if tenant == caller.tenant_id => Ok(tenant.to_owned()),
        Some(tenant) if caller.is_admin() => checked(tenant, "X-Tenant-Id"),
        Some(tenant) if caller.service_account && caller.has_role(FLEET_MANAGE_ROLE) => {
            checked(tenant, "X-Tenant-Id")
        }
        Some(tenant) if caller.service_account => Err(CallerError::Forbidden(format!(
            "X-Tenant-Id {tenant:?} is not your tenant ({:?}); a service account acts for \
             another tenant only with the realm role {FLEET_MANAGE_ROLE}",
            caller.tenant_id
        ))),
        Some(tenant) => Err(CallerError::Forbidden(format!(
            "X-Tenant-Id {tenant:?} is not your tenant ({:?}); only service accounts with the \
             realm role {FLEET_MANAGE_ROLE} and admin operators may act for another tenant",
            caller.tenant_id
        ))),
    }
}

fn checked(tenant: &str, header: &str) -> Result<String, CallerError> {
    if is_valid_tenant_id(tenant) {
        Ok(tenant.to_owned())
    } else {
        Err(CallerError::BadRequest(format!(
            "{header} {tenant:?} is not a tenant id (1-63 of a-z, 0-9 and '-')"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(operator: Option<OperatorLevel>, service_account: bool) -> Caller {
        Caller {
            subject: "someone".into(),
            tenant_id: "t-home".into(),
            roles: vec![],
            operator,
            service_account,
        }
    }

    fn headers<'a>(aegis: Option<&'a str>, tenant: Option<&'a str>) -> TenantHeaders<'a> {
        TenantHeaders {
            aegis_tenant: aegis,
            tenant_id: tenant,
        }
    }

    #[test]
    fn aegis_tenant_header_is_honoured_for_admins_and_ignored_for_others() {
        let admin = caller(Some(OperatorLevel::Admin), false);
        assert_eq!(
            resolve_tenant(&admin, headers(Some("t-other"), None)),
            Ok("t-other".into())
        );
        let user = caller(None, false);
        assert_eq!(
            resolve_tenant(&user, headers(Some("t-other"), None)),
            Ok("t-home".into())
        );
        let operator = caller(Some(OperatorLevel::Operator), false);
        assert_eq!(
            resolve_tenant(&operator, headers(Some("t-other"), None)),
            Ok("t-home".into())
        );
        assert!(matches!(
            resolve_tenant(&admin, headers(Some("Bad"), None)),
            Err(CallerError::BadRequest(_))
        ));
    }

    #[test]
    fn tenant_id_header_rules() {
        let user = caller(None, false);
        assert_eq!(
            resolve_tenant(&user, headers(None, Some("t-home"))),
            Ok("t-home".into())
        );
        assert!(matches!(
            resolve_tenant(&user, headers(None, Some("t-other"))),
            Err(CallerError::Forbidden(_))
        ));
        let mut service = caller(None, true);
        assert!(matches!(
            resolve_tenant(&service, headers(None, Some("t-other"))),
            Err(CallerError::Forbidden(message)) if message.contains(FLEET_MANAGE_ROLE)
        ));
        assert_eq!(
            resolve_tenant(&service, headers(None, Some("t-home"))),
            Ok("t-home".into())
        );
        service.roles.push(FLEET_MANAGE_ROLE.into());
        assert_eq!(
            resolve_tenant(&service, headers(None, Some("t-other"))),
            Ok("t-other".into())
        );
        let admin = caller(Some(OperatorLevel::Admin), false);
        assert_eq!(
            resolve_tenant(&admin, headers(None, Some("t-other"))),
            Ok("t-other".into())
        );
        assert_eq!(
            resolve_tenant(&user, headers(None, None)),
            Ok("t-home".into())
        );
    }

    #[test]
    fn fleet_management_needs_the_role_or_a_writing_operator_level() {
        assert!(caller(Some(OperatorLevel::Admin), false).may_manage_fleet());
        assert!(caller(Some(OperatorLevel::Operator), false).may_manage_fleet());
        let readonly = caller(Some(OperatorLevel::Readonly), false);
        assert!(matches!(
            readonly.require_fleet_manager("invoke tools"),
            Err(CallerError::Forbidden(message))
                if message.contains("aegis:readonly") && message.contains(FLEET_MANAGE_ROLE)
        ));
        let mut user = caller(None, false);
        assert!(!user.may_manage_fleet());
        user.roles.push(ENROLL_ROLE.into());
        assert!(!user.may_manage_fleet());
        user.roles.push(FLEET_MANAGE_ROLE.into());
        assert!(user.may_manage_fleet());
    }

    #[test]
    fn enroll_permission() {
        assert!(caller(Some(OperatorLevel::Operator), false).may_enroll());
        assert!(!caller(Some(OperatorLevel::Readonly), false).may_enroll());
        assert!(!caller(None, false).may_enroll());
        let mut enroller = caller(None, false);
        enroller.roles.push(ENROLL_ROLE.into());
        assert!(enroller.may_enroll());
    }
}
