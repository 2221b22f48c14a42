//! Authentication of gossip datagrams: every datagram carries the cluster id
//! and an HMAC-SHA256 tag (truncated to 16 bytes) over the id and the
//! payload, made with the first cluster secret and checked against every
//! secret. Pure functions, no IO.
//!
//! Layout: `b"AGR" 0x01 | id length (1 byte) | cluster id | tag (16) | payload`.
//! The tag covers everything before it and the payload.

use aws_lc_rs::{constant_time, hmac};

use super::secret::ClusterSecrets;

/// Marks an aegis-relay gossip datagram, framing version 1.
const MAGIC: [u8; 4] = *b"AGR\x01";
/// Bytes of the truncated HMAC-SHA256 tag.
pub const TAG_BYTES: usize = 16;
/// Longest cluster id (its length travels in one byte).
pub const MAX_CLUSTER_ID_BYTES: usize = 255;

/// Why an incoming datagram was dropped (the `reason` label of
/// `aegis_relay_gossip_dropped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not a framed datagram, or a payload chitchat cannot decode.
    Malformed,
    /// Framed for another cluster id.
    WrongCluster,
    /// The tag matches none of the secrets.
    BadTag,
}

impl DropReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::WrongCluster => "wrong_cluster",
            Self::BadTag => "bad_tag",
        }
    }
}

/// Seals and opens datagrams of one cluster.
pub struct FrameKeys {
    cluster_id: Vec<u8>,
    signing: hmac::Key,
    verifying: Vec<hmac::Key>,
}

impl std::fmt::Debug for FrameKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameKeys")
            .field("cluster_id", &String::from_utf8_lossy(&self.cluster_id))
            .field("secrets", &self.verifying.len())
            .finish_non_exhaustive()
    }
}

impl FrameKeys {
    /// Keys for `cluster_id` (at most [`MAX_CLUSTER_ID_BYTES`], checked by
    /// the config) from `secrets`.
    pub fn new(cluster_id: &str, secrets: &ClusterSecrets) -> Self {
        let mut id = cluster_id.as_bytes().to_vec();
        id.truncate(MAX_CLUSTER_ID_BYTES);
        Self {
            cluster_id: id,
            signing: hmac::Key::new(hmac::HMAC_SHA256, secrets.signing()),
            verifying: secrets
                .verifying()
                .map(|secret| hmac::Key::new(hmac::HMAC_SHA256, secret))
                .collect(),
        }
    }

    /// Bytes a sealed datagram adds to its payload.
    pub fn overhead(&self) -> usize {
        MAGIC.len() + 1 + self.cluster_id.len() + TAG_BYTES
    }

    /// Frames `payload` and signs it with the first secret.
    pub fn seal(&self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.overhead() + payload.len());
        out.extend_from_slice(&MAGIC);
        // `new` keeps the id within one byte's range.
        out.push(u8::try_from(self.cluster_id.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(&self.cluster_id);
        let tag = tag(&self.signing, &out, payload);
        out.extend_from_slice(&tag);
        out.extend_from_slice(payload);
        out
    }

    /// The payload of `datagram` when it is framed for this cluster and
    /// signed with one of the secrets.
    pub fn open<'a>(&self, datagram: &'a [u8]) -> Result<&'a [u8], DropReason> {
        let rest = datagram
            .strip_prefix(MAGIC.as_slice())
            .ok_or(DropReason::Malformed)?;
        let (&id_len, rest) = rest.split_first().ok_or(DropReason::Malformed)?;
        let id_len = usize::from(id_len);
        if rest.len() < id_len + TAG_BYTES {
            return Err(DropReason::Malformed);
        }
        let (id, rest) = rest.split_at(id_len);
        if id != self.cluster_id.as_slice() {
            return Err(DropReason::WrongCluster);
        }
        let (received, payload) = rest.split_at(TAG_BYTES);
        let header = &datagram[..MAGIC.len() + 1 + id_len];
        let valid = self.verifying.iter().any(|key| {
            constant_time::verify_slices_are_equal(&tag(key, header, payload), received).is_ok()
        });
        if valid {
            Ok(payload)
        } else {
            Err(DropReason::BadTag)
        }
    }
}

fn tag(key: &hmac::Key, header: &[u8], payload: &[u8]) -> [u8; TAG_BYTES] {
    let mut context = hmac::Context::with_key(key);
    context.update(header);
    context.update(payload);
    let full = context.sign();
    let mut tag = [0u8; TAG_BYTES];
    tag.copy_from_slice(&full.as_ref()[..TAG_BYTES]);
    tag
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::secret::SecretError;

    const OLD: &str = "old-secret-0123456789abcdef0123456789";
    const NEW: &str = "new-secret-0123456789abcdef0123456789";

    fn keys(cluster: &str, lines: &[&str]) -> Result<FrameKeys, SecretError> {
        Ok(FrameKeys::new(
            cluster,
            &ClusterSecrets::parse(&lines.join("\n"))?,
        ))
    }

    #[test]
    fn sealed_datagrams_open_with_the_same_keys() -> Result<(), SecretError> {
        let keys = keys("prod", &[NEW])?;
        let sealed = keys.seal(b"gossip payload");
        assert_eq!(sealed.len(), keys.overhead() + 14);
        assert_eq!(keys.open(&sealed), Ok(b"gossip payload".as_slice()));
        assert_eq!(keys.open(&keys.seal(b"")), Ok(b"".as_slice()));
        Ok(())
    }

    #[test]
    fn tampering_with_any_byte_drops_the_datagram() -> Result<(), SecretError> {
        let keys = keys("prod", &[NEW])?;
        let sealed = keys.seal(b"0123456789 gossip payload");
        let id_start = MAGIC.len() + 1;
        let tag_start = id_start + "prod".len();
        for index in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[index] ^= 0x01;
            let expected = if index < MAGIC.len() || index == MAGIC.len() {
                // Magic, or an id length that no longer frames "prod".
                vec![DropReason::Malformed, DropReason::WrongCluster]
            } else if index < tag_start {
                vec![DropReason::WrongCluster]
            } else {
                vec![DropReason::BadTag]
            };
            let got = keys.open(&tampered);
            assert!(
                got.as_ref().is_err_and(|reason| expected.contains(reason)),
                "byte {index}: {got:?}, expected one of {expected:?}"
            );
        }
        // Truncations never open either.
        for len in 0..sealed.len() {
            assert!(keys.open(&sealed[..len]).is_err(), "truncated to {len}");
        }
        Ok(())
    }

    #[test]
    fn another_secret_or_cluster_is_refused_with_its_reason() -> Result<(), SecretError> {
        let ours = keys("prod", &[NEW])?;
        let sealed = keys("prod", &[OLD])?.seal(b"x");
        assert_eq!(ours.open(&sealed), Err(DropReason::BadTag));
        let sealed = keys("staging", &[NEW])?.seal(b"x");
        assert_eq!(ours.open(&sealed), Err(DropReason::WrongCluster));
        assert_eq!(ours.open(b"not gossip"), Err(DropReason::Malformed));
        Ok(())
    }

    #[test]
    fn every_line_verifies_during_a_rotation() -> Result<(), SecretError> {
        let old_only = keys("prod", &[OLD])?;
        let adding = keys("prod", &[OLD, NEW])?;
        let switched = keys("prod", &[NEW, OLD])?;
        let new_only = keys("prod", &[NEW])?;
        // Each step understands its neighbours in both directions.
        for (a, b) in [
            (&old_only, &adding),
            (&adding, &switched),
            (&switched, &new_only),
        ] {
            assert!(a.open(&b.seal(b"x")).is_ok());
            assert!(b.open(&a.seal(b"x")).is_ok());
        }
        assert!(new_only.open(&old_only.seal(b"x")).is_err());
        Ok(())
    }
}
