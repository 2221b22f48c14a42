//! What every host of a scenario shares, made before the run: the signing
//! key (one RSA key committed with the crate: generating one per scenario
//! is too slow), the edges' identities and their rows in the store, and the
//! callers' bearer tokens. Edges are written to the store, not enrolled.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use aegis_relay::auth::{
    write_private, LocalSigner, SignError, Signer, TokenIssuer, FLEET_MANAGE_ROLE,
};
use aegis_relay::edge_client::EdgeState;
use aegis_relay::store::{Enrollment, EnrollmentOutcome, MemoryStore, Store, StoreError};
use chrono::{DateTime, Utc};
use ed25519_dalek::SigningKey;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use crate::scenario::{mix, Scenario};
use crate::SIM_EPOCH;

/// The fixture signing key (RSA-2048, PKCS#8): signs node, caller and
/// command tokens in every simulated replica.
const SIGNING_KEY_PEM: &str = include_str!("../fixtures/signing-key.pem");

/// The issuer the replicas run with (`RelaySettings::local`'s).
const ISSUER: &str = aegis_relay::config::DEFAULT_ISSUER;

/// How long minted caller tokens last (longer than any scenario).
const CALLER_TOKEN_TTL: Duration = Duration::from_secs(6 * 3600);

const EDGE_STREAM: u64 = 0xed6e;

/// Why the fixture could not be made.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// The key could not be written or loaded.
    #[error("fixture signing key: {0}")]
    Key(String),
    /// A token could not be signed.
    #[error("minting a fixture token: {0}")]
    Sign(#[from] SignError),
    /// The store refused an edge.
    #[error("writing edge {0} to the store: {1}")]
    Store(Uuid, String),
}

impl From<StoreError> for FixtureError {
    fn from(err: StoreError) -> Self {
        Self::Store(Uuid::nil(), err.to_string())
    }
}

/// One simulated edge's identity.
#[derive(Debug, Clone)]
pub struct EdgeFixture {
    /// Its state, as the edge client takes it.
    pub state: EdgeState,
    /// Tenant index.
    pub tenant: usize,
}

/// Everything made before the run.
pub struct Fixture {
    /// Signs every token of the run.
    pub signer: Arc<dyn Signer>,
    /// The store every replica shares; it outlives replica crashes.
    pub store: Arc<MemoryStore>,
    /// Edge `i` at index `i`.
    pub edges: Vec<EdgeFixture>,
    /// `Bearer ...` of a fleet manager, per tenant index.
    pub bearers: Vec<String>,
}

/// Tenant id of tenant index `t`.
pub fn tenant_id(t: usize) -> String {
    format!("tenant-{t}")
}

/// The fixture signer, loaded from the committed PEM.
pub fn signer() -> Result<Arc<LocalSigner>, FixtureError> {
    let dir = tempfile::tempdir().map_err(|err| FixtureError::Key(err.to_string()))?;
    let path = dir.path().join("signing-key.pem");
    write_private(&path, SIGNING_KEY_PEM.as_bytes())
        .map_err(|err| FixtureError::Key(err.to_string()))?;
    let signer = LocalSigner::load_or_create(&path)?;
    Ok(Arc::new(signer))
}

fn sim_start() -> DateTime<Utc> {
    DateTime::from(UNIX_EPOCH + SIM_EPOCH)
}

impl Fixture {
    /// Writes `scenario`'s edges to a fresh store and mints their tokens.
    /// Edge identities depend on the edge's index only.
    pub async fn new(scenario: &Scenario, signer: Arc<dyn Signer>) -> Result<Self, FixtureError> {
        let tokens = TokenIssuer::new(
            Arc::clone(&signer),
            ISSUER.to_owned(),
            Vec::new(),
            "http://r0:50051".to_owned(),
        );
        let store = Arc::new(MemoryStore::new());
        let now = sim_start();
        let mut edges = Vec::with_capacity(scenario.edges);
        for i in 0..scenario.edges {
            let mut rng = StdRng::seed_from_u64(mix(0, EDGE_STREAM, i as u64));
            let key = SigningKey::from_bytes(&rng.random());
            let node_id = uuid::Builder::from_random_bytes(rng.random()).into_uuid();
            let tenant = scenario.tenant_of(i);
            let tenant_name = tenant_id(tenant);
            let outcome = store
                .complete_enrollment(&Enrollment {
                    jti: uuid::Builder::from_random_bytes(rng.random()).into_uuid(),
                    tenant_id: tenant_name.clone(),
                    issued_to: format!("sim-edge-{i}"),
                    token_expires_at: now + Duration::from_secs(900),
                    node_id,
                    public_key: key.verifying_key().to_bytes().to_vec(),
                    challenge_id: uuid::Builder::from_random_bytes(rng.random()).into_uuid(),
                    now,
                    own_token: true,
                })
                .await?;
            if outcome != EnrollmentOutcome::Enrolled {
                return Err(FixtureError::Store(node_id, format!("{outcome:?}")));
            }
            let token = tokens
                .mint_node_token(node_id, &tenant_name, "sim".to_owned(), now)
                .await?;
            edges.push(EdgeFixture {
                state: EdgeState {
                    dir: PathBuf::new(),
                    node_id,
                    tenant_id: tenant_name,
                    endpoint: String::new(),
                    key,
                    token: token.token,
                },
                tenant,
            });
        }
        let mut bearers = Vec::with_capacity(scenario.tenants);
        for t in 0..scenario.tenants {
            let token = tokens
                .mint_tenant_token(
                    &format!("sim-caller-{t}"),
                    &tenant_id(t),
                    &[FLEET_MANAGE_ROLE],
                    now,
                    CALLER_TOKEN_TTL,
                )
                .await?;
            bearers.push(format!("Bearer {}", token.token));
        }
        Ok(Self {
            signer,
            store,
            edges,
            bearers,
        })
    }
}
