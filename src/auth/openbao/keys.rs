//! Local verification for the OpenBao signer: the Transit key's public keys
//! (every version), the strict parser of Transit's `vault:vN:<base64>`
//! answers, and RSA checks for both schemes a relay token may carry.
//!
//! A signature is accepted when any version verifies it as RSA PKCS#1 v1.5
//! with SHA-256 (true RS256) or as RSA-PSS with SHA-256 and whatever salt
//! length the signer chose. The usual cases run on aws-lc-rs: PKCS#1 v1.5,
//! PSS with the maximum salt (`emLen - hLen - 2`, OpenBao's default) and PSS
//! with a digest-length salt. Any other salt length (Transit's `salt_length`
//! option) is read from the encoded message (RFC 8017 §9.1.2 steps 1-10)
//! and checked by the `rsa` crate; that path is much slower, so it runs only
//! after the fast checks failed for every version.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_lc_rs::signature::{self, RsaParameters, RsaPssSaltLength, UnparsedPublicKey};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rsa::pkcs1::EncodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, Pss, RsaPublicKey};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

/// SHA-256 output length (hLen).
const HASH_LEN: usize = 32;

/// RSA-PSS, SHA-256, maximum salt length: a default Transit signature.
static PSS_MAX_SALT: RsaParameters =
    signature::RSA_PSS_2048_8192_SHA256.with_pss_salt_length(RsaPssSaltLength::Max);

/// What the fast path tries, in order.
static FAST_ALGORITHMS: [&RsaParameters; 3] = [
    &signature::RSA_PKCS1_2048_8192_SHA256,
    &PSS_MAX_SALT,
    &signature::RSA_PSS_2048_8192_SHA256,
];

/// Parses a Transit signature strictly: `vault:v<digits>:<standard base64>`,
/// both parts non-empty. Returns the key version and the raw signature.
pub(crate) fn parse_transit_signature(text: &str) -> Result<(u64, Vec<u8>), String> {
    const EXPECTED: &str = "expected vault:v<version>:<base64 signature>";
    let rest = text
        .strip_prefix("vault:")
        .ok_or_else(|| format!("transit signature lacks the vault: prefix; {EXPECTED}"))?;
    let (version, encoded) = rest
        .split_once(':')
        .ok_or_else(|| format!("transit signature has no version part; {EXPECTED}"))?;
    let digits = version
        .strip_prefix('v')
        .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| format!("transit signature version is not v<digits>; {EXPECTED}"))?;
    let version = digits
        .parse::<u64>()
        .map_err(|_| "transit signature version is out of range".to_owned())?;
    if encoded.is_empty() {
        return Err(format!("transit signature is empty; {EXPECTED}"));
    }
    let raw = STANDARD
        .decode(encoded)
        .map_err(|_| format!("transit signature is not standard base64; {EXPECTED}"))?;
    if raw.is_empty() {
        return Err(format!("transit signature is empty; {EXPECTED}"));
    }
    Ok((version, raw))
}

/// One key version's public key, parsed once.
struct VersionKey {
    rsa: RsaPublicKey,
    /// PKCS#1 `RSAPublicKey` DER, for aws-lc-rs.
    pkcs1_der: Vec<u8>,
}

/// The public keys of every version of the Transit key, as last read.
#[derive(Default)]
pub(crate) struct KeyRing {
    versions: BTreeMap<u64, VersionKey>,
}

impl KeyRing {
    /// Parses `(version, PEM public key)` pairs; every one must be an RSA key.
    pub(crate) fn from_pems<'a>(
        pems: impl IntoIterator<Item = (u64, &'a str)>,
    ) -> Result<Self, String> {
        let mut versions = BTreeMap::new();
        for (version, pem) in pems {
            let rsa = RsaPublicKey::from_public_key_pem(pem)
                .map_err(|err| format!("version {version}: not an RSA public key ({err})"))?;
            let pkcs1_der = rsa
                .to_pkcs1_der()
                .map_err(|err| format!("version {version}: cannot encode the key ({err})"))?
                .as_bytes()
                .to_vec();
            versions.insert(version, VersionKey { rsa, pkcs1_der });
        }
        if versions.is_empty() {
            return Err("the key has no public key versions".to_owned());
        }
        Ok(Self { versions })
    }

    /// The newest version known (0 when empty).
    pub(crate) fn latest(&self) -> u64 {
        self.versions.keys().next_back().copied().unwrap_or(0)
    }

    /// How many versions are known.
    pub(crate) fn len(&self) -> usize {
        self.versions.len()
    }

    /// Whether a signature of `len` bytes could come from one of these keys
    /// (RSA signatures are exactly as long as the modulus).
    pub(crate) fn fits_length(&self, len: usize) -> bool {
        self.versions.values().any(|key| key.rsa.size() == len)
    }

    /// Whether any version verifies `signature` over `message`, as PKCS#1
    /// v1.5 or PSS (SHA-256). Newest versions are tried first, and the fast
    /// checks for every version before the slow one.
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let candidates = || {
            self.versions
                .values()
                .rev()
                .filter(|key| key.rsa.size() == signature.len())
        };
        candidates().any(|key| {
            FAST_ALGORITHMS.iter().any(|alg| {
                UnparsedPublicKey::new(*alg, &key.pkcs1_der)
                    .verify(message, signature)
                    .is_ok()
            })
        }) || candidates().any(|key| verify_pss(&key.rsa, message, signature))
    }
}

/// RSA-PSS with SHA-256 and MGF1-SHA-256, any salt length.
pub(crate) fn verify_pss(key: &RsaPublicKey, message: &[u8], signature: &[u8]) -> bool {
    let Some(salt_len) = pss_salt_len(key, signature) else {
        return false;
    };
    let hashed = Sha256::digest(message);
    key.verify(Pss::new_with_salt::<Sha256>(salt_len), &hashed, signature)
        .is_ok()
}

/// The salt length a PSS signature was made with, read from its encoded
/// message (RFC 8017 §9.1.2 steps 1-10, without the final hash comparison,
/// which the `rsa` crate then performs with this length). `None` when the
/// signature is not a well-formed PSS encoding for this key.
fn pss_salt_len(key: &RsaPublicKey, signature: &[u8]) -> Option<usize> {
    let key_len = key.size();
    if signature.len() != key_len {
        return None;
    }
    let s = BigUint::from_bytes_be(signature);
    if &s >= key.n() {
        return None;
    }
    // The raw RSA public operation (RSAVP1), s^e mod n.
    let m = s.modpow(key.e(), key.n()).to_bytes_be();
    let em_bits = key.n().bits().checked_sub(1)?;
    let em_len = em_bits.div_ceil(8);
    if m.len() > em_len || em_len < HASH_LEN + 2 {
        return None;
    }
    let mut em = vec![0u8; em_len - m.len()];
    em.extend_from_slice(&m);
    if em[em_len - 1] != 0xbc {
        return None;
    }
    let db_len = em_len - HASH_LEN - 1;
    let (masked_db, rest) = em.split_at(db_len);
    let h = &rest[..HASH_LEN];
    let mask = mgf1_sha256(h, db_len);
    let mut db: Vec<u8> = masked_db.iter().zip(&mask).map(|(a, b)| a ^ b).collect();
    db[0] &= 0xff >> (8 * em_len - em_bits);
    let one = db.iter().position(|&byte| byte != 0)?;
    (db[one] == 0x01).then(|| db_len - one - 1)
}

fn mgf1_sha256(seed: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + HASH_LEN);
    let mut counter: u32 = 0;
    while out.len() < len {
        let mut hash = Sha256::new();
        hash.update(seed);
        hash.update(counter.to_be_bytes());
        out.extend_from_slice(&hash.finalize());
        counter = counter.wrapping_add(1);
    }
    out.truncate(len);
    out
}

/// The cached [`KeyRing`] plus the gate that keeps refreshes rare: the first
/// one runs at once, later ones at most once per `min_interval`, except that
/// a version seen in a fresh signature but missing from the ring lets the
/// next refresh through at once.
pub(crate) struct KeyCache {
    ring: Mutex<Arc<KeyRing>>,
    gate: Mutex<Gate>,
    min_interval: Duration,
}

struct Gate {
    last_refresh: Option<Instant>,
    newer_version_seen: bool,
}

impl KeyCache {
    pub(crate) fn new(ring: KeyRing, min_interval: Duration) -> Self {
        Self {
            ring: Mutex::new(Arc::new(ring)),
            gate: Mutex::new(Gate {
                last_refresh: None,
                newer_version_seen: false,
            }),
            min_interval,
        }
    }

    /// The current ring (the lock is held only to clone the `Arc`).
    pub(crate) fn snapshot(&self) -> Arc<KeyRing> {
        Arc::clone(&self.ring.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Records that Transit just signed with `version`.
    pub(crate) fn saw_version(&self, version: u64) {
        if version > self.snapshot().latest() {
            self.gate
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .newer_version_seen = true;
        }
    }

    /// Claims the right to refresh now; `false` when a refresh ran too
    /// recently and nothing suggests a new version.
    pub(crate) fn begin_refresh(&self, now: Instant) -> bool {
        let mut gate = self.gate.lock().unwrap_or_else(PoisonError::into_inner);
        let due = gate
            .last_refresh
            .is_none_or(|last| now.saturating_duration_since(last) >= self.min_interval);
        if !(due || gate.newer_version_seen) {
            return false;
        }
        gate.last_refresh = Some(now);
        gate.newer_version_seen = false;
        true
    }

    /// Replaces the ring, unless it would lose versions a concurrent
    /// refresh already installed.
    pub(crate) fn install(&self, ring: KeyRing) -> Arc<KeyRing> {
        let mut current = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        if ring.latest() >= current.latest() {
            *current = Arc::new(ring);
        }
        Arc::clone(&current)
    }
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::{KeyPair, KeySize};
    use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
    use rsa::RsaPrivateKey;

    use super::*;

    /// A deterministic generator for PSS salts; the randomness of a test
    /// salt does not matter.
    struct CountingRng(u64);

    impl rsa::rand_core::RngCore for CountingRng {
        fn next_u32(&mut self) -> u32 {
            (self.next_u64() >> 32) as u32
        }
        fn next_u64(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for byte in dest {
                *byte = (self.next_u64() >> 56) as u8;
            }
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }

    impl rsa::rand_core::CryptoRng for CountingRng {}

    fn key() -> Result<(KeyPair, RsaPrivateKey), Box<dyn std::error::Error>> {
        let pair = KeyPair::generate(KeySize::Rsa2048)?;
        let private = RsaPrivateKey::from_pkcs8_der(pair.as_der()?.as_ref())?;
        Ok((pair, private))
    }

    #[test]
    fn transit_signatures_parse_strictly() {
        assert_eq!(
            parse_transit_signature("vault:v12:AAEC"),
            Ok((12, vec![0, 1, 2]))
        );
        for bad in [
            "",
            "vault:v1:",
            "vault:1:AAEC",
            "vault:v:AAEC",
            "vault:vx:AAEC",
            "vault:v1",
            "secret:v1:AAEC",
            "Vault:v1:AAEC",
            "vault:v1:AA-C",
            "vault:v1:AAE",
            "vault:v99999999999999999999:AAEC",
            "vault:v1:====",
        ] {
            assert!(
                parse_transit_signature(bad).is_err(),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn pss_verifies_with_any_salt_length_and_pkcs1_too() -> Result<(), Box<dyn std::error::Error>> {
        let (pair, private) = key()?;
        let public = private.to_public_key();
        let pem = public.to_public_key_pem(LineEnding::LF)?;
        let ring = KeyRing::from_pems([(3, pem.as_str())])?;
        assert_eq!(ring.latest(), 3);
        let message = b"header.claims";
        let hashed = Sha256::digest(message);
        let max_salt = public.size() - HASH_LEN - 2;
        let mut rng = CountingRng(7);
        for salt_len in [0, 20, HASH_LEN, 100, max_salt] {
            let signature =
                private.sign_with_rng(&mut rng, Pss::new_with_salt::<Sha256>(salt_len), &hashed)?;
            assert_eq!(pss_salt_len(&public, &signature), Some(salt_len));
            assert!(ring.verify(message, &signature), "salt {salt_len}");
            assert!(
                !ring.verify(b"header.claimz", &signature),
                "salt {salt_len}"
            );
        }
        let mut pkcs1 = vec![0; pair.public_modulus_len()];
        pair.sign(
            &signature::RSA_PKCS1_SHA256,
            &aws_lc_rs::rand::SystemRandom::new(),
            message,
            &mut pkcs1,
        )?;
        assert!(ring.verify(message, &pkcs1));
        assert!(!verify_pss(&public, message, &pkcs1), "PKCS#1 is not PSS");
        assert!(!ring.verify(message, &pkcs1[1..]), "wrong length");
        assert!(
            !ring.verify(message, &vec![0xff; pkcs1.len()]),
            "above the modulus"
        );
        Ok(())
    }

    #[test]
    fn refreshes_are_rate_limited_unless_a_new_version_was_seen(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (_, private) = key()?;
        let pem = private.to_public_key().to_public_key_pem(LineEnding::LF)?;
        let start = Instant::now();
        let cache = KeyCache::new(
            KeyRing::from_pems([(1, pem.as_str())])?,
            Duration::from_secs(5),
        );
        assert!(cache.begin_refresh(start), "the first refresh runs at once");
        assert!(!cache.begin_refresh(start + Duration::from_secs(1)));
        cache.saw_version(1);
        assert!(!cache.begin_refresh(start + Duration::from_secs(2)));
        cache.saw_version(2);
        assert!(cache.begin_refresh(start + Duration::from_secs(2)));
        assert!(!cache.begin_refresh(start + Duration::from_secs(3)));
        assert!(cache.begin_refresh(start + Duration::from_secs(7)));
        let older = KeyRing::default();
        assert_eq!(cache.install(older).latest(), 1, "never goes back");
        assert!(KeyRing::from_pems([(1, "not a pem")]).is_err());
        assert!(KeyRing::from_pems([]).is_err());
        Ok(())
    }

    mod properties {
        use std::sync::OnceLock;

        use proptest::prelude::*;
        use rsa::RsaPrivateKey;

        use super::*;

        /// One key for every case: generating RSA keys is the slow part.
        fn shared_key() -> Option<&'static RsaPrivateKey> {
            static KEY: OnceLock<Option<RsaPrivateKey>> = OnceLock::new();
            KEY.get_or_init(|| key().ok().map(|(_, private)| private))
                .as_ref()
        }

        proptest! {
            #[test]
            fn well_formed_signatures_parse_back(version in any::<u64>(), raw in proptest::collection::vec(any::<u8>(), 1..300)) {
                let text = format!("vault:v{version}:{}", STANDARD.encode(&raw));
                prop_assert_eq!(parse_transit_signature(&text), Ok((version, raw)));
            }

            /// Any text: an answer, never a panic; what parses re-encodes to
            /// text that parses the same (leading zeros aside).
            #[test]
            fn any_text_parses_safely(text in "(vault:)?v?[0-9]{0,3}:?[A-Za-z0-9+/=:-]{0,12}", other in any::<String>()) {
                let _ = parse_transit_signature(&other);
                if let Ok((version, raw)) = parse_transit_signature(&text) {
                    prop_assert!(!raw.is_empty());
                    let again = format!("vault:v{version}:{}", STANDARD.encode(&raw));
                    prop_assert_eq!(parse_transit_signature(&again), Ok((version, raw)));
                }
            }
        }

        proptest! {
            // RSA signing is slow in a debug build: few cases, one key.
            #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

            /// The salt length is recovered from any PSS signature, and the
            /// signature verifies with it, for any message.
            #[test]
            fn pss_salt_length_is_recovered(salt_fraction in 0.0f64..=1.0, message in proptest::collection::vec(any::<u8>(), 0..64), seed in any::<u64>()) {
                let private = shared_key().ok_or_else(|| TestCaseError::fail("no RSA key"))?;
                let public = private.to_public_key();
                let max_salt = public.size() - HASH_LEN - 2;
                let salt_len = (salt_fraction * max_salt as f64) as usize;
                let hashed = Sha256::digest(&message);
                let signature = private
                    .sign_with_rng(&mut CountingRng(seed), Pss::new_with_salt::<Sha256>(salt_len), &hashed)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(pss_salt_len(&public, &signature), Some(salt_len));
                prop_assert!(verify_pss(&public, &message, &signature));
                let mut other = message.clone();
                other.push(0);
                prop_assert!(!verify_pss(&public, &other, &signature));
            }

            /// Random bytes of the key's length: no panic, no acceptance.
            #[test]
            fn random_bytes_are_not_signatures(bytes in proptest::collection::vec(any::<u8>(), 256)) {
                let private = shared_key().ok_or_else(|| TestCaseError::fail("no RSA key"))?;
                let public = private.to_public_key();
                let _ = pss_salt_len(&public, &bytes);
                prop_assert!(!verify_pss(&public, b"message", &bytes));
            }
        }
    }
}
