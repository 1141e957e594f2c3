//! A typed client for gateways: send a `DecideRequest` through JetStream and get the
//! router's answer back, with safe retries.
//!
//! How a decide call travels (docs/API_CONTRACTS.md): the request is published with
//! JetStream to `beamline.router.v1.decide`, so it is stored and survives a router crash.
//! A plain NATS request would be answered by the stream's PubAck, so the client's reply
//! subject travels in the `Reply-To` header: one inbox per client, and replies are matched
//! to callers by `context.request_id`.
//!
//! Retries are safe because of two keys:
//! - the request's `idempotency_key` (default: its `request_id`) is the same on every
//!   attempt, so a router instance that already decided it answers again byte for byte
//!   from its answer book;
//! - the `Nats-Msg-Id` is new on every attempt, so the stream stores the re-publish
//!   instead of dropping it as a duplicate of a copy that may be stuck on a dead instance.
//!
//! A retry happens when no reply came within the per-attempt timeout, or when the publish
//! got no PubAck (an ambiguous outcome: the request may have been stored anyway). Attempts
//! are bounded and spaced by exponential backoff. A reply that arrives during the backoff,
//! or for an earlier attempt, is accepted: every attempt asks the same question.
//!
//! Repeating a request: reuse its `request_id` and its `idempotency_key`. The router replays
//! the key's first reply byte for byte, `context.request_id` included, so a repeat under a
//! new request id would not be matched to its caller. A request built with a key and no
//! request id gets the key as its request id.
//!
//! The answer book is per router instance (docs/OPERATIONS.md, "Scaling out"): a retry
//! that lands on another instance is decided again, and may name another provider. The
//! caller still gets exactly one reply per call, the first that arrives.

pub mod cli;
pub mod smoke;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Map, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::contracts::subjects::{DECIDE, HEADER_MSG_ID, HEADER_REPLY_TO};
use crate::contracts::{DecideRequest, DecideResponse, ErrorResponse, Task, VERSION};

/// The router's answer to one decide request.
#[derive(Clone, Debug, PartialEq)]
pub enum DecideReply {
    Decision(DecideResponse),
    /// A typed refusal or routing error (`policy_not_found`, `rate_limited`, ...).
    Error(ErrorResponse),
}

impl DecideReply {
    pub fn is_ok(&self) -> bool {
        matches!(self, DecideReply::Decision(_))
    }
}

/// A reply with what it took to get it.
#[derive(Clone, Debug)]
pub struct Answer {
    pub reply: DecideReply,
    /// The reply exactly as the router sent it.
    pub raw: Bytes,
    /// Publishes it took, the first included.
    pub attempts: u32,
    /// The request as sent (request id and idempotency key filled in).
    pub request_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No reply after every attempt. The request may still be decided later (it may be
    /// stored): a new call with the same idempotency key is safe.
    #[error("no reply after {attempts} attempt(s)")]
    Timeout { attempts: u32 },
    /// No attempt was confirmed by JetStream (no decide stream, no connection).
    #[error("publish failed on all {attempts} attempt(s): {message}")]
    Publish { attempts: u32, message: String },
    /// A reply arrived for this request but is not a `DecideResponse` or `ErrorResponse`.
    #[error("cannot decode the reply ({message}): {raw}")]
    Decode { message: String, raw: String },
    /// The request breaks a rule the router would refuse it for anyway.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Subscribing to the reply inbox failed, or the connection closed.
    #[error("nats: {0}")]
    Nats(String),
    /// The client's reply listener stopped (the connection was closed).
    #[error("the client is closed")]
    Closed,
}

/// How one `decide` call waits and retries.
#[derive(Clone, Debug)]
pub struct DecideOptions {
    /// How long each attempt waits for the reply (from its publish).
    pub timeout: Duration,
    /// Publishes at most, the first included (at least 1).
    pub max_attempts: u32,
    /// Pause before the second attempt; doubled for each further one.
    pub backoff_base: Duration,
    /// Upper bound of the pause between attempts.
    pub backoff_max: Duration,
    /// How long a publish waits for its PubAck before it counts as unconfirmed.
    pub publish_timeout: Duration,
}

impl Default for DecideOptions {
    fn default() -> Self {
        DecideOptions {
            timeout: Duration::from_secs(5),
            max_attempts: 4,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
            publish_timeout: Duration::from_secs(5),
        }
    }
}

impl DecideOptions {
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts.max(1);
        self
    }

    /// The pause after attempt `attempt` (1-based) fails: base·2^(attempt−1), capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(20);
        self.backoff_base
            .saturating_mul(1u32 << shift)
            .min(self.backoff_max)
    }
}

/// Builds a `DecideRequest` with the contract's defaults (version "1"; request id and
/// idempotency key filled in by the client when left empty).
#[derive(Clone, Debug)]
pub struct DecideRequestBuilder {
    request: DecideRequest,
}

impl DecideRequestBuilder {
    pub fn new(tenant_id: impl Into<String>, task_type: impl Into<String>) -> Self {
        DecideRequestBuilder {
            request: DecideRequest {
                version: VERSION.to_string(),
                request_id: String::new(),
                tenant_id: tenant_id.into(),
                trace_id: None,
                task: Task {
                    task_type: task_type.into(),
                    payload_ref: None,
                    payload: None,
                },
                policy_id: None,
                constraints: Map::new(),
                metadata: Map::new(),
                push_assignment: false,
                assignment_subject: None,
                options: None,
                idempotency_key: None,
                run_id: None,
                flow_id: None,
                step_id: None,
            },
        }
    }

    pub fn request_id(mut self, id: impl Into<String>) -> Self {
        self.request.request_id = id.into();
        self
    }

    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.request.idempotency_key = Some(key.into());
        self
    }

    pub fn policy_id(mut self, policy: impl Into<String>) -> Self {
        self.request.policy_id = Some(policy.into());
        self
    }

    pub fn trace_id(mut self, trace: impl Into<String>) -> Self {
        self.request.trace_id = Some(trace.into());
        self
    }

    pub fn payload(mut self, payload: Map<String, Value>) -> Self {
        self.request.task.payload = Some(payload);
        self
    }

    pub fn payload_ref(mut self, reference: impl Into<String>) -> Self {
        self.request.task.payload_ref = Some(reference.into());
        self
    }

    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.request.metadata.insert(key.into(), value.into());
        self
    }

    pub fn constraint(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.request.constraints.insert(key.into(), value.into());
        self
    }

    pub fn push_assignment(mut self, push: bool) -> Self {
        self.request.push_assignment = push;
        self
    }

    pub fn build(self) -> DecideRequest {
        self.request
    }
}

impl From<DecideRequestBuilder> for DecideRequest {
    fn from(builder: DecideRequestBuilder) -> Self {
        builder.build()
    }
}

/// Counters of one client, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    pub publishes: u64,
    /// Publishes after the first of a call.
    pub republishes: u64,
    /// Publishes whose PubAck did not arrive in time or was an error.
    pub unconfirmed_publishes: u64,
    /// Replies handed to a waiting call.
    pub replies: u64,
    /// Replies nobody waited for: a late duplicate (a redelivery, a retry answered
    /// twice) or a reply for another client's request.
    pub unmatched_replies: u64,
}

#[derive(Default)]
struct Counters {
    publishes: AtomicU64,
    republishes: AtomicU64,
    unconfirmed: AtomicU64,
    replies: AtomicU64,
    unmatched: AtomicU64,
}

type Waiters = Arc<Mutex<BTreeMap<String, Vec<oneshot::Sender<Bytes>>>>>;

/// One connection's decide client. Cheap to share behind an `Arc`; calls may run
/// concurrently. Dropping it stops its reply listener.
pub struct DecideClient {
    js: jetstream::Context,
    subject: String,
    inbox: String,
    /// Unique per client: prefixes generated request ids and message ids.
    nonce: String,
    seq: AtomicU64,
    waiters: Waiters,
    counters: Arc<Counters>,
    listener: JoinHandle<()>,
}

impl Drop for DecideClient {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl DecideClient {
    /// Subscribe to a fresh inbox and start listening for replies. Requests go to
    /// `beamline.router.v1.decide`.
    pub async fn connect(client: async_nats::Client) -> Result<DecideClient, ClientError> {
        Self::with_subject(client, DECIDE).await
    }

    pub async fn with_subject(
        client: async_nats::Client,
        subject: impl Into<String>,
    ) -> Result<DecideClient, ClientError> {
        let inbox = client.new_inbox();
        let mut replies = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| ClientError::Nats(e.to_string()))?;
        // The subscription must reach the server before the first reply can.
        client
            .flush()
            .await
            .map_err(|e| ClientError::Nats(e.to_string()))?;
        let nonce = inbox.rsplit('.').next().unwrap_or("client").to_string();
        let waiters: Waiters = Arc::default();
        let counters = Arc::new(Counters::default());
        let listener = tokio::spawn({
            let (waiters, counters) = (waiters.clone(), counters.clone());
            async move {
                while let Some(message) = replies.next().await {
                    let senders =
                        request_id_of(&message.payload).and_then(|id| lock(&waiters).remove(&id));
                    match senders {
                        Some(senders) => {
                            counters.replies.fetch_add(1, Ordering::Relaxed);
                            for sender in senders {
                                let _ = sender.send(message.payload.clone());
                            }
                        }
                        None => {
                            counters.unmatched.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                // The subscription ended: wake every caller with `Closed`.
                lock(&waiters).clear();
            }
        });
        Ok(DecideClient {
            js: jetstream::new(client),
            subject: subject.into(),
            inbox,
            nonce,
            seq: AtomicU64::new(0),
            waiters,
            counters,
            listener,
        })
    }

    /// The subject replies come back on (the `Reply-To` of every request).
    pub fn inbox(&self) -> &str {
        &self.inbox
    }

    pub fn stats(&self) -> ClientStats {
        let c = &self.counters;
        ClientStats {
            publishes: c.publishes.load(Ordering::Relaxed),
            republishes: c.republishes.load(Ordering::Relaxed),
            unconfirmed_publishes: c.unconfirmed.load(Ordering::Relaxed),
            replies: c.replies.load(Ordering::Relaxed),
            unmatched_replies: c.unmatched.load(Ordering::Relaxed),
        }
    }

    /// Send `request` and return the router's typed answer.
    pub async fn decide(
        &self,
        request: impl Into<DecideRequest>,
        opts: &DecideOptions,
    ) -> Result<DecideReply, ClientError> {
        self.decide_raw(request, opts).await.map(|a| a.reply)
    }

    /// Like [`decide`](Self::decide), keeping the reply's bytes and the attempt count.
    pub async fn decide_raw(
        &self,
        request: impl Into<DecideRequest>,
        opts: &DecideOptions,
    ) -> Result<Answer, ClientError> {
        let mut request: DecideRequest = request.into();
        if request.request_id.is_empty() {
            request.request_id = match &request.idempotency_key {
                // The router replays a key's first reply byte for byte, `context.request_id`
                // included: a repeat must carry the same request id to be matched.
                Some(key) => key.clone(),
                None => {
                    let n = self.seq.fetch_add(1, Ordering::Relaxed);
                    format!("{}-r{n}", self.nonce)
                }
            };
        }
        prepare(&mut request)?;
        let payload = Bytes::from(
            serde_json::to_vec(&request).map_err(|e| ClientError::InvalidRequest(e.to_string()))?,
        );
        let request_id = request.request_id.clone();

        let (tx, rx) = oneshot::channel();
        lock(&self.waiters)
            .entry(request_id.clone())
            .or_default()
            .push(tx);
        // Removes this call's waiter however the call ends (reply, error, cancellation).
        let mut waiter = Waiter {
            rx,
            waiters: &self.waiters,
            request_id: &request_id,
        };
        let rx = &mut waiter.rx;

        let max_attempts = opts.max_attempts.max(1);
        let mut confirmed_any = false;
        let mut last_publish_error = String::new();
        for attempt in 1..=max_attempts {
            if attempt > 1 {
                self.counters.republishes.fetch_add(1, Ordering::Relaxed);
            }
            let started = tokio::time::Instant::now();
            let n = self.seq.fetch_add(1, Ordering::Relaxed);
            let msg_id = message_id(&self.nonce, &request_id, attempt, n);
            match self
                .publish(payload.clone(), &msg_id, opts.publish_timeout)
                .await
            {
                Ok(()) => confirmed_any = true,
                Err(message) => {
                    self.counters.unconfirmed.fetch_add(1, Ordering::Relaxed);
                    last_publish_error = message;
                }
            }
            // Wait for the reply until this attempt's deadline (a reply may also have
            // arrived while the PubAck was awaited: the oneshot keeps it).
            let wait = tokio::time::timeout_at(started + opts.timeout, &mut *rx).await;
            if let Some(answer) = take(wait, &request_id, attempt)? {
                return Ok(answer);
            }
            if attempt < max_attempts {
                let pause = tokio::time::timeout(opts.backoff(attempt), &mut *rx).await;
                if let Some(answer) = take(pause, &request_id, attempt)? {
                    return Ok(answer);
                }
            }
        }
        if confirmed_any {
            Err(ClientError::Timeout {
                attempts: max_attempts,
            })
        } else {
            Err(ClientError::Publish {
                attempts: max_attempts,
                message: last_publish_error,
            })
        }
    }

    /// Publish one copy and wait for its PubAck. `Err` is ambiguous: the copy may still
    /// be stored (the client buffers publishes across a reconnect).
    async fn publish(&self, payload: Bytes, msg_id: &str, timeout: Duration) -> Result<(), String> {
        self.counters.publishes.fetch_add(1, Ordering::Relaxed);
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_REPLY_TO, self.inbox.as_str());
        headers.insert(HEADER_MSG_ID, msg_id);
        let confirmed = tokio::time::timeout(timeout, async {
            let ack = self
                .js
                .publish_with_headers(self.subject.clone(), headers, payload)
                .await
                .map_err(|e| e.to_string())?;
            ack.await.map_err(|e| e.to_string())
        })
        .await;
        match confirmed {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(message)) => Err(message),
            Err(_) => Err(format!("no PubAck within {timeout:?}")),
        }
    }
}

/// Turn the outcome of waiting on the reply channel into an answer, nothing yet, or
/// `Closed`.
fn take(
    waited: Result<Result<Bytes, oneshot::error::RecvError>, tokio::time::error::Elapsed>,
    request_id: &str,
    attempts: u32,
) -> Result<Option<Answer>, ClientError> {
    match waited {
        Err(_elapsed) => Ok(None),
        Ok(Err(_closed)) => Err(ClientError::Closed),
        Ok(Ok(raw)) => Ok(Some(Answer {
            reply: decode_reply(&raw)?,
            raw,
            attempts,
            request_id: request_id.to_string(),
        })),
    }
}

/// One call's reply channel; on drop it leaves the waiter table (with the entry of its
/// request id, once no other call waits on it).
struct Waiter<'a> {
    rx: oneshot::Receiver<Bytes>,
    waiters: &'a Waiters,
    request_id: &'a str,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.rx.close();
        let mut waiters = lock(self.waiters);
        if let Some(senders) = waiters.get_mut(self.request_id) {
            senders.retain(|s| !s.is_closed());
            if senders.is_empty() {
                waiters.remove(self.request_id);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves a map that is still consistent.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Fill in the defaults the client owns and check what the router would refuse anyway.
pub fn prepare(request: &mut DecideRequest) -> Result<(), ClientError> {
    if request.request_id.is_empty() || request.request_id.len() > 255 {
        return Err(ClientError::InvalidRequest(
            "request_id must be 1-255 bytes".into(),
        ));
    }
    if request.tenant_id.is_empty() {
        return Err(ClientError::InvalidRequest("tenant_id is empty".into()));
    }
    if request.version.is_empty() {
        request.version = VERSION.to_string();
    }
    let key = request
        .idempotency_key
        .get_or_insert_with(|| request.request_id.clone());
    if key.is_empty() || key.len() > 256 {
        return Err(ClientError::InvalidRequest(
            "idempotency_key must be 1-256 bytes".into(),
        ));
    }
    Ok(())
}

/// A `Nats-Msg-Id` unique per publish: the client's nonce, the request, the attempt and
/// a per-client sequence (two calls with the same request id must not collide).
pub fn message_id(nonce: &str, request_id: &str, attempt: u32, seq: u64) -> String {
    format!("{nonce}.{seq}.{request_id}.a{attempt}")
}

/// The `context.request_id` of a reply, the key replies are matched by.
pub fn request_id_of(reply: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Ctx {
        request_id: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Envelope {
        context: Option<Ctx>,
    }
    serde_json::from_slice::<Envelope>(reply)
        .ok()?
        .context?
        .request_id
}

/// Decode a reply by its `ok` field.
pub fn decode_reply(raw: &[u8]) -> Result<DecideReply, ClientError> {
    let fail = |message: String| ClientError::Decode {
        message,
        raw: String::from_utf8_lossy(raw).chars().take(512).collect(),
    };
    let value: Value = serde_json::from_slice(raw).map_err(|e| fail(e.to_string()))?;
    match value.get("ok") {
        Some(Value::Bool(true)) => serde_json::from_value(value)
            .map(DecideReply::Decision)
            .map_err(|e| fail(e.to_string())),
        Some(Value::Bool(false)) => serde_json::from_value(value)
            .map(DecideReply::Error)
            .map_err(|e| fail(e.to_string())),
        _ => Err(fail("no boolean `ok` field".into())),
    }
}

#[cfg(test)]
mod tests;
