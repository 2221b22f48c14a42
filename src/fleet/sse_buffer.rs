//! The buffer between a fleet run and its SSE reader, bounded in bytes (not
//! in events: one progress chunk may be 1 KiB or 1 MiB). Events are
//! serialized once, on the run's side; the reader gives their bytes back as
//! it takes them.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};

use super::events::FleetEvent;

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
}

/// The reader's side.
#[derive(Debug)]
pub struct BufferReceiver {
    events: mpsc::UnboundedReceiver<Buffered>,
    room: Arc<Semaphore>,
}

/// Why an event was not buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsent {
    /// No room now (a progress chunk is dropped rather than waited for).
    Full,
    /// No room within the wait, or the reader is gone.
    Gone,
}

/// A buffer of at most `bytes` serialized bytes.
pub fn sse_buffer(bytes: usize) -> (BufferSender, BufferReceiver) {
    let limit = u32::try_from(bytes).unwrap_or(u32::MAX).max(1);
    let room = Arc::new(Semaphore::new(limit as usize));
    let (tx, rx) = mpsc::unbounded_channel();
    (
        BufferSender {
            events: tx,
            room: Arc::clone(&room),
            limit,
        },
        BufferReceiver { events: rx, room },
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
        let (json, permits) = self.encode(event);
        let permit = self
            .room
            .try_acquire_many(permits)
            .map_err(|_| Unsent::Full)?;
        permit.forget();
        self.events
            .send(Buffered { json, permits })
            .map_err(|_| Unsent::Gone)
    }

    /// Buffers `event`, waiting up to `wait` for room.
    pub async fn send(&self, event: &FleetEvent, wait: Duration) -> Result<(), Unsent> {
        let (json, permits) = self.encode(event);
        let permit = tokio::time::timeout(wait, self.room.acquire_many(permits))
            .await
            .map_err(|_| Unsent::Gone)?
            .map_err(|_| Unsent::Gone)?;
        permit.forget();
        self.events
            .send(Buffered { json, permits })
            .map_err(|_| Unsent::Gone)
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
        Some(buffered.json)
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
        let (tx, mut rx) = sse_buffer(64 * 1024);
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
        // Reading frees room.
        assert!(rx
            .recv()
            .await
            .is_some_and(|json| json.contains("NodeProgress")));
        assert!(tx.try_send(&progress(10)).is_ok());
    }
}
