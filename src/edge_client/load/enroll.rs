//! Making every edge of a load run ready: reuse its state directory, else
//! mint a token and enroll it, with bounded concurrency. The relay's
//! per-source AttestNode rate limit is respected by pacing, not by a herd
//! of retries.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::stream::StreamExt as _;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::mint::{MintError, Minter};
use super::{edge_dir, load_tenants, LoadOptions};
use crate::edge_client::{enroll, EdgeState, EnrollError, EnrollOptions, NODE_TOKEN};
use crate::runtime::Runtime;

/// Enrollment attempts for errors that may pass (the relay's rate limit
/// is waited out without a cap; only `stop` ends that wait).
const TRANSIENT_ATTEMPTS: u32 = 5;

/// Why `prepare` stopped.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Some edges need enrolling and no minter was given.
    #[error("{missing} of {count} edges are not enrolled yet; give an API URL and a bearer to mint their tokens")]
    NoMinter {
        /// Edges without state.
        missing: usize,
        /// All edges.
        count: usize,
    },
    /// An edge is enrolled in another tenant than this run assigns.
    #[error("{} is enrolled in tenant {found}, but this run assigns {wanted}; use the same tenants as before or a fresh state dir", dir.display())]
    TenantMismatch {
        /// The edge's state.
        dir: PathBuf,
        /// Its tenant.
        found: String,
        /// The tenant this run gives it.
        wanted: String,
    },
    /// A token could not be minted.
    #[error("cannot mint an enrollment token: {0}")]
    Mint(#[source] MintError),
    /// An edge could not be enrolled.
    #[error("cannot enroll {}: {source}", dir.display())]
    Enroll {
        /// The edge's state.
        dir: PathBuf,
        /// Why.
        source: EnrollError,
    },
    /// A state directory holds a broken identity.
    #[error("{} holds an unusable identity ({reason}); delete it to enroll it again", dir.display())]
    Broken {
        /// The edge's state.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `stop` fired.
    #[error("stopped before every edge was enrolled")]
    Stopped,
}

/// Where `prepare` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrepareProgress {
    /// Edges ready (reused or enrolled).
    pub done: usize,
    /// Of which reused from an earlier run.
    pub reused: usize,
    /// All edges.
    pub total: usize,
    /// AttestNode calls the relay's rate limit refused (and we retried).
    pub rate_limited: u64,
    /// Since `prepare` started.
    pub elapsed: Duration,
}

/// The edges, ready to hold.
#[derive(Debug)]
pub struct Prepared {
    /// Edge `i`'s state at index `i`.
    pub edges: Vec<EdgeState>,
    /// Edges enrolled by this call.
    pub enrolled: usize,
    /// Edges reused from an earlier run.
    pub reused: usize,
    /// How long it took.
    pub elapsed: Duration,
}

/// Makes every edge `0..count` ready: reuses an enrolled state directory,
/// else mints a token with `minter` and enrolls (at most
/// `enroll_concurrency` at once). `progress` is called about once a second,
/// every 1000 edges and at the end.
pub async fn prepare(
    runtime: &Runtime,
    options: &LoadOptions,
    minter: Option<&Minter>,
    stop: &CancellationToken,
    progress: &mut (dyn FnMut(PrepareProgress) + Send),
) -> Result<Prepared, LoadError> {
    let started = Instant::now();
    let tenants = if options.tenants.is_empty() {
        load_tenants(1)
    } else {
        options.tenants.clone()
    };
    let scan_dir = options.state_dir.clone();
    let count = options.count;
    // Reading thousands of small files is blocking work.
    let scanned = tokio::task::spawn_blocking(move || {
        (0..count)
            .map(|i| EdgeState::load(&edge_dir(&scan_dir, i)).ok())
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|err| LoadError::Broken {
        dir: options.state_dir.clone(),
        reason: format!("scan failed: {err}"),
    })?;
    let mut edges: Vec<Option<EdgeState>> = Vec::with_capacity(count);
    let mut missing = Vec::new();
    for (i, state) in scanned.into_iter().enumerate() {
        let wanted = &tenants[i % tenants.len()];
        if let Some(state) = &state {
            if &state.tenant_id != wanted {
                return Err(LoadError::TenantMismatch {
                    dir: state.dir.clone(),
                    found: state.tenant_id.clone(),
                    wanted: wanted.clone(),
                });
            }
        } else {
            missing.push(i);
        }
        edges.push(state);
    }
    let reused = count - missing.len();
    let minter = match (missing.is_empty(), minter) {
        (true, _) => None,
        (false, Some(minter)) => Some(minter),
        (false, None) => {
            return Err(LoadError::NoMinter {
                missing: missing.len(),
                count,
            })
        }
    };
    let pacer = Pacer::default();
    let mut reported = None;
    let mut report = |done: usize, reported: &mut Option<usize>| {
        *reported = Some(done);
        progress(PrepareProgress {
            done,
            reused,
            total: count,
            rate_limited: pacer.refusals(),
            elapsed: started.elapsed(),
        });
    };
    let mut done = reused;
    if let Some(minter) = minter {
        let mut pending = futures::stream::iter(missing.iter().map(|&i| {
            let tenant = tenants[i % tenants.len()].as_str();
            let endpoint = options
                .grpc_endpoints
                .get(i % options.grpc_endpoints.len().max(1))
                .cloned();
            let pacer = &pacer;
            async move {
                let dir = edge_dir(&options.state_dir, i);
                let state = enroll_one(runtime, minter, tenant, i, &dir, endpoint, pacer).await?;
                Ok::<_, LoadError>((i, state))
            }
        }))
        .buffer_unordered(options.enroll_concurrency.max(1));
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => return Err(LoadError::Stopped),
                _ = ticker.tick() => report(done, &mut reported),
                next = pending.next() => {
                    let Some(next) = next else { break };
                    let (i, state) = next?;
                    edges[i] = Some(state);
                    done += 1;
                    if done.is_multiple_of(1000) {
                        report(done, &mut reported);
                    }
                }
            }
        }
    }
    if reported != Some(done) {
        report(done, &mut reported);
    }
    let elapsed = started.elapsed();
    Ok(Prepared {
        edges: edges.into_iter().flatten().collect(),
        enrolled: done - reused,
        reused,
        elapsed,
    })
}

/// Mints and enrolls edge `index`, retrying what may pass.
async fn enroll_one(
    runtime: &Runtime,
    minter: &Minter,
    tenant: &str,
    index: usize,
    dir: &Path,
    endpoint: Option<String>,
    pacer: &Pacer,
) -> Result<EdgeState, LoadError> {
    if dir.join(NODE_TOKEN).exists() {
        let reason = EdgeState::load(dir).err().unwrap_or_default();
        return Err(LoadError::Broken {
            dir: dir.to_owned(),
            reason,
        });
    }
    let options = EnrollOptions {
        force: false,
        endpoint_override: endpoint,
    };
    let issued_to = format!("edge-sim-{index}");
    let mut token: Option<String> = None;
    let mut failures = 0u32;
    loop {
        let current = match &token {
            Some(token) => token.clone(),
            None => match minter.mint(tenant, &issued_to).await {
                Ok(minted) => {
                    token = Some(minted.clone());
                    minted
                }
                Err(err) if err.is_transient() && failures + 1 < TRANSIENT_ATTEMPTS => {
                    failures += 1;
                    tokio::time::sleep(Duration::from_secs(1 << failures)).await;
                    continue;
                }
                Err(err) => return Err(LoadError::Mint(err)),
            },
        };
        pacer.wait().await;
        let err = match enroll(runtime, &current, dir, &options).await {
            Ok(enrolled) => {
                pacer.passed();
                return Ok(enrolled.state);
            }
            Err(err) => err,
        };
        match &err {
            EnrollError::Refused {
                code: tonic::Code::ResourceExhausted,
                retry_after,
                ..
            } => {
                pacer.refused(
                    Instant::now(),
                    retry_after.unwrap_or(Duration::from_secs(1)),
                );
            }
            EnrollError::Connect { .. }
            | EnrollError::Refused {
                code: tonic::Code::Unavailable | tonic::Code::Aborted,
                ..
            } if failures + 1 < TRANSIENT_ATTEMPTS => {
                failures += 1;
                // ChallengeNode may have burned the token's jti.
                token = None;
                tokio::time::sleep(Duration::from_secs(1 << failures)).await;
            }
            _ => {
                return Err(LoadError::Enroll {
                    dir: dir.to_owned(),
                    source: err,
                })
            }
        }
    }
}

/// Spaces AttestNode calls once the relay's per-source rate limit refused
/// one, so waiting enrollers take turns instead of retrying in a herd. The
/// spacing grows by half on a refusal (once per spacing, as attempts
/// already in flight are refused together) and shrinks slowly on each
/// success, so it settles near the relay's rate.
#[derive(Debug, Default)]
struct Pacer {
    state: std::sync::Mutex<PaceState>,
}

#[derive(Debug, Default)]
struct PaceState {
    spacing: Duration,
    next: Option<Instant>,
    raised: Option<Instant>,
    refusals: u64,
}

/// Longest spacing between attempts.
const MAX_SPACING: Duration = Duration::from_secs(5);

impl Pacer {
    fn state(&self) -> std::sync::MutexGuard<'_, PaceState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes the turn at `now`, or says when to ask again. Nothing is
    /// booked ahead, so a new spacing applies to every waiter at once.
    fn try_pass(&self, now: Instant) -> Result<(), Instant> {
        let mut state = self.state();
        match state.next {
            Some(next) if next > now => Err(next),
            _ => {
                if !state.spacing.is_zero() {
                    state.next = Some(now + state.spacing);
                }
                Ok(())
            }
        }
    }

    /// Waits for a turn.
    async fn wait(&self) {
        while let Err(next) = self.try_pass(Instant::now()) {
            tokio::time::sleep_until(next).await;
        }
    }

    /// A refusal asking to wait `hint`.
    fn refused(&self, now: Instant, hint: Duration) {
        let mut state = self.state();
        state.refusals += 1;
        let settled = state
            .raised
            .is_none_or(|raised| now.saturating_duration_since(raised) >= state.spacing);
        if settled {
            state.spacing = state.spacing.mul_f64(1.5).max(hint).min(MAX_SPACING);
            state.raised = Some(now);
        }
        let after = now + hint;
        state.next = Some(state.next.map_or(after, |next| next.max(after)));
    }

    /// An attempt passed the limit.
    fn passed(&self) {
        let mut state = self.state();
        state.spacing = state.spacing.mul_f64(0.93);
    }

    fn refusals(&self) -> u64 {
        self.state().refusals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_starts_at_the_first_refusal_and_spaces_attempts() {
        let pacer = Pacer::default();
        let now = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(pacer.try_pass(now), Ok(()));
        assert_eq!(pacer.try_pass(now), Ok(()), "no spacing before a refusal");
        pacer.refused(now, ms(100));
        pacer.refused(now, ms(90));
        assert_eq!(pacer.refusals(), 2);
        assert_eq!(pacer.try_pass(now), Err(now + ms(100)));
        assert_eq!(pacer.try_pass(now + ms(100)), Ok(()));
        assert_eq!(pacer.try_pass(now + ms(150)), Err(now + ms(200)));
        pacer.passed();
        assert_eq!(pacer.try_pass(now + ms(200)), Ok(()));
        assert_eq!(pacer.try_pass(now + ms(200)), Err(now + ms(293)));
        // Refusals of attempts already in flight raised the spacing once;
        // a later one raises it again.
        pacer.refused(now + ms(300), ms(10));
        assert_eq!(pacer.try_pass(now + ms(310)), Ok(()));
        assert_eq!(
            pacer.try_pass(now + ms(310)),
            Err(now + ms(310) + Duration::from_micros(139_500))
        );
    }
}
