//! The core's timers: `SetTimer { key, at }` arms (or re-arms) `key`; when the host's
//! clock passes `at` it feeds `Input::Timer { key }`. One table for both worlds.

use std::collections::{BTreeMap, BTreeSet};

use crate::core::{Time, TimerKey};

#[derive(Debug, Default)]
pub struct Timers {
    by_deadline: BTreeSet<(u64, TimerKey)>,
    by_key: BTreeMap<TimerKey, u64>,
}

impl Timers {
    /// Setting a key that is already armed moves its deadline: a key names one timer.
    pub fn set(&mut self, key: TimerKey, at: u64) {
        if let Some(old) = self.by_key.insert(key, at) {
            self.by_deadline.remove(&(old, key));
        }
        self.by_deadline.insert((at, key));
    }

    pub fn next_deadline(&self) -> Option<u64> {
        self.by_deadline.first().map(|&(at, _)| at)
    }

    /// Disarm and return every timer due at `now`, earliest first.
    pub fn pop_due(&mut self, now: Time) -> Vec<TimerKey> {
        let mut due = Vec::new();
        while let Some(&(at, key)) = self.by_deadline.first() {
            if at > now.millis() {
                break;
            }
            self.by_deadline.pop_first();
            self.by_key.remove(&key);
            due.push(key);
        }
        due
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_deadline_order_and_rearming_moves_a_key() {
        let mut t = Timers::default();
        t.set(1, 300);
        t.set(2, 100);
        t.set(3, 200);
        t.set(1, 150);
        assert_eq!(t.len(), 3);
        assert_eq!(t.next_deadline(), Some(100));
        assert_eq!(t.pop_due(Time(99)), Vec::<TimerKey>::new());
        assert_eq!(t.pop_due(Time(200)), vec![2, 1, 3]);
        assert!(t.is_empty());
        assert_eq!(t.next_deadline(), None);
    }
}
