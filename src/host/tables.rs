//! Ids handed to the core, mapped back to the transport's handles: for a delivery, what
//! settles it (production: its ack subject; the simulator: consumer and sequence); for
//! an inbound request, what answers it (its reply subject).
//!
//! A JetStream delivery is settled by publishing `+ACK`, `-NAK`, `+TERM` or `+WPI` to its
//! reply subject (`$JS.ACK.<stream>.<consumer>.<delivered>.<stream_seq>...`). The table
//! keeps that handle, not the message, so payloads are freed as soon as the core has
//! seen them.
//!
//! Bounded: a delivery the core never settles (say, superseded by a redelivery after
//! `ack_wait`) would otherwise stay forever. When full, the oldest entry is dropped; if
//! the core later settles it, the host counts it as unknown and JetStream redelivers the
//! message after `ack_wait`, which the core handles like any redelivery. Measured on
//! nats-server 2.15.1: acking an older delivery's subject acks the stream sequence too,
//! so a late settle of a superseded delivery is not wrong, only late. An evicted inbound
//! request simply gets no answer; its caller times out.

use std::collections::BTreeMap;

#[derive(Debug)]
pub struct HandleTable<T> {
    next_id: u64,
    capacity: usize,
    held: BTreeMap<u64, T>,
    evicted: u64,
}

impl<T> HandleTable<T> {
    pub fn new(capacity: usize) -> Self {
        HandleTable {
            next_id: 1,
            // A table of none would evict every entry before the core could name it.
            capacity: capacity.max(1),
            held: BTreeMap::new(),
            evicted: 0,
        }
    }

    /// Remember a handle and return the id the core will name it by.
    /// Ids increase, so the first entry is always the oldest.
    pub fn hold(&mut self, handle: T) -> u64 {
        if self.held.len() >= self.capacity {
            self.held.pop_first();
            self.evicted += 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.held.insert(id, handle);
        id
    }

    /// The handle of an entry that stays (a delivery the core keeps working on: `+WPI`).
    pub fn get(&self, id: u64) -> Option<&T> {
        self.held.get(&id)
    }

    /// The handle of an entry the core is done with (settled or answered).
    pub fn take(&mut self, id: u64) -> Option<T> {
        self.held.remove(&id)
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many entries were dropped to keep the bound.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settles_once_and_evicts_the_oldest_when_full() {
        let mut t = HandleTable::new(2);
        let a = t.hold("$JS.ACK.a");
        let b = t.hold("$JS.ACK.b");
        assert!(b > a);
        assert_eq!(t.get(a).copied(), Some("$JS.ACK.a"));
        let c = t.hold("$JS.ACK.c");
        assert_eq!(t.evicted(), 1);
        assert!(t.take(a).is_none(), "the oldest was evicted");
        assert_eq!(t.take(b), Some("$JS.ACK.b"));
        assert!(t.take(b).is_none(), "a delivery is settled once");
        assert_eq!(t.len(), 1);
        assert!(t.take(c).is_some());
        assert!(t.is_empty());
    }
}
