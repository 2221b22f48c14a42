//! The OpenBao Transit signer: relay JWTs signed by the Transit key
//! (protocol.md §4.1, §12.2) so the private key never leaves OpenBao, and
//! verified locally against the key's public versions, so checking a token
//! costs no round trip.
//!
//! Two signing schemes: `Rs256` asks Transit for PKCS#1 v1.5 with SHA-256
//! (a true RS256 JWS); `AegisTransit` sends a default sign request, as the
//! AEGIS relay does (RSA-PSS for an RSA key). Verification accepts both, from
//! any key version; a signature no cached version verifies triggers one key
//! refresh (rate limited), which is how a rotated version is picked up.
//!
//! Concurrent signatures are coalesced into batched Transit requests
//! (group commit, see [`batch`]): one HTTP request carries up to
//! [`batch::MAX_BATCH`] signatures, and a few batches run at once.

mod batch;
mod keys;
mod session;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use vaultrs::api::transit::responses::{ReadKeyData, ReadKeyResponse};
use vaultrs::api::transit::KeyType;
use vaultrs::client::VaultClient;

use self::batch::{Batcher, Target};
use self::keys::{KeyCache, KeyRing};
use self::session::{LoginTarget, Sessions};
use super::signer::{SignError, Signer};
use crate::config::{
    Env, OpenBaoConfig, ProcessEnv, Secret, SigningScheme, ROLE_ID_ENV, SECRET_ID_ENV,
};

/// Shortest time between two key refreshes triggered by signatures that no
/// cached version verifies (garbage must not hammer OpenBao).
const MIN_KEY_REFRESH_INTERVAL: Duration = Duration::from_secs(5);

/// Signs through OpenBao Transit, verifies locally. Owns the tasks that
/// send the batched sign requests; dropping the signer stops them.
pub struct OpenBaoSigner {
    endpoint: String,
    transit_mount: String,
    transit_key: String,
    scheme: SigningScheme,
    sessions: Arc<Sessions>,
    keys: Arc<KeyCache>,
    batches: Batcher,
}

impl std::fmt::Debug for OpenBaoSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenBaoSigner")
            .field("endpoint", &self.endpoint)
            .field("transit_mount", &self.transit_mount)
            .field("transit_key", &self.transit_key)
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

impl OpenBaoSigner {
    /// Logs in with AppRole, reads the Transit key's public versions and
    /// starts the batch workers on the current tokio runtime. Fails with
    /// `Unavailable` when OpenBao cannot be reached, `Key` when the
    /// credentials are refused or the key is not an RSA key.
    pub async fn connect(
        config: &OpenBaoConfig,
        scheme: SigningScheme,
        role_id: String,
        secret_id: String,
    ) -> Result<Self, SignError> {
        let sessions = Sessions::login(LoginTarget {
            endpoint: config.endpoint.clone(),
            mount: config.approle_mount.clone(),
            role_id: Secret::new(role_id),
            secret_id: Secret::new(secret_id),
        })
        .await?;
        let ring = read_key_ring(&sessions, &config.transit_mount, &config.transit_key).await?;
        tracing::info!(
            endpoint = %config.endpoint,
            key = %config.transit_key,
            versions = ring.len(),
            latest = ring.latest(),
            "openbao transit signer ready"
        );
        let sessions = Arc::new(sessions);
        let keys = Arc::new(KeyCache::new(ring, MIN_KEY_REFRESH_INTERVAL));
        let batches = Batcher::start(Target {
            sessions: Arc::clone(&sessions),
            keys: Arc::clone(&keys),
            mount: config.transit_mount.clone(),
            key: config.transit_key.clone(),
            scheme,
        })?;
        Ok(Self {
            endpoint: config.endpoint.clone(),
            transit_mount: config.transit_mount.clone(),
            transit_key: config.transit_key.clone(),
            scheme,
            sessions,
            keys,
            batches,
        })
    }

    /// How many HTTP sign requests this signer has sent to Transit (each
    /// carries a batch of signatures; 403 retries count too). Lower than
    /// the number of signatures whenever concurrent calls were coalesced.
    pub fn transit_sign_requests(&self) -> u64 {
        self.batches.requests()
    }

    /// The AppRole role id and secret id for `config`: each from its file
    /// (trimmed) when one is configured, else from env `OPENBAO_ROLE_ID` /
    /// `OPENBAO_SECRET_ID`. The error names everything missing.
    pub fn approle_credentials(config: &OpenBaoConfig) -> Result<(String, String), SignError> {
        Self::approle_credentials_from(config, &ProcessEnv)
    }

    /// [`Self::approle_credentials`] with an injected environment.
    pub fn approle_credentials_from(
        config: &OpenBaoConfig,
        env: &dyn Env,
    ) -> Result<(String, String), SignError> {
        let mut problems = Vec::new();
        let mut read = |key: &str, file: Option<&std::path::Path>, var: &str| -> Option<String> {
            let value = match file {
                Some(path) => match std::fs::read_to_string(path) {
                    Ok(text) => Some(text.trim().to_owned()),
                    Err(err) => {
                        problems.push(format!("cannot read {key} {} ({err})", path.display()));
                        return None;
                    }
                },
                None => env.var(var).map(|value| value.trim().to_owned()),
            };
            match (value, file) {
                (Some(value), _) if !value.is_empty() => Some(value),
                (_, Some(path)) => {
                    problems.push(format!("{key} {} is empty", path.display()));
                    None
                }
                (_, None) => {
                    problems.push(format!("{key} is not set and env {var} is empty or unset"));
                    None
                }
            }
        };
        let role_id = read(
            "openbao.approle.role_id_file",
            config.role_id_file.as_deref(),
            ROLE_ID_ENV,
        );
        let secret_id = read(
            "openbao.approle.secret_id_file",
            config.secret_id_file.as_deref(),
            SECRET_ID_ENV,
        );
        match (role_id, secret_id) {
            (Some(role_id), Some(secret_id)) => Ok((role_id, secret_id)),
            _ => Err(SignError::Key(format!(
                "openbao AppRole credentials missing: {}",
                problems.join("; ")
            ))),
        }
    }

    /// Reads the key versions again and installs them; the ring in use.
    async fn refresh_keys(&self) -> Result<Arc<KeyRing>, SignError> {
        let ring = read_key_ring(&self.sessions, &self.transit_mount, &self.transit_key).await?;
        tracing::info!(
            key = %self.transit_key,
            versions = ring.len(),
            latest = ring.latest(),
            "refreshed the transit public keys"
        );
        Ok(self.keys.install(ring))
    }
}

async fn read_key_ring(sessions: &Sessions, mount: &str, key: &str) -> Result<KeyRing, SignError> {
    let what = format!("reading transit key {mount}/keys/{key}");
    let response = sessions
        .call(&what, |client: Arc<VaultClient>| async move {
            vaultrs::transit::key::read(client.as_ref(), mount, key).await
        })
        .await?;
    key_ring(key, response)
}

fn key_ring(key: &str, response: ReadKeyResponse) -> Result<KeyRing, SignError> {
    if !matches!(
        response.key_type,
        KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096
    ) {
        return Err(SignError::Key(format!(
            "transit key {key} is {:?}; relay tokens are RS256 and need an RSA key",
            response.key_type
        )));
    }
    let ReadKeyData::Asymmetric(versions) = response.keys else {
        return Err(SignError::Key(format!(
            "transit key {key} lists no public keys"
        )));
    };
    let mut pems = Vec::with_capacity(versions.len());
    for (version, entry) in &versions {
        let version = version.parse::<u64>().map_err(|_| {
            SignError::Backend(format!(
                "transit key {key} has a version named {version:?}, not a number"
            ))
        })?;
        pems.push((version, entry.public_key.as_str()));
    }
    KeyRing::from_pems(pems)
        .map_err(|reason| SignError::Key(format!("transit key {key}: {reason}")))
}

#[async_trait]
impl Signer for OpenBaoSigner {
    async fn sign(&self, signing_input: &[u8]) -> Result<String, SignError> {
        self.batches.sign(signing_input).await
    }

    async fn verify(&self, signing_input: &[u8], signature: &[u8]) -> Result<bool, SignError> {
        let ring = self.keys.snapshot();
        if ring.verify(signing_input, signature) {
            return Ok(true);
        }
        if !ring.fits_length(signature.len()) || !self.keys.begin_refresh(Instant::now()) {
            return Ok(false);
        }
        match self.refresh_keys().await {
            Ok(ring) => Ok(ring.verify(signing_input, signature)),
            Err(err) => {
                tracing::warn!(error = %err, "cannot refresh the transit public keys; verifying with the cached ones");
                Ok(false)
            }
        }
    }

    fn stop(&self) {
        self.batches.stop();
    }

    fn describe(&self) -> String {
        let scheme = match self.scheme {
            SigningScheme::Rs256 => "rs256",
            SigningScheme::AegisTransit => "aegis-transit",
        };
        format!(
            "openbao transit {} key {}/{} ({scheme})",
            self.endpoint, self.transit_mount, self.transit_key
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;

    fn config(role_id_file: Option<PathBuf>, secret_id_file: Option<PathBuf>) -> OpenBaoConfig {
        OpenBaoConfig {
            endpoint: "http://127.0.0.1:1".to_owned(),
            role_id_file,
            secret_id_file,
            approle_mount: "approle".to_owned(),
            transit_mount: "transit".to_owned(),
            transit_key: "edge-enrollment-token".to_owned(),
        }
    }

    #[test]
    fn credentials_come_from_files_then_env() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let role = dir.path().join("role-id");
        std::fs::write(&role, "  role-from-file\n")?;
        let mut env = BTreeMap::new();
        env.insert(SECRET_ID_ENV.to_owned(), "secret-from-env".to_owned());
        env.insert(ROLE_ID_ENV.to_owned(), "ignored-role".to_owned());
        let (role_id, secret_id) =
            OpenBaoSigner::approle_credentials_from(&config(Some(role), None), &env)?;
        assert_eq!(role_id, "role-from-file");
        assert_eq!(secret_id, "secret-from-env");
        Ok(())
    }

    #[test]
    fn missing_credentials_are_named_without_their_values() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let empty = dir.path().join("secret-id");
        std::fs::write(&empty, "\n")?;
        let absent = dir.path().join("absent");
        let err = OpenBaoSigner::approle_credentials_from(&config(None, None), &BTreeMap::new())
            .err()
            .ok_or("no credentials must fail")?
            .to_string();
        assert!(
            err.contains(ROLE_ID_ENV) && err.contains(SECRET_ID_ENV),
            "{err}"
        );
        let err = OpenBaoSigner::approle_credentials_from(
            &config(Some(absent.clone()), Some(empty.clone())),
            &BTreeMap::new(),
        )
        .err()
        .ok_or("unreadable files must fail")?
        .to_string();
        assert!(err.contains(&absent.display().to_string()), "{err}");
        assert!(
            err.contains(&empty.display().to_string()) && err.contains("empty"),
            "{err}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn unreachable_openbao_is_unavailable() {
        let result = OpenBaoSigner::connect(
            &config(None, None),
            SigningScheme::Rs256,
            "role".to_owned(),
            "secret".to_owned(),
        )
        .await;
        assert!(
            matches!(result, Err(SignError::Unavailable(_))),
            "{result:?}"
        );
    }
}
