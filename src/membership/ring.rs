//! The ownership ring: which `serving` replica owns a tenant.
//!
//! `owner(tenant)` is a pure function of the set of serving replicas' stable
//! names, so every replica with the same view picks the same owner, and a
//! restart (a new generation, same name) moves nothing. Positions are hashed
//! from explicit bytes with SHA-256, never with std `Hash` (not stable across
//! Rust versions), so replicas built by different compilers agree during a
//! rolling upgrade. The ring itself is `hashring` over precomputed points.
//!
//! Byte encodings (changing any of them reshuffles tenants; see the golden
//! test in `ring_tests.rs`):
//! - a tenant's point: the first 8 bytes, big-endian, of SHA-256(tenant id UTF-8);
//! - virtual node `i` of a member: the first 8 bytes, big-endian, of
//!   SHA-256(name UTF-8 ‖ 0x00 ‖ `i` as u32 big-endian), `i` in
//!   `0..VNODES_PER_MEMBER`; a tenant belongs to the first point at or after
//!   its own, wrapping; two members on one point: the smaller name (bytewise) keeps it;
//! - the epoch: the first 16 hex digits of SHA-256 over the sorted names,
//!   each followed by `\n` (`printf 'relay-0\nrelay-1\n' | sha256sum`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};

use hashring::HashRing;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Virtual nodes per member. Chosen by measurement (ARCHITECTURE.md,
/// "Ownership ring"): the fewest that keep max/mean load ≤ 1.10 for 2–10
/// replicas on the fixed name sets.
pub const VNODES_PER_MEMBER: u32 = 1000;

/// The ring over the serving replicas' stable names.
#[derive(Clone)]
pub struct Ring {
    members: Vec<String>,
    epoch: RingEpoch,
    /// Fraction of the key space per member, in `members` order.
    shares: Vec<f64>,
    vnodes_per_member: u32,
    points: HashRing<VNode, PointBuild>,
}

/// Identifies a ring: equal epochs mean equal member sets.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct RingEpoch(String);

impl Ring {
    /// The ring over the `serving` replicas' stable names (duplicates ignored, order irrelevant).
    pub fn new<I, S>(serving_names: I) -> Ring
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Ring::with_vnodes(serving_names, VNODES_PER_MEMBER)
    }

    fn with_vnodes<I, S>(serving_names: I, vnodes_per_member: u32) -> Ring
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let members: Vec<String> = serving_names
            .into_iter()
            .map(|name| name.as_ref().to_owned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut vnodes: Vec<VNode> = members
            .iter()
            .enumerate()
            .flat_map(|(member, name)| {
                (0..vnodes_per_member).map(move |i| VNode {
                    point: vnode_point(name, i),
                    member,
                })
            })
            .collect();
        // `members` is sorted, so on a shared point the smaller name sorts first and keeps it.
        vnodes.sort_unstable_by_key(|v| (v.point, v.member));
        vnodes.dedup_by_key(|v| v.point);
        let shares = arc_shares(&vnodes, members.len());
        let mut points = HashRing::with_hasher(PointBuild);
        points.batch_add(vnodes);
        Ring {
            epoch: epoch_of(&members),
            members,
            shares,
            vnodes_per_member,
            points,
        }
    }

    /// The member that owns `tenant_id`; `None` only when the ring is empty.
    pub fn owner(&self, tenant_id: &str) -> Option<&str> {
        let vnode = self.points.get(&Point(key_point(tenant_id)))?;
        self.members.get(vnode.member).map(String::as_str)
    }

    pub fn epoch(&self) -> &RingEpoch {
        &self.epoch
    }

    /// The member names, sorted bytewise.
    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// The fraction of the key space each member owns (sums to 1; empty for an empty ring).
    pub fn shares(&self) -> BTreeMap<String, f64> {
        self.members
            .iter()
            .cloned()
            .zip(self.shares.iter().copied())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

impl PartialEq for Ring {
    /// The points are a function of the members and the virtual node count.
    fn eq(&self, other: &Ring) -> bool {
        self.members == other.members && self.vnodes_per_member == other.vnodes_per_member
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("epoch", &self.epoch.0)
            .field("members", &self.members)
            .field("points", &self.points.len())
            .finish()
    }
}

impl fmt::Display for RingEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl RingEpoch {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn sha256_prefix(parts: &[&[u8]]) -> [u8; 8] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut prefix = [0; 8];
    prefix.copy_from_slice(&digest[..8]);
    prefix
}

fn key_point(tenant_id: &str) -> u64 {
    u64::from_be_bytes(sha256_prefix(&[tenant_id.as_bytes()]))
}

fn vnode_point(name: &str, index: u32) -> u64 {
    u64::from_be_bytes(sha256_prefix(&[
        name.as_bytes(),
        &[0],
        &index.to_be_bytes(),
    ]))
}

fn epoch_of(members: &[String]) -> RingEpoch {
    let mut bytes = Vec::new();
    for name in members {
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(b'\n');
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let hex = sha256_prefix(&[&bytes])
        .iter()
        .flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]])
        .map(char::from)
        .collect();
    RingEpoch(hex)
}

/// Each point owns the keys after the previous point up to itself; the first
/// point also owns the wrap-around. `vnodes` is sorted by point, without repeats.
fn arc_shares(vnodes: &[VNode], members: usize) -> Vec<f64> {
    let mut owned = vec![0u128; members];
    let mut previous = vnodes.last().map(|v| v.point);
    for v in vnodes {
        let arc = match previous {
            Some(p) if p < v.point => u128::from(v.point - p),
            // The wrap-around arc (or the whole circle for a single point).
            Some(p) => (1u128 << 64) - u128::from(p) + u128::from(v.point),
            None => 0,
        };
        if let Some(slot) = owned.get_mut(v.member) {
            *slot += arc;
        }
        previous = Some(v.point);
    }
    let circle = (1u128 << 64) as f64;
    owned.into_iter().map(|arc| arc as f64 / circle).collect()
}

/// A virtual node: a precomputed point on the ring and the index of its member.
#[derive(Clone, Copy, Debug, PartialEq)]
struct VNode {
    point: u64,
    member: usize,
}

/// A point on the ring, as `hashring` looks it up.
struct Point(u64);

impl Hash for VNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(&self.point.to_be_bytes());
    }
}

impl Hash for Point {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(&self.0.to_be_bytes());
    }
}

/// Makes `hashring` use our precomputed points: the hasher returns the
/// (big-endian) bytes written to it as a u64, so only bytes we write count.
#[derive(Clone, Debug, PartialEq)]
struct PointBuild;

#[derive(Default)]
struct PointHasher(u64);

impl BuildHasher for PointBuild {
    type Hasher = PointHasher;

    fn build_hasher(&self) -> PointHasher {
        PointHasher::default()
    }
}

impl Hasher for PointHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
#[path = "ring_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "ring_balance_tests.rs"]
mod balance_tests;
