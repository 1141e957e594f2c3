//! A model of the parts of NATS JetStream the router relies on, written from nats-server's
//! behaviour (`server/consumer.go`, `server/stream.go` at v2.9.10, and the measurements in
//! docs/BACKGROUND.md, "nats-server"): streams that capture subjects with publish dedupe
//! by `Nats-Msg-Id`, and durable pull consumers with explicit ack.
//!
//! The model is pure: it never schedules anything itself. The world asks it for the next
//! deadline and for deliveries, and feeds it acks; that keeps it unit-testable on its own.

mod cluster;
mod consumer;
mod kv;
mod stream;

pub use cluster::{Cluster, KV_GROUP};

pub use consumer::{
    AckKind, AckResult, Advisory, Consumer, ConsumerConfig, Delivered, MessageState,
};
pub use kv::{KvBucket, KvCreate};
pub use stream::{PubAck, StoredMessage, Stream, StreamConfig};

use std::collections::BTreeMap;

/// The server: streams by name, durable consumers by name (each bound to one stream).
#[derive(Debug, Default)]
pub struct JetStream {
    streams: BTreeMap<String, Stream>,
    consumers: BTreeMap<String, Consumer>,
}

impl JetStream {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add_stream(&mut self, config: StreamConfig) {
        self.streams
            .insert(config.name.clone(), Stream::new(config));
    }

    /// A durable consumer on `stream`, delivering from its first message (DeliverAll).
    pub fn add_consumer(&mut self, stream: &str, config: ConsumerConfig) {
        assert!(self.streams.contains_key(stream), "no stream {stream}");
        self.consumers
            .insert(config.durable.clone(), Consumer::new(stream, config));
    }

    /// Store a message in the stream that captures `subject`, if any. `None` means no
    /// stream listens: a JetStream publish then fails with "no responders".
    pub fn publish(
        &mut self,
        now: u64,
        subject: &str,
        headers: &[(String, String)],
        payload: &[u8],
    ) -> Option<PubAck> {
        let stream = self.streams.values_mut().find(|s| s.captures(subject))?;
        Some(stream.publish(now, subject, headers, payload))
    }

    /// The name of the stream that captures `subject`, if any.
    pub fn stream_capturing(&self, subject: &str) -> Option<&str> {
        self.streams
            .values()
            .find(|s| s.captures(subject))
            .map(Stream::name)
    }

    /// Stream names, then durable names: the cluster's groups (with the KV bucket's).
    pub fn group_names(&self) -> Vec<&str> {
        self.streams
            .keys()
            .chain(self.consumers.keys())
            .map(String::as_str)
            .collect()
    }

    pub fn stream(&self, name: &str) -> Option<&Stream> {
        self.streams.get(name)
    }

    pub fn consumer(&self, durable: &str) -> Option<&Consumer> {
        self.consumers.get(durable)
    }

    pub fn consumer_mut(&mut self, durable: &str) -> Option<&mut Consumer> {
        self.consumers.get_mut(durable)
    }

    /// Messages `durable` has not delivered yet (a delivery's `pending` metadata).
    pub fn num_pending(&self, durable: &str) -> u64 {
        let Some(consumer) = self.consumers.get(durable) else {
            return 0;
        };
        self.streams
            .get(consumer.stream_name())
            .map_or(0, |s| consumer.num_pending(s))
    }

    /// A broker crash that loses every write since `since` (the unsynced tail): stored
    /// messages, dedupe entries, acks and terms. Returns (stream, lost sequences).
    pub fn lose_tail(&mut self, since: u64) -> Vec<(String, Vec<u64>)> {
        let mut lost_by_stream = Vec::new();
        for (name, stream) in &mut self.streams {
            let lost = stream.lose_tail(since);
            for consumer in self.consumers.values_mut() {
                if consumer.stream_name() == name {
                    consumer.lose_tail(since, &lost, stream.last_seq());
                }
            }
            if !lost.is_empty() {
                lost_by_stream.push((name.clone(), lost));
            }
        }
        lost_by_stream
    }

    pub fn durables(&self) -> impl Iterator<Item = &str> {
        self.consumers.keys().map(String::as_str)
    }

    /// The next message `durable` would hand to a waiting pull request now, if any.
    pub fn next_delivery(&mut self, now: u64, durable: &str) -> Option<Delivered> {
        let consumer = self.consumers.get_mut(durable)?;
        let stream = self.streams.get(consumer.stream_name())?;
        consumer.next_delivery(now, stream)
    }
}

/// NATS subject matching: `*` matches one token, `>` one or more trailing tokens.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut pat = pattern.split('.');
    let mut sub = subject.split('.');
    loop {
        match (pat.next(), sub.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(p), Some(s)) if p == s => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_match_like_nats() {
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.b.c"));
        assert!(subject_matches("a.*", "a.b"));
        assert!(!subject_matches("a.*", "a.b.c"));
        assert!(subject_matches("a.>", "a.b.c"));
        assert!(!subject_matches("a.>", "a"));
        assert!(!subject_matches("a.b", "a"));
    }
}
