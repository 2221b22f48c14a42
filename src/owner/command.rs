//! Building the commands an edge receives. An InvokeTool fills the inner
//! envelope exactly as the real daemon checks it (protocol.md §8.1): a
//! three-part user token, the tenant, and the same security context name
//! inside and out; the deadline in whole seconds.

use std::time::Duration;

use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Value};
use uuid::Uuid;

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
    /// The end user's bearer token (the daemon requires three JWT parts).
    pub user_security_token: String,
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

/// The InvokeTool command for `call`.
pub fn invoke_command(command_id: Uuid, tenant_id: &str, call: &ToolCall) -> EdgeCommand {
    let args = json_object(&call.args);
    let seconds = call.deadline.as_secs() + u64::from(call.deadline.subsec_nanos() > 0);
    EdgeCommand {
        command: Some(edge_command::Command::InvokeTool(InvokeToolCommand {
            command_id: command_id.to_string(),
            security_context_name: call.security_context_name.clone(),
            seal_envelope: Some(SealEnvelope {
                user_security_token: call.user_security_token.clone(),
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
    }
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
    fn invoke_fills_the_inner_envelope_consistently() {
        let mut args = serde_json::Map::new();
        args.insert("command".into(), "echo".into());
        args.insert("args".into(), serde_json::json!(["hi", 1]));
        let call = ToolCall {
            tool_name: "cmd.run".into(),
            args,
            security_context_name: "zaru-free".into(),
            user_security_token: "a.b.c".into(),
            deadline: Duration::from_millis(1500),
        };
        let id = Uuid::new_v4();
        let Some(edge_command::Command::InvokeTool(invoke)) =
            invoke_command(id, "tenant-a", &call).command
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
    }
}
