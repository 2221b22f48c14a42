//! Building the commands an edge receives. An InvokeTool fills the inner
//! envelope exactly as the real daemon checks it (protocol.md §8.1): a
//! three-part user token, the tenant, and the same security context name
//! inside and out; the deadline in whole seconds. The user token is the
//! caller's explicit one, else a per-command token minted here for this
//! node and command (never the caller's bearer).

use std::time::Duration;

use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Value};
use uuid::Uuid;

use crate::auth::{CommandGrant, CommandTokenError, CommandTokens};
use crate::proto::cluster::{
    edge_command, CancelCommand, EdgeCommand, EdgeDrainCommand, EdgePushConfigCommand,
    EdgeShutdownCommand, InvokeToolCommand, SealEnvelope,
};

/// What to run on an edge.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// Tool name, e.g. `cmd.run`.
    pub tool_name: String,
    /// Arguments (a JSON object).
    pub args: serde_json::Map<String, serde_json::Value>,
    /// Security context on the edge.
    pub security_context_name: String,
    /// A user token the caller chose (the body's `user_security_token`),
    /// passed through unchanged; `None`: a per-command token is minted.
    pub user_security_token: Option<String>,
    /// Who asked (the caller's subject), named in a minted token.
    pub caller_subject: String,
    /// How long the edge may take.
    pub deadline: Duration,
}

/// Operator commands with no result.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// Stop taking commands.
    Drain,
    /// End the stream (the daemon reconnects).
    Shutdown,
    /// Configuration delta (the 1.2.0-beta daemon logs and ignores it).
    PushConfig(serde_json::Map<String, serde_json::Value>),
}

impl Control {
    /// Lowercase name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Drain => "drain",
            Self::Shutdown => "shutdown",
            Self::PushConfig(_) => "push_config",
        }
    }

    /// The wire command.
    pub fn to_command(&self) -> EdgeCommand {
        let command = match self {
            Self::Drain => edge_command::Command::Drain(EdgeDrainCommand {}),
            Self::Shutdown => edge_command::Command::Shutdown(EdgeShutdownCommand {}),
            Self::PushConfig(delta) => edge_command::Command::PushConfig(EdgePushConfigCommand {
                merged_config_delta: Some(json_object(delta)),
            }),
        };
        EdgeCommand {
            command: Some(command),
        }
    }
}

/// The deadline in whole seconds, rounded up.
fn deadline_secs(deadline: Duration) -> u64 {
    deadline.as_secs() + u64::from(deadline.subsec_nanos() > 0)
}

/// Where an InvokeTool is addressed, and when it is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addressed<'a> {
    /// Command id.
    pub command_id: Uuid,
    /// The target edge.
    pub node_id: Uuid,
    /// The edge's tenant.
    pub tenant_id: &'a str,
    /// Now (unix seconds).
    pub now: i64,
}

/// The InvokeTool command for `call` to `to`; the user token is the
/// caller's own one if given, else minted by `tokens` for this command
/// alone, expiring at its deadline. Never a command without a token.
pub fn invoke_command(
    to: Addressed<'_>,
    call: &ToolCall,
    tokens: &CommandTokens,
) -> Result<EdgeCommand, CommandTokenError> {
    let seconds = deadline_secs(call.deadline);
    let user_security_token = match &call.user_security_token {
        Some(token) => token.clone(),
        None => tokens.mint(&CommandGrant {
            subject: &call.caller_subject,
            tenant_id: to.tenant_id,
            node_id: to.node_id,
            command_id: to.command_id,
            issued_at: to.now,
            expires_at: to
                .now
                .saturating_add(i64::try_from(seconds).unwrap_or(i64::MAX)),
        })?,
    };
    let (command_id, tenant_id) = (to.command_id, to.tenant_id);
    let args = json_object(&call.args);
    Ok(EdgeCommand {
        command: Some(edge_command::Command::InvokeTool(InvokeToolCommand {
            command_id: command_id.to_string(),
            security_context_name: call.security_context_name.clone(),
            seal_envelope: Some(SealEnvelope {
                user_security_token,
                tenant_id: tenant_id.to_owned(),
                security_context_name: call.security_context_name.clone(),
                payload: Some(args.clone()),
                signature: Vec::new(),
            }),
            tool_name: call.tool_name.clone(),
            args: Some(args),
            deadline: Some(prost_types::Duration {
                seconds: i64::try_from(seconds).unwrap_or(i64::MAX),
                nanos: 0,
            }),
        })),
    })
}

/// The Cancel command for `command_id`.
pub fn cancel_command(command_id: Uuid) -> EdgeCommand {
    EdgeCommand {
        command: Some(edge_command::Command::Cancel(CancelCommand {
            command_id: command_id.to_string(),
        })),
    }
}

/// A JSON object as a protobuf Struct.
pub fn json_object(object: &serde_json::Map<String, serde_json::Value>) -> Struct {
    Struct {
        fields: object
            .iter()
            .map(|(key, value)| (key.clone(), json_value(value)))
            .collect(),
    }
}

fn json_value(value: &serde_json::Value) -> Value {
    use serde_json::Value as Json;
    let kind = match value {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(json_value).collect(),
        }),
        Json::Object(object) => Kind::StructValue(json_object(object)),
    };
    Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invoke_fills_the_inner_envelope_consistently() -> Result<(), CommandTokenError> {
        let mut args = serde_json::Map::new();
        args.insert("command".into(), "echo".into());
        args.insert("args".into(), serde_json::json!(["hi", 1]));
        let call = ToolCall {
            tool_name: "cmd.run".into(),
            args,
            security_context_name: "zaru-free".into(),
            user_security_token: Some("a.b.c".into()),
            caller_subject: "someone".into(),
            deadline: Duration::from_millis(1500),
        };
        let id = Uuid::from_u128(42);
        let tokens = CommandTokens::with_secret(b"test-key", "relay");
        let to = Addressed {
            command_id: id,
            node_id: Uuid::from_u128(7),
            tenant_id: "tenant-a",
            now: 1_000,
        };
        let Some(edge_command::Command::InvokeTool(invoke)) =
            invoke_command(to, &call, &tokens)?.command
        else {
            panic!("not an invoke");
        };
        assert_eq!(invoke.command_id, id.to_string());
        let inner = invoke.seal_envelope.clone().unwrap_or_default();
        assert_eq!(inner.user_security_token, "a.b.c");
        assert_eq!(inner.tenant_id, "tenant-a");
        assert_eq!(inner.security_context_name, invoke.security_context_name);
        assert_eq!(invoke.deadline.map(|d| (d.seconds, d.nanos)), Some((2, 0)));
        let args = invoke.args.unwrap_or_default();
        assert_eq!(
            args.fields.get("command").and_then(|v| v.kind.clone()),
            Some(Kind::StringValue("echo".into()))
        );
        Ok(())
    }

    #[test]
    fn without_a_caller_token_each_command_gets_its_own() -> Result<(), Box<dyn std::error::Error>>
    {
        let call = ToolCall {
            tool_name: "cmd.run".into(),
            args: serde_json::Map::new(),
            security_context_name: "zaru-free".into(),
            user_security_token: None,
            caller_subject: "operator-1".into(),
            deadline: Duration::from_millis(2500),
        };
        let tokens = CommandTokens::with_secret(b"test-key", "relay");
        let token_of = |command: u128, node: u128| {
            let to = Addressed {
                command_id: Uuid::from_u128(command),
                node_id: Uuid::from_u128(node),
                tenant_id: "t-a",
                now: 1_000,
            };
            Ok::<_, CommandTokenError>(match invoke_command(to, &call, &tokens)?.command {
                Some(edge_command::Command::InvokeTool(invoke)) => invoke
                    .seal_envelope
                    .map(|inner| inner.user_security_token)
                    .unwrap_or_default(),
                _ => String::new(),
            })
        };
        let first = token_of(1, 7)?;
        assert!(tokens.verifies(&first), "{first}");
        assert_ne!(first, token_of(2, 7)?);
        assert_ne!(first, token_of(1, 8)?);
        let claims = crate::auth::JwsParts::split(&first).map(|parts| parts.claims);
        let claims: serde_json::Value = serde_json::from_slice(&claims.unwrap_or_default())?;
        assert_eq!(claims["sub"], "operator-1");
        assert_eq!(claims["tid"], "t-a");
        assert_eq!(claims["aud"], "aegis-edge");
        assert_eq!(claims["exp"], 1_003);
        Ok(())
    }
}
