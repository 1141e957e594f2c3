//! A durable pull consumer with explicit ack, after nats-server's `consumer.go`:
//!
//! - Every delivered message sits in `pending` until acked or terminated, with a timestamp;
//!   its deadline is `timestamp + ack_wait` (or, with a backoff list, `timestamp +
//!   backoff[min(delivered - 1, len - 1)]`). Past the deadline it joins the redelivery queue.
//! - A nak with delay `d` sets the timestamp to `now - ack_wait_eff + d`, where
//!   `ack_wait_eff` is `backoff[0]` when a backoff list is set. With a backoff list this
//!   makes the effective delay `d - backoff[0] + backoff[min(n, len - 1)]`, which is what
//!   nats-server 2.9.10 was measured to do (docs/BACKGROUND.md). A nak without delay queues
//!   the message for redelivery at once. A nak with delay of a message already due for
//!   redelivery (its ack wait ran out while no pull was waiting) takes it off the
//!   redelivery queue: the delay governs (measured by `tests/jetstream_conformance.rs`).
//! - `+WPI` (in progress) sets the timestamp to now: the deadline moves out by one ack_wait.
//! - The delivery count is the server's. When a queued message would be delivered for the
//!   `max_deliver + 1`-th time it is dropped from pending instead, and a `MAX_DELIVERIES`
//!   advisory is raised: it stays in the stream, unacked, and is never delivered again.
//! - Redeliveries go first. New messages are held back while `max_ack_pending` messages
//!   are pending; redeliveries are not (nats-server checks the bound after the queue).
//! - Acks name a stream sequence. An ack, nak or term from an older delivery of a message
//!   still acts on it while it is pending, as in nats-server; for a message no longer
//!   pending it is ignored.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::Serialize;

use super::stream::Stream;

#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    pub durable: String,
    pub ack_wait_ms: u64,
    /// At least 1: the server never delivers a message more often than this.
    pub max_deliver: u64,
    pub max_ack_pending: usize,
    /// Ack-timeout redelivery delays (`backoff`); when set, `backoff[0]` stands in for
    /// `ack_wait`.
    pub backoff_ms: Vec<u64>,
    /// Bound on waiting pull requests (nats-server's `max_waiting`, default 512).
    pub max_waiting: usize,
}

impl ConsumerConfig {
    /// nats-server's defaults for the fields we model.
    pub fn with_defaults(durable: &str) -> Self {
        ConsumerConfig {
            durable: durable.to_string(),
            ack_wait_ms: 30_000,
            max_deliver: 5,
            max_ack_pending: 1_000,
            backoff_ms: Vec::new(),
            max_waiting: 512,
        }
    }

    /// The ack wait after delivery number `delivered` (1-based).
    fn ack_wait_for(&self, delivered: u64) -> u64 {
        if self.backoff_ms.is_empty() {
            return self.ack_wait_ms;
        }
        let i = (delivered.saturating_sub(1) as usize).min(self.backoff_ms.len() - 1);
        self.backoff_ms[i]
    }

    /// What the server uses as "ack wait" when it rewinds a timestamp for a nak: a backoff
    /// list overrides `ack_wait` with its first entry.
    fn effective_ack_wait(&self) -> u64 {
        self.backoff_ms.first().copied().unwrap_or(self.ack_wait_ms)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum AckKind {
    Ack,
    Nak { delay_ms: u64 },
    Term,
    Progress,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum AckResult {
    Applied,
    /// The sequence was not pending (already acked, terminated, exhausted, or never
    /// delivered): the server ignores the ack.
    NotPending,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Advisory {
    /// `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>`
    MaxDeliveries { stream_seq: u64, deliveries: u64 },
    /// `...MSG_TERMINATED...`
    Terminated { stream_seq: u64, deliveries: u64 },
    /// `...MSG_NAKED...`
    Naked { stream_seq: u64, deliveries: u64 },
}

/// Where a stream message stands with this consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum MessageState {
    Undelivered,
    Pending { delivered: u64 },
    Acked,
    Terminated,
    Exhausted,
}

/// One delivery: the message plus the server's delivery metadata (what
/// `Message::info()` parses out of the `$JS.ACK` reply subject).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// The pull request it answers.
    pub pull: u64,
    pub stream_seq: u64,
    pub consumer_seq: u64,
    pub delivered: u64,
    pub subject: String,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    consumer_seq: u64,
    /// Signed: a nak rewinds it below "now" by up to one ack wait.
    timestamp: i64,
    delivered: u64,
    /// On the redelivery queue (its deadline passed, or it was nak'ed without delay).
    queued: bool,
}

#[derive(Clone, Copy, Debug)]
struct PullRequest {
    id: u64,
    remaining: u64,
    expires_at: u64,
}

#[derive(Debug)]
pub struct Consumer {
    stream: String,
    config: ConsumerConfig,
    /// The next stream sequence never delivered.
    next_seq: u64,
    /// The consumer sequence: one per delivery, redeliveries included.
    last_consumer_seq: u64,
    pending: BTreeMap<u64, Pending>,
    rdq: VecDeque<u64>,
    acked: BTreeSet<u64>,
    terminated: BTreeSet<u64>,
    exhausted: BTreeSet<u64>,
    waiting: VecDeque<PullRequest>,
    advisories: Vec<Advisory>,
    /// Recent acks and terms with what was pending before them, newest last, so that a
    /// broker crash that loses its unsynced tail can take them back. Bounded.
    settles: VecDeque<(u64, u64, Pending)>,
}

/// How many recent settles a consumer remembers for a crash rollback.
const SETTLE_LOG: usize = 4_096;

fn as_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

impl Consumer {
    pub fn new(stream: &str, config: ConsumerConfig) -> Self {
        assert!(config.max_deliver >= 1, "max_deliver must be at least 1");
        assert!(
            config.backoff_ms.is_empty() || config.max_deliver > config.backoff_ms.len() as u64,
            "max_deliver must exceed the backoff list's length (nats-server rule)"
        );
        Consumer {
            stream: stream.to_string(),
            config,
            next_seq: 1,
            last_consumer_seq: 0,
            pending: BTreeMap::new(),
            rdq: VecDeque::new(),
            acked: BTreeSet::new(),
            terminated: BTreeSet::new(),
            exhausted: BTreeSet::new(),
            waiting: VecDeque::new(),
            advisories: Vec::new(),
            settles: VecDeque::new(),
        }
    }

    pub fn stream_name(&self) -> &str {
        &self.stream
    }

    pub fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    /// A pull request for up to `batch` messages, waiting at most `expires_ms`. Refused
    /// (false) when `max_waiting` requests are already waiting.
    pub fn pull(&mut self, now: u64, id: u64, batch: u64, expires_ms: u64) -> bool {
        self.purge_waiting(now);
        if self.waiting.len() >= self.config.max_waiting || batch == 0 {
            return false;
        }
        self.waiting.push_back(PullRequest {
            id,
            remaining: batch,
            expires_at: now + expires_ms,
        });
        true
    }

    /// Forget every waiting pull request: the server restarted.
    pub fn drop_pulls(&mut self) {
        self.waiting.clear();
    }

    /// Forget every waiting pull request and say which they were (a leader change: the
    /// new leader tells those it knew of with `409 Leadership Change`).
    pub fn take_pulls(&mut self) -> Vec<u64> {
        self.waiting.drain(..).map(|w| w.id).collect()
    }

    /// Forget the waiting pull requests `of` says belong to a client the server noticed
    /// is gone.
    pub fn drop_pulls_of(&mut self, of: impl Fn(u64) -> bool) {
        self.waiting.retain(|w| !of(w.id));
    }

    pub fn waiting_pulls(&self) -> usize {
        self.waiting.len()
    }

    fn purge_waiting(&mut self, now: u64) {
        self.waiting
            .retain(|w| w.expires_at > now && w.remaining > 0);
    }

    fn deadline(&self, p: &Pending) -> u64 {
        let d = p
            .timestamp
            .saturating_add(as_i64(self.config.ack_wait_for(p.delivered)));
        u64::try_from(d).unwrap_or(0)
    }

    /// The earliest time a pending message's ack wait runs out, if any. The world wakes
    /// the consumer then.
    pub fn next_deadline(&self) -> Option<u64> {
        self.pending
            .values()
            .filter(|p| !p.queued)
            .map(|p| self.deadline(p))
            .min()
    }

    /// Queue every pending message whose deadline has passed, in stream order (the server
    /// sorts expired sequences before appending them).
    pub fn check_pending(&mut self, now: u64) {
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| !p.queued && self.deadline(p) <= now)
            .map(|(&seq, _)| seq)
            .collect();
        for seq in expired {
            if let Some(p) = self.pending.get_mut(&seq) {
                p.queued = true;
            }
            self.rdq.push_back(seq);
        }
    }

    /// The next message for the oldest waiting pull request, if any can go now.
    pub fn next_delivery(&mut self, now: u64, stream: &Stream) -> Option<Delivered> {
        self.check_pending(now);
        self.purge_waiting(now);
        self.waiting.front()?;
        let (seq, delivered) = self.next_to_send(stream)?;
        let msg = stream.get(seq)?;
        self.last_consumer_seq += 1;
        let consumer_seq = self.last_consumer_seq;
        self.pending.insert(
            seq,
            Pending {
                consumer_seq,
                timestamp: as_i64(now),
                delivered,
                queued: false,
            },
        );
        let pull = self.waiting.front_mut()?;
        pull.remaining -= 1;
        let pull_id = pull.id;
        self.purge_waiting(now);
        Some(Delivered {
            pull: pull_id,
            stream_seq: seq,
            consumer_seq,
            delivered,
            subject: msg.subject.clone(),
            headers: msg.headers.clone(),
            payload: msg.payload.clone(),
        })
    }

    /// (stream seq, delivery count) of what goes next: a redelivery first, else a new
    /// message if `max_ack_pending` allows.
    fn next_to_send(&mut self, stream: &Stream) -> Option<(u64, u64)> {
        while let Some(seq) = self.rdq.pop_front() {
            let Some(p) = self.pending.get(&seq).copied() else {
                continue; // acked or terminated while queued
            };
            if !p.queued {
                continue; // a stale queue entry; it was redelivered already
            }
            let delivered = p.delivered + 1;
            if delivered > self.config.max_deliver {
                self.pending.remove(&seq);
                self.exhausted.insert(seq);
                self.advisories.push(Advisory::MaxDeliveries {
                    stream_seq: seq,
                    deliveries: p.delivered,
                });
                continue;
            }
            return Some((seq, delivered));
        }
        if self.pending.len() >= self.config.max_ack_pending {
            return None;
        }
        if self.next_seq > stream.last_seq() {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        Some((seq, 1))
    }

    /// Apply an ack of the latest delivery of `stream_seq`. It names no delivery count:
    /// for a message no longer pending the count is unknown (0), and a term of it raises
    /// no advisory (see `ack_delivery`).
    pub fn ack(&mut self, now: u64, stream_seq: u64, kind: AckKind) -> AckResult {
        let delivered = self.pending.get(&stream_seq).map_or(0, |p| p.delivered);
        self.ack_delivery(now, stream_seq, delivered, kind)
    }

    /// Apply an ack sent on the ack subject of delivery number `delivered` of
    /// `stream_seq`. An older delivery's ack still acts on a pending message; the
    /// `MSG_TERMINATED` and `MSG_NAKED` advisories report the count its subject names,
    /// as nats-server's do (measured by `tests/jetstream_conformance.rs`). A term of a
    /// message no longer pending (acked, exhausted, terminated) changes nothing but still
    /// raises `MSG_TERMINATED`: nats-server's `processTerm` sends it unconditionally.
    pub fn ack_delivery(
        &mut self,
        now: u64,
        stream_seq: u64,
        delivered: u64,
        kind: AckKind,
    ) -> AckResult {
        let Some(p) = self.pending.get(&stream_seq).copied() else {
            if kind == AckKind::Term && delivered > 0 {
                self.advisories.push(Advisory::Terminated {
                    stream_seq,
                    deliveries: delivered,
                });
            }
            return AckResult::NotPending;
        };
        if matches!(kind, AckKind::Ack | AckKind::Term) {
            if self.settles.len() == SETTLE_LOG {
                self.settles.pop_front();
            }
            self.settles.push_back((now, stream_seq, p));
        }
        match kind {
            AckKind::Ack => {
                self.pending.remove(&stream_seq);
                self.acked.insert(stream_seq);
            }
            AckKind::Term => {
                self.pending.remove(&stream_seq);
                self.terminated.insert(stream_seq);
                self.advisories.push(Advisory::Terminated {
                    stream_seq,
                    deliveries: delivered,
                });
            }
            AckKind::Nak { delay_ms } => {
                self.advisories.push(Advisory::Naked {
                    stream_seq,
                    deliveries: delivered,
                });
                let rewound =
                    as_i64(now) - as_i64(self.config.effective_ack_wait()) + as_i64(delay_ms);
                if delay_ms > 0 {
                    // The delay governs even a message already due for redelivery: the
                    // server takes it off the redelivery queue (`processNak`).
                    if p.queued {
                        self.rdq.retain(|&seq| seq != stream_seq);
                    }
                    if let Some(entry) = self.pending.get_mut(&stream_seq) {
                        entry.queued = false;
                        entry.timestamp = rewound;
                    }
                } else if !p.queued {
                    if let Some(entry) = self.pending.get_mut(&stream_seq) {
                        entry.queued = true;
                    }
                    self.rdq.push_back(stream_seq);
                }
            }
            AckKind::Progress => {
                if !p.queued {
                    if let Some(entry) = self.pending.get_mut(&stream_seq) {
                        entry.timestamp = as_i64(now);
                    }
                }
            }
        }
        AckResult::Applied
    }

    /// A redelivery storm (a consumer leader change, say): every pending message is due
    /// for redelivery now, as if all their ack waits ran out at once. Returns how many.
    pub fn storm(&mut self) -> usize {
        let due: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| !p.queued)
            .map(|(&seq, _)| seq)
            .collect();
        for &seq in &due {
            if let Some(p) = self.pending.get_mut(&seq) {
                p.queued = true;
            }
            self.rdq.push_back(seq);
        }
        due.len()
    }

    /// A broker crash that lost its unsynced tail: acks and terms applied at or after
    /// `since` are forgotten (the message is pending again, due for redelivery), and the
    /// stream's lost sequences `lost` are forgotten entirely (never delivered, so that a
    /// reused sequence is a new message). `last_seq` is the stream's last sequence now.
    pub fn lose_tail(&mut self, since: u64, lost: &[u64], last_seq: u64) {
        while let Some(&(at, seq, before)) = self.settles.back() {
            if at < since {
                break;
            }
            self.settles.pop_back();
            self.acked.remove(&seq);
            self.terminated.remove(&seq);
            self.pending.insert(
                seq,
                Pending {
                    queued: true,
                    ..before
                },
            );
            self.rdq.push_back(seq);
        }
        for seq in lost {
            self.pending.remove(seq);
            self.acked.remove(seq);
            self.terminated.remove(seq);
            self.exhausted.remove(seq);
        }
        self.settles.retain(|(_, seq, _)| !lost.contains(seq));
        self.next_seq = self.next_seq.min(last_seq + 1);
    }

    /// Messages in the stream this consumer has not delivered yet (the `pending` figure
    /// of a delivery's metadata).
    pub fn num_pending(&self, stream: &Stream) -> u64 {
        (stream.last_seq() + 1).saturating_sub(self.next_seq)
    }

    /// Acked, terminated or exhausted: the server is done with it.
    pub fn is_final(&self, stream_seq: u64) -> bool {
        self.acked.contains(&stream_seq)
            || self.terminated.contains(&stream_seq)
            || self.exhausted.contains(&stream_seq)
    }

    pub fn take_advisories(&mut self) -> Vec<Advisory> {
        std::mem::take(&mut self.advisories)
    }

    pub fn state(&self, stream_seq: u64) -> MessageState {
        if let Some(p) = self.pending.get(&stream_seq) {
            MessageState::Pending {
                delivered: p.delivered,
            }
        } else if self.acked.contains(&stream_seq) {
            MessageState::Acked
        } else if self.terminated.contains(&stream_seq) {
            MessageState::Terminated
        } else if self.exhausted.contains(&stream_seq) {
            MessageState::Exhausted
        } else {
            MessageState::Undelivered
        }
    }

    /// Messages delivered and not yet acked, terminated or exhausted.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// The consumer sequence of the latest delivery of `stream_seq`, while pending.
    pub fn consumer_seq(&self, stream_seq: u64) -> Option<u64> {
        self.pending.get(&stream_seq).map(|p| p.consumer_seq)
    }
}

#[cfg(test)]
mod tests {
    use super::super::stream::StreamConfig;
    use super::*;

    fn stream_with(n: u64) -> Stream {
        let mut s = Stream::new(StreamConfig {
            name: "S".into(),
            subjects: vec!["s".into()],
            duplicate_window_ms: 120_000,
        });
        for i in 0..n {
            s.publish(0, "s", &[], format!("m{i}").as_bytes());
        }
        s
    }

    fn consumer(edit: impl FnOnce(&mut ConsumerConfig)) -> Consumer {
        let mut config = ConsumerConfig::with_defaults("C");
        edit(&mut config);
        Consumer::new("S", config)
    }

    /// Pull with a large batch that never expires within a test, then take what comes.
    fn take_all(c: &mut Consumer, s: &Stream, now: u64) -> Vec<(u64, u64)> {
        c.pull(now, 0, 100, 1_000_000);
        let mut out = Vec::new();
        while let Some(d) = c.next_delivery(now, s) {
            out.push((d.stream_seq, d.delivered));
        }
        c.drop_pulls();
        out
    }

    #[test]
    fn redelivers_after_ack_wait() {
        let s = stream_with(1);
        let mut c = consumer(|c| c.ack_wait_ms = 30_000);
        assert_eq!(take_all(&mut c, &s, 0), vec![(1, 1)]);
        assert_eq!(c.next_deadline(), Some(30_000));
        assert_eq!(take_all(&mut c, &s, 29_999), vec![]);
        assert_eq!(take_all(&mut c, &s, 30_000), vec![(1, 2)]);
        assert_eq!(c.next_deadline(), Some(60_000));
    }

    #[test]
    fn nak_delay_sets_the_redelivery_time() {
        let s = stream_with(1);
        let mut c = consumer(|_| {});
        take_all(&mut c, &s, 0);
        assert_eq!(
            c.ack(100, 1, AckKind::Nak { delay_ms: 500 }),
            AckResult::Applied
        );
        assert_eq!(c.next_deadline(), Some(600));
        assert_eq!(take_all(&mut c, &s, 599), vec![]);
        assert_eq!(take_all(&mut c, &s, 600), vec![(1, 2)]);
        // A nak without delay queues it at once.
        c.ack(700, 1, AckKind::Nak { delay_ms: 0 });
        assert_eq!(take_all(&mut c, &s, 700), vec![(1, 3)]);
        assert!(matches!(
            c.take_advisories().as_slice(),
            [Advisory::Naked { .. }, Advisory::Naked { .. }]
        ));
    }

    #[test]
    fn nak_with_backoff_follows_the_measured_formula() {
        // nats-server 2.9.10, backoff [300, 600, 900], Nak(250 ms): redeliveries at +252,
        // +553, +852 ms, i.e. d - backoff[0] + backoff[min(n, len - 1)].
        let s = stream_with(1);
        let mut c = consumer(|c| {
            c.backoff_ms = vec![300, 600, 900];
            c.max_deliver = 4;
        });
        let mut now = 0;
        take_all(&mut c, &s, now);
        let mut gaps = Vec::new();
        for _ in 0..3 {
            c.ack(now, 1, AckKind::Nak { delay_ms: 250 });
            let due = c.next_deadline().unwrap();
            gaps.push(due - now);
            now = due;
            assert_eq!(take_all(&mut c, &s, now).len(), 1);
        }
        assert_eq!(gaps, vec![250, 550, 850]);
    }

    #[test]
    fn a_nak_delay_holds_back_a_message_already_due() {
        // nats-server 2.15.1 (tests/jetstream_conformance.rs, nak_delay_when_due): the ack
        // wait ran out while no pull was waiting; a nak with delay then takes the message
        // off the redelivery queue, and it comes back after the delay, not at once.
        let s = stream_with(2);
        let mut c = consumer(|c| c.ack_wait_ms = 800);
        assert_eq!(take_all(&mut c, &s, 0), vec![(1, 1), (2, 1)]);
        c.check_pending(1_100); // both due, no pull waiting
        c.ack(1_100, 1, AckKind::Nak { delay_ms: 500 });
        assert_eq!(take_all(&mut c, &s, 1_100), vec![(2, 2)]);
        assert_eq!(c.next_deadline(), Some(1_600));
        assert_eq!(take_all(&mut c, &s, 1_599), vec![]);
        assert_eq!(take_all(&mut c, &s, 1_600), vec![(1, 2)]);
        // A nak without delay of a message already due changes nothing.
        c.check_pending(10_000);
        c.ack(10_000, 1, AckKind::Nak { delay_ms: 0 });
        assert_eq!(take_all(&mut c, &s, 10_000), vec![(1, 3), (2, 3)]);
    }

    #[test]
    fn backoff_overrides_ack_wait_on_timeouts() {
        let s = stream_with(1);
        let mut c = consumer(|c| {
            c.backoff_ms = vec![300, 600];
            c.max_deliver = 4;
        });
        take_all(&mut c, &s, 0);
        assert_eq!(c.next_deadline(), Some(300));
        take_all(&mut c, &s, 300);
        assert_eq!(c.next_deadline(), Some(900));
        take_all(&mut c, &s, 900);
        assert_eq!(c.next_deadline(), Some(1_500));
    }

    #[test]
    fn a_storm_redelivers_every_pending_message_now() {
        let s = stream_with(3);
        let mut c = consumer(|c| c.ack_wait_ms = 30_000);
        assert_eq!(take_all(&mut c, &s, 0).len(), 3);
        c.ack(5, 2, AckKind::Ack);
        assert_eq!(c.storm(), 2);
        assert_eq!(take_all(&mut c, &s, 10), vec![(1, 2), (3, 2)]);
    }

    #[test]
    fn a_lost_tail_takes_back_recent_acks() {
        let s = stream_with(2);
        let mut c = consumer(|_| {});
        take_all(&mut c, &s, 0);
        c.ack(100, 1, AckKind::Ack);
        c.ack(2_000, 2, AckKind::Term);
        c.lose_tail(1_000, &[], 2);
        assert_eq!(c.state(1), MessageState::Acked);
        assert_eq!(c.state(2), MessageState::Pending { delivered: 1 });
        assert_eq!(take_all(&mut c, &s, 2_500), vec![(2, 2)]);
    }

    #[test]
    fn term_stops_redelivery() {
        let s = stream_with(1);
        let mut c = consumer(|_| {});
        take_all(&mut c, &s, 0);
        assert_eq!(c.ack(10, 1, AckKind::Term), AckResult::Applied);
        assert_eq!(c.state(1), MessageState::Terminated);
        assert_eq!(c.next_deadline(), None);
        assert_eq!(take_all(&mut c, &s, 1_000_000), vec![]);
        assert_eq!(
            c.take_advisories(),
            vec![Advisory::Terminated {
                stream_seq: 1,
                deliveries: 1
            }]
        );
        // Acks of a message no longer pending are ignored.
        assert_eq!(c.ack(20, 1, AckKind::Ack), AckResult::NotPending);
    }

    #[test]
    fn max_deliver_stops_deliveries_and_raises_the_advisory() {
        let s = stream_with(1);
        let mut c = consumer(|c| {
            c.max_deliver = 3;
            c.ack_wait_ms = 1_000;
        });
        let mut seen = Vec::new();
        for t in 0..10u64 {
            seen.extend(take_all(&mut c, &s, t * 1_000));
        }
        assert_eq!(seen, vec![(1, 1), (1, 2), (1, 3)]);
        assert_eq!(c.state(1), MessageState::Exhausted);
        assert_eq!(c.pending_count(), 0);
        assert_eq!(
            c.take_advisories(),
            vec![Advisory::MaxDeliveries {
                stream_seq: 1,
                deliveries: 3
            }]
        );
    }

    #[test]
    fn in_progress_resets_the_ack_timer() {
        let s = stream_with(1);
        let mut c = consumer(|c| c.ack_wait_ms = 30_000);
        take_all(&mut c, &s, 0);
        c.ack(20_000, 1, AckKind::Progress);
        assert_eq!(c.next_deadline(), Some(50_000));
        assert_eq!(take_all(&mut c, &s, 30_000), vec![]);
        assert_eq!(take_all(&mut c, &s, 50_000), vec![(1, 2)]);
    }

    #[test]
    fn an_ack_of_an_older_delivery_still_acks_the_message() {
        let s = stream_with(1);
        let mut c = consumer(|c| c.ack_wait_ms = 1_000);
        take_all(&mut c, &s, 0);
        take_all(&mut c, &s, 1_000); // delivery 2 now outstanding
        assert_eq!(c.ack(1_500, 1, AckKind::Ack), AckResult::Applied);
        assert_eq!(c.state(1), MessageState::Acked);
    }

    #[test]
    fn advisories_report_the_count_of_the_delivery_settled() {
        // nats-server 2.15.1 (tests/jetstream_conformance.rs, settle_old_delivery): a term
        // or nak sent on delivery 1's ack subject while delivery 2 is out acts on the
        // message, and its advisory says "after 1".
        let s = stream_with(2);
        let mut c = consumer(|c| c.ack_wait_ms = 1_000);
        take_all(&mut c, &s, 0);
        assert_eq!(take_all(&mut c, &s, 1_000), vec![(1, 2), (2, 2)]);
        c.ack_delivery(1_000, 1, 1, AckKind::Term);
        c.ack_delivery(1_000, 2, 1, AckKind::Nak { delay_ms: 0 });
        assert_eq!(
            c.take_advisories(),
            vec![
                Advisory::Terminated {
                    stream_seq: 1,
                    deliveries: 1
                },
                Advisory::Naked {
                    stream_seq: 2,
                    deliveries: 1
                },
            ]
        );
        assert_eq!(c.state(1), MessageState::Terminated);
        assert_eq!(take_all(&mut c, &s, 1_000), vec![(2, 3)]);
    }

    #[test]
    fn a_term_of_a_message_no_longer_pending_still_raises_the_advisory() {
        // nats-server 2.15.1 (tests/jetstream_conformance.rs, term_after_max_deliver and
        // settle_after_ack): the router's DLQ path terms an exhausted message; the server
        // raises MSG_TERMINATED for it, as for a term of an acked one. A nak raises nothing.
        let s = stream_with(2);
        let mut c = consumer(|c| {
            c.ack_wait_ms = 1_000;
            c.max_deliver = 1;
        });
        take_all(&mut c, &s, 0);
        c.ack(10, 2, AckKind::Ack);
        assert_eq!(take_all(&mut c, &s, 1_000), vec![]);
        assert_eq!(c.state(1), MessageState::Exhausted);
        c.take_advisories();
        assert_eq!(
            c.ack_delivery(1_100, 1, 1, AckKind::Term),
            AckResult::NotPending
        );
        assert_eq!(
            c.ack_delivery(1_100, 2, 1, AckKind::Nak { delay_ms: 0 }),
            AckResult::NotPending
        );
        assert_eq!(
            c.ack_delivery(1_100, 2, 1, AckKind::Term),
            AckResult::NotPending
        );
        assert_eq!(c.state(1), MessageState::Exhausted);
        assert_eq!(c.state(2), MessageState::Acked);
        assert_eq!(
            c.take_advisories(),
            vec![
                Advisory::Terminated {
                    stream_seq: 1,
                    deliveries: 1
                },
                Advisory::Terminated {
                    stream_seq: 2,
                    deliveries: 1
                },
            ]
        );
        // Without a count (the world's acks), nothing is raised.
        c.ack(1_200, 1, AckKind::Term);
        assert_eq!(c.take_advisories(), vec![]);
    }

    #[test]
    fn an_ack_after_the_deadline_but_before_redelivery_counts() {
        let s = stream_with(1);
        let mut c = consumer(|c| c.ack_wait_ms = 1_000);
        take_all(&mut c, &s, 0);
        c.check_pending(5_000); // queued for redelivery, no pull waiting
        assert_eq!(c.ack(5_000, 1, AckKind::Ack), AckResult::Applied);
        assert_eq!(take_all(&mut c, &s, 5_000), vec![]);
    }

    #[test]
    fn max_ack_pending_holds_new_messages_but_not_redeliveries() {
        let s = stream_with(3);
        let mut c = consumer(|c| {
            c.max_ack_pending = 2;
            c.ack_wait_ms = 1_000;
        });
        assert_eq!(take_all(&mut c, &s, 0), vec![(1, 1), (2, 1)]);
        assert_eq!(take_all(&mut c, &s, 1_000), vec![(1, 2), (2, 2)]);
        c.ack(1_100, 1, AckKind::Ack);
        assert_eq!(take_all(&mut c, &s, 1_100), vec![(3, 1)]);
    }

    #[test]
    fn deliveries_need_a_waiting_pull_and_respect_its_batch() {
        let s = stream_with(3);
        let mut c = consumer(|_| {});
        assert!(c.next_delivery(0, &s).is_none());
        c.pull(0, 7, 2, 5_000);
        assert_eq!(c.next_delivery(0, &s).map(|d| d.pull), Some(7));
        assert!(c.next_delivery(0, &s).is_some());
        assert!(c.next_delivery(0, &s).is_none(), "batch of 2 used up");
        c.pull(10, 8, 5, 5_000);
        assert!(c.next_delivery(5_010, &s).is_none(), "pull expired");
        assert_eq!(c.state(3), MessageState::Undelivered);
    }
}
