//! A NATS KV bucket as the router uses it: create-if-absent of an entry that expires
//! after the bucket's `max_age`, and reading an entry back. In nats-server a bucket is a
//! stream (`KV_<bucket>`, subjects `$KV.<bucket>.>`, `max_msgs_per_subject = history`)
//! and a create is a publish with `Nats-Expected-Last-Subject-Sequence: 0`; the model
//! keeps only what that amounts to for a bucket whose entries are never updated.
//!
//! Like the rest of the broker model it is pure: the world passes `now`.

use std::collections::BTreeMap;

/// What a create found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvCreate {
    Created,
    /// The key was there (and not expired): its value.
    Exists(Vec<u8>),
}

#[derive(Debug)]
pub struct KvBucket {
    max_age_ms: u64,
    /// key -> (value, stored at).
    entries: BTreeMap<String, (Vec<u8>, u64)>,
    /// (stored at, key), to expire in order.
    by_age: BTreeMap<(u64, String), ()>,
}

impl KvBucket {
    pub fn new(max_age_ms: u64) -> Self {
        KvBucket {
            max_age_ms,
            entries: BTreeMap::new(),
            by_age: BTreeMap::new(),
        }
    }

    pub fn create(&mut self, now: u64, key: &str, value: &[u8]) -> KvCreate {
        self.expire(now);
        if let Some((existing, _)) = self.entries.get(key) {
            return KvCreate::Exists(existing.clone());
        }
        self.entries.insert(key.to_string(), (value.to_vec(), now));
        self.by_age.insert((now, key.to_string()), ());
        KvCreate::Created
    }

    /// Store `value` under `key` whatever was there (a new revision; its age restarts).
    pub fn put(&mut self, now: u64, key: &str, value: &[u8]) {
        self.expire(now);
        if let Some((_, at)) = self.entries.remove(key) {
            self.by_age.remove(&(at, key.to_string()));
        }
        self.entries.insert(key.to_string(), (value.to_vec(), now));
        self.by_age.insert((now, key.to_string()), ());
    }

    pub fn get(&mut self, now: u64, key: &str) -> Option<&[u8]> {
        self.expire(now);
        self.entries.get(key).map(|(v, _)| v.as_slice())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A broker crash that loses every write since `since` (the unsynced tail, as for
    /// streams): entries created then are gone. Returns how many.
    pub fn lose_tail(&mut self, since: u64) -> usize {
        let lost: Vec<(u64, String)> = self
            .by_age
            .range((since, String::new())..)
            .map(|(k, _)| k.clone())
            .collect();
        for (at, key) in &lost {
            self.by_age.remove(&(*at, key.clone()));
            self.entries.remove(key);
        }
        lost.len()
    }

    /// nats-server removes messages older than `max_age` (a stream limit).
    fn expire(&mut self, now: u64) {
        while let Some((&(at, _), _)) = self.by_age.first_key_value() {
            if now.saturating_sub(at) < self.max_age_ms {
                break;
            }
            let ((_, key), ()) = self.by_age.pop_first().expect("checked above");
            self.entries.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_create_wins_until_the_entry_expires() {
        let mut kv = KvBucket::new(1_000);
        assert_eq!(kv.create(0, "k", b"a"), KvCreate::Created);
        assert_eq!(kv.create(10, "k", b"b"), KvCreate::Exists(b"a".to_vec()));
        assert_eq!(kv.get(999, "k"), Some(&b"a"[..]));
        assert_eq!(kv.get(1_000, "k"), None, "max_age reached");
        assert_eq!(kv.create(1_000, "k", b"b"), KvCreate::Created);
        assert_eq!(kv.len(), 1);
    }

    #[test]
    fn a_put_replaces_and_restarts_the_age() {
        let mut kv = KvBucket::new(1_000);
        kv.put(0, "s", b"a");
        kv.put(500, "s", b"b");
        assert_eq!(kv.get(1_200, "s"), Some(&b"b"[..]));
        assert_eq!(kv.get(1_500, "s"), None);
        assert_eq!(kv.len(), 0);
    }

    #[test]
    fn tail_loss_forgets_recent_creates_only() {
        let mut kv = KvBucket::new(10_000);
        kv.create(5, "old", b"1");
        kv.create(50, "new", b"2");
        assert_eq!(kv.lose_tail(40), 1);
        assert_eq!(kv.get(60, "new"), None);
        assert_eq!(kv.get(60, "old"), Some(&b"1"[..]));
    }
}
