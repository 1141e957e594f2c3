//! The two request paths the bench compares, behind one interface ([`Target`]): `send`
//! publishes request `seq`, and `done` yields `(seq, instant)` when it completed.
//!
//! - raw: JetStream alone. A durable pull consumer with the router's batch and
//!   `max_ack_pending` takes the message and acks it; receipt is completion.
//! - router: the decide subject; the router's reply on the bench's `Reply-To` inbox is
//!   completion.
//!
//! Both publish the same request bytes and headers, the PubAck awaited off the loop as a
//! gateway does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::traffic::{decide_request, spawn_counted_publish};
use super::{
    DUPLICATE_WINDOW, MAX_ACK_PENDING, PULL_BATCH, RAW_CONSUMER, RAW_STREAM, RAW_SUBJECT, TENANT,
};
use crate::contracts::subjects::{DECIDE, HEADER_MSG_ID, HEADER_REPLY_TO};
use crate::shell::cluster::{stream_replicas, ClusterView};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PathKind {
    Raw,
    Router,
}

impl PathKind {
    pub fn name(self) -> &'static str {
        match self {
            PathKind::Raw => "raw",
            PathKind::Router => "router",
        }
    }
}

/// Publishes requests of one path and reports each completion as (sequence, instant).
pub(super) struct Target {
    pub path: PathKind,
    pub js: jetstream::Context,
    pub subject: &'static str,
    pub inbox: String,
    /// Prefix of every request id of this run: `<run>-<seq>`.
    pub run: String,
    pub done: mpsc::UnboundedReceiver<(u64, Instant)>,
    pub unconfirmed: Arc<AtomicU64>,
    pub error_replies: Arc<AtomicU64>,
    pub worker: tokio::task::JoinHandle<()>,
    /// Raw only: drop the pull and pull afresh.
    pub repull: Option<mpsc::UnboundedSender<()>>,
    /// Raw only: the consumer, to show its state when the pull stalls.
    pub consumer: Option<consumer::PullConsumer>,
}

/// The raw path's pull: the router's default settings (`driver::pull_stream`).
async fn raw_pull(consumer: &consumer::PullConsumer) -> anyhow::Result<consumer::pull::Stream> {
    Ok(consumer
        .stream()
        .max_messages_per_batch(PULL_BATCH)
        .heartbeat(Duration::from_secs(1))
        .expires(Duration::from_secs(30))
        .messages()
        .await?)
}

/// The `<seq>` of the first `<run>-<seq>` in `payload`.
fn seq_of(payload: &[u8], marker: &[u8]) -> Option<u64> {
    let at = payload.windows(marker.len()).position(|w| w == marker)? + marker.len();
    let digits = payload[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&payload[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

impl Target {
    pub async fn raw(client: &async_nats::Client, run: &str) -> anyhow::Result<Target> {
        let js = jetstream::new(client.clone());
        let _ = js.delete_stream(RAW_STREAM).await;
        // As many replicas as the router gives its streams here, or the comparison is
        // of R1 against R3.
        let info = client.server_info();
        let cluster = ClusterView::new(info.cluster.as_deref(), &info.connect_urls);
        let replicas = stream_replicas(0, &cluster).value as usize;
        let stream = js
            .create_stream(stream::Config {
                name: RAW_STREAM.to_string(),
                subjects: vec![RAW_SUBJECT.to_string()],
                storage: stream::StorageType::File,
                retention: stream::RetentionPolicy::Limits,
                max_age: Duration::from_secs(3600),
                duplicate_window: DUPLICATE_WINDOW,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .context("cannot create the raw stream")?;
        let consumer: consumer::PullConsumer = stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(RAW_CONSUMER.to_string()),
                filter_subject: RAW_SUBJECT.to_string(),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_deliver: 5,
                max_ack_pending: MAX_ACK_PENDING,
                ..Default::default()
            })
            .await
            .context("cannot create the raw consumer")?;
        let (tx, rx) = mpsc::unbounded_channel();
        let marker = format!("{run}-").into_bytes();
        let mut messages = raw_pull(&consumer).await?;
        let consumer_for_info = consumer.clone();
        let (repull, mut repull_rx) = mpsc::unbounded_channel::<()>();
        let worker = tokio::spawn(async move {
            loop {
                loop {
                    let item = tokio::select! {
                        item = messages.next() => item,
                        Some(()) = repull_rx.recv() => break,
                    };
                    let Some(item) = item else { break };
                    let message = match item {
                        Ok(message) => message,
                        // Neither messages nor heartbeats: async-nats holds no pull at
                        // the server and would wait for its 30 s expiry (the router's
                        // driver does the same, `restart_stalled_pull`). Pull afresh.
                        Err(err)
                            if err.kind()
                                == consumer::pull::MessagesErrorKind::MissingHeartbeat =>
                        {
                            eprintln!("bench: raw pull: {err}; pulling afresh");
                            break;
                        }
                        Err(err) => {
                            eprintln!("bench: raw pull error: {err}");
                            continue;
                        }
                    };
                    let seq = seq_of(&message.payload, &marker);
                    let at = Instant::now();
                    if let Err(err) = message.ack().await {
                        tracing::warn!(%err, "raw ack failed");
                    }
                    if let Some(seq) = seq {
                        let _ = tx.send((seq, at));
                    }
                }
                match raw_pull(&consumer).await {
                    Ok(fresh) => messages = fresh,
                    Err(err) => {
                        eprintln!("bench: raw pull cannot restart: {err}");
                        return;
                    }
                }
            }
        });
        Ok(Target {
            path: PathKind::Raw,
            js,
            subject: RAW_SUBJECT,
            inbox: client.new_inbox(),
            run: run.to_string(),
            done: rx,
            unconfirmed: Arc::default(),
            error_replies: Arc::default(),
            worker,
            repull: Some(repull),
            consumer: Some(consumer_for_info),
        })
    }

    pub async fn router(client: &async_nats::Client, run: &str) -> anyhow::Result<Target> {
        let js = jetstream::new(client.clone());
        let inbox = client.new_inbox();
        let mut replies = client.subscribe(inbox.clone()).await?;
        client.flush().await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let marker = format!("{run}-").into_bytes();
        let error_replies = Arc::new(AtomicU64::new(0));
        let errors = error_replies.clone();
        let worker = tokio::spawn(async move {
            while let Some(reply) = replies.next().await {
                let at = Instant::now();
                if !reply.payload.starts_with(b"{\"ok\":true") {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(seq) = seq_of(&reply.payload, &marker) {
                    let _ = tx.send((seq, at));
                }
            }
        });
        Ok(Target {
            path: PathKind::Router,
            js,
            subject: DECIDE,
            inbox,
            run: run.to_string(),
            done: rx,
            unconfirmed: Arc::default(),
            error_replies,
            worker,
            repull: None,
            consumer: None,
        })
    }

    /// Publish request `seq`; the PubAck is awaited in a task of its own, as a gateway does.
    pub fn send(&self, seq: u64) {
        let request_id = format!("{}-{seq}", self.run);
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_REPLY_TO, self.inbox.as_str());
        headers.insert(HEADER_MSG_ID, request_id.as_str());
        let payload = Bytes::from(decide_request(&request_id, TENANT, seq as usize));
        spawn_counted_publish(
            self.js.clone(),
            self.subject.to_string(),
            headers,
            payload,
            Duration::from_secs(10),
            self.unconfirmed.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_is_found_after_the_run_marker() {
        let reply = br#"{"ok":true,"context":{"request_id":"benchab12-4711"},"x":"benchab12-9"}"#;
        assert_eq!(seq_of(reply, b"benchab12-"), Some(4711));
        assert_eq!(seq_of(reply, b"other-"), None);
    }
}
