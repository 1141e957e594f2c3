//! Background tasks that read state off the server and hand it to the driver as core
//! inputs, over the same bounded channel the publish outcomes use:
//!
//! - the decide consumer's pending count (`Input::ConsumerPending`), for backpressure;
//! - messages the server gave up on (`Input::Exhausted`): nats-server announces them on
//!   `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>`, and the task
//!   reads the message back from the stream, since its last delivery may never have
//!   reached the core.
//!
//! Advisories are plain NATS messages: one published while the router is disconnected
//! is lost. The message then stays in the stream unsettled; nothing else is lost.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer};
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::headers::headers_of;
use crate::core::{Exhausted, Input};

/// Read the consumer's `num_pending` every `every` and report it.
pub fn spawn_pending_poller(
    mut consumer: PullConsumer,
    every: Duration,
    inputs: mpsc::Sender<Input>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match consumer.info().await {
                Ok(info) => {
                    let pending = info.num_pending;
                    if inputs
                        .send(Input::ConsumerPending { pending })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                // Disconnected or slow server: the core keeps the last value and knows
                // how old it is.
                Err(err) => tracing::debug!(%err, "cannot read consumer info"),
            }
        }
    })
}

/// The fields of nats-server's `io.nats.jetstream.advisory.v1.max_deliver` we need.
#[derive(Debug, Deserialize)]
struct MaxDeliveriesAdvisory {
    stream_seq: u64,
    deliveries: u64,
}

pub fn max_deliveries_subject(stream: &str, consumer: &str) -> String {
    format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{consumer}")
}

/// Subscribe to a consumer's MAX_DELIVERIES advisories and report each given-up
/// message, read back from the stream.
pub async fn spawn_exhausted_watcher(
    client: async_nats::Client,
    js: jetstream::Context,
    stream_name: &str,
    consumer: &str,
    inputs: mpsc::Sender<Input>,
) -> anyhow::Result<JoinHandle<()>> {
    let mut advisories = client
        .subscribe(max_deliveries_subject(stream_name, consumer))
        .await?;
    let stream = js.get_stream(stream_name).await?;
    Ok(tokio::spawn(async move {
        while let Some(message) = advisories.next().await {
            let advisory: MaxDeliveriesAdvisory = match serde_json::from_slice(&message.payload) {
                Ok(a) => a,
                Err(err) => {
                    tracing::warn!(%err, "unreadable MAX_DELIVERIES advisory");
                    continue;
                }
            };
            let seq = advisory.stream_seq;
            match stream.get_raw_message(seq).await {
                Ok(original) => {
                    tracing::info!(
                        stream_seq = seq,
                        deliveries = advisory.deliveries,
                        "server gave up on a message"
                    );
                    let input = Input::Exhausted(Exhausted {
                        subject: original.subject.to_string(),
                        headers: headers_of(Some(&original.headers)),
                        payload: original.payload.to_vec(),
                        stream_seq: seq,
                        deliveries: advisory.deliveries,
                    });
                    if inputs.send(input).await.is_err() {
                        return;
                    }
                }
                // Deleted or aged out in between: nothing left to dead-letter.
                Err(err) => tracing::warn!(%err, stream_seq = seq, "given-up message not readable"),
            }
        }
    }))
}
