//! The phases of a replica's drain, named so the cluster drain can order
//! them (architecture.md §5, §11), and run here in order, each bounded:
//!
//! 1. stop accepting new connections (the servers and the replica's timers
//!    stop; readiness and gossip already say `draining`);
//! 2. stop sending new commands to this replica's edges (the owner refuses
//!    them with `draining`);
//! 3. wait for the commands in flight: each session ends once its commands
//!    are answered, until [`DrainPhases::in_flight_bound`];
//! 4. end the streams still open (their commands end `edge_disconnected`);
//!    whatever still runs at the drain deadline is aborted.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::owner::Owner;
use crate::session::Ingress;

/// The longest phase 4 is given (less when the drain timeout is short).
const END_STREAMS: Duration = Duration::from_secs(1);

/// The signals of the phases, as the replica's parts take them.
#[derive(Debug, Clone, Default)]
pub struct DrainPhases {
    /// Phase 1: servers stop accepting connections, timers stop.
    pub stop_accepting: CancellationToken,
    /// Phase 3: sessions end once their commands are answered.
    pub finish_in_flight: CancellationToken,
    /// Phase 4: sessions end now.
    pub end_streams: CancellationToken,
}

impl DrainPhases {
    /// Until when phase 3 waits, in a drain that must be over by `deadline`
    /// after `timeout`: phase 4 keeps a tenth of it (at most a second).
    pub fn in_flight_bound(deadline: Instant, timeout: Duration) -> Instant {
        let keep = (timeout / 10).min(END_STREAMS);
        deadline.checked_sub(keep).unwrap_or(deadline)
    }

    /// Runs the phases in order; returns once phase 4 has begun (the caller
    /// waits for the replica's tasks until `deadline`).
    pub async fn run(
        &self,
        owner: &Owner,
        ingress: &Ingress,
        deadline: Instant,
        timeout: Duration,
    ) {
        tracing::info!("drain: stop accepting new connections");
        self.stop_accepting.cancel();
        tracing::info!("drain: stop sending new commands to this replica's edges");
        owner.start_draining();
        tracing::info!("drain: wait for the commands in flight");
        self.finish_in_flight.cancel();
        let bound = Self::in_flight_bound(deadline, timeout);
        if tokio::time::timeout_at(bound, ingress.wait_sessions())
            .await
            .is_err()
        {
            tracing::warn!(
                streams = ingress.live_streams(),
                "drain: commands still in flight; ending their streams"
            );
        }
        tracing::info!("drain: end the streams");
        self.end_streams.cancel();
    }

    /// Ends every phase at once (a replica dropped without a drain).
    pub fn cancel_all(&self) {
        self.stop_accepting.cancel();
        self.finish_in_flight.cancel();
        self.end_streams.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_four_keeps_a_tenth_of_the_drain_up_to_a_second() {
        let deadline = Instant::now() + Duration::from_secs(60);
        let bound = |timeout| deadline - DrainPhases::in_flight_bound(deadline, timeout);
        assert_eq!(bound(Duration::from_secs(60)), Duration::from_secs(1));
        assert_eq!(bound(Duration::from_millis(600)), Duration::from_millis(60));
    }
}
