//! I/O the core awaits (publishes, extension requests, shared-bucket operations) and the
//! host's own reads of given-up messages, each with the deadline the host holds it to. The host, not the transport, decides that an
//! operation timed out: when its deadline passes the core is told `Failed` / `Timeout`,
//! and an outcome that arrives later is dropped (counted as late). The transport may
//! give up on its side at the same deadline, to free what the operation holds, but
//! whatever it reports after the deadline changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use crate::core::Time;

/// What kind of operation an id names; the core numbers all of them from one counter,
/// but keying by kind as well keeps a confused transport from settling the wrong one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum IoKind {
    Publish,
    Request,
    Kv,
    /// A read of a given-up message (`Action::Fetch`), the host's own.
    Fetch,
}

#[derive(Debug, Default)]
pub struct IoTable {
    by_id: BTreeMap<(IoKind, u64), Time>,
    by_deadline: BTreeSet<(Time, IoKind, u64)>,
    late: u64,
}

impl IoTable {
    /// Start awaiting `id` until `deadline`. False if that id is already awaited (the
    /// core reused an id: a bug the caller reports).
    pub fn start(&mut self, kind: IoKind, id: u64, deadline: Time) -> bool {
        if self.by_id.contains_key(&(kind, id)) {
            return false;
        }
        self.by_id.insert((kind, id), deadline);
        self.by_deadline.insert((deadline, kind, id));
        true
    }

    /// An outcome arrived: true if the core still awaits it (it goes to the core),
    /// false if it is late or unknown (dropped).
    pub fn finish(&mut self, kind: IoKind, id: u64) -> bool {
        match self.by_id.remove(&(kind, id)) {
            Some(deadline) => {
                self.by_deadline.remove(&(deadline, kind, id));
                true
            }
            None => {
                self.late += 1;
                false
            }
        }
    }

    /// Every operation whose deadline is at or before `now`, earliest first; they are
    /// no longer awaited.
    pub fn expire(&mut self, now: Time) -> Vec<(IoKind, u64)> {
        let mut due = Vec::new();
        while let Some(&(at, kind, id)) = self.by_deadline.first() {
            if at > now {
                break;
            }
            self.by_deadline.pop_first();
            self.by_id.remove(&(kind, id));
            due.push((kind, id));
        }
        due
    }

    pub fn next_deadline(&self) -> Option<Time> {
        self.by_deadline.first().map(|&(at, _, _)| at)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Outcomes that arrived after their deadline (or for no operation at all).
    pub fn late(&self) -> u64 {
        self.late
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outcome_after_the_deadline_is_late_and_dropped() {
        let mut t = IoTable::default();
        assert!(t.start(IoKind::Publish, 1, Time(100)));
        assert!(t.start(IoKind::Request, 1, Time(50)));
        assert!(!t.start(IoKind::Publish, 1, Time(200)), "reused id");
        assert_eq!(t.next_deadline(), Some(Time(50)));
        assert_eq!(t.expire(Time(99)), vec![(IoKind::Request, 1)]);
        assert!(!t.finish(IoKind::Request, 1), "timed out before");
        assert_eq!(t.late(), 1);
        assert!(t.finish(IoKind::Publish, 1));
        assert!(t.is_empty());
        assert_eq!(t.next_deadline(), None);
    }
}
