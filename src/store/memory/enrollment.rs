//! Memory store: AttestNode challenges, the single-use token redemption with
//! the edge insert or replacement, and tokens bound to a node they may
//! replace. Same order of checks as the SQL backends.

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::{Binding, Tables};
use crate::store::types::{
    enrollment_decision, BindOutcome, EdgeCapabilities, EdgeRecord, EdgeStatus, Enrollment,
    EnrollmentOutcome, NodeChallenge, TokenBinding, CHALLENGE_TTL,
};
use crate::store::{ChangeKind, StoreError, StoreResult};

/// Challenges created at or before this are expired at `now`.
fn challenge_cutoff(now: DateTime<Utc>) -> DateTime<Utc> {
    match TimeDelta::from_std(CHALLENGE_TTL) {
        Ok(ttl) => now - ttl,
        Err(_) => DateTime::<Utc>::MIN_UTC,
    }
}

impl Tables {
    pub(super) fn put_challenge(&mut self, challenge: &NodeChallenge) -> StoreResult<()> {
        if self.challenges.contains_key(&challenge.challenge_id) {
            return Err(StoreError::Conflict(format!(
                "challenge {} already exists",
                challenge.challenge_id
            )));
        }
        self.challenges
            .insert(challenge.challenge_id, challenge.clone());
        Ok(())
    }

    pub(super) fn sweep_challenges(&mut self, now: DateTime<Utc>) -> u64 {
        let cutoff = challenge_cutoff(now);
        let before = self.challenges.len();
        self.challenges
            .retain(|_, challenge| challenge.created_at > cutoff);
        u64::try_from(before - self.challenges.len()).unwrap_or(u64::MAX)
    }

    /// A live challenge; an expired one is deleted when read.
    pub(super) fn get_challenge(
        &mut self,
        challenge_id: Uuid,
        now: DateTime<Utc>,
    ) -> Option<NodeChallenge> {
        let challenge = self.challenges.get(&challenge_id)?;
        if challenge.created_at <= challenge_cutoff(now) {
            self.challenges.remove(&challenge_id);
            return None;
        }
        Some(challenge.clone())
    }

    /// Every check runs before the first write, so a refusal writes nothing
    /// (the token is not burned).
    pub(super) fn complete_enrollment(
        &mut self,
        enrollment: &Enrollment,
    ) -> StoreResult<EnrollmentOutcome> {
        if self.redeemed.contains(&enrollment.jti) {
            return Ok(EnrollmentOutcome::TokenAlreadyRedeemed);
        }
        if self.tombstones.contains_key(&enrollment.node_id) {
            return Ok(EnrollmentOutcome::NodeRevoked);
        }
        let bound = if enrollment.own_token {
            self.bindings
                .get(&enrollment.jti)
                .filter(|binding| binding.tenant_id == enrollment.tenant_id)
                .map(|binding| binding.node_id)
        } else {
            None
        };
        let existing = self
            .edges
            .get(&enrollment.node_id)
            .map(|edge| edge.tenant_id.as_str());
        let outcome = enrollment_decision(enrollment, bound, existing);
        match outcome {
            EnrollmentOutcome::Enrolled => {
                self.edges.insert(
                    enrollment.node_id,
                    EdgeRecord {
                        node_id: enrollment.node_id,
                        tenant_id: enrollment.tenant_id.clone(),
                        public_key: enrollment.public_key.clone(),
                        capabilities: EdgeCapabilities::default(),
                        tags: Vec::new(),
                        status: EdgeStatus::Active,
                        display_name: enrollment.issued_to.clone(),
                        enrolled_at: enrollment.now,
                        last_heartbeat_at: None,
                        seq: 0,
                    },
                );
            }
            // Everything but the first enrollment time is overwritten.
            EnrollmentOutcome::Replaced => {
                let Some(edge) = self.edges.get_mut(&enrollment.node_id) else {
                    return Err(StoreError::Database(format!(
                        "re-enrolling {} found no row",
                        enrollment.node_id
                    )));
                };
                edge.public_key.clone_from(&enrollment.public_key);
                edge.capabilities = EdgeCapabilities::default();
                edge.tags = Vec::new();
                edge.status = EdgeStatus::Active;
                edge.last_heartbeat_at = None;
                edge.display_name.clone_from(&enrollment.issued_to);
            }
            refused => return Ok(refused),
        }
        self.redeemed.insert(enrollment.jti);
        self.key_history.remove(&enrollment.node_id);
        self.challenges.remove(&enrollment.challenge_id);
        self.bindings.remove(&enrollment.jti);
        self.record(
            enrollment.node_id,
            &enrollment.tenant_id,
            ChangeKind::Enrolled,
            enrollment.now,
        );
        Ok(outcome)
    }

    /// Records the binding if its node is enrolled (and not revoked) in its
    /// tenant, pruning expired bindings; a refusal prunes nothing (the SQL
    /// backends roll the prune back with it).
    pub(super) fn bind_enrollment_token(
        &mut self,
        binding: &TokenBinding,
    ) -> StoreResult<BindOutcome> {
        let of_tenant = |tenant: &str| tenant == binding.tenant_id;
        let revoked = self
            .tombstones
            .get(&binding.node_id)
            .is_some_and(|tombstone| of_tenant(&tombstone.tenant_id));
        let enrolled = self
            .edges
            .get(&binding.node_id)
            .is_some_and(|edge| of_tenant(&edge.tenant_id));
        let outcome = match (revoked, enrolled) {
            (true, _) => BindOutcome::NodeRevoked,
            (false, false) => BindOutcome::NodeNotFound,
            (false, true) => BindOutcome::Bound,
        };
        if outcome != BindOutcome::Bound {
            return Ok(outcome);
        }
        let live = |existing: &Binding| existing.expires_at > binding.now;
        if self.bindings.get(&binding.jti).is_some_and(live) {
            return Err(StoreError::Conflict(format!(
                "enrollment token {} is already bound",
                binding.jti
            )));
        }
        self.bindings.retain(|_, existing| live(existing));
        self.bindings.insert(
            binding.jti,
            Binding {
                node_id: binding.node_id,
                tenant_id: binding.tenant_id.clone(),
                expires_at: binding.expires_at,
            },
        );
        Ok(outcome)
    }
}
