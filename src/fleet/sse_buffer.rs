//! The buffer between a fleet run and its SSE reader, bounded in bytes (not
//! in events: one progress chunk may be 1 KiB or 1 MiB). Events are
//! serialized once, on the run's side; the reader gives their bytes back as
//! it takes them. The bytes held are counted in
//! `aegis_relay_fleet_sse_buffered_bytes`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};

use super::events::FleetEvent;
use crate::telemetry::SseMeters;

/// One serialized event and the buffer bytes it holds.
#[derive(Debug)]
pub struct Buffered {
    /// The event as JSON.
    pub json: String,
    permits: u32,
}

/// The run's side.
#[derive(Debug)]
pub struct BufferSender {
    events: mpsc::UnboundedSender<Buffered>,
    room: Arc<Semaphore>,
    limit: u32,
    meters: SseMeters,
    /// Set once a wait for room ran out: the reader is given up.
    given_up: AtomicBool,
}

/// The reader's side.
#[derive(Debug)]
pub struct BufferReceiver {
    events: mpsc::UnboundedReceiver<Buffered>,
    room: Arc<Semaphore>,
    meters: SseMeters,
}

/// Why an event was not buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsent {
    /// No room now (a progress chunk is dropped rather than waited for).
    Full,
    /// No room within the wait, or the reader is gone.
    Gone,
}

/// A buffer of at most `bytes` serialized bytes, counted in `meters`.
pub fn sse_buffer(bytes: usize, meters: SseMeters) -> (BufferSender, BufferReceiver) {
    let limit = u32::try_from(bytes).unwrap_or(u32::MAX).max(1);
    let room = Arc::new(Semaphore::new(limit as usize));
    let (tx, rx) = mpsc::unbounded_channel();
    (
        BufferSender {
            events: tx,
            room: Arc::clone(&room),
            limit,
            meters: meters.clone(),
            given_up: AtomicBool::new(false),
        },
        BufferReceiver {
            events: rx,
            room,
            meters,
        },
    )
}

impl BufferSender {
    fn encode(&self, event: &FleetEvent) -> (String, u32) {
        let json = serde_json::to_string(event).unwrap_or_else(|_| "{}".to_owned());
        // An event larger than the whole buffer waits for all of it.
        let permits = u32::try_from(json.len())
            .unwrap_or(u32::MAX)
            .clamp(1, self.limit);
        (json, permits)
    }

    /// Buffers `event` if there is room now.
    pub fn try_send(&self, event: &FleetEvent) -> Result<(), Unsent> {
        if self.given_up.load(Ordering::Relaxed) {
            return Err(Unsent::Gone);
        }
        let (json, permits) = self.encode(event);
        let Ok(permit) = self.room.try_acquire_many(permits) else {
            self.meters.dropped();
            return Err(Unsent::Full);
        };
        permit.forget();
        self.push(Buffered { json, permits })
    }

    /// Buffers `event`, waiting up to `wait` for room; past it the reader
    /// is given up (every later event is refused at once).
    pub async fn send(&self, event: &FleetEvent, wait: Duration) -> Result<(), Unsent> {
        if self.given_up.load(Ordering::Relaxed) {
            return Err(Unsent::Gone);
        }
        let (json, permits) = self.encode(event);
        let permit = match tokio::time::timeout(wait, self.room.acquire_many(permits)).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(Unsent::Gone),
            Err(_) => {
                // Concurrent waits (a parallel run's completions) count once.
                if !self.given_up.swap(true, Ordering::Relaxed) {
                    self.meters.given_up();
                }
                return Err(Unsent::Gone);
            }
        };
        permit.forget();
        self.push(Buffered { json, permits })
    }

    fn push(&self, buffered: Buffered) -> Result<(), Unsent> {
        let permits = buffered.permits;
        self.meters.held(permits);
        self.events.send(buffered).map_err(|_| {
            self.meters.released(permits);
            Unsent::Gone
        })
    }

    /// Bytes free in the buffer now.
    pub fn room(&self) -> usize {
        self.room.available_permits()
    }
}

impl BufferReceiver {
    /// The next event's JSON, freeing its bytes; `None` once the run ended.
    pub async fn recv(&mut self) -> Option<String> {
        let buffered = self.events.recv().await?;
        self.room.add_permits(buffered.permits as usize);
        self.meters.released(buffered.permits);
        Some(buffered.json)
    }
}

impl Drop for BufferReceiver {
    /// The reader left: what it never took is freed (and uncounted).
    fn drop(&mut self) {
        self.events.close();
        while let Ok(buffered) = self.events.try_recv() {
            self.meters.released(buffered.permits);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn progress(bytes: usize) -> FleetEvent {
        FleetEvent::NodeProgress {
            node_id: Uuid::nil(),
            command_id: Uuid::nil(),
            sequence: 0,
            stderr: false,
            chunk: "x".repeat(bytes),
        }
    }

    #[tokio::test]
    async fn a_stalled_reader_holds_at_most_the_byte_bound() {
        let (tx, mut rx) = sse_buffer(64 * 1024, SseMeters::default());
        let mut buffered = 0;
        for _ in 0..1_000 {
            if tx.try_send(&progress(1_000)).is_ok() {
                buffered += 1;
            }
        }
        assert!(
            (50..=64).contains(&buffered),
            "{buffered} chunks of ~1.1 KiB"
        );
        assert!(tx.room() < 1_200);
        // A non-progress event waits, then gives up.
        let gone = tx.send(&progress(2_000), Duration::from_millis(50)).await;
        assert_eq!(gone, Err(Unsent::Gone));
        // Reading frees room, but a reader given up stays given up.
        assert!(rx
            .recv()
            .await
            .is_some_and(|json| json.contains("NodeProgress")));
        assert_eq!(tx.try_send(&progress(10)), Err(Unsent::Gone));
    }

    #[tokio::test]
    async fn reading_frees_room() {
        let (tx, mut rx) = sse_buffer(64 * 1024, SseMeters::default());
        while tx.try_send(&progress(10)).is_ok() {}
        assert_eq!(tx.try_send(&progress(10)), Err(Unsent::Full));
        assert!(rx.recv().await.is_some());
        assert!(tx.try_send(&progress(10)).is_ok());
    }
}
