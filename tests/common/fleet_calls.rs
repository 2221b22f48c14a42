//! Fleet calls over REST from tests: a call's body, a call read up to its
//! `Started` event while it goes on streaming, and JSON reads of the run
//! records, against any relay's HTTP base URL (in process or a `run`).

use std::time::Duration;

use http_body_util::BodyExt;
use serde_json::{json, Value};

use super::enroll::BoxError;

/// A parallel `cmd.run` of `command args` on every edge of the caller.
pub fn fleet_body(command: &str, args: &[&str]) -> String {
    json!({
        "target": "All",
        "mode": "parallel",
        "tool_name": "cmd.run",
        "args": {"command": command, "args": args},
        "security_context_name": "zaru-free",
    })
    .to_string()
}

/// The JSON events of an SSE body, one per `data:` line.
pub fn sse_events(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str(data.trim()).ok())
        .collect()
}

/// GET `url` as `bearer`: (status, JSON body).
pub async fn get_json(url: &str, bearer: &str) -> Result<(u16, Value), BoxError> {
    let (status, text) = super::http_request("GET", url, &[("authorization", bearer)], "").await?;
    Ok((status, serde_json::from_str(&text)?))
}

/// The `fleet_command_id`s of a `GET /v1/edge/fleet/runs` answer, in order.
pub fn listed_ids(runs: &Value) -> Vec<String> {
    runs["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|run| run["fleet_command_id"].as_str().map(str::to_owned))
        .collect()
}

/// The (`fleet_command_id`, `state`) pairs of a `GET /v1/edge/fleet/runs`
/// answer, in order.
pub fn listed_states(runs: &Value) -> Vec<(String, String)> {
    runs["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|run| {
            Some((
                run["fleet_command_id"].as_str()?.to_owned(),
                run["state"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// Starts a fleet call on the relay at `http` (`http://host:port`) and reads
/// its stream up to the `Started` event; returns the run id and the response
/// still streaming.
pub async fn start_streaming(
    http: &str,
    bearer: &str,
    body: String,
) -> Result<(String, hyper::Response<hyper::body::Incoming>), BoxError> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let request = hyper::Request::post(format!("{http}/v1/edge/fleet/invoke"))
        .header("content-type", "application/json")
        .header("authorization", bearer)
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))?;
    let mut response =
        tokio::time::timeout(Duration::from_secs(10), client.request(request)).await??;
    if response.status() != 200 {
        return Err(format!("the fleet call got {}", response.status()).into());
    }
    let mut text = String::new();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), response.body_mut().frame())
            .await?
            .ok_or("the stream ended before Started")??;
        if let Some(data) = frame.data_ref() {
            text.push_str(&String::from_utf8_lossy(data));
        }
        let started = sse_events(&text).into_iter().find_map(|event| {
            event["Started"]["fleet_command_id"]
                .as_str()
                .map(str::to_owned)
        });
        if let Some(id) = started {
            return Ok((id, response));
        }
    }
}
