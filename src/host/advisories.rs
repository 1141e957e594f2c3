//! Messages the server gave up on, captured durably and turned into `Input::Exhausted`.
//!
//! nats-server publishes a MAX_DELIVERIES advisory on
//! `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>` when a message has
//! used up `max_deliver`. A plain subscription loses every advisory sent while the
//! router is disconnected, so both worlds capture them in a stream with a durable pull
//! consumer of their own: an advisory is a delivery like any other, and it is acked only
//! once its message's fate is durable. Its journey:
//!
//! 1. delivered: parsed; one of ours -> fetch the message by sequence (its last delivery
//!    may never have reached the core); not ours -> acked; unreadable -> terminated;
//! 2. fetched: `Input::Exhausted`; if the core then holds the message (it dead-letters it
//!    now, or was still working on it), the advisory waits; if not, it was settled
//!    before and the advisory is acked at once. Gone from the stream -> acked (nothing
//!    left to dead-letter). The fetch failed -> nak'ed, redelivered by the server;
//! 3. waiting: acked as soon as the core no longer holds the message, which after an
//!    `Exhausted` input means it was acked, or terminated after its DLQ record was
//!    stored (the core never naks a message the server has given up on).
//!
//! A router that crashes in between never acks the advisory: the server redelivers it
//! after `ack_wait` to whichever instance pulls next, and the journey starts again.
//! Both tables are bounded by the advisory consumer's `max_ack_pending`: the server
//! hands out no more advisories than that unacked.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::core::Source;

/// The subject prefix of the server's MAX_DELIVERIES advisories.
pub const MAX_DELIVERIES_PREFIX: &str = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES";

/// The advisory subject for one consumer of one stream.
pub fn max_deliveries_subject(stream: &str, consumer: &str) -> String {
    format!("{MAX_DELIVERIES_PREFIX}.{stream}.{consumer}")
}

/// The fields of nats-server's `io.nats.jetstream.advisory.v1.max_deliver` we use.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct MaxDeliveries {
    pub stream: String,
    pub consumer: String,
    pub stream_seq: u64,
    pub deliveries: u64,
}

impl MaxDeliveries {
    pub fn parse(payload: &[u8]) -> Option<MaxDeliveries> {
        serde_json::from_slice(payload).ok()
    }
}

/// An advisory between its delivery and its ack.
#[derive(Debug)]
pub struct Fetching<A> {
    pub ack: A,
    /// The consumer the advisory names, as the core knows it.
    pub source: Source,
    pub advisory: MaxDeliveries,
}

#[derive(Debug)]
pub struct Advisories<A> {
    next_fetch: u64,
    fetching: BTreeMap<u64, Fetching<A>>,
    /// (source of the message, stream sequence) -> the advisories waiting for its fate.
    waiting: BTreeMap<(Source, u64), Vec<A>>,
}

impl<A> Default for Advisories<A> {
    fn default() -> Self {
        Advisories {
            next_fetch: 1,
            fetching: BTreeMap::new(),
            waiting: BTreeMap::new(),
        }
    }
}

impl<A> Advisories<A> {
    /// Start fetching the message an advisory names; returns the fetch id.
    pub fn fetch(&mut self, ack: A, source: Source, advisory: MaxDeliveries) -> u64 {
        let id = self.next_fetch;
        self.next_fetch += 1;
        self.fetching.insert(
            id,
            Fetching {
                ack,
                source,
                advisory,
            },
        );
        id
    }

    pub fn fetched(&mut self, id: u64) -> Option<Fetching<A>> {
        self.fetching.remove(&id)
    }

    /// Hold the advisory until the core no longer holds (source, seq).
    pub fn wait(&mut self, source: Source, seq: u64, ack: A) {
        self.waiting.entry((source, seq)).or_default().push(ack);
    }

    /// The advisories whose message `holds` says the core is done with.
    pub fn settled(&mut self, holds: impl Fn(Source, u64) -> bool) -> Vec<A> {
        if self.waiting.is_empty() {
            return Vec::new();
        }
        let done: Vec<(Source, u64)> = self
            .waiting
            .keys()
            .filter(|&&(source, seq)| !holds(source, seq))
            .copied()
            .collect();
        done.into_iter()
            .flat_map(|key| self.waiting.remove(&key).unwrap_or_default())
            .collect()
    }

    /// Advisories being fetched or waiting for their message's fate.
    pub fn len(&self) -> usize {
        self.fetching.len() + self.waiting.values().map(Vec::len).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_servers_advisory() {
        // As nats-server 2.15.1 sends it (fields we do not use left out).
        let payload = br#"{"type":"io.nats.jetstream.advisory.v1.max_deliver","id":"x","timestamp":"2026-12-02T00:00:00Z","stream":"DECIDE","consumer":"router","stream_seq":7,"deliveries":3}"#;
        let a = MaxDeliveries::parse(payload).unwrap();
        assert_eq!(
            (
                a.stream.as_str(),
                a.consumer.as_str(),
                a.stream_seq,
                a.deliveries
            ),
            ("DECIDE", "router", 7, 3)
        );
        assert!(MaxDeliveries::parse(b"{}").is_none());
    }

    #[test]
    fn a_waiting_advisory_is_released_once_its_message_is_settled() {
        let mut a = Advisories::default();
        let id = a.fetch(
            "adv-1",
            Source::Decide,
            MaxDeliveries::parse(br#"{"stream":"S","consumer":"c","stream_seq":7,"deliveries":3}"#)
                .unwrap(),
        );
        let f = a.fetched(id).unwrap();
        assert!(a.fetched(id).is_none());
        a.wait(f.source, 7, f.ack);
        a.wait(Source::Decide, 7, "adv-2");
        assert_eq!(a.len(), 2);
        assert!(a.settled(|_, _| true).is_empty(), "still held");
        assert_eq!(a.settled(|_, _| false), vec!["adv-1", "adv-2"]);
        assert!(a.is_empty());
    }
}
