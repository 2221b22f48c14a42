//! Fleet calls on the REST surface (protocol.md §8.5): `POST
//! /v1/edge/fleet/invoke` answers with server-sent events (one JSON
//! `FleetEvent` per `data:` line, keep-alive every 15 s), `POST
//! /v1/edge/fleet/{id}/cancel` stops a run everywhere (sent to the replica
//! running it; another answers 409 naming that replica), and
//! `GET /v1/edge/fleet/runs[/{id}]` answers from the history in the store,
//! whichever replica ran the run. A run continues when its caller
//! disconnects; only cancel stops it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use crate::fleet::sse_buffer;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures::Stream;

use tracing::Instrument;
use uuid::Uuid;

use super::caller::{request_caller, require_manager};
use super::error::ApiError;
use super::hosts::scoped_caller;
use super::invoke::{caller_token, idempotency_key};
use super::HttpState;
use crate::fleet::{
    resolve, run_fleet, CancelError, FleetCall, FleetInvokeBody, NewRun, RecordingSink, RunView,
    StartError,
};
use crate::owner::ToolCall;

/// `Retry-After` of a run refused by `relay.fleet_runs.running_per_tenant`.
const RUNNING_RETRY_AFTER: Duration = Duration::from_secs(5);

fn parse_run_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id)
        .map_err(|_| ApiError::bad_request(format!("fleet run id {id:?} is not a UUID")))
}

/// `POST /v1/edge/fleet/invoke`.
pub async fn invoke(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // A fleet call addresses one tenant's edges, the one the request acts
    // for (an admin's `X-Aegis-Tenant`): operators may list across tenants
    // (protocol.md §12.1) but a run and its history belong to one tenant.
    let (caller, acting_for) = request_caller(&state, &headers).await?;
    require_manager(&caller, "run fleet calls")?;
    let scope = Some(acting_for.clone());
    let body =
        FleetInvokeBody::parse(&body?).map_err(|err| ApiError::bad_request(err.to_string()))?;
    let policy = body
        .policy()
        .map_err(|err| ApiError::bad_request(err.to_string()))?;
    let idempotency_key = idempotency_key(&headers)?;
    let api = &state.api;
    let targets = resolve(
        &body.target,
        scope.as_deref(),
        api.store.as_ref(),
        &api.owner,
    )
    .await?;
    let fleet_command_id = api.entropy.uuid_v4();
    let (target, body) = body.into_parts();
    let target_json = serde_json::to_value(&target)
        .map_err(|err| ApiError::internal("encoding the fleet target", &err))?;
    let policy_json = policy.describe();
    let fleet = FleetCall {
        fleet_command_id,
        scope: scope.clone(),
        targets,
        call: ToolCall {
            user_security_token: caller_token(&body.user_security_token),
            caller_subject: caller.subject.clone(),
            tool_name: body.tool_name.clone(),
            args: body.args,
            security_context_name: body.security_context_name,
            deadline: policy.per_target_deadline,
        },
        policy,
        idempotency_key,
    };
    // Committed before the first event: any replica can read the run as
    // soon as the caller learns its id.
    let cancel = api
        .fleets
        .start(NewRun {
            fleet_command_id,
            tenant_id: acting_for.clone(),
            created_by: caller.subject.clone(),
            tool_name: body.tool_name,
            target: target_json,
            policy: policy_json,
            resolved: fleet.targets.clone(),
            started_at: api.now(),
        })
        .await
        .map_err(|err| match err {
            StartError::TooManyRunning { .. } => {
                ApiError::new(429, "too_many_runs", err.to_string())
                    .retry_after(RUNNING_RETRY_AFTER)
            }
            StartError::Store(err) => ApiError::from(err),
        })?;
    let (events, receiver) = sse_buffer(
        api.fleets.retention().sse_buffer_bytes,
        state.metrics.fleet_sse(),
    );
    let sink = RecordingSink::new(
        Arc::clone(&api.fleets),
        fleet_command_id,
        events,
        Arc::clone(&api.clock),
    );
    let owner = Arc::clone(&api.owner);
    let span = tracing::info_span!(
        "fleet",
        fleet_command_id = %fleet_command_id,
        tenant = %acting_for,
        targets = fleet.targets.len(),
    );
    tracing::info!(parent: &span, target = ?target, by = %caller.subject, "fleet call started");
    api.fleets.spawn(
        async move {
            let summary = run_fleet(owner, fleet, &sink, cancel).await;
            tracing::info!(?summary, "fleet call finished");
        }
        .instrument(span),
    );
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        let json = receiver.recv().await?;
        Some((Ok(Event::default().data(json)), receiver))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// `POST /v1/edge/fleet/{id}/cancel`: 204; 404 if unknown or another
/// tenant's; 403 for read-only operators; 409 when already over or run by
/// another replica (named; forwarding comes with the peer service).
pub async fn cancel(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let (caller, scope) = scoped_caller(&state, &headers).await?;
    require_manager(&caller, "cancel fleet calls")?;
    let id = parse_run_id(&id)?;
    match state.api.fleets.cancel(scope.as_deref(), id).await {
        Ok(()) => {
            tracing::info!(fleet_command_id = %id, by = %caller.subject, "fleet call cancelled");
            Ok(StatusCode::NO_CONTENT)
        }
        Err(err @ CancelError::NotFound(_)) => Err(ApiError::not_found(err.to_string())),
        Err(err @ (CancelError::Finished { .. } | CancelError::Elsewhere { .. })) => {
            Err(ApiError::conflict(err.to_string()))
        }
        Err(CancelError::Store(err)) => Err(ApiError::from(err)),
    }
}

/// `GET /v1/edge/fleet/runs`: `{"runs": [...]}`, newest first.
pub async fn runs(
    State(state): State<HttpState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (_caller, scope) = scoped_caller(&state, &headers).await?;
    let runs = state.api.fleets.list(scope.as_deref()).await?;
    Ok(Json(serde_json::json!({ "runs": runs })))
}

/// `GET /v1/edge/fleet/runs/{id}`: one run with its per-edge outcomes.
pub async fn run(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<RunView>, ApiError> {
    let (_caller, scope) = scoped_caller(&state, &headers).await?;
    let id = parse_run_id(&id)?;
    state
        .api
        .fleets
        .get(scope.as_deref(), id)
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "fleet run {id} not found (runs are kept for a bounded time)"
            ))
        })
}
