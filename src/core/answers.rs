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
//! Both tables are bounded; the oldest entries go first.

use std::collections::BTreeMap;

use super::env::Time;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Ack,
    Term,
}

#[derive(Debug, Default)]
struct SeqEntry {
    reply: Option<Vec<u8>>,
    fate: Option<Fate>,
}

#[derive(Debug)]
pub struct AnswerBook {
    capacity: usize,
    ttl_ms: u64,
    by_seq: BTreeMap<u64, SeqEntry>,
    by_key: BTreeMap<(String, String), (Time, Vec<u8>)>,
    /// Expiry order of `by_key`: (expires_at, insertion number) -> key.
    expiry: BTreeMap<(Time, u64), (String, String)>,
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

    pub fn settled(&self, seq: u64) -> Option<Fate> {
        self.by_seq.get(&seq).and_then(|e| e.fate)
    }

    pub fn reply_for_seq(&self, seq: u64) -> Option<&[u8]> {
        self.by_seq.get(&seq).and_then(|e| e.reply.as_deref())
    }

    pub fn reply_for_key(&mut self, key: &(String, String), now: Time) -> Option<&[u8]> {
        self.expire(now);
        self.by_key.get(key).map(|(_, bytes)| bytes.as_slice())
    }

    /// Remember the reply decided for `seq` (and its idempotency key) before it is
    /// published: whatever happens to the publish, this is the answer.
    pub fn record_reply(
        &mut self,
        seq: u64,
        key: Option<(String, String)>,
        reply: Vec<u8>,
        now: Time,
    ) {
        if let Some(key) = key {
            self.expire(now);
            let expires = now.after(self.ttl_ms);
            if let Some((old, _)) = self.by_key.insert(key.clone(), (expires, reply.clone())) {
                self.expiry.retain(|(at, _), k| !(*at == old && *k == key));
            }
            self.inserted += 1;
            self.expiry.insert((expires, self.inserted), key);
            while self.by_key.len() > self.capacity {
                let Some((_, oldest)) = self.expiry.pop_first() else {
                    break;
                };
                self.by_key.remove(&oldest);
            }
        }
        self.by_seq.entry(seq).or_default().reply = Some(reply);
        self.bound_seqs();
    }

    pub fn settle(&mut self, seq: u64, fate: Fate) {
        self.by_seq.entry(seq).or_default().fate = Some(fate);
        self.bound_seqs();
    }

    pub fn len(&self) -> (usize, usize) {
        (self.by_seq.len(), self.by_key.len())
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> (String, String) {
        ("acme".to_string(), k.to_string())
    }

    #[test]
    fn keys_expire_after_ttl() {
        let mut book = AnswerBook::new(10, 1_000);
        book.record_reply(1, Some(key("a")), b"r".to_vec(), Time(0));
        assert_eq!(book.reply_for_key(&key("a"), Time(999)), Some(&b"r"[..]));
        assert_eq!(book.reply_for_key(&key("a"), Time(1_000)), None);
        assert_eq!(book.reply_for_seq(1), Some(&b"r"[..]));
    }

    #[test]
    fn keys_are_scoped_by_tenant() {
        let mut book = AnswerBook::new(10, 1_000);
        book.record_reply(1, Some(key("a")), b"r".to_vec(), Time(0));
        let other = ("globex".to_string(), "a".to_string());
        assert_eq!(book.reply_for_key(&other, Time(1)), None);
    }

    #[test]
    fn tables_are_bounded_oldest_first() {
        let mut book = AnswerBook::new(3, 1_000_000);
        for seq in 1..=5 {
            book.record_reply(seq, Some(key(&seq.to_string())), vec![seq as u8], Time(seq));
            book.settle(seq, Fate::Ack);
        }
        assert_eq!(book.len(), (3, 3));
        assert_eq!(book.settled(2), None);
        assert_eq!(book.settled(5), Some(Fate::Ack));
        assert_eq!(book.reply_for_key(&key("1"), Time(6)), None);
        assert!(book.reply_for_key(&key("5"), Time(6)).is_some());
    }
}
