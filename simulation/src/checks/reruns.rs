//! Which reruns of a command id invariant 2 allows (architecture §6): a
//! tool runs at most once per command id while the edge's ingress lives,
//! since dedup lives in that replica generation's memory. A rerun is
//! allowed only when every earlier run's ingress generation died first
//! and the caller then sent the command again with the same idempotency
//! key (after an unknown outcome); the relay must never retry by itself.

use std::time::Duration;

use uuid::Uuid;

use crate::replica;
use crate::world::{at, Generation, Run, State};

/// An earlier run of a command id.
pub(super) struct Earlier {
    pub(super) edge: usize,
    pub(super) at: Duration,
    pub(super) ingress: Option<Generation>,
}

/// What a run of a command id is, given its earlier runs.
pub(super) enum Rerun {
    /// The command id's first run.
    First,
    /// Every earlier run's ingress generation died, and the caller sent the
    /// command again after that.
    Allowed(String),
    /// Anything else.
    Violation(String),
}

pub(super) fn rerun(earlier: &[Earlier], run: &Run, state: &State) -> Rerun {
    if earlier.is_empty() {
        return Rerun::First;
    }
    let mut last_death = Duration::ZERO;
    let mut deaths = Vec::new();
    for first in earlier {
        let died = first
            .ingress
            .and_then(|generation| state.ended.get(&generation).copied())
            .filter(|&died| died <= run.at);
        let Some(died) = died else {
            return Rerun::Violation(format!(
                "its run on e{} at {} came via {}, which still lived (its dedup should have answered)",
                first.edge,
                at(first.at),
                via(first.ingress)
            ));
        };
        last_death = last_death.max(died);
        deaths.push(format!(
            "its run at {} came via {}, which died at {} with its dedup ledger",
            at(first.at),
            via(first.ingress),
            at(died)
        ));
    }
    let call = Uuid::parse_str(&run.command_id)
        .ok()
        .and_then(|id| state.calls.get(&id));
    let retry = call.and_then(|call| {
        call.attempts
            .iter()
            .enumerate()
            .rev()
            .find(|(_, &sent)| sent >= last_death && sent <= run.at)
            .map(|(attempt, &sent)| (call, attempt + 1, sent))
    });
    let Some((call, attempt, sent)) = retry else {
        return Rerun::Violation(format!(
            "{}, but no caller sent it again after that (a silent retry)",
            deaths.join("; ")
        ));
    };
    Rerun::Allowed(format!(
        "{}; then c{} sent it again with the same key (attempt {attempt} at {}, via {}) after an unknown outcome",
        deaths.join("; "),
        call.tenant,
        at(sent),
        replica::name(call.replica)
    ))
}

/// `r2 start 1`, for the trace.
pub(super) fn via(ingress: Option<Generation>) -> String {
    ingress.map_or_else(|| "an unknown replica".to_owned(), |g| g.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::Call;

    type Error = Box<dyn std::error::Error>;

    const R2_FIRST: Generation = Generation {
        replica: 2,
        start: 1,
    };
    const R2_SECOND: Generation = Generation {
        replica: 2,
        start: 2,
    };
    const COMMAND: &str = "6f1c2a7e-0d5b-4c1e-9a3f-2b8d4e6f7a10";

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// A call to e5 via r2 with attempts at `attempts` (seconds); r2's first start
    /// died at `died`, if given.
    fn state(attempts: &[u64], died: Option<u64>) -> Result<State, Error> {
        let mut state = State::default();
        state.calls.insert(
            Uuid::parse_str(COMMAND)?,
            Call {
                tenant: 5,
                edge: 5,
                replica: 2,
                started: secs(attempts.first().copied().unwrap_or_default()),
                deadline: secs(10),
                attempts: attempts.iter().map(|&s| secs(s)).collect(),
                outcome: None,
            },
        );
        if let Some(died) = died {
            state.ended.insert(R2_FIRST, secs(died));
        }
        Ok(state)
    }

    fn run(at: u64, ingress: Generation) -> Run {
        Run {
            edge: 5,
            command_id: COMMAND.to_owned(),
            envelope_tenant: "tenant-5".to_owned(),
            at: secs(at),
            ingress: Some(ingress),
        }
    }

    fn first_run() -> Vec<Earlier> {
        vec![Earlier {
            edge: 5,
            at: secs(20),
            ingress: Some(R2_FIRST),
        }]
    }

    #[test]
    fn a_first_run_is_no_rerun() -> Result<(), Error> {
        let state = state(&[20], None)?;
        assert!(matches!(
            rerun(&[], &run(20, R2_FIRST), &state),
            Rerun::First
        ));
        Ok(())
    }

    #[test]
    fn a_rerun_while_the_ingress_lives_is_a_violation() -> Result<(), Error> {
        let state = state(&[20, 21], None)?;
        let Rerun::Violation(why) = rerun(&first_run(), &run(22, R2_FIRST), &state) else {
            return Err("a rerun on a living ingress passed".into());
        };
        assert!(why.contains("r2 start 1, which still lived"), "{why}");
        // Nor may another replica run it while the first ingress lives.
        let elsewhere = Generation {
            replica: 3,
            start: 1,
        };
        assert!(matches!(
            rerun(&first_run(), &run(22, elsewhere), &state),
            Rerun::Violation(_)
        ));
        Ok(())
    }

    #[test]
    fn a_rerun_after_the_ingress_died_and_the_caller_retried_is_allowed() -> Result<(), Error> {
        let state = state(&[20, 21, 25, 26, 27], Some(23))?;
        let Rerun::Allowed(why) = rerun(&first_run(), &run(26, R2_SECOND), &state) else {
            return Err("an allowed rerun was refused".into());
        };
        assert!(why.contains("r2 start 1, which died at   23.000s"), "{why}");
        // The retry that brought it: the last one sent by then.
        assert!(why.contains("attempt 4 at   26.000s, via r2"), "{why}");
        Ok(())
    }

    #[test]
    fn a_rerun_without_a_retry_after_the_death_is_a_silent_retry() -> Result<(), Error> {
        let state = state(&[20, 21], Some(23))?;
        let Rerun::Violation(why) = rerun(&first_run(), &run(26, R2_SECOND), &state) else {
            return Err("a silent retry passed".into());
        };
        assert!(why.contains("silent retry"), "{why}");
        Ok(())
    }

    #[test]
    fn a_rerun_before_the_ingress_died_is_a_violation() -> Result<(), Error> {
        let state = state(&[20, 21, 25], Some(30))?;
        assert!(matches!(
            rerun(&first_run(), &run(26, R2_SECOND), &state),
            Rerun::Violation(_)
        ));
        Ok(())
    }
}
