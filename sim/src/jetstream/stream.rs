//! A stream: captures subjects, stores messages in sequence, and drops a publish whose
//! `Nats-Msg-Id` it has already seen within the duplicate window (answering with the
//! original sequence and `duplicate: true`, as nats-server does).

use std::collections::{BTreeMap, VecDeque};

use beamline_router::contracts::subjects::HEADER_MSG_ID;
use serde::Serialize;

use super::subject_matches;

#[derive(Clone, Debug)]
pub struct StreamConfig {
    pub name: String,
    pub subjects: Vec<String>,
    /// nats-server's default is 2 minutes.
    pub duplicate_window_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    pub seq: u64,
    pub subject: String,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
    pub stored_at: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PubAck {
    pub stream: String,
    pub seq: u64,
    pub duplicate: bool,
}

#[derive(Debug)]
pub struct Stream {
    config: StreamConfig,
    messages: BTreeMap<u64, StoredMessage>,
    last_seq: u64,
    /// msg id -> (seq, stored at). Pruned as entries leave the window.
    dedupe: BTreeMap<String, (u64, u64)>,
    /// Msg ids in the order they were stored, so pruning looks only at the oldest.
    dedupe_order: VecDeque<(u64, String)>,
}

impl Stream {
    pub fn new(config: StreamConfig) -> Self {
        Stream {
            config,
            messages: BTreeMap::new(),
            last_seq: 0,
            dedupe: BTreeMap::new(),
            dedupe_order: VecDeque::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn captures(&self, subject: &str) -> bool {
        self.config
            .subjects
            .iter()
            .any(|p| subject_matches(p, subject))
    }

    pub fn publish(
        &mut self,
        now: u64,
        subject: &str,
        headers: &[(String, String)],
        payload: &[u8],
    ) -> PubAck {
        self.prune_dedupe(now);
        let msg_id = headers
            .iter()
            .find(|(k, _)| k == HEADER_MSG_ID)
            .map(|(_, v)| v.clone());
        if let Some(id) = &msg_id {
            if let Some(&(seq, _)) = self.dedupe.get(id) {
                return PubAck {
                    stream: self.config.name.clone(),
                    seq,
                    duplicate: true,
                };
            }
        }
        self.last_seq += 1;
        let seq = self.last_seq;
        self.messages.insert(
            seq,
            StoredMessage {
                seq,
                subject: subject.to_string(),
                headers: headers.to_vec(),
                payload: payload.to_vec(),
                stored_at: now,
            },
        );
        if let Some(id) = msg_id {
            self.dedupe.insert(id.clone(), (seq, now));
            self.dedupe_order.push_back((now, id));
        }
        PubAck {
            stream: self.config.name.clone(),
            seq,
            duplicate: false,
        }
    }

    fn prune_dedupe(&mut self, now: u64) {
        while let Some((at, _)) = self.dedupe_order.front() {
            if at + self.config.duplicate_window_ms > now {
                break;
            }
            if let Some((_, id)) = self.dedupe_order.pop_front() {
                self.dedupe.remove(&id);
            }
        }
    }

    /// A broker crash without fsync: every message stored at or after `since` vanishes,
    /// with its dedupe entry, and the stream's last sequence falls back to the highest
    /// message kept, so the next publish reuses the lost sequences (as nats-server does
    /// when it recovers a stream from a truncated file). Returns the lost sequences.
    pub fn lose_tail(&mut self, since: u64) -> Vec<u64> {
        let lost: Vec<u64> = self
            .messages
            .values()
            .filter(|m| m.stored_at >= since)
            .map(|m| m.seq)
            .collect();
        for seq in &lost {
            self.messages.remove(seq);
        }
        self.dedupe.retain(|_, (seq, _)| !lost.contains(seq));
        self.dedupe_order.retain(|(at, _)| *at < since);
        if !lost.is_empty() {
            self.last_seq = self.messages.keys().next_back().copied().unwrap_or(0);
        }
        lost
    }

    pub fn get(&self, seq: u64) -> Option<&StoredMessage> {
        self.messages.get(&seq)
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    pub fn messages(&self) -> impl Iterator<Item = &StoredMessage> {
        self.messages.values()
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> Stream {
        Stream::new(StreamConfig {
            name: "S".into(),
            subjects: vec!["s.>".into()],
            duplicate_window_ms: 120_000,
        })
    }

    fn with_id(id: &str) -> Vec<(String, String)> {
        vec![(HEADER_MSG_ID.to_string(), id.to_string())]
    }

    #[test]
    fn dedupes_within_the_window_only() {
        let mut s = stream();
        let a = s.publish(0, "s.x", &with_id("m1"), b"1");
        assert_eq!((a.seq, a.duplicate), (1, false));
        let b = s.publish(119_999, "s.x", &with_id("m1"), b"1 again");
        assert_eq!((b.seq, b.duplicate), (1, true));
        assert_eq!(s.len(), 1);
        // The window is measured from the first store; at 120 s the id has left it.
        let c = s.publish(120_000, "s.x", &with_id("m1"), b"1 late");
        assert_eq!((c.seq, c.duplicate), (2, false));
    }

    #[test]
    fn a_lost_tail_frees_its_sequences_and_msg_ids() {
        let mut s = stream();
        s.publish(0, "s.x", &with_id("a"), b"1");
        s.publish(500, "s.x", &with_id("b"), b"2");
        s.publish(900, "s.x", &with_id("c"), b"3");
        assert_eq!(s.lose_tail(500), vec![2, 3]);
        assert_eq!(s.last_seq(), 1);
        let again = s.publish(1_000, "s.x", &with_id("b"), b"2 again");
        assert_eq!((again.seq, again.duplicate), (2, false));
        assert!(s.publish(1_000, "s.x", &with_id("a"), b"1").duplicate);
    }

    #[test]
    fn messages_without_id_are_never_deduped() {
        let mut s = stream();
        assert_eq!(s.publish(0, "s.x", &[], b"a").seq, 1);
        assert_eq!(s.publish(0, "s.x", &[], b"a").seq, 2);
    }
}
