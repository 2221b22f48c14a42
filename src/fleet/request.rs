//! Request bodies of `POST /v1/edge/fleet/invoke` and
//! `POST /v1/edge/hosts/{id}/invoke` (protocol.md §8.5), and their validation
//! into a [`FleetPolicy`] (§8.4).
//!
//! Parsing is lenient where AEGIS clients are (unknown fields are ignored,
//! unknown `mode` / `failure_policy` words fall back to the defaults) and
//! strict where a value would make a run meaningless (zero sizes, zero or
//! huge deadlines); every refusal names the field to fix.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::policy::{
    FailurePolicy, FleetMode, FleetPolicy, DEFAULT_DEADLINE_SECS, MAX_DEADLINE_SECS,
};
use super::target::EdgeTarget;

/// Body of `POST /v1/edge/fleet/invoke`: `target` plus every field of a
/// host invoke. Parsed by [`FleetInvokeBody::parse`] as two views of the
/// same JSON (unknown fields are ignored by both), so each error still
/// names its JSON path.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetInvokeBody {
    /// Which edges to run on.
    pub target: EdgeTarget,
    /// What to run on each and how.
    pub call: HostInvokeBody,
}

#[derive(Deserialize)]
struct TargetField {
    target: EdgeTarget,
}

/// Body of `POST /v1/edge/hosts/{id}/invoke`, and of a fleet invoke minus
/// its `target`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct HostInvokeBody {
    /// Tool to invoke on the edge (`cmd.run`).
    pub tool_name: String,
    /// Tool arguments, always a JSON object.
    #[serde(deserialize_with = "deserialize_args")]
    pub args: Map<String, Value>,
    /// Security context the edge evaluates the call under.
    pub security_context_name: String,
    /// The caller's user token, forwarded in the envelope.
    #[serde(default)]
    pub user_security_token: String,
    /// `"parallel"`, `"rolling"`, anything else sequential.
    #[serde(default)]
    pub mode: Option<String>,
    /// Rolling batch size.
    #[serde(default = "default_one")]
    pub batch: usize,
    /// Parallel width; all targets at once when absent.
    #[serde(default)]
    pub max_concurrency: Option<usize>,
    /// `"continue"`, `"stop-after"`, anything else fail-fast.
    #[serde(default)]
    pub failure_policy: Option<String>,
    /// The CLI's name for `failure_policy`, used when that one is absent.
    #[serde(default)]
    pub on_error: Option<String>,
    /// Failures (errors plus timeouts) that stop a `stop-after` run.
    #[serde(default = "default_one")]
    pub stop_after: usize,
    /// Fewest resolved targets for the run to start.
    #[serde(default)]
    pub require_min_targets: Option<usize>,
    /// Per-target deadline in seconds.
    #[serde(default = "default_deadline_secs")]
    pub deadline_secs: u64,
}

/// Why a fleet or host invoke request was refused (an HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FleetRequestError {
    /// The body was empty.
    #[error("request body is empty; send a JSON object")]
    EmptyBody,
    /// The body is not JSON.
    #[error("request body is not valid JSON: {0}")]
    Syntax(String),
    /// A field has the wrong shape.
    #[error("invalid request body at `{path}`: {message}")]
    Malformed {
        /// JSON path of the offending value (`.` for the whole body).
        path: String,
        /// The parser's explanation.
        message: String,
    },
    /// `args` was not a JSON object.
    #[error("`args` must be a JSON object such as {{\"command\":\"uname\",\"args\":[\"-a\"]}}, got {found}")]
    ArgsNotObject {
        /// The JSON type that was sent.
        found: &'static str,
    },
    /// A required text field was empty.
    #[error("`{field}` must not be empty")]
    EmptyField {
        /// The field's name.
        field: &'static str,
    },
    /// Rolling mode with `batch` 0.
    #[error("`batch` must be at least 1 in rolling mode")]
    ZeroBatch,
    /// Stop-after policy with `stop_after` 0.
    #[error("`stop_after` must be at least 1 with failure_policy \"stop-after\"")]
    ZeroStopAfter,
    /// `max_concurrency` 0.
    #[error("`max_concurrency` must be at least 1; omit it to run every target at once")]
    ZeroMaxConcurrency,
    /// `deadline_secs` outside 1..=3600.
    #[error("`deadline_secs` must be between 1 and {MAX_DEADLINE_SECS}, got {0}")]
    DeadlineOutOfRange(u64),
}

/// Parses a JSON request body, naming the JSON path of the first bad value.
pub fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FleetRequestError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(FleetRequestError::EmptyBody);
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            FleetRequestError::Syntax(inner.to_string())
        } else {
            FleetRequestError::Malformed {
                path,
                message: inner.to_string(),
            }
        }
    })?;
    deserializer
        .end()
        .map_err(|err| FleetRequestError::Syntax(err.to_string()))?;
    Ok(value)
}

/// Accepts tool arguments only when they are a JSON object.
pub fn args_object(value: Value) -> Result<Map<String, Value>, FleetRequestError> {
    match value {
        Value::Object(map) => Ok(map),
        Value::Null => Err(FleetRequestError::ArgsNotObject { found: "null" }),
        Value::Bool(_) => Err(FleetRequestError::ArgsNotObject { found: "a boolean" }),
        Value::Number(_) => Err(FleetRequestError::ArgsNotObject { found: "a number" }),
        Value::String(_) => Err(FleetRequestError::ArgsNotObject { found: "a string" }),
        Value::Array(_) => Err(FleetRequestError::ArgsNotObject { found: "an array" }),
    }
}

impl FleetInvokeBody {
    /// Parses a fleet invoke body.
    pub fn parse(bytes: &[u8]) -> Result<Self, FleetRequestError> {
        let TargetField { target } = parse_body(bytes)?;
        let call = parse_body(bytes)?;
        Ok(Self { target, call })
    }

    /// Validates the body and derives its dispatch policy.
    pub fn policy(&self) -> Result<FleetPolicy, FleetRequestError> {
        self.call.policy()
    }

    /// Splits the body into its target and the per-host part.
    pub fn into_parts(self) -> (EdgeTarget, HostInvokeBody) {
        (self.target, self.call)
    }
}

impl HostInvokeBody {
    /// Validates the body and derives its dispatch policy.
    pub fn policy(&self) -> Result<FleetPolicy, FleetRequestError> {
        if self.tool_name.trim().is_empty() {
            return Err(FleetRequestError::EmptyField { field: "tool_name" });
        }
        if self.security_context_name.trim().is_empty() {
            return Err(FleetRequestError::EmptyField {
                field: "security_context_name",
            });
        }
        if self.max_concurrency == Some(0) {
            return Err(FleetRequestError::ZeroMaxConcurrency);
        }
        if self.deadline_secs == 0 || self.deadline_secs > MAX_DEADLINE_SECS {
            return Err(FleetRequestError::DeadlineOutOfRange(self.deadline_secs));
        }
        let failure_policy = self.failure_policy.as_deref().or(self.on_error.as_deref());
        Ok(FleetPolicy {
            mode: FleetMode::from_word(self.mode.as_deref(), self.batch)?,
            max_concurrency: self.max_concurrency,
            failure_policy: FailurePolicy::from_word(failure_policy, self.stop_after)?,
            require_min_targets: self.require_min_targets,
            per_target_deadline: Duration::from_secs(self.deadline_secs),
        })
    }
}

fn deserialize_args<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Map<String, Value>, D::Error> {
    let value = Value::deserialize(deserializer)?;
    args_object(value).map_err(serde::de::Error::custom)
}

fn default_one() -> usize {
    1
}

fn default_deadline_secs() -> u64 {
    DEFAULT_DEADLINE_SECS
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use uuid::Uuid;

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    const NODE: &str = "6f1c2c9e-5b8a-4c7d-9e0f-123456789abc";

    fn minimal() -> Value {
        json!({
            "target": "All",
            "tool_name": "cmd.run",
            "args": {"command": "uname", "args": ["-a"]},
            "security_context_name": "zaru-free"
        })
    }

    fn with(mut body: Value, key: &str, value: Value) -> Value {
        if let Some(object) = body.as_object_mut() {
            object.insert(key.to_owned(), value);
        }
        body
    }

    fn fleet(body: &Value) -> Result<FleetInvokeBody, FleetRequestError> {
        FleetInvokeBody::parse(body.to_string().as_bytes())
    }

    fn policy_of(body: &Value) -> Result<FleetPolicy, Box<dyn std::error::Error>> {
        Ok(fleet(body)?.policy()?)
    }

    #[test]
    fn minimal_body_takes_the_defaults() -> TestResult {
        let body = fleet(&minimal())?;
        assert_eq!(body.target, EdgeTarget::All);
        assert_eq!(body.call.user_security_token, "");
        assert_eq!(body.call.batch, 1);
        assert_eq!(body.call.stop_after, 1);
        assert_eq!(body.call.deadline_secs, 60);
        assert_eq!(body.call.args.get("command"), Some(&json!("uname")));
        assert_eq!(body.policy()?, FleetPolicy::default());
        assert_eq!(
            FleetPolicy::default().per_target_deadline,
            Duration::from_secs(60)
        );
        Ok(())
    }

    #[test]
    fn unknown_fields_are_ignored() -> TestResult {
        let body = with(minimal(), "client_version", json!("1.2.0-beta"));
        let body = with(body, "dry_run", json!({"nested": true}));
        fleet(&body)?;
        Ok(())
    }

    #[test]
    fn cli_body_with_on_error_is_understood() -> TestResult {
        let body = with(minimal(), "target", json!({"Node": NODE}));
        let body = with(body, "mode", json!("parallel"));
        let body = with(body, "on_error", json!("continue"));
        let policy = policy_of(&body)?;
        assert_eq!(policy.mode, FleetMode::Parallel);
        assert_eq!(policy.failure_policy, FailurePolicy::ContinueOnError);
        let both = with(body, "failure_policy", json!("fail-fast"));
        assert_eq!(policy_of(&both)?.failure_policy, FailurePolicy::FailFast);
        Ok(())
    }

    #[test]
    fn policy_knobs_carry_over() -> TestResult {
        let body = with(minimal(), "max_concurrency", json!(4));
        let body = with(body, "require_min_targets", json!(2));
        let body = with(body, "deadline_secs", json!(3600));
        let policy = policy_of(&body)?;
        assert_eq!(policy.max_concurrency, Some(4));
        assert_eq!(policy.require_min_targets, Some(2));
        assert_eq!(policy.per_target_deadline, Duration::from_secs(3600));
        Ok(())
    }

    #[test]
    fn meaningless_values_are_refused() -> TestResult {
        let cases = [
            (
                ("mode", json!("rolling")),
                ("batch", json!(0)),
                FleetRequestError::ZeroBatch,
            ),
            (
                ("on_error", json!("stop-after")),
                ("stop_after", json!(0)),
                FleetRequestError::ZeroStopAfter,
            ),
            (
                ("mode", json!("parallel")),
                ("max_concurrency", json!(0)),
                FleetRequestError::ZeroMaxConcurrency,
            ),
            (
                ("mode", json!("parallel")),
                ("deadline_secs", json!(0)),
                FleetRequestError::DeadlineOutOfRange(0),
            ),
            (
                ("mode", json!("parallel")),
                ("deadline_secs", json!(3601)),
                FleetRequestError::DeadlineOutOfRange(3601),
            ),
            (
                ("mode", json!("parallel")),
                ("tool_name", json!("  ")),
                FleetRequestError::EmptyField { field: "tool_name" },
            ),
            (
                ("mode", json!("parallel")),
                ("security_context_name", json!("")),
                FleetRequestError::EmptyField {
                    field: "security_context_name",
                },
            ),
        ];
        for ((key_a, value_a), (key_b, value_b), expected) in cases {
            let body = with(with(minimal(), key_a, value_a), key_b, value_b);
            assert_eq!(fleet(&body)?.policy(), Err(expected));
        }
        Ok(())
    }

    #[test]
    fn sizes_that_do_not_apply_are_not_checked() -> TestResult {
        let body = with(
            with(minimal(), "mode", json!("parallel")),
            "batch",
            json!(0),
        );
        let body = with(body, "stop_after", json!(0));
        fleet(&body)?.policy()?;
        Ok(())
    }

    #[test]
    fn args_must_be_an_object() {
        for (args, found) in [
            (json!([1]), "an array"),
            (json!("ls"), "a string"),
            (json!(null), "null"),
        ] {
            let err = fleet(&with(minimal(), "args", args));
            let Err(FleetRequestError::Malformed { path, message }) = err else {
                panic!("expected a malformed-body error, got {err:?}");
            };
            assert_eq!(path, "args");
            assert!(message.contains("must be a JSON object"), "{message}");
            assert!(message.contains(found), "{message}");
        }
        assert_eq!(
            args_object(json!(7)),
            Err(FleetRequestError::ArgsNotObject { found: "a number" })
        );
    }

    #[test]
    fn malformed_bodies_name_the_path() {
        let cases = [
            (with(minimal(), "batch", json!("two")), "batch"),
            (with(minimal(), "deadline_secs", json!(-5)), "deadline_secs"),
            (
                with(minimal(), "target", json!({"Node": "nope"})),
                "target.Node",
            ),
            (
                with(
                    minimal(),
                    "target",
                    json!({"Selector": {"tools": [1], "labels": [], "tags": []}}),
                ),
                "target.Selector.tools[0]",
            ),
        ];
        for (body, expected_path) in cases {
            let err = fleet(&body);
            let Err(FleetRequestError::Malformed { path, .. }) = &err else {
                panic!("expected a malformed-body error, got {err:?}");
            };
            assert_eq!(path, expected_path);
            assert!(err
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
                .contains(expected_path));
        }
    }

    #[test]
    fn missing_required_fields_are_named() {
        for field in ["target", "tool_name", "args", "security_context_name"] {
            let mut body = minimal();
            if let Some(object) = body.as_object_mut() {
                object.remove(field);
            }
            let err = fleet(&body)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(&format!("missing field `{field}`")), "{err}");
        }
    }

    #[test]
    fn broken_json_is_refused() {
        assert_eq!(
            parse_body::<HostInvokeBody>(b" \n"),
            Err(FleetRequestError::EmptyBody)
        );
        for bytes in [&b"{"[..], b"{} {}", b"[]", b"not json"] {
            let result = parse_body::<HostInvokeBody>(bytes);
            assert!(
                matches!(
                    result,
                    Err(FleetRequestError::Malformed { .. } | FleetRequestError::Syntax(_))
                ),
                "{result:?}"
            );
        }
    }

    #[test]
    fn host_body_has_no_target() -> TestResult {
        let mut body = with(minimal(), "on_error", json!("stop-after"));
        if let Some(object) = body.as_object_mut() {
            object.remove("target");
        }
        let host: HostInvokeBody = parse_body(body.to_string().as_bytes())?;
        assert_eq!(host.policy()?.failure_policy, FailurePolicy::StopAfter(1));

        let (target, split) = fleet(&with(body, "target", json!({"Group": NODE})))?.into_parts();
        assert_eq!(target, EdgeTarget::Group(Uuid::parse_str(NODE)?));
        assert_eq!(split, host);
        Ok(())
    }
}
