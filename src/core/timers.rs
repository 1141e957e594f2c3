//! The core's own timers: a retry of a DLQ record, a retry of an extension call. The
//! core owns them (quinn's `poll_timeout` / `handle_timeout` is the model): a host asks
//! `Router::poll_timeout` when the next one is due and feeds `Input::Timeout` once the
//! clock has passed it, so neither host nor shell keeps a timer table for the core.

use std::collections::BTreeMap;

use super::env::Time;
use super::io::TimerKey;

/// Timers ordered by deadline, then by the order they were set. Bounded by the messages
/// in flight: each holds at most one timer at a time.
#[derive(Debug)]
pub struct Timers<P> {
    by_deadline: BTreeMap<(Time, TimerKey), P>,
    next_key: TimerKey,
}

impl<P> Default for Timers<P> {
    fn default() -> Self {
        Timers {
            by_deadline: BTreeMap::new(),
            next_key: 1,
        }
    }
}

impl<P> Timers<P> {
    /// Run `purpose` once the clock reaches `at`.
    pub fn set(&mut self, at: Time, purpose: P) {
        let key = self.next_key;
        self.next_key += 1;
        self.by_deadline.insert((at, key), purpose);
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<Time> {
        self.by_deadline.keys().next().map(|&(at, _)| at)
    }

    /// Remove and return every timer due at `now`, earliest first.
    pub fn pop_due(&mut self, now: Time) -> Vec<P> {
        let mut due = Vec::new();
        while let Some(entry) = self.by_deadline.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
        due
    }

    pub fn len(&self) -> usize {
        self.by_deadline.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_timers_come_out_earliest_first_and_in_the_order_set() {
        let mut t = Timers::default();
        t.set(Time(200), "b");
        t.set(Time(100), "a");
        t.set(Time(200), "c");
        assert_eq!(t.next_deadline(), Some(Time(100)));
        assert!(t.pop_due(Time(99)).is_empty());
        assert_eq!(t.pop_due(Time(200)), vec!["a", "b", "c"]);
        assert_eq!(t.len(), 0);
        assert_eq!(t.next_deadline(), None);
    }
}
