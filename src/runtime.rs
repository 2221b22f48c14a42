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

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

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
}

/// The operating system's CSPRNG (through `rand`'s thread-local generator).
#[derive(Debug, Clone, Copy, Default)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&self, dest: &mut [u8]) {
        rand::RngCore::fill_bytes(&mut rand::rng(), dest);
    }
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
