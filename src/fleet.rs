//! Fleet calls: one tool invocation fanned out to many edges (protocol.md
//! §8.3–8.5). This module holds the pure parts: what a call targets
//! (`EdgeTarget`, `EdgeSelector` and its matching rule), how it is asked for
//! and validated (request bodies into a `FleetPolicy`), and what it reports
//! (`FleetEvent`, streamed as SSE). All JSON shapes are wire-identical to
//! AEGIS so its CLI and stored group selectors work unchanged.
//!
//! `resolve` turns a target into connected edges (it reads the store and the
//! owner's registry); `run` drives the per-edge calls through the owner;
//! `runs` keeps the cancel handles, `records` writes the history to the
//! store in batches and `views` shows it.

mod events;
mod policy;
mod records;
mod request;
mod resolve;
mod run;
mod runs;
mod sse_buffer;
mod target;
mod views;

pub use events::{FleetEvent, FleetSummary};
pub use policy::{FailurePolicy, FleetMode, FleetPolicy, DEFAULT_DEADLINE_SECS, MAX_DEADLINE_SECS};
pub use records::RunRecorder;
pub use request::{args_object, parse_body, FleetInvokeBody, FleetRequestError, HostInvokeBody};
pub use resolve::{resolve, ResolveError};
pub use run::{run_fleet, EventSink, FleetCall};
pub use runs::{CancelError, FleetRuns, NewRun, RecordingSink, RunRetention, StartError};
pub use sse_buffer::{sse_buffer, BufferReceiver, BufferSender, Unsent};
pub use target::{EdgeFacts, EdgeSelector, EdgeTarget, LabelMatch, TagMatch};
pub use views::{NodeView, RunView};
