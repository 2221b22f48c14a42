//! The authorisation matrix: every REST route and gRPC RPC of a relay, called
//! as every kind of caller, with the exact status each cell must get.
//!
//! It is a function of the relay's base URLs, a token factory and a few
//! fixtures, so the cluster tests can run the same table against every
//! replica of a cluster: the answers must not depend on which replica a
//! caller reaches.

use std::fmt::Write as _;
use std::time::Duration;

use aegis_relay::proto::cluster::node_cluster_service_client::NodeClusterServiceClient;
use aegis_relay::proto::cluster::{
    AttestNodeRequest, ChallengeNodeRequest, EdgeEvent, IssueEnrollmentTokenRequest,
    RotateEdgeKeyRequest,
};
use serde_json::{json, Value};
use tonic::transport::Channel;
use uuid::Uuid;

use super::enroll::BoxError;

/// The kinds of caller, in the matrix's column order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No `Authorization` header.
    NoToken,
    /// A bearer that is not a JWT.
    Malformed,
    /// A realm token of a fleet manager of the tenant, expired an hour ago.
    Expired,
    /// A fleet manager's token signed by the realm's key but naming another
    /// issuer.
    OtherIssuer,
    /// An `aegis:readonly` operator (tenant `aegis-system`).
    Readonly,
    /// A user of the tenant with no role.
    TenantUser,
    /// A user of the tenant with `aegis.edge.fleet.manage`.
    TenantManager,
    /// A user of another tenant with `aegis.edge.fleet.manage`.
    OtherTenant,
    /// An `aegis:operator`.
    Operator,
    /// An `aegis:admin`.
    Admin,
    /// A service account (tenant `aegis-system`) without the role, sending
    /// `X-Tenant-Id: <the tenant>`.
    ServiceAccount,
    /// A service account with `aegis.edge.fleet.manage`, sending
    /// `X-Tenant-Id: <the tenant>`.
    ServiceAccountManager,
    /// The per-command token an edge received in an InvokeTool.
    CommandToken,
}

/// Every kind, in column order.
pub const KINDS: [Kind; 13] = [
    Kind::NoToken,
    Kind::Malformed,
    Kind::Expired,
    Kind::OtherIssuer,
    Kind::Readonly,
    Kind::TenantUser,
    Kind::TenantManager,
    Kind::OtherTenant,
    Kind::Operator,
    Kind::Admin,
    Kind::ServiceAccount,
    Kind::ServiceAccountManager,
    Kind::CommandToken,
];

/// What a caller sends: `Authorization` and other headers.
#[derive(Debug, Clone, Default)]
pub struct Credential {
    /// The `Authorization` value (`Bearer ...`), if any.
    pub authorization: Option<String>,
    /// Further headers (`x-tenant-id`).
    pub headers: Vec<(&'static str, String)>,
}

/// Where the relay (or one replica) answers.
#[derive(Debug, Clone)]
pub struct Targets {
    /// `http://host:port` of the HTTP port.
    pub http: String,
    /// A channel to the gRPC port.
    pub grpc: Channel,
}

/// What the matrix works on, all in `tenant`.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// The tenant the fixtures live in.
    pub tenant: String,
    /// A connected edge that answers `cmd.run echo`.
    pub host: Uuid,
    /// A stored group.
    pub group: Uuid,
}

/// One expected status per kind, in [`KINDS`] order.
type Row = [u16; 13];

// Columns: none, malformed, expired, other-iss, readonly, user, manager,
// other tenant, operator, admin, service account, service account manager,
// command token.
const PROBE: Row = [200; 13];
const NOT_ALLOWED: Row = [405; 13];
/// Lists: every authenticated caller reads its scope; the service account
/// without the role may not act for the tenant.
const LIST: Row = [
    401, 401, 401, 401, 200, 200, 200, 200, 200, 200, 403, 200, 401,
];
/// Reading one of the tenant's things: other tenants (and the readonly
/// operator, whose scope is aegis-system) get 404.
const READ_ONE: Row = [
    401, 401, 401, 401, 404, 200, 200, 404, 200, 200, 403, 200, 401,
];
/// Changing one of the tenant's things.
const WRITE_ONE: Row = [
    401, 401, 401, 401, 403, 403, 200, 404, 200, 200, 403, 200, 401,
];
/// Changing a thing that does not exist: the role check comes first.
const WRITE_MISSING: Row = [
    401, 401, 401, 401, 403, 403, 404, 404, 404, 404, 403, 404, 401,
];
/// Reading a thing that does not exist.
const READ_MISSING: Row = [
    401, 401, 401, 401, 404, 404, 404, 404, 404, 404, 403, 404, 401,
];
/// Creating a group in the tenant the request acts for.
const CREATE: Row = [
    401, 401, 401, 401, 403, 403, 200, 200, 200, 200, 403, 200, 401,
];
/// Fleet calls resolve within the tenant the request acts for: operators
/// and admins act for aegis-system, where the node is not.
const FLEET_READ: Row = [
    401, 401, 401, 401, 404, 200, 200, 404, 404, 404, 403, 200, 401,
];
const FLEET_WRITE: Row = [
    401, 401, 401, 401, 403, 403, 200, 404, 404, 404, 403, 200, 401,
];
/// Enrollment tokens: the enroll role or a writing operator level; the
/// fleet role alone is not enough.
const ENROLL: Row = [
    401, 401, 401, 401, 403, 403, 403, 403, 200, 200, 403, 403, 401,
];

struct RestCell {
    method: &'static str,
    path: String,
    body: Value,
    expected: Row,
}

fn rest_cells(fixture: &Fixture, unique: &str) -> Vec<RestCell> {
    let (host, group, missing) = (fixture.host, fixture.group, Uuid::from_u128(0xdead));
    let cell = |method, path: String, body: Value, expected| RestCell {
        method,
        path,
        body,
        expected,
    };
    let echo = json!({"tool_name": "cmd.run", "args": {"command": "echo", "args": ["matrix"]},
                      "security_context_name": "zaru-free"});
    let mut fleet = echo.clone();
    fleet["target"] = json!({ "Node": host });
    vec![
        cell("GET", "/healthz".into(), Value::Null, PROBE),
        cell("GET", "/readyz".into(), Value::Null, PROBE),
        cell("GET", "/metrics".into(), Value::Null, PROBE),
        cell("PUT", "/v1/edge/hosts".into(), Value::Null, NOT_ALLOWED),
        cell(
            "POST",
            "/v1/edge/enrollment-tokens".into(),
            json!({"issued_to": "matrix"}),
            ENROLL,
        ),
        cell("GET", "/v1/edge/hosts".into(), Value::Null, LIST),
        cell(
            "GET",
            format!("/v1/edge/hosts/{host}"),
            Value::Null,
            READ_ONE,
        ),
        cell(
            "PATCH",
            format!("/v1/edge/hosts/{host}"),
            json!({"add_tags": ["matrix"]}),
            WRITE_ONE,
        ),
        cell(
            "DELETE",
            format!("/v1/edge/hosts/{missing}"),
            Value::Null,
            WRITE_MISSING,
        ),
        cell(
            "POST",
            format!("/v1/edge/hosts/{host}/invoke"),
            echo,
            WRITE_ONE,
        ),
        cell(
            "POST",
            format!("/v1/edge/hosts/{missing}/drain"),
            Value::Null,
            WRITE_MISSING,
        ),
        cell(
            "POST",
            format!("/v1/edge/hosts/{missing}/shutdown"),
            Value::Null,
            WRITE_MISSING,
        ),
        cell(
            "POST",
            format!("/v1/edge/hosts/{missing}/push-config"),
            json!({}),
            WRITE_MISSING,
        ),
        cell("GET", "/v1/edge/groups".into(), Value::Null, LIST),
        cell(
            "POST",
            "/v1/edge/groups".into(),
            json!({"name": format!("matrix-{unique}"), "selector": {"tools": [], "labels": [], "tags": [{"Has": "matrix"}]}}),
            CREATE,
        ),
        cell(
            "GET",
            format!("/v1/edge/groups/{group}"),
            Value::Null,
            READ_ONE,
        ),
        cell(
            "PATCH",
            format!("/v1/edge/groups/{group}"),
            json!({"pinned_members": []}),
            WRITE_ONE,
        ),
        cell(
            "DELETE",
            format!("/v1/edge/groups/{missing}"),
            Value::Null,
            WRITE_MISSING,
        ),
        cell(
            "POST",
            "/v1/edge/fleet/preview".into(),
            json!({"target": {"Node": host}}),
            FLEET_READ,
        ),
        cell("POST", "/v1/edge/fleet/invoke".into(), fleet, FLEET_WRITE),
        cell(
            "POST",
            format!("/v1/edge/fleet/{missing}/cancel"),
            Value::Null,
            WRITE_MISSING,
        ),
        cell("GET", "/v1/edge/fleet/runs".into(), Value::Null, LIST),
        cell(
            "GET",
            format!("/v1/edge/fleet/runs/{missing}"),
            Value::Null,
            READ_MISSING,
        ),
    ]
}

/// Sends one REST cell; the status, and whether a 401 carried a bearer
/// challenge.
async fn send_rest(
    client: &reqwest::Client,
    base: &str,
    cell: &RestCell,
    credential: &Credential,
) -> Result<(u16, bool), BoxError> {
    let method = reqwest::Method::from_bytes(cell.method.as_bytes())?;
    let mut request = client
        .request(method, format!("{base}{}", cell.path))
        .timeout(Duration::from_secs(30));
    if let Some(authorization) = &credential.authorization {
        request = request.header("authorization", authorization);
    }
    for (name, value) in &credential.headers {
        request = request.header(*name, value);
    }
    if !cell.body.is_null() {
        request = request
            .header("content-type", "application/json")
            .body(cell.body.to_string());
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let challenged = response
        .headers()
        .get("www-authenticate")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("Bearer"));
    // Read the whole body: a fleet call's event stream ends with its run.
    let _ = response.bytes().await?;
    Ok((status, challenged))
}

/// gRPC cells: (name, expected code per kind).
type GrpcRow = [tonic::Code; 13];

fn grpc_row_enroll() -> GrpcRow {
    use tonic::Code::{Ok, PermissionDenied as Denied, Unauthenticated as Unauth};
    [
        Unauth, Unauth, Unauth, Unauth, Denied, Denied, Denied, Denied, Ok, Ok, Denied, Denied,
        Unauth,
    ]
}

async fn call_grpc(
    channel: &Channel,
    rpc: &str,
    credential: &Credential,
) -> Result<tonic::Code, BoxError> {
    fn with<T>(message: T, credential: &Credential) -> Result<tonic::Request<T>, BoxError> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(Duration::from_secs(30));
        if let Some(authorization) = &credential.authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization.parse()?);
        }
        for (name, value) in &credential.headers {
            request.metadata_mut().insert(*name, value.parse()?);
        }
        Ok(request)
    }
    let mut client = NodeClusterServiceClient::new(channel.clone());
    let code = |result: Result<(), tonic::Status>| match result {
        Ok(()) => tonic::Code::Ok,
        Err(status) => status.code(),
    };
    Ok(match rpc {
        "IssueEnrollmentToken" => code(
            client
                .issue_enrollment_token(with(
                    IssueEnrollmentTokenRequest {
                        issued_to: "matrix".into(),
                    },
                    credential,
                )?)
                .await
                .map(drop),
        ),
        "AttestNode" => code(
            client
                .attest_node(with(
                    AttestNodeRequest {
                        node_id: "not-a-uuid".into(),
                        ..AttestNodeRequest::default()
                    },
                    credential,
                )?)
                .await
                .map(drop),
        ),
        "ChallengeNode" => code(
            client
                .challenge_node(with(ChallengeNodeRequest::default(), credential)?)
                .await
                .map(drop),
        ),
        "RotateEdgeKey" => code(
            client
                .rotate_edge_key(with(RotateEdgeKeyRequest::default(), credential)?)
                .await
                .map(drop),
        ),
        "ConnectEdge" => {
            // A stream that ends before its Hello.
            let events = tokio_stream::iter(Vec::<EdgeEvent>::new());
            match client.connect_edge(with(events, credential)?).await {
                Ok(response) => {
                    let mut stream = response.into_inner();
                    match tokio::time::timeout(Duration::from_secs(10), stream.message()).await? {
                        Ok(_) => tonic::Code::Ok,
                        Err(status) => status.code(),
                    }
                }
                Err(status) => status.code(),
            }
        }
        other => return Err(format!("no such RPC in the matrix: {other}").into()),
    })
}

/// Runs every cell against `targets`, with credentials from `token_for`.
/// Returns a readable table of every cell that differed (empty: all as
/// expected). Also checks that each 401 carries `WWW-Authenticate: Bearer`.
pub async fn run_matrix(
    targets: &Targets,
    fixture: &Fixture,
    token_for: &(dyn Fn(Kind) -> Result<Credential, BoxError> + Sync),
) -> Result<String, BoxError> {
    let client = reqwest::Client::builder().build()?;
    let mut mismatches = String::new();
    let mut cells = 0;
    for (column, kind) in KINDS.iter().enumerate() {
        let credential = token_for(*kind)?;
        for cell in rest_cells(fixture, &format!("{kind:?}").to_lowercase()) {
            let (status, challenged) =
                send_rest(&client, &targets.http, &cell, &credential).await?;
            cells += 1;
            let expected = cell.expected[column];
            if status != expected {
                writeln!(
                    mismatches,
                    "{:<7} {:<40} as {kind:?}: got {status}, expected {expected}",
                    cell.method, cell.path
                )?;
            } else if status == 401 && !challenged {
                writeln!(
                    mismatches,
                    "{:<7} {:<40} as {kind:?}: 401 without WWW-Authenticate: Bearer",
                    cell.method, cell.path
                )?;
            }
        }
        let invalid = [tonic::Code::InvalidArgument; 13];
        for (rpc, row) in [
            ("IssueEnrollmentToken", grpc_row_enroll()),
            ("AttestNode", invalid),
            ("ChallengeNode", invalid),
            ("RotateEdgeKey", invalid),
            ("ConnectEdge", invalid),
        ] {
            let code = call_grpc(&targets.grpc, rpc, &credential).await?;
            cells += 1;
            if code != row[column] {
                writeln!(
                    mismatches,
                    "gRPC    {rpc:<40} as {kind:?}: got {code:?}, expected {:?}",
                    row[column]
                )?;
            }
        }
    }
    if cells == 0 {
        return Err("the matrix ran no cell".into());
    }
    Ok(mismatches)
}
