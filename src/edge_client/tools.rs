//! How our edge answers an InvokeTool: the real daemon's envelope checks in
//! order (protocol.md §8.1), then a simulated `cmd.run` that never starts a
//! process: `echo ARGS...` prints its arguments, `sleep SECS` waits (cut at
//! the deadline, as the daemon's timeout), `exit CODE` fails with that
//! code, `fail` writes to stderr and exits 1. Other tools get the daemon's
//! error kinds.

use std::time::Duration;

use prost_types::value::Kind;
use prost_types::Struct;

use crate::proto::cluster::{EdgeResult, InvokeToolCommand};

/// The daemon's cap on a command's run time.
const MAX_RUN: Duration = Duration::from_secs(600);

/// Output lines of a simulated run, and its result.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolRun {
    /// Lines, each `(stderr, bytes)`, in the order they were written.
    pub lines: Vec<(bool, Vec<u8>)>,
    /// How long the run takes.
    pub duration: Duration,
    /// The final result.
    pub result: EdgeResult,
}

fn failed(kind: &str, message: &str) -> ToolRun {
    ToolRun {
        lines: Vec::new(),
        duration: Duration::ZERO,
        result: EdgeResult {
            ok: false,
            exit_code: 0,
            error_kind: kind.to_owned(),
            error_message: message.to_owned(),
            ..EdgeResult::default()
        },
    }
}

/// Runs `invoke` for an edge whose security contexts are `contexts`.
pub fn run_tool(invoke: &InvokeToolCommand, contexts: &[String]) -> ToolRun {
    let Some(envelope) = &invoke.seal_envelope else {
        return failed("envelope_invalid", "seal_envelope is missing");
    };
    if envelope.user_security_token.split('.').count() != 3 {
        return failed(
            "envelope_invalid",
            "user_security_token must be a JWT (three parts)",
        );
    }
    if envelope.tenant_id.is_empty() {
        return failed("envelope_invalid", "tenant_id is empty");
    }
    if envelope.security_context_name != invoke.security_context_name {
        return failed(
            "envelope_invalid",
            "inner and outer security_context_name differ",
        );
    }
    if !contexts.contains(&invoke.security_context_name) {
        return failed(
            "security_context_not_found",
            &format!("no security context {:?}", invoke.security_context_name),
        );
    }
    match invoke.tool_name.as_str() {
        "cmd.run" => {}
        name if name.starts_with("fs.")
            || name.starts_with("web.")
            || name.starts_with("aegis.schema.") =>
        {
            return failed("tool_not_locally_supported", name);
        }
        name => return failed("tool_not_found", name),
    }
    let args = invoke.args.clone().unwrap_or_default();
    let command = string(&args, "command").unwrap_or_default();
    let words = strings(&args, "args");
    let limit = invoke
        .deadline
        .as_ref()
        .and_then(|d| u64::try_from(d.seconds).ok())
        .filter(|&s| s > 0)
        .map_or(MAX_RUN, |s| Duration::from_secs(s).min(MAX_RUN));
    let exit = |code: i32, lines: Vec<(bool, Vec<u8>)>, duration| {
        let (stdout, stderr) = lines.iter().fold(
            (Vec::new(), Vec::new()),
            |(mut out, mut err), (is_err, line)| {
                if *is_err {
                    err.extend_from_slice(line)
                } else {
                    out.extend_from_slice(line)
                }
                (out, err)
            },
        );
        ToolRun {
            result: EdgeResult {
                ok: code == 0,
                exit_code: code,
                stdout,
                stderr,
                error_kind: if code == 0 {
                    String::new()
                } else {
                    "nonzero_exit".to_owned()
                },
                ..EdgeResult::default()
            },
            lines,
            duration,
        }
    };
    match command.as_str() {
        "echo" => exit(
            0,
            vec![(false, format!("{}\n", words.join(" ")).into_bytes())],
            Duration::ZERO,
        ),
        "sleep" => {
            let secs: f64 = words.first().and_then(|w| w.parse().ok()).unwrap_or(1.0);
            let wanted = Duration::from_secs_f64(secs.clamp(0.0, 3600.0));
            if wanted > limit {
                let mut run = failed("timeout", "command exceeded its deadline and was killed");
                run.duration = limit;
                return run;
            }
            exit(0, Vec::new(), wanted)
        }
        "exit" => {
            let code = words.first().and_then(|w| w.parse().ok()).unwrap_or(1);
            exit(code, Vec::new(), Duration::ZERO)
        }
        "fail" => exit(
            1,
            vec![(true, b"failed on purpose\n".to_vec())],
            Duration::ZERO,
        ),
        other => failed(
            "internal",
            &format!("edge-sim does not run programs ({other:?}); use echo, sleep, exit or fail"),
        ),
    }
}

fn string(args: &Struct, key: &str) -> Option<String> {
    match args.fields.get(key).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

fn strings(args: &Struct, key: &str) -> Vec<String> {
    match args.fields.get(key).and_then(|v| v.kind.as_ref()) {
        Some(Kind::ListValue(list)) => list
            .values
            .iter()
            .filter_map(|v| match &v.kind {
                Some(Kind::StringValue(s)) => Some(s.clone()),
                Some(Kind::NumberValue(n)) => Some(n.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}
