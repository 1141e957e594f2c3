//! Performs the core's publishes, requests and shared-bucket operations (the host's
//! `Action::Io`), one tokio task each, so that a slow or disconnected server never
//! blocks the driver loop. Each task reports one `PublishDone`, `RequestDone` or
//! `KvDone` event back to the host. The host holds every operation to its deadline
//! and decides when one timed out; a task gives up at the same deadline only to free
//! what it holds, and an outcome it reports late is dropped by the host.
//!
//! Outcomes:
//! - `Core`: confirmed once `flush` returns, i.e. the bytes reached the server's socket.
//!   Core publishes go to one flusher task that confirms a whole batch with one flush.
//!   async-nats 0.51 holds a flush while disconnected and completes it after the
//!   reconnect, so the timeout is what turns an outage into `Failed`.
//! - `JetStream`: confirmed by the stream's PubAck. A timeout is ambiguous (the
//!   message may have been stored); the core retries with the same `Nats-Msg-Id`, which
//!   the stream's duplicate window drops.
//! - `Request` (extension calls): the reply, `Timeout` after the core's `timeout_ms`, or
//!   `Failed` (no responders, connection trouble).
//! - `Kv`: `Create` (shared answers) -> `Created`, or `Exists` with the value already
//!   there; `Get` (sticky sessions) -> `Found` or `Missing`; `Put` -> `Stored`; any of
//!   them `Failed` (timeout, no bucket, connection trouble). A failure is ambiguous, and
//!   the core treats it so.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use tokio::sync::mpsc;

use super::headers::header_map_of;
use super::HostEvent;
use crate::core::{
    Headers, KvOp, KvOutcome, Publish, PublishKind, PublishOutcome, RequestId, RequestOutcome,
};

#[derive(Clone)]
pub struct Publisher {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    inputs: mpsc::Sender<HostEvent>,
    /// The shared answer bucket, when `state.backend = "kv"`.
    answers: Option<kv::Store>,
    /// Core publishes (replies) for the flusher task, which confirms them in batches.
    core: mpsc::Sender<(Publish, Duration)>,
}

/// Core publishes queued for the flusher; beyond this a publish gets a task of its own.
const CORE_QUEUE_BOUND: usize = 4096;
/// Core publishes confirmed by one flush at most.
const CORE_BATCH: usize = 256;

impl Publisher {
    pub fn new(
        client: async_nats::Client,
        jetstream: jetstream::Context,
        inputs: mpsc::Sender<HostEvent>,
    ) -> Self {
        let (core, queue) = mpsc::channel(CORE_QUEUE_BOUND);
        tokio::spawn(run_flusher(client.clone(), queue, inputs.clone()));
        Publisher {
            client,
            jetstream,
            inputs,
            answers: None,
            core,
        }
    }

    /// Perform shared-bucket operations against `store`.
    pub fn with_answer_bucket(mut self, store: kv::Store) -> Self {
        self.answers = Some(store);
        self
    }

    /// Start one shared-bucket operation and return at once; its outcome comes back as
    /// `HostEvent::KvDone`.
    pub fn spawn_kv(&self, id: RequestId, op: KvOp, timeout: Duration) {
        let this = self.clone();
        tokio::spawn(async move {
            let create = matches!(op, KvOp::Create { .. });
            let outcome = match tokio::time::timeout(timeout, this.kv(op)).await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(reason)) => KvOutcome::Failed { reason },
                Err(_) => KvOutcome::Failed {
                    reason: format!("no answer within {} ms", timeout.as_millis()),
                },
            };
            if let KvOutcome::Failed { reason } = &outcome {
                if create {
                    tracing::warn!(claim = id, %reason, "shared answer claim failed");
                } else {
                    tracing::debug!(access = id, %reason, "shared bucket access failed");
                }
            }
            let _ = this.inputs.send(HostEvent::KvDone { id, outcome }).await;
        });
    }

    async fn kv(&self, op: KvOp) -> Result<KvOutcome, String> {
        let Some(store) = &self.answers else {
            return Err("no shared bucket configured".to_string());
        };
        match op {
            KvOp::Create { key, value } => match store.create(&key, value.into()).await {
                Ok(_) => Ok(KvOutcome::Created),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    match store.get(&key).await {
                        Ok(Some(value)) => Ok(KvOutcome::Exists {
                            value: value.to_vec(),
                        }),
                        // Expired or purged between the two calls: claim again later.
                        Ok(None) => Err("entry vanished after the create refused".to_string()),
                        Err(e) => Err(format!("kv get: {e}")),
                    }
                }
                Err(e) => Err(format!("kv create: {e}")),
            },
            KvOp::Get { key } => match store.get(&key).await {
                Ok(Some(v)) => Ok(KvOutcome::Found { value: v.to_vec() }),
                Ok(None) => Ok(KvOutcome::Missing),
                Err(e) => Err(format!("kv get: {e}")),
            },
            KvOp::Put { key, value } => store
                .put(&key, value.into())
                .await
                .map(|_| KvOutcome::Stored)
                .map_err(|e| format!("kv put: {e}")),
        }
    }

    /// Replies waiting for the flusher, and the queue's bound (a gauge).
    pub fn reply_queue(&self) -> (u64, u64) {
        let bound = self.core.max_capacity();
        ((bound - self.core.capacity()) as u64, bound as u64)
    }

    /// Start the publish and return at once. The inputs channel is bounded; the number
    /// of publishes in flight is bounded by the core (at most a few per held message).
    pub fn spawn_publish(&self, publish: Publish, timeout: Duration) {
        // Core publishes share one flush per batch (one write, one round trip to the
        // connection task) instead of a task and a flush each.
        let publish = match publish.kind {
            PublishKind::Core => match self.core.try_send((publish, timeout)) {
                Ok(()) => return,
                Err(
                    mpsc::error::TrySendError::Full((p, _))
                    | mpsc::error::TrySendError::Closed((p, _)),
                ) => p,
            },
            PublishKind::JetStream => publish,
        };
        let this = self.clone();
        tokio::spawn(async move {
            let id = publish.id;
            let outcome = this.run(publish, timeout).await;
            if let PublishOutcome::Failed { reason } = &outcome {
                tracing::warn!(publish = id, %reason, "publish failed");
            }
            // The receiver is gone only when the driver has stopped: nobody is left to tell.
            let _ = this
                .inputs
                .send(HostEvent::PublishDone { id, outcome })
                .await;
        });
    }

    /// Start a core NATS request (an extension call) and return at once.
    pub fn spawn_request(
        &self,
        id: RequestId,
        subject: String,
        headers: Headers,
        payload: Vec<u8>,
        timeout: Duration,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            let outcome = this.request(subject, &headers, payload, timeout).await;
            if !matches!(outcome, RequestOutcome::Reply { .. }) {
                tracing::debug!(request = id, ?outcome, "request not answered");
            }
            let _ = this
                .inputs
                .send(HostEvent::RequestDone { id, outcome })
                .await;
        });
    }

    async fn request(
        &self,
        subject: String,
        headers: &Headers,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> RequestOutcome {
        let headers = match header_map_of(headers, None) {
            Ok(headers) => headers,
            Err(reason) => return RequestOutcome::Failed { reason },
        };
        let request = async_nats::Request::new()
            .headers(headers)
            .payload(payload.into())
            .timeout(Some(timeout));
        // The client enforces the timeout; the outer one covers time spent queued
        // behind a disconnected connection.
        let outcome =
            tokio::time::timeout(timeout, self.client.send_request(subject, request)).await;
        match outcome {
            Ok(Ok(reply)) => RequestOutcome::Reply {
                payload: reply.payload.to_vec(),
            },
            Err(_) => RequestOutcome::Timeout,
            Ok(Err(err)) => match err.kind() {
                async_nats::RequestErrorKind::TimedOut => RequestOutcome::Timeout,
                async_nats::RequestErrorKind::NoResponders => RequestOutcome::Failed {
                    reason: "no responders".to_string(),
                },
                _ => RequestOutcome::Failed {
                    reason: err.to_string(),
                },
            },
        }
    }

    async fn run(&self, publish: Publish, timeout: Duration) -> PublishOutcome {
        let headers = match header_map_of(&publish.headers, publish.msg_id.as_deref()) {
            Ok(headers) => headers,
            Err(reason) => return PublishOutcome::Failed { reason },
        };
        let payload = bytes::Bytes::from(publish.payload);
        let subject = publish.subject;
        let attempt = async {
            match publish.kind {
                PublishKind::Core => {
                    self.client
                        .publish_with_headers(subject, headers, payload)
                        .await
                        .map_err(|e| format!("publish: {e}"))?;
                    self.client.flush().await.map_err(|e| format!("flush: {e}"))
                }
                PublishKind::JetStream => {
                    let ack = self
                        .jetstream
                        .publish_with_headers(subject, headers, payload)
                        .await
                        .map_err(|e| format!("jetstream publish: {e}"))?;
                    ack.await
                        .map(|_| ())
                        .map_err(|e| format!("jetstream puback: {e}"))
                }
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(())) => PublishOutcome::Confirmed,
            Ok(Err(reason)) => PublishOutcome::Failed { reason },
            Err(_) => PublishOutcome::Failed {
                reason: format!("no confirmation within {} ms", timeout.as_millis()),
            },
        }
    }
}

/// Core publishes, in batches: publish everything queued (up to `CORE_BATCH`), flush
/// once, and confirm them all, or fail them all if the flush did not complete within
/// the batch's shortest time-out. Under load a batch is many replies; when idle, one.
async fn run_flusher(
    client: async_nats::Client,
    mut queue: mpsc::Receiver<(Publish, Duration)>,
    inputs: mpsc::Sender<HostEvent>,
) {
    let mut batch = Vec::with_capacity(CORE_BATCH);
    while queue.recv_many(&mut batch, CORE_BATCH).await > 0 {
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut sent = Vec::with_capacity(batch.len());
        let timeout = batch.iter().map(|(_, t)| *t).min().unwrap_or_default();
        for (publish, _) in batch.drain(..) {
            let headers = match header_map_of(&publish.headers, publish.msg_id.as_deref()) {
                Ok(headers) => headers,
                Err(reason) => {
                    outcomes.push((publish.id, PublishOutcome::Failed { reason }));
                    continue;
                }
            };
            let subject = publish.subject;
            let payload = bytes::Bytes::from(publish.payload);
            let queued = tokio::time::timeout(
                timeout,
                client.publish_with_headers(subject, headers, payload),
            )
            .await;
            match queued {
                Ok(Ok(())) => sent.push(publish.id),
                Ok(Err(e)) => outcomes.push((
                    publish.id,
                    PublishOutcome::Failed {
                        reason: format!("publish: {e}"),
                    },
                )),
                Err(_) => outcomes.push((
                    publish.id,
                    PublishOutcome::Failed {
                        reason: format!("not queued within {} ms", timeout.as_millis()),
                    },
                )),
            }
        }
        if !sent.is_empty() {
            let flushed = match tokio::time::timeout(timeout, client.flush()).await {
                Ok(Ok(())) => PublishOutcome::Confirmed,
                Ok(Err(e)) => PublishOutcome::Failed {
                    reason: format!("flush: {e}"),
                },
                Err(_) => PublishOutcome::Failed {
                    reason: format!("no flush within {} ms", timeout.as_millis()),
                },
            };
            outcomes.extend(sent.into_iter().map(|id| (id, flushed.clone())));
        }
        for (id, outcome) in outcomes {
            if let PublishOutcome::Failed { reason } = &outcome {
                tracing::warn!(publish = id, %reason, "publish failed");
            }
            // The receiver is gone only when the driver has stopped.
            if inputs
                .send(HostEvent::PublishDone { id, outcome })
                .await
                .is_err()
            {
                return;
            }
        }
    }
}
