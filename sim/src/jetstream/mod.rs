//! A model of the parts of NATS JetStream the router relies on, written from nats-server's
//! behaviour (`server/consumer.go`, `server/stream.go` at v2.9.10, and the measurements in
//! `spec/dst-research.md` section 3.2): streams that capture subjects with publish dedupe
//! by `Nats-Msg-Id`, and durable pull consumers with explicit ack.
//!
//! The model is pure: it never schedules anything itself. The world asks it for the next
//! deadline and for deliveries, and feeds it acks; that keeps it unit-testable on its own.

mod consumer;
mod stream;

pub use consumer::{
    AckKind, AckResult, Advisory, Consumer, ConsumerConfig, Delivered, MessageState,
};
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

    pub fn stream(&self, name: &str) -> Option<&Stream> {
        self.streams.get(name)
    }

    pub fn consumer(&self, durable: &str) -> Option<&Consumer> {
        self.consumers.get(durable)
    }

    pub fn consumer_mut(&mut self, durable: &str) -> Option<&mut Consumer> {
        self.consumers.get_mut(durable)
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
