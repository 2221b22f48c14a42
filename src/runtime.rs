//! The runtime seam: network, wall clock and randomness, injected together.
//!
//! Production uses [`Runtime::real`]; the simulator builds one from simulated
//! parts with a seed, so a run can be replayed exactly. Monotonic time comes
//! from `tokio::time` everywhere (the simulator drives it), wall-clock time
//! only from [`Clock`], randomness only from [`Entropy`].

use std::sync::Arc;
use std::time::SystemTime;

use crate::net::{Network, TokioNetwork};

/// Wall-clock time (token timestamps, expiry checks).
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
}

/// The current wall-clock time of `clock` as a UTC timestamp.
pub fn utc_now(clock: &dyn Clock) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from(clock.now())
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl SystemClock {
    /// Now, as a UTC timestamp (tests and the binary's edge; the relay
    /// itself reads its injected [`Clock`]).
    pub fn utc_now(&self) -> chrono::DateTime<chrono::Utc> {
        utc_now(self)
    }
}

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one sanctioned reader of the OS clock
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Source of random bytes (nonces, ids, jitter).
pub trait Entropy: Send + Sync + 'static {
    /// Fills `dest` with random bytes.
    fn fill(&self, dest: &mut [u8]);

    /// A random (version 4) UUID drawn from this source.
    fn uuid_v4(&self) -> uuid::Uuid {
        let mut bytes = [0u8; 16];
        self.fill(&mut bytes);
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

/// The operating system's CSPRNG (through `rand`'s thread-local generator).
#[derive(Debug, Clone, Copy, Default)]
pub struct OsEntropy;

impl OsEntropy {
    /// A random UUID from the OS generator (tests and the binary's edge;
    /// the relay itself draws from its injected [`Entropy`]).
    pub fn uuid(&self) -> uuid::Uuid {
        self.uuid_v4()
    }
}

impl Entropy for OsEntropy {
    #[allow(clippy::disallowed_methods)] // the one sanctioned reader of the OS generator
    fn fill(&self, dest: &mut [u8]) {
        rand::RngCore::fill_bytes(&mut rand::rng(), dest);
    }
}

/// A fresh id for a unit test: distinct within the test process and the
/// same from run to run (a counter, not randomness).
#[cfg(test)]
pub(crate) fn test_id() -> uuid::Uuid {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    uuid::Uuid::from_u64_pair(0x7e57_0000_0000_4000, 0x8000_0000_0000_0000 | n)
}

/// Everything the relay takes from its environment besides config.
#[derive(Clone)]
pub struct Runtime {
    /// Listeners and connections.
    pub net: Arc<dyn Network>,
    /// Wall clock.
    pub clock: Arc<dyn Clock>,
    /// Randomness.
    pub entropy: Arc<dyn Entropy>,
}

impl Runtime {
    /// Real sockets, the OS clock and the OS random source.
    pub fn real() -> Self {
        Self {
            net: Arc::new(TokioNetwork),
            clock: Arc::new(SystemClock),
            entropy: Arc::new(OsEntropy),
        }
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}
