//! Events of one fleet call, wire-identical to AEGIS's externally tagged
//! `FleetEvent` JSON: each SSE `data:` line of `POST /v1/edge/fleet/invoke`
//! carries one (protocol.md §8.4, §8.5).
//!
//! Invariant: a run emits `Started` first and `Done` last; the summary counts
//! every resolved target exactly once (ok, err, timed out or skipped).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One step of a fleet call, as streamed to the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FleetEvent {
    /// The run began; `fleet_command_id` is the id to cancel it with.
    Started {
        /// Id of this fleet run.
        fleet_command_id: Uuid,
        /// Edges the target resolved to.
        resolved: Vec<Uuid>,
        /// Edges left out before dispatch (AEGIS always sends none).
        skipped: Vec<Uuid>,
    },
    /// Dispatch to one edge began.
    NodeStarted {
        /// The edge.
        node_id: Uuid,
    },
    /// A chunk of one edge's output arrived.
    NodeProgress {
        /// The edge.
        node_id: Uuid,
        /// The per-edge command id.
        command_id: Uuid,
        /// Position of the chunk in its own stream (stdout and stderr count separately).
        sequence: u32,
        /// Whether the chunk came from stderr.
        stderr: bool,
        /// The output, decoded as lossy UTF-8.
        chunk: String,
    },
    /// One edge finished, failed or timed out.
    NodeCompleted {
        /// The edge.
        node_id: Uuid,
        /// Whether the tool succeeded.
        ok: bool,
        /// Exit code (-1 on a dispatch timeout).
        exit_code: i32,
        /// `"timeout"`, `"error"` or the daemon's error kind, when not ok.
        error_kind: Option<String>,
        /// Human-readable failure text, when not ok.
        error_message: Option<String>,
    },
    /// The run was cancelled (by a caller, or too few targets).
    Cancelled {
        /// Why.
        reason: String,
    },
    /// The run ended; always the last event.
    Done {
        /// Final per-target counts.
        summary: FleetSummary,
    },
}

/// Final counts of a fleet call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetSummary {
    /// Targets whose tool succeeded.
    pub ok: usize,
    /// Targets that failed other than by timing out.
    pub err: usize,
    /// Targets whose call hit the deadline.
    pub timed_out: usize,
    /// Targets never dispatched.
    pub skipped: usize,
}

impl FleetEvent {
    /// Builds a `NodeProgress` event, decoding raw output as lossy UTF-8.
    pub fn node_progress(
        node_id: Uuid,
        command_id: Uuid,
        sequence: u32,
        stderr: bool,
        output: &[u8],
    ) -> Self {
        Self::NodeProgress {
            node_id,
            command_id,
            sequence,
            stderr,
            chunk: String::from_utf8_lossy(output).into_owned(),
        }
    }
}

impl FleetSummary {
    /// Targets that count against the failure policy (errors plus timeouts).
    pub fn failed(&self) -> usize {
        self.err + self.timed_out
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    const FLEET: &str = "00000000-0000-4000-8000-000000000001";
    const NODE: &str = "00000000-0000-4000-8000-000000000002";
    const COMMAND: &str = "00000000-0000-4000-8000-000000000003";

    fn pin(event: &FleetEvent, wire: Value) -> TestResult {
        assert_eq!(serde_json::to_value(event)?, wire);
        assert_eq!(&serde_json::from_value::<FleetEvent>(wire)?, event);
        Ok(())
    }

    #[test]
    fn started_json() -> TestResult {
        let event = FleetEvent::Started {
            fleet_command_id: Uuid::parse_str(FLEET)?,
            resolved: vec![Uuid::parse_str(NODE)?],
            skipped: Vec::new(),
        };
        assert_eq!(
            serde_json::to_string(&event)?,
            format!(
                r#"{{"Started":{{"fleet_command_id":"{FLEET}","resolved":["{NODE}"],"skipped":[]}}}}"#
            )
        );
        pin(
            &event,
            json!({"Started": {"fleet_command_id": FLEET, "resolved": [NODE], "skipped": []}}),
        )
    }

    #[test]
    fn node_started_json() -> TestResult {
        let event = FleetEvent::NodeStarted {
            node_id: Uuid::parse_str(NODE)?,
        };
        pin(&event, json!({"NodeStarted": {"node_id": NODE}}))
    }

    #[test]
    fn node_progress_json_and_lossy_chunk() -> TestResult {
        let event = FleetEvent::node_progress(
            Uuid::parse_str(NODE)?,
            Uuid::parse_str(COMMAND)?,
            4,
            true,
            b"bad \xff byte\n",
        );
        pin(
            &event,
            json!({"NodeProgress": {
                "node_id": NODE,
                "command_id": COMMAND,
                "sequence": 4,
                "stderr": true,
                "chunk": "bad \u{fffd} byte\n"
            }}),
        )
    }

    #[test]
    fn node_completed_json() -> TestResult {
        let ok = FleetEvent::NodeCompleted {
            node_id: Uuid::parse_str(NODE)?,
            ok: true,
            exit_code: 0,
            error_kind: None,
            error_message: None,
        };
        pin(
            &ok,
            json!({"NodeCompleted": {
                "node_id": NODE, "ok": true, "exit_code": 0,
                "error_kind": null, "error_message": null
            }}),
        )?;
        let timed_out = FleetEvent::NodeCompleted {
            node_id: Uuid::parse_str(NODE)?,
            ok: false,
            exit_code: -1,
            error_kind: Some("timeout".to_owned()),
            error_message: Some("no result within 60s".to_owned()),
        };
        pin(
            &timed_out,
            json!({"NodeCompleted": {
                "node_id": NODE, "ok": false, "exit_code": -1,
                "error_kind": "timeout", "error_message": "no result within 60s"
            }}),
        )
    }

    #[test]
    fn cancelled_json() -> TestResult {
        let event = FleetEvent::Cancelled {
            reason: "resolved 1 target, require_min_targets is 2".to_owned(),
        };
        pin(
            &event,
            json!({"Cancelled": {"reason": "resolved 1 target, require_min_targets is 2"}}),
        )
    }

    #[test]
    fn done_json() -> TestResult {
        let summary = FleetSummary {
            ok: 3,
            err: 1,
            timed_out: 2,
            skipped: 4,
        };
        assert_eq!(summary.failed(), 3);
        pin(
            &FleetEvent::Done { summary },
            json!({"Done": {"summary": {"ok": 3, "err": 1, "timed_out": 2, "skipped": 4}}}),
        )
    }

    #[test]
    fn absent_error_fields_read_as_none() -> TestResult {
        let event: FleetEvent = serde_json::from_value(json!({"NodeCompleted": {
            "node_id": NODE, "ok": true, "exit_code": 0
        }}))?;
        let FleetEvent::NodeCompleted {
            error_kind,
            error_message,
            ..
        } = event
        else {
            return Err("expected NodeCompleted".into());
        };
        assert_eq!((error_kind, error_message), (None, None));
        Ok(())
    }
}
