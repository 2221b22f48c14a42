//! Group commit for Transit signatures: concurrent [`Batcher::sign`] calls
//! are coalesced into batched `transit/sign` requests (`batch_input`), so
//! OpenBao pays its per-request costs (token lookup, policy check, audit,
//! HTTP) once per batch instead of once per signature.
//!
//! Callers queue their input on a bounded channel and wait on a oneshot.
//! [`WORKERS`] worker tasks, owned by the [`Batcher`] and aborted when it is
//! dropped, share the queue: an idle worker waits for the first request,
//! takes everything else already queued (up to [`MAX_BATCH`]) without
//! waiting for more, sends one request and answers each caller with its own
//! item's result. An idle signer therefore adds no latency, and a busy one
//! keeps up to [`WORKERS`] batches in flight so OpenBao's cores stay busy.
//!
//! The request goes through [`Sessions::call`] (token renewal, re-login and
//! one retry on 403). A failed request fails every caller of its batch with
//! the same error; an item Transit refuses (`{"error": ...}`) or answers
//! with a malformed signature fails only its own caller.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::task::AbortHandle;

use super::keys::{parse_transit_signature, KeyCache};
use super::session::{post_json, HttpError, Sessions};
use crate::auth::jws::b64url;
use crate::auth::signer::SignError;
use crate::config::SigningScheme;

/// Batches in flight at once (one per worker). Transit signs a batch's
/// items one after another on one core, so more than one batch keeps a
/// multi-core OpenBao busy; on the 2-core benchmark machine 2-3 beat 4 (more
/// batches in flight means smaller ones, each paying OpenBao's per-request
/// costs).
pub(crate) const WORKERS: usize = 3;

/// The most signatures one request asks for.
pub(crate) const MAX_BATCH: usize = 64;

/// Signing requests that may wait in the queue; beyond that, callers wait
/// to enqueue (backpressure).
const QUEUE_CAPACITY: usize = 2 * WORKERS * MAX_BATCH;

/// What the batches sign with.
pub(crate) struct Target {
    pub sessions: Arc<Sessions>,
    pub keys: Arc<KeyCache>,
    pub mount: String,
    pub key: String,
    pub scheme: SigningScheme,
}

/// One waiting caller: its input (standard base64) and where its answer goes.
struct Job {
    input: String,
    reply: oneshot::Sender<Result<String, SignError>>,
}

/// What the workers share.
struct Shared {
    target: Target,
    /// The queue's receiving end. An async mutex: the worker holding it
    /// waits for the next request with it (idle workers queue behind it).
    queue: Mutex<mpsc::Receiver<Job>>,
    /// HTTP sign requests sent (403 retries included).
    requests: AtomicU64,
    /// Set by `Batcher::stop`: no more signing.
    stopped: AtomicBool,
}

/// The queue and its workers.
pub(crate) struct Batcher {
    queue: mpsc::Sender<Job>,
    shared: Arc<Shared>,
    workers: Vec<AbortHandle>,
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Batcher {
    /// Starts the workers on the current tokio runtime.
    pub(crate) fn start(target: Target) -> Result<Self, SignError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|err| {
            SignError::Backend(format!("the openbao signer needs a tokio runtime: {err}"))
        })?;
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let shared = Arc::new(Shared {
            target,
            queue: Mutex::new(receiver),
            requests: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        });
        let workers = (0..WORKERS)
            .map(|_| runtime.spawn(work(Arc::clone(&shared))).abort_handle())
            .collect();
        Ok(Self {
            queue,
            shared,
            workers,
        })
    }

    /// Signs `input` (raw bytes, not yet encoded) in the next batch; the
    /// base64url signature.
    pub(crate) async fn sign(&self, input: &[u8]) -> Result<String, SignError> {
        use base64::Engine as _;
        if self.shared.stopped.load(Ordering::SeqCst) {
            return Err(stopped());
        }
        let input = base64::engine::general_purpose::STANDARD.encode(input);
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job { input, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Ends the workers; queued and later signs fail as stopped.
    pub(crate) fn stop(&self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        for worker in &self.workers {
            worker.abort();
        }
        // Queued jobs are dropped, so their callers learn at once. (A worker
        // aborted while holding the queue still has it for a moment; its
        // jobs then wait for their callers' own deadlines.)
        if let Ok(mut queue) = self.shared.queue.try_lock() {
            queue.close();
            while queue.try_recv().is_ok() {}
        }
    }

    /// HTTP sign requests sent so far.
    pub(crate) fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }
}

fn stopped() -> SignError {
    SignError::Unavailable("the openbao signer's batch workers have stopped".to_owned())
}

/// One worker: takes what is queued, signs it, answers, until the queue
/// closes (or the task is aborted).
async fn work(shared: Arc<Shared>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    loop {
        {
            let mut queue = shared.queue.lock().await;
            if queue.recv_many(&mut jobs, MAX_BATCH).await == 0 {
                return;
            }
        }
        // Callers that gave up (their future was dropped) need no signature.
        jobs.retain(|job| !job.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        let inputs: Vec<&str> = jobs.iter().map(|job| job.input.as_str()).collect();
        let results = sign_batch(&shared, &inputs).await;
        for (job, result) in jobs.drain(..).zip(results) {
            // A closed oneshot means the caller gave up meanwhile.
            job.reply.send(result).ok();
        }
    }
}

/// The `transit/sign` body for a batch.
#[derive(Serialize)]
struct SignBatch<'a> {
    batch_input: Vec<BatchItem<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signature_algorithm: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash_algorithm: Option<&'static str>,
}

#[derive(Serialize)]
struct BatchItem<'a> {
    input: &'a str,
    /// The item's index, echoed back by Transit: a check on the ordering.
    reference: String,
}

impl<'a> SignBatch<'a> {
    /// The options each scheme signs with, as a single request would ask.
    fn new(scheme: SigningScheme, inputs: &[&'a str]) -> Self {
        let (signature_algorithm, hash_algorithm) = match scheme {
            SigningScheme::Rs256 => (Some("pkcs1v15"), Some("sha2-256")),
            SigningScheme::AegisTransit => (None, None),
        };
        let batch_input = inputs
            .iter()
            .enumerate()
            .map(|(index, input)| BatchItem {
                input,
                reference: index.to_string(),
            })
            .collect();
        Self {
            batch_input,
            signature_algorithm,
            hash_algorithm,
        }
    }
}

/// Signs `inputs` (standard base64) in one request; one result per input,
/// in order.
async fn sign_batch(shared: &Shared, inputs: &[&str]) -> Vec<Result<String, SignError>> {
    let target = &shared.target;
    let body = SignBatch::new(target.scheme, inputs);
    let path = format!("{}/sign/{}", target.mount, target.key);
    let what = format!("signing with transit key {path}");
    let (body, path) = (&body, path.as_str());
    let answer = target
        .sessions
        .call(&what, |client| async move {
            shared.requests.fetch_add(1, Ordering::Relaxed);
            match post_json(client.as_ref(), path, body).await {
                // Vault answers 400 when an item failed (OpenBao 200); the
                // others still carry their signatures.
                Err(HttpError::Status {
                    code,
                    body: Some(answer),
                    ..
                }) if code != 403 && batch_results(&answer).is_some() => Ok(answer),
                other => other,
            }
        })
        .await;
    let items = match answer {
        Ok(answer) => distribute(&answer, inputs.len(), &what),
        Err(err) => return inputs.iter().map(|_| Err(copy(&err))).collect(),
    };
    items
        .into_iter()
        .map(|item| {
            item.map(|(version, signature)| {
                target.keys.saw_version(version);
                b64url(&signature)
            })
        })
        .collect()
}

/// `data.batch_results` of a Transit answer.
fn batch_results(answer: &Value) -> Option<&Vec<Value>> {
    answer.get("data")?.get("batch_results")?.as_array()
}

/// Splits a batched answer into one result per input: the key version and
/// raw signature, or why that item failed. A malformed answer as a whole
/// (no results, a wrong count, out of order) fails every item.
fn distribute(answer: &Value, count: usize, what: &str) -> Vec<Result<(u64, Vec<u8>), SignError>> {
    let malformed = |reason: String| {
        SignError::Backend(format!("openbao's answer to {what} is malformed: {reason}"))
    };
    let whole = |reason: String| (0..count).map(|_| Err(malformed(reason.clone()))).collect();
    let Some(results) = batch_results(answer) else {
        return whole("it has no data.batch_results".to_owned());
    };
    if results.len() != count {
        return whole(format!(
            "{} batch results for {count} inputs",
            results.len()
        ));
    }
    for (index, item) in results.iter().enumerate() {
        match item.get("reference").and_then(Value::as_str) {
            None | Some("") => {}
            Some(reference) if reference == index.to_string() => {}
            Some(reference) => {
                return whole(format!(
                    "batch result {index} carries reference {reference:?}"
                ))
            }
        }
    }
    results
        .iter()
        .enumerate()
        .map(|(index, item)| {
            if let Some(error) = item
                .get("error")
                .and_then(Value::as_str)
                .filter(|error| !error.is_empty())
            {
                return Err(SignError::Backend(format!(
                    "openbao refused {what} (batch item {index}: {error})"
                )));
            }
            let signature = item
                .get("signature")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    malformed(format!(
                        "batch result {index} has neither a signature nor an error"
                    ))
                })?;
            parse_transit_signature(signature)
                .map_err(|reason| malformed(format!("batch result {index}: {reason}")))
        })
        .collect()
}

/// The same error again, for another caller of a failed batch.
fn copy(err: &SignError) -> SignError {
    match err {
        SignError::Unavailable(message) => SignError::Unavailable(message.clone()),
        SignError::Key(message) => SignError::Key(message.clone()),
        SignError::Backend(message) => SignError::Backend(message.clone()),
    }
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
