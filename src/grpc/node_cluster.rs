//! NodeClusterService as a relay serves it.
//!
//! The five relay RPCs are implemented here. Every other method
//! of the AEGIS service reaches [`NodeClusterRoutes`], which answers
//! UNIMPLEMENTED with a message saying a relay-coordinator does not serve it,
//! instead of tonic's empty UNIMPLEMENTED.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tonic::server::NamedService;
use tonic::{Request, Response, Status, Streaming};
use tower_service::Service;

use super::message_limit::{LimitedBody, MessageLimits, UNAUTHENTICATED_MESSAGE_BYTES};
use crate::app::Api;
use crate::auth::{authorize, TenantHeaders};
use crate::enroll::{EnrollError, LimitedRpc, REPLACE_NODE_METADATA};
use crate::net::BoxFuture;
use crate::proto::cluster::node_cluster_service_server::{
    NodeClusterService, NodeClusterServiceServer,
};
use crate::proto::cluster::{
    AttestNodeRequest, AttestNodeResponse, ChallengeNodeRequest, ChallengeNodeResponse,
    EdgeCommand, EdgeEvent, IssueEnrollmentTokenRequest, IssueEnrollmentTokenResponse,
    RotateEdgeKeyRequest, RotateEdgeKeyResponse,
};
use crate::proto::NODE_CLUSTER_SERVICE;

/// The RPCs a relay-coordinator serves.
pub const SERVED_RPCS: [&str; 5] = [
    "AttestNode",
    "ChallengeNode",
    "ConnectEdge",
    "RotateEdgeKey",
    "IssueEnrollmentToken",
];

/// The rest of AEGIS's NodeClusterService: worker membership, execution
/// routing and config sync, which have no meaning on a relay.
pub const NOT_SERVED_RPCS: [&str; 8] = [
    "RegisterNode",
    "Heartbeat",
    "DeregisterNode",
    "RouteExecution",
    "ForwardExecution",
    "SyncConfig",
    "PushConfig",
    "ListPeers",
];

/// The relay's implementation of the five served RPCs.
#[derive(Debug, Clone)]
pub struct RelayNodeCluster {
    api: Api,
}

impl RelayNodeCluster {
    /// Serves with `api`.
    pub fn new(api: Api) -> Self {
        Self { api }
    }

    /// Takes a token from the caller's bucket of `rpc`, before anything
    /// else (no store read happens for a refused call).
    fn rate_limit<T>(&self, rpc: LimitedRpc, request: &Request<T>) -> Result<(), Status> {
        let Some(peer) = request.remote_addr() else {
            return Ok(());
        };
        let limiter = self.api.rate_limits.of(rpc);
        let source = limiter.source(peer.ip(), metadata(request, limiter.forwarded_header()));
        limiter
            .check(source, tokio::time::Instant::now())
            .map_err(|wait| {
                self.api.metrics.rate_limited(rpc.name());
                EnrollError::RateLimited {
                    message: format!(
                        "too many {} calls from {source}; retry in {} ms",
                        rpc.name(),
                        wait.as_millis().max(1)
                    ),
                    retry_after: wait,
                }
                .to_status()
            })
    }
}

fn metadata<'a, T>(request: &'a Request<T>, name: &str) -> Option<&'a str> {
    request
        .metadata()
        .get(name)
        .and_then(|value| value.to_str().ok())
}

/// The node IssueEnrollmentToken's metadata asks the token to replace (the
/// proto message has no field for it).
fn replace_node<T>(request: &Request<T>) -> Result<Option<&str>, EnrollError> {
    request
        .metadata()
        .get(REPLACE_NODE_METADATA)
        .map(|value| {
            value.to_str().map_err(|_| {
                EnrollError::InvalidArgument(format!(
                    "metadata {REPLACE_NODE_METADATA} must be a node id (a UUID in ASCII)"
                ))
            })
        })
        .transpose()
}

/// The node a rotation request names (read after the rotation succeeded,
/// which proves it).
fn rotated_node(request: &RotateEdgeKeyRequest) -> Option<uuid::Uuid> {
    use prost::Message;
    let envelope = request.current_envelope.as_ref()?;
    let inner =
        crate::proto::cluster::RotateEdgeKeyInner::decode(envelope.payload.as_slice()).ok()?;
    uuid::Uuid::parse_str(&inner.node_id).ok()
}

type EdgeCommandStream = Pin<Box<dyn Stream<Item = Result<EdgeCommand, Status>> + Send>>;

#[tonic::async_trait]
impl NodeClusterService for RelayNodeCluster {
    async fn attest_node(
        &self,
        request: Request<AttestNodeRequest>,
    ) -> Result<Response<AttestNodeResponse>, Status> {
        self.rate_limit(LimitedRpc::Attest, &request)?;
        self.api
            .enrollment
            .attest(request.into_inner())
            .await
            .map(Response::new)
            .map_err(|err| err.to_status())
    }

    async fn challenge_node(
        &self,
        request: Request<ChallengeNodeRequest>,
    ) -> Result<Response<ChallengeNodeResponse>, Status> {
        self.rate_limit(LimitedRpc::Challenge, &request)?;
        let challenged = self
            .api
            .enrollment
            .challenge(request.into_inner())
            .await
            .map_err(|err| err.to_status())?;
        // The node's key was replaced: streams opened with the old one end.
        if let Some(node_id) = challenged.replaced {
            self.api.owner.key_replaced(node_id).await;
        }
        Ok(Response::new(challenged.response))
    }

    type ConnectEdgeStream = EdgeCommandStream;

    async fn connect_edge(
        &self,
        request: Request<Streaming<EdgeEvent>>,
    ) -> Result<Response<Self::ConnectEdgeStream>, Status> {
        let commands = self.api.ingress.connect(request.into_inner()).await?;
        Ok(Response::new(Box::pin(commands)))
    }

    async fn rotate_edge_key(
        &self,
        request: Request<RotateEdgeKeyRequest>,
    ) -> Result<Response<RotateEdgeKeyResponse>, Status> {
        self.rate_limit(LimitedRpc::Rotate, &request)?;
        let node_id = rotated_node(request.get_ref());
        let rotated = self
            .api
            .enrollment
            .rotate(request.into_inner())
            .await
            .map_err(|err| err.to_status())?;
        // A live stream of this node accepts the new key (and the old one
        // until the overlap ends) from now on.
        if let Some(node_id) = node_id {
            self.api.owner.keys_changed(node_id).await;
        }
        Ok(Response::new(rotated))
    }

    async fn issue_enrollment_token(
        &self,
        request: Request<IssueEnrollmentTokenRequest>,
    ) -> Result<Response<IssueEnrollmentTokenResponse>, Status> {
        let headers = TenantHeaders {
            aegis_tenant: metadata(&request, "x-aegis-tenant"),
            tenant_id: metadata(&request, "x-tenant-id"),
        };
        let (caller, tenant) = authorize(
            self.api.callers.as_ref(),
            self.api.now(),
            metadata(&request, "authorization"),
            headers,
        )
        .await
        .map_err(|err| EnrollError::from(err).to_status())?;
        let replace_node = replace_node(&request).map_err(|err| err.to_status())?;
        let issued = self
            .api
            .enrollment
            .issue(&caller, &tenant, &request.get_ref().issued_to, replace_node)
            .await
            .map_err(|err| err.to_status())?;
        Ok(Response::new(IssueEnrollmentTokenResponse {
            qr_payload: issued.command_hint.clone(),
            command_hint: issued.command_hint,
            token: issued.token,
            expires_at: issued.expires_at,
            controller_endpoint: issued.controller_endpoint,
        }))
    }
}

/// NodeClusterService with a clear answer for every method the relay does
/// not serve, per-message decode limits ([`LimitedBody`]) and a deadline on
/// every unary call.
#[derive(Clone)]
pub struct NodeClusterRoutes {
    served: NodeClusterServiceServer<RelayNodeCluster>,
    max_message_bytes: usize,
    unary_timeout: Duration,
}

impl NodeClusterRoutes {
    /// Routes for `service`: `max_message_bytes` limits a ConnectEdge
    /// stream's messages after its Hello and every message sent (edge results
    /// carry whole stdout/stderr); everything an unauthenticated peer sends
    /// is limited to [`UNAUTHENTICATED_MESSAGE_BYTES`]; a unary call,
    /// reading its request included, ends after `unary_timeout`.
    pub fn new(
        service: RelayNodeCluster,
        max_message_bytes: usize,
        unary_timeout: Duration,
    ) -> Self {
        Self {
            served: NodeClusterServiceServer::new(service)
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
            max_message_bytes,
            unary_timeout,
        }
    }
}

impl NamedService for NodeClusterRoutes {
    const NAME: &'static str = NODE_CLUSTER_SERVICE;
}

/// Why a method of NodeClusterService is not answered by the served stubs.
fn refusal(method: &str) -> Option<Status> {
    if SERVED_RPCS.contains(&method) {
        return None;
    }
    let message = if NOT_SERVED_RPCS.contains(&method) {
        format!(
            "{method} is not served here: this is a relay-coordinator, which serves only \
             AttestNode, ChallengeNode, ConnectEdge, RotateEdgeKey and IssueEnrollmentToken; \
             send worker and controller RPCs to an AEGIS controller"
        )
    } else {
        format!(
            "unknown method {method:?} of {NODE_CLUSTER_SERVICE}; this relay serves \
             AttestNode, ChallengeNode, ConnectEdge, RotateEdgeKey and IssueEnrollmentToken"
        )
    };
    Some(Status::unimplemented(message))
}

impl<B> Service<http::Request<B>> for NodeClusterRoutes
where
    B: http_body::Body<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<http::Request<B>>::poll_ready(&mut self.served, cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        if let Some(status) = refusal(&method) {
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let streaming = method == "ConnectEdge";
        let limits = MessageLimits {
            first: UNAUTHENTICATED_MESSAGE_BYTES,
            rest: if streaming {
                self.max_message_bytes
            } else {
                UNAUTHENTICATED_MESSAGE_BYTES
            },
        };
        let call = self
            .served
            .call(request.map(|body| LimitedBody::new(body, limits)));
        if streaming {
            // The Hello has its own deadline (relay.edges.hello_timeout).
            return Box::pin(call);
        }
        let timeout = self.unary_timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, call).await {
                Ok(answered) => answered,
                Err(_elapsed) => Ok(Status::deadline_exceeded(format!(
                    "{method} did not finish within {} (relay.limits.unary_timeout): send the \
                     request promptly, or retry if the relay was busy",
                    humantime::format_duration(timeout)
                ))
                .into_http()),
            }
        })
    }
}
