//! The ingress's way up to owners. [`Owners`] is where the ingress looks
//! an owner up (the one owner half of this process, today); an
//! [`OwnerLink`] is one session's own link to one owner, so a slow owner
//! or caller holds up only the sessions that talk to it.

use std::sync::Arc;

use super::{SessionKey, Up};
use crate::owner::Owner;

/// Where an ingress finds the owner of a tenant.
#[derive(Clone)]
pub enum Owners {
    /// Every tenant is owned by this process's owner half.
    InProcess(Arc<Owner>),
}

impl std::fmt::Debug for Owners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InProcess(_) => f.write_str("Owners::InProcess"),
        }
    }
}

impl Owners {
    /// The count of edge changes the owners applied so far; a Hello takes
    /// it before it reads the store (see [`crate::hop::Opened::epoch`]).
    pub fn change_epoch(&self) -> u64 {
        match self {
            Self::InProcess(owner) => owner.registry().epoch(),
        }
    }

    /// A new link to the owner of `tenant`, for one session.
    pub fn link(&self, _tenant: &str) -> OwnerLink {
        match self {
            Self::InProcess(owner) => OwnerLink::InProcess(Arc::clone(owner)),
        }
    }

    /// Whether `link` already leads to the owner of `tenant`.
    pub fn leads_to(&self, link: &OwnerLink, _tenant: &str) -> bool {
        match (self, link) {
            (Self::InProcess(owner), OwnerLink::InProcess(linked)) => Arc::ptr_eq(owner, linked),
        }
    }
}

/// One session's link to one owner.
pub enum OwnerLink {
    /// The owner half of this process: messages are handed over by a call.
    InProcess(Arc<Owner>),
}

impl std::fmt::Debug for OwnerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InProcess(_) => f.write_str("OwnerLink::InProcess"),
        }
    }
}

impl OwnerLink {
    /// Hands `up`, about the session `key`, to the owner.
    pub async fn send(&self, key: &SessionKey, up: Up) {
        match self {
            // Boxed: the owner's handling is a large future, and inlined it
            // would sit in every session task's state for the session's life.
            Self::InProcess(owner) => Box::pin(owner.deliver(key, up)).await,
        }
    }
}
