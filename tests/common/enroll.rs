//! Enrollment fixtures: an edge identity (node id and Ed25519 key), the
//! AttestNode / ChallengeNode handshake as the real daemon performs it,
//! enrollment tokens with arbitrary claims signed by a relay's key, and
//! checks that a refusal left nothing behind.

use std::time::Duration;

use aegis_relay::app::RunningRelay;
use aegis_relay::auth::{b64url, b64url_decode};
use aegis_relay::proto::cluster::node_cluster_service_client::NodeClusterServiceClient;
use aegis_relay::proto::cluster::{
    challenge_node_request::BootstrapProof, AttestNodeRequest, AttestNodeResponse,
    ChallengeNodeRequest, ChallengeNodeResponse, IssueEnrollmentTokenRequest, NodeCapabilities,
    NodeRole,
};
use ed25519_dalek::{Signer as _, SigningKey};
use tonic::transport::Channel;
use uuid::Uuid;

/// The generated client on a test channel.
pub type Client = NodeClusterServiceClient<Channel>;

/// Boxed error of the test functions.
pub type BoxError = Box<dyn std::error::Error>;

/// Tenant of the tokens the tests mint.
pub const TENANT: &str = "t-acme";

/// Label of the tokens the tests mint (becomes the edge's display name).
pub const ISSUED_TO: &str = "host-1";

/// An edge identity: what `aegis edge enroll` generates locally.
pub struct Node {
    /// `spec.node.id`.
    pub id: Uuid,
    /// `node.key`.
    pub key: SigningKey,
}

impl Node {
    /// A fresh node id and key.
    pub fn new() -> Self {
        Self {
            id: aegis_relay::runtime::OsEntropy.uuid(),
            key: SigningKey::from_bytes(&rand::random::<[u8; 32]>()),
        }
    }

    /// The raw 32-byte public key.
    pub fn public_key(&self) -> Vec<u8> {
        self.key.verifying_key().to_bytes().to_vec()
    }

    /// AttestNode exactly as the daemon sends it (protocol.md §3.3).
    pub fn attest_request(&self) -> AttestNodeRequest {
        AttestNodeRequest {
            node_id: self.id.to_string(),
            role: NodeRole::Edge as i32,
            public_key: self.public_key(),
            capabilities: Some(NodeCapabilities::default()),
            grpc_address: String::new(),
            enrolment_token: String::new(),
        }
    }

    /// ChallengeNode answering `attested` with a signature over the raw
    /// nonce and `token` as the bootstrap proof.
    pub fn challenge_request(
        &self,
        attested: &AttestNodeResponse,
        token: &str,
    ) -> ChallengeNodeRequest {
        ChallengeNodeRequest {
            challenge_id: attested.challenge_id.clone(),
            node_id: self.id.to_string(),
            challenge_signature: self.key.sign(&attested.challenge_nonce).to_bytes().to_vec(),
            bootstrap_proof: Some(BootstrapProof::EnrollmentToken(token.to_owned())),
        }
    }

    /// AttestNode.
    pub async fn attest(&self, client: &mut Client) -> Result<AttestNodeResponse, tonic::Status> {
        Ok(client
            .attest_node(self.attest_request())
            .await?
            .into_inner())
    }

    /// The full handshake (AttestNode, then ChallengeNode) with `token`.
    pub async fn enroll(
        &self,
        client: &mut Client,
        token: &str,
    ) -> Result<ChallengeNodeResponse, tonic::Status> {
        let attested = self.attest(client).await?;
        Ok(client
            .challenge_node(self.challenge_request(&attested, token))
            .await?
            .into_inner())
    }
}

impl Default for Node {
    fn default() -> Self {
        Self::new()
    }
}

/// A client on a fresh channel to `relay`.
pub async fn client(relay: &RunningRelay) -> Result<Client, BoxError> {
    Ok(NodeClusterServiceClient::new(
        super::grpc_channel(relay).await?,
    ))
}

/// A valid enrollment token for [`TENANT`] / [`ISSUED_TO`] with `jti`.
pub async fn mint(relay: &RunningRelay, jti: Uuid) -> Result<String, BoxError> {
    let minted = relay
        .tokens()
        .mint_enrollment(
            TENANT,
            ISSUED_TO,
            jti,
            aegis_relay::runtime::SystemClock.utc_now(),
        )
        .await?;
    Ok(minted.token)
}

/// The claims `mint` would produce for `jti`, as JSON to tamper with.
pub fn good_claims(relay: &RunningRelay, jti: Uuid) -> serde_json::Value {
    let now = aegis_relay::runtime::SystemClock.utc_now().timestamp();
    serde_json::json!({
        "tid": TENANT, "sub": ISSUED_TO, "jti": jti.to_string(),
        "exp": now + 900, "nbf": now, "aud": "edge-enrollment",
        "iss": relay.tokens().issuer(), "cep": relay.tokens().public_endpoint(),
    })
}

/// A compact JWT of `claims` signed with `relay`'s key.
pub async fn sign_claims(
    relay: &RunningRelay,
    claims: &serde_json::Value,
) -> Result<String, BoxError> {
    let signing_input = format!(
        "{}.{}",
        b64url(br#"{"alg":"RS256","typ":"JWT"}"#),
        b64url(&serde_json::to_vec(claims)?)
    );
    let signature = relay
        .tokens()
        .signer()
        .sign(signing_input.as_bytes())
        .await?;
    Ok(format!("{signing_input}.{signature}"))
}

/// The claims (segment 2) of a compact JWT.
pub fn claims_of(token: &str) -> Result<serde_json::Value, BoxError> {
    let segment = token
        .split('.')
        .nth(1)
        .ok_or("token has no claims segment")?;
    let json = b64url_decode(segment).ok_or("claims segment is not base64url")?;
    Ok(serde_json::from_slice(&json)?)
}

/// Asserts `result` is a refusal with `code` whose message contains `needle`.
pub fn assert_refused<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: tonic::Code,
    needle: &str,
) {
    match result {
        Ok(value) => panic!("expected {code:?} {needle:?}, got OK {value:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "{status:?}");
            assert!(
                status.message().contains(needle),
                "expected {needle:?} in {:?}",
                status.message()
            );
        }
    }
}

/// Asserts the store holds no edge `node_id`.
pub async fn assert_not_enrolled(relay: &RunningRelay, node_id: Uuid) -> Result<(), BoxError> {
    let edge = relay.store().get_edge(node_id).await?;
    assert!(edge.is_none(), "a refusal wrote edge {node_id}: {edge:?}");
    Ok(())
}

/// Asserts `token` (its jti) was not burned: a fresh node enrolls with it.
pub async fn assert_redeemable(
    relay: &RunningRelay,
    client: &mut Client,
    token: &str,
) -> Result<(), BoxError> {
    let node = Node::new();
    let response = node.enroll(client, token).await;
    assert!(response.is_ok(), "token no longer redeemable: {response:?}");
    let edge = relay.store().get_edge(node.id).await?;
    assert!(edge.is_some(), "redemption did not store edge {}", node.id);
    Ok(())
}

/// `Bearer <admin token>` for `relay` (an aegis:admin of aegis-system).
pub async fn admin_bearer(relay: &RunningRelay) -> Result<String, BoxError> {
    let admin = relay
        .tokens()
        .mint_admin_token(
            "ops",
            aegis_relay::runtime::SystemClock.utc_now(),
            Duration::from_secs(600),
        )
        .await?;
    Ok(format!("Bearer {}", admin.token))
}

/// IssueEnrollmentToken for `issued_to` with `metadata`.
pub fn issue_request(
    issued_to: &str,
    metadata: &[(&'static str, &str)],
) -> Result<tonic::Request<IssueEnrollmentTokenRequest>, BoxError> {
    let mut request = tonic::Request::new(IssueEnrollmentTokenRequest {
        issued_to: issued_to.to_owned(),
    });
    for (name, value) in metadata {
        request.metadata_mut().insert(*name, value.parse()?);
    }
    Ok(request)
}
