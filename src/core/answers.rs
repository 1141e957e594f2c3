//! The answer book: what the router already said, so that it never says something
//! different about the same request.
//!
//! - By stream sequence: the reply bytes decided for a message, and its fate once
//!   settled. A redelivery after a lost ack is settled again without a second reply; a
//!   redelivery after a failed reply publish gets the same bytes.
//! - By (tenant, idempotency_key): the reply bytes, for a TTL. A gateway that re-sends a
//!   request as a new message gets a byte-identical reply and causes no new decision.
//!   Keys are scoped by tenant so one tenant can never read another's reply.
//!
//! Both tables are bounded; the oldest entries go first. Settled fates are keyed by
//! (stream, sequence): results and acks have sequences of their own.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::env::Time;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Ack,
    Term,
}

/// (stream, sequence): stream 0 is decide, 1 results, 2 assignment acks.
pub type SeqKey = (u8, u64);

/// A side effect decided together with the reply, to be repeated byte for byte if the
/// first attempt to publish it failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPublish {
    pub subject: String,
    pub headers: super::io::Headers,
    pub payload: Vec<u8>,
    pub msg_id: String,
}

#[derive(Debug, Default)]
struct SeqEntry {
    /// Shared with `by_key`: one copy of the bytes however many tables hold them.
    reply: Option<Arc<[u8]>>,
    /// Rare (push_assignment only): boxed, so the common entry stays small.
    assignment: Option<Box<StoredPublish>>,
    fate: Option<Fate>,
}

/// A (tenant, idempotency key) pair, shared between the two indexes of the book.
type IdemKey = Arc<(String, String)>;

/// Where a key sits in the expiry index: (expires_at, insertion number).
type ExpirySlot = (Time, u64);

#[derive(Debug)]
pub struct AnswerBook {
    capacity: usize,
    ttl_ms: u64,
    by_seq: BTreeMap<SeqKey, SeqEntry>,
    /// (tenant, key) -> (its entry in `expiry`, reply). The key is shared with `expiry`.
    by_key: BTreeMap<IdemKey, (ExpirySlot, Arc<[u8]>)>,
    /// Expiry order of `by_key`: (expires_at, insertion number) -> key.
    expiry: BTreeMap<ExpirySlot, IdemKey>,
    inserted: u64,
}

impl AnswerBook {
    pub fn new(capacity: usize, ttl_ms: u64) -> Self {
        AnswerBook {
            capacity: capacity.max(1),
            ttl_ms,
            by_seq: BTreeMap::new(),
            by_key: BTreeMap::new(),
            expiry: BTreeMap::new(),
            inserted: 0,
        }
    }

    pub fn settled(&self, key: SeqKey) -> Option<Fate> {
        self.by_seq.get(&key).and_then(|e| e.fate)
    }

    /// The reply decided for decide message `seq`, and its assignment if one was due.
    pub fn decided(&self, seq: u64) -> Option<(&[u8], Option<&StoredPublish>)> {
        let entry = self.by_seq.get(&(0, seq))?;
        Some((entry.reply.as_deref()?, entry.assignment.as_deref()))
    }

    pub fn reply_for_key(&mut self, key: &(String, String), now: Time) -> Option<&[u8]> {
        self.expire(now);
        self.by_key.get(key).map(|(_, bytes)| &bytes[..])
    }

    /// Remember the reply decided for `seq` (and its idempotency key) before it is
    /// published: whatever happens to the publish, this is the answer.
    pub fn record_reply(
        &mut self,
        seq: u64,
        key: Option<(String, String)>,
        reply: &[u8],
        assignment: Option<StoredPublish>,
        now: Time,
    ) {
        // One copy of the bytes, shared by the key's entry and the sequence's.
        let reply: Arc<[u8]> = Arc::from(reply);
        if let Some(key) = key {
            self.expire(now);
            self.inserted += 1;
            let at = (now.after(self.ttl_ms), self.inserted);
            let key = Arc::new(key);
            if let Some((old, _)) = self.by_key.insert(key.clone(), (at, reply.clone())) {
                self.expiry.remove(&old);
            }
            self.expiry.insert(at, key);
            while self.by_key.len() > self.capacity {
                let Some((_, oldest)) = self.expiry.pop_first() else {
                    break;
                };
                self.by_key.remove(&oldest);
            }
        }
        let entry = self.by_seq.entry((0, seq)).or_default();
        entry.reply = Some(reply);
        entry.assignment = assignment.map(Box::new);
        self.bound_seqs();
    }

    /// The assignment decided for decide message `seq` is stored (its PubAck came): a
    /// later replay of the message publishes only the reply. Replaying it would lean on
    /// the stream's duplicate window, which a long redelivery span outlasts
    /// (`seeds/15.seed`, the simulator's `dedupe_window`).
    pub fn assignment_stored(&mut self, seq: u64) {
        if let Some(entry) = self.by_seq.get_mut(&(0, seq)) {
            entry.assignment = None;
        }
    }

    pub fn settle(&mut self, key: SeqKey, fate: Fate) {
        self.by_seq.entry(key).or_default().fate = Some(fate);
        self.bound_seqs();
    }

    pub fn len(&self) -> (usize, usize) {
        (self.by_seq.len(), self.by_key.len())
    }

    /// Evict the lowest sequence of the largest stream first: sequences grow, so the
    /// lowest is the oldest.
    fn bound_seqs(&mut self) {
        while self.by_seq.len() > self.capacity {
            self.by_seq.pop_first();
        }
    }

    fn expire(&mut self, now: Time) {
        while let Some(entry) = self.expiry.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            self.by_key.remove(&key);
        }
    }
}

/// Results seen, by correlation key (assignment id, else request id): so that a result
/// feeds the breakers once and emits its usage event once, however often CAF publishes
/// it or the server redelivers it.
#[derive(Debug)]
pub struct ResultBook {
    capacity: usize,
    entries: BTreeMap<String, ResultEntry>,
    /// Insertion order, for eviction.
    order: BTreeMap<u64, String>,
    inserted: u64,
}

#[derive(Debug)]
pub struct ResultEntry {
    /// The usage event decided for this result, repeated byte for byte on retry.
    pub usage: StoredPublish,
    /// The message that carries it while in flight.
    pub carrier: Option<SeqKey>,
    pub settled: bool,
}

impl ResultBook {
    pub fn new(capacity: usize) -> Self {
        ResultBook {
            capacity: capacity.max(1),
            entries: BTreeMap::new(),
            order: BTreeMap::new(),
            inserted: 0,
        }
    }

    pub fn get(&self, key: &str) -> Option<&ResultEntry> {
        self.entries.get(key)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut ResultEntry> {
        self.entries.get_mut(key)
    }

    pub fn insert(&mut self, key: String, usage: StoredPublish, carrier: SeqKey) {
        self.inserted += 1;
        self.order.insert(self.inserted, key.clone());
        self.entries.insert(
            key,
            ResultEntry {
                usage,
                carrier: Some(carrier),
                settled: false,
            },
        );
        while self.entries.len() > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> (String, String) {
        ("acme".to_string(), k.to_string())
    }

    #[test]
    fn keys_expire_after_ttl() {
        let mut book = AnswerBook::new(10, 1_000);
        book.record_reply(1, Some(key("a")), b"r", None, Time(0));
        assert_eq!(book.reply_for_key(&key("a"), Time(999)), Some(&b"r"[..]));
        assert_eq!(book.reply_for_key(&key("a"), Time(1_000)), None);
        assert_eq!(book.decided(1).map(|d| d.0), Some(&b"r"[..]));
    }

    #[test]
    fn keys_are_scoped_by_tenant() {
        let mut book = AnswerBook::new(10, 1_000);
        book.record_reply(1, Some(key("a")), b"r", None, Time(0));
        let other = ("globex".to_string(), "a".to_string());
        assert_eq!(book.reply_for_key(&other, Time(1)), None);
    }

    #[test]
    fn tables_are_bounded_oldest_first() {
        let mut book = AnswerBook::new(3, 1_000_000);
        for seq in 1..=5 {
            book.record_reply(
                seq,
                Some(key(&seq.to_string())),
                &[seq as u8],
                None,
                Time(seq),
            );
            book.settle((0, seq), Fate::Ack);
        }
        assert_eq!(book.len(), (3, 3));
        assert_eq!(book.settled((0, 2)), None);
        assert_eq!(book.settled((0, 5)), Some(Fate::Ack));
        assert_eq!(book.reply_for_key(&key("1"), Time(6)), None);
        assert!(book.reply_for_key(&key("5"), Time(6)).is_some());
    }
}
