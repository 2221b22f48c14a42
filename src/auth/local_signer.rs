//! A local RSA-2048 signing key in a file: the signer of `dev` and of
//! single-host deployments. Generated on first start (PKCS#8 PEM, mode 0600),
//! exactly once however many replicas start together on one data dir, and
//! reused afterwards.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{self, KeyPair as _, UnparsedPublicKey};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::jws::b64url;
use super::private_file::create_private;
use super::signer::{SignError, Signer};

const PEM_LABEL: &str = "PRIVATE KEY";

/// RS256 (PKCS#1 v1.5, SHA-256) with a key from a local file.
pub struct LocalSigner {
    key: KeyPair,
    public_key: Vec<u8>,
    path: PathBuf,
    rng: SystemRandom,
}

impl std::fmt::Debug for LocalSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSigner")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl LocalSigner {
    /// Loads the key at `path`, generating it (mode 0600) when the file does
    /// not exist. Replicas starting together on one data dir end up with the
    /// same key: one creates the file, the others load it.
    pub fn load_or_create(path: &Path) -> Result<Self, SignError> {
        let key = match load(path)? {
            Some(key) => key,
            None => create(path)?,
        };
        let public_key = key.public_key().as_ref().to_vec();
        Ok(Self {
            key,
            public_key,
            path: path.to_owned(),
            rng: SystemRandom::new(),
        })
    }

    fn sign_now(&self, signing_input: &[u8]) -> Result<String, SignError> {
        let mut signature = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &self.rng,
                signing_input,
                &mut signature,
            )
            .map_err(|_| SignError::Key("RSA signing failed".to_owned()))?;
        Ok(b64url(&signature))
    }
}

#[async_trait]
impl Signer for LocalSigner {
    async fn sign(&self, signing_input: &[u8]) -> Result<String, SignError> {
        self.sign_now(signing_input)
    }

    async fn verify(&self, signing_input: &[u8], signature: &[u8]) -> Result<bool, SignError> {
        let key = UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &self.public_key);
        Ok(key.verify(signing_input, signature).is_ok())
    }

    fn describe(&self) -> String {
        format!("local key {}", self.path.display())
    }
}

fn parse_pem(pem: &[u8]) -> Result<KeyPair, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "not a PEM file".to_owned())?;
    let body: String = text
        .lines()
        .skip_while(|line| !line.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|line| !line.starts_with("-----END"))
        .collect();
    let der = STANDARD
        .decode(body.trim())
        .map_err(|_| "not a PEM-encoded key".to_owned())?;
    KeyPair::from_pkcs8(&der).map_err(|err| format!("not an RSA PKCS#8 key ({err})"))
}

/// The key in the file at `path`; `None` when there is no file.
fn load(path: &Path) -> Result<Option<KeyPair>, SignError> {
    check_private_mode(path)?;
    match std::fs::read(path) {
        Ok(pem) => parse_pem(&pem).map(Some).map_err(|reason| {
            SignError::Key(format!(
                "{}: {reason}; move it away to generate a new key",
                path.display()
            ))
        }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(SignError::Key(format!(
            "cannot read {}: {err}",
            path.display()
        ))),
    }
}

/// Generates a key and publishes it at `path` unless another process (or
/// thread) did first, in which case that one's key is loaded and used.
fn create(path: &Path) -> Result<KeyPair, SignError> {
    let (key, pem) = generate()?;
    match create_private(path, pem.as_bytes()) {
        Ok(()) => {
            tracing::info!(path = %path.display(), "generated a new local signing key");
            Ok(key)
        }
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            tracing::info!(path = %path.display(), "another replica created the signing key first; using it");
            load(path)?.ok_or_else(|| {
                SignError::Key(format!("{} vanished while starting", path.display()))
            })
        }
        Err(err) => Err(SignError::Key(format!(
            "cannot write {}: {err}",
            path.display()
        ))),
    }
}

/// A new RSA-2048 key and its PKCS#8 PEM.
fn generate() -> Result<(KeyPair, String), SignError> {
    let key = KeyPair::generate(KeySize::Rsa2048)
        .map_err(|_| SignError::Key("RSA key generation failed".to_owned()))?;
    let der = key
        .as_der()
        .map_err(|_| SignError::Key("cannot encode the new key".to_owned()))?;
    let encoded = STANDARD.encode(der.as_ref());
    let mut pem = format!("-----BEGIN {PEM_LABEL}-----\n");
    for chunk in encoded.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {PEM_LABEL}-----\n"));
    Ok((key, pem))
}

/// Refuses a key file that its group or others may read (the key signs
/// every token the relay mints). A missing file passes (it is generated).
fn check_private_mode(path: &Path) -> Result<(), SignError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = match std::fs::metadata(path) {
            Ok(metadata) => metadata.permissions().mode() & 0o777,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(err) => {
                return Err(SignError::Key(format!(
                    "cannot read {}: {err}",
                    path.display()
                )))
            }
        };
        if mode & 0o077 != 0 {
            return Err(SignError::Key(format!(
                "{} is readable by its group or others (mode {mode:04o}); the signing key must be \
                 private: run `chmod 600 {}` (in Kubernetes, mount the secret with defaultMode 0400)",
                path.display(),
                path.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn generates_once_signs_and_verifies() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("signing-key.pem");
        let first = LocalSigner::load_or_create(&path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path)?.permissions().mode() & 0o777,
                0o600
            );
        }
        let signature = first.sign(b"header.claims").await?;
        let raw = super::super::jws::b64url_decode(&signature).ok_or("not base64url")?;
        assert_eq!(raw.len(), 256);
        let reloaded = LocalSigner::load_or_create(&path)?;
        assert!(
            reloaded.verify(b"header.claims", &raw).await?,
            "same key after reload"
        );
        assert!(!reloaded.verify(b"header.claimz", &raw).await?);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
            let refused = LocalSigner::load_or_create(&path).err();
            assert!(
                matches!(&refused, Some(SignError::Key(m)) if m.contains("chmod 600")),
                "{refused:?}"
            );
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        std::fs::write(&path, "garbage")?;
        assert!(matches!(
            LocalSigner::load_or_create(&path),
            Err(SignError::Key(_))
        ));
        Ok(())
    }

    /// Replicas starting together on a fresh data dir: every one ends with
    /// the key one of them published, and no temporary file is left.
    #[test]
    fn concurrent_first_starts_agree_on_one_key() -> Result<(), Box<dyn std::error::Error>> {
        const STARTS: usize = 8;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("data").join("signing-key.pem");
        let start = std::sync::Barrier::new(STARTS);
        let keys = std::thread::scope(|scope| {
            let starts: Vec<_> = (0..STARTS)
                .map(|_| {
                    scope.spawn(|| {
                        start.wait();
                        LocalSigner::load_or_create(&path).map(|signer| signer.public_key)
                    })
                })
                .collect();
            starts
                .into_iter()
                .map(|start| start.join().map_err(|_| "a start panicked"))
                .collect::<Result<Vec<_>, _>>()
        })?
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
        let on_disk = LocalSigner::load_or_create(&path)?.public_key;
        assert!(keys.iter().all(|key| *key == on_disk), "one key for all");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path)?.permissions().mode() & 0o777,
                0o600
            );
        }
        let files = std::fs::read_dir(dir.path().join("data"))?.count();
        assert_eq!(files, 1, "no temporary file left");
        Ok(())
    }
}
