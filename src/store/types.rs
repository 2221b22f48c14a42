//! Records the store keeps, shaped by their callers: enrollment (challenges,
//! token redemption), sessions (keys, batched heartbeats and capabilities),
//! rotation (key history), revocation (tombstones) and fleets (groups).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A challenge older than this is gone (as AEGIS: 5 minutes).
pub const CHALLENGE_TTL: Duration = Duration::from_secs(300);

/// Status of an enrolled edge, as stored in `edge_daemons.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgeStatus {
    /// Connected or recently heard from.
    Active,
    /// Finishing its work before going away.
    Draining,
    /// Not heard from within the heartbeat timeout.
    Unhealthy,
}

impl EdgeStatus {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Draining => "draining",
            Self::Unhealthy => "unhealthy",
        }
    }

    /// Parses the stored text.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(Self::Active),
            "draining" => Some(Self::Draining),
            "unhealthy" => Some(Self::Unhealthy),
            _ => None,
        }
    }
}

/// What an edge reports it can run; the serde form is AEGIS's
/// `capabilities_json`. `tags` here is only a copy: the `tags` column is
/// authoritative and server-side.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeCapabilities {
    /// "linux", "macos", "windows".
    #[serde(default)]
    pub os: String,
    /// "x86_64", "aarch64", ...
    #[serde(default)]
    pub arch: String,
    /// Tools found on the host.
    #[serde(default)]
    pub local_tools: Vec<String>,
    /// Mount points from the edge's config.
    #[serde(default)]
    pub mount_points: Vec<String>,
    /// Labels from the edge's config.
    #[serde(default)]
    pub custom_labels: BTreeMap<String, String>,
    /// Copy of the server-side tags.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// Worker-style capabilities attested in AttestNode (edges send them empty);
/// kept with the challenge because the node token carries their hash.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestedCapabilities {
    /// GPUs.
    pub gpu_count: u32,
    /// GPU memory.
    pub vram_gb: u32,
    /// CPU cores.
    pub cpu_cores: u32,
    /// Memory.
    pub available_memory_gb: u32,
    /// Runtimes.
    pub supported_runtimes: Vec<String>,
    /// Tags.
    pub tags: Vec<String>,
}

/// An enrolled edge (`edge_daemons`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeRecord {
    /// Node id (the NodeSecurityToken's `sub`).
    pub node_id: Uuid,
    /// Tenant, from the enrollment token's `tid`.
    pub tenant_id: String,
    /// Current Ed25519 public key (32 bytes).
    pub public_key: Vec<u8>,
    /// Reported capabilities, with `tags` set from the tags column.
    pub capabilities: EdgeCapabilities,
    /// Server-side tags.
    pub tags: Vec<String>,
    /// Stored status.
    pub status: EdgeStatus,
    /// Display name (the enrollment token's `sub`), may be empty.
    pub display_name: String,
    /// First enrollment.
    pub enrolled_at: DateTime<Utc>,
    /// Last heartbeat written, if any.
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// `seq` of the node's latest change still in the feed (0 when none
    /// is kept): what a session holding this record has seen.
    pub seq: i64,
}

/// A pending AttestNode challenge (the relay's `edge_challenges`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeChallenge {
    /// Challenge id returned to the node.
    pub challenge_id: Uuid,
    /// The node that asked.
    pub node_id: Uuid,
    /// Bytes the node must sign.
    pub nonce: Vec<u8>,
    /// The key it presented.
    pub public_key: Vec<u8>,
    /// Role name, lowercase ("edge").
    pub role: String,
    /// Attested capabilities.
    pub capabilities: AttestedCapabilities,
    /// Address the node reported ("" for edges).
    pub grpc_address: String,
    /// Creation time; the challenge expires [`CHALLENGE_TTL`] later.
    pub created_at: DateTime<Utc>,
}

/// Everything a successful ChallengeNode writes, in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    /// The enrollment token's `jti`; redeemed here, once.
    pub jti: Uuid,
    /// The token's `tid`.
    pub tenant_id: String,
    /// The token's `sub` (display label).
    pub issued_to: String,
    /// The token's `exp`.
    pub token_expires_at: DateTime<Utc>,
    /// The enrolling node.
    pub node_id: Uuid,
    /// Its proven key.
    pub public_key: Vec<u8>,
    /// The challenge it answered (deleted on success).
    pub challenge_id: Uuid,
    /// Time of enrollment.
    pub now: DateTime<Utc>,
    /// The token was issued by this relay, so a [`TokenBinding`] of its
    /// `jti` applies. False for tokens of `relay.accepted_issuers`, which
    /// never replace an enrolled node.
    pub own_token: bool,
}

/// Result of [`Enrollment`]. Every outcome but `Enrolled` and `Replaced`
/// wrote nothing (the token is not burned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollmentOutcome {
    /// The token was redeemed and a new edge stored.
    Enrolled,
    /// The token was redeemed and, being bound to this node, replaced the
    /// enrolled edge's key (the edge's sessions must end).
    Replaced,
    /// The token's `jti` had been redeemed before.
    TokenAlreadyRedeemed,
    /// The node id was revoked; revocation is final for an id.
    NodeRevoked,
    /// The node id is enrolled in another tenant; a token cannot move it.
    NodeInAnotherTenant,
    /// The node id is enrolled (in the token's tenant) and the token was not
    /// issued to replace it (`replace_node`).
    NodeAlreadyEnrolled,
    /// The token was issued to replace this other node and enrolls no other.
    TokenBoundToAnotherNode(Uuid),
}

/// What [`Enrollment`] does, given the node its token is bound to (own
/// tokens only) and the tenant of the node's current row, both read inside
/// the enrollment's transaction: `Enrolled` and `Replaced` write, every other
/// outcome is a refusal.
pub(crate) fn enrollment_decision(
    enrollment: &Enrollment,
    bound: Option<Uuid>,
    existing_tenant: Option<&str>,
) -> EnrollmentOutcome {
    match (bound, existing_tenant) {
        (Some(bound), _) if bound != enrollment.node_id => {
            EnrollmentOutcome::TokenBoundToAnotherNode(bound)
        }
        (_, None) => EnrollmentOutcome::Enrolled,
        (_, Some(tenant)) if tenant != enrollment.tenant_id => {
            EnrollmentOutcome::NodeInAnotherTenant
        }
        (Some(_), Some(_)) => EnrollmentOutcome::Replaced,
        (None, Some(_)) => EnrollmentOutcome::NodeAlreadyEnrolled,
    }
}

/// An enrollment token issued to re-enroll one existing node
/// (`replace_node`), recorded at issuance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBinding {
    /// The token's `jti`.
    pub jti: Uuid,
    /// The node it may replace.
    pub node_id: Uuid,
    /// The token's tenant, which must own the node.
    pub tenant_id: String,
    /// The token's `exp`; the row may be pruned after it.
    pub expires_at: DateTime<Utc>,
    /// Time of issuance (bindings expired by then are pruned).
    pub now: DateTime<Utc>,
}

/// Result of [`TokenBinding`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindOutcome {
    /// Recorded.
    Bound,
    /// No edge of that id in the tenant (nothing recorded).
    NodeNotFound,
    /// The node was revoked in the tenant; revocation is final (nothing
    /// recorded).
    NodeRevoked,
}

/// One edge's pending session writes, applied in batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeUpdate {
    /// The edge.
    pub node_id: Uuid,
    /// New last-heartbeat time, if any.
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// New capabilities, if any (server-side tags are kept).
    pub capabilities: Option<EdgeCapabilities>,
    /// New status, if any.
    pub status: Option<EdgeStatus>,
}

/// A key rotation (or same-key refresh) to apply atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRotation {
    /// The edge.
    pub node_id: Uuid,
    /// The key the request was verified with; the swap only happens if it is
    /// still current.
    pub current_key: Vec<u8>,
    /// The key to install (may equal `current_key`).
    pub new_key: Vec<u8>,
    /// The request's nonce; a nonce is accepted once per edge.
    pub nonce: Vec<u8>,
    /// Until when `current_key` stays acceptable.
    pub previous_valid_until: DateTime<Utc>,
    /// Time of rotation.
    pub now: DateTime<Utc>,
}

/// Result of a [`KeyRotation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationOutcome {
    /// The new key is current; the old one is kept until its deadline.
    Rotated,
    /// No such edge (never enrolled, or revoked).
    UnknownEdge,
    /// The edge's key changed since the request was verified.
    KeyChanged,
    /// This nonce was used before by this edge.
    NonceReused,
}

/// A key that was replaced and is still honoured until `valid_until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousKey {
    /// The replaced key.
    pub public_key: Vec<u8>,
    /// End of its overlap window.
    pub valid_until: DateTime<Utc>,
}

/// Record of a revoked edge, kept so it gets a clear refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    /// The revoked node.
    pub node_id: Uuid,
    /// Its tenant at revocation.
    pub tenant_id: String,
    /// When.
    pub revoked_at: DateTime<Utc>,
    /// Who (the caller's subject).
    pub revoked_by: String,
}

/// A named set of edges (`edge_groups`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeGroup {
    /// Group id.
    pub id: Uuid,
    /// Owning tenant.
    pub tenant_id: String,
    /// Name, unique per tenant.
    pub name: String,
    /// Selector (AEGIS's serde `EdgeSelector`), kept as JSON.
    pub selector: serde_json::Value,
    /// Edges always in the group.
    pub pinned_members: Vec<Uuid>,
    /// Creator.
    pub created_by: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// Changes to a group; `None` keeps a field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupUpdate {
    /// New name.
    pub name: Option<String>,
    /// New selector.
    pub selector: Option<serde_json::Value>,
    /// New pinned members.
    pub pinned_members: Option<Vec<Uuid>>,
}

/// A change to an edge's server-side tags, applied by the store in one step
/// so concurrent changes cannot lose each other's edits: `replace` first,
/// then `add` (tags already present are kept where they are, new ones go
/// last), then `remove`. The result never holds a tag twice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagChange {
    /// The new tag list, replacing the current one; `None` keeps it.
    pub replace: Option<Vec<String>>,
    /// Tags to add.
    pub add: Vec<String>,
    /// Tags to remove.
    pub remove: Vec<String>,
}

impl TagChange {
    /// The tags after this change to `current`. The PostgreSQL backend
    /// computes the same in SQL; the contract tests hold both to it.
    pub fn apply(&self, current: &[String]) -> Vec<String> {
        let base = self.replace.as_deref().unwrap_or(current);
        let mut tags: Vec<String> = Vec::with_capacity(base.len() + self.add.len());
        for tag in base.iter().chain(&self.add) {
            if !tags.contains(tag) && !self.remove.contains(tag) {
                tags.push(tag.clone());
            }
        }
        tags
    }
}

#[cfg(test)]
mod tests {
    use super::TagChange;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| (*item).to_owned()).collect()
    }

    #[test]
    fn tag_changes_replace_then_add_then_remove() {
        let current = strings(&["a", "b"]);
        let change = |replace: Option<&[&str]>, add: &[&str], remove: &[&str]| TagChange {
            replace: replace.map(strings),
            add: strings(add),
            remove: strings(remove),
        };
        let cases: [(TagChange, &[&str]); 8] = [
            (TagChange::default(), &["a", "b"]),
            (change(Some(&["x", "x"]), &[], &[]), &["x"]),
            (change(None, &["b", "c", "c"], &[]), &["a", "b", "c"]),
            (change(None, &[], &["a", "zz"]), &["b"]),
            (change(Some(&["x"]), &["y"], &["x"]), &["y"]),
            (
                change(Some(&["y", "x"]), &["x", "z"], &[]),
                &["y", "x", "z"],
            ),
            (change(None, &["c"], &["c"]), &["a", "b"]),
            (change(Some(&[]), &[], &[]), &[]),
        ];
        for (change, expected) in cases {
            assert_eq!(change.apply(&current), strings(expected), "{change:?}");
        }
        // Duplicates already stored collapse to their first place.
        assert_eq!(
            TagChange::default().apply(&strings(&["b", "a", "b"])),
            strings(&["b", "a"])
        );
    }
}
