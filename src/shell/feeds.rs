//! Reads of server state the host asks for, one task each, reported back as host events
//! over the same bounded channel the publish outcomes use:
//!
//! - `ReadPending`: the decide consumer's pending count (`Event::Pending`), for
//!   backpressure; a failed read reports nothing (the core keeps the last value and
//!   knows how old it is);
//! - `Fetch`: a message read back from its stream by sequence (`Event::Fetched`), for
//!   a MAX_DELIVERIES advisory (the host's `advisories` module says why).

use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer};
use tokio::sync::mpsc;

use super::headers::headers_of;
use super::HostEvent;
use crate::host::Fetched;

/// Read the consumer's `num_pending` once and report it.
pub fn spawn_read_pending(
    mut consumer: PullConsumer,
    timeout: Duration,
    events: mpsc::Sender<HostEvent>,
) {
    tokio::spawn(async move {
        match tokio::time::timeout(timeout, consumer.info()).await {
            Ok(Ok(info)) => {
                let pending = info.num_pending;
                let _ = events.send(HostEvent::Pending { pending }).await;
            }
            Ok(Err(err)) => tracing::debug!(%err, "cannot read consumer info"),
            Err(_) => tracing::debug!("consumer info timed out"),
        }
    });
}

/// Read message `seq` of `stream` and report it as `Event::Fetched { id }`.
pub fn spawn_fetch(
    stream: jetstream::stream::Stream,
    id: u64,
    seq: u64,
    timeout: Duration,
    events: mpsc::Sender<HostEvent>,
) {
    tokio::spawn(async move {
        let message = match tokio::time::timeout(timeout, stream.get_raw_message(seq)).await {
            Ok(Ok(original)) => {
                tracing::info!(
                    stream_seq = seq,
                    "server gave up on a message; read it back"
                );
                Fetched::Found {
                    subject: original.subject.to_string(),
                    headers: headers_of(Some(&original.headers)),
                    payload: original.payload.to_vec(),
                }
            }
            Ok(Err(err))
                if err.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound =>
            {
                tracing::warn!(%err, stream_seq = seq, "given-up message not in the stream any more");
                Fetched::Gone
            }
            Ok(Err(err)) => {
                tracing::warn!(%err, stream_seq = seq, "cannot read a given-up message; retrying");
                Fetched::Failed
            }
            Err(_) => Fetched::Failed,
        };
        let _ = events.send(HostEvent::Fetched { id, message }).await;
    });
}
