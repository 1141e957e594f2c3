//! The event queue of the discrete-event loop: a min-heap on (virtual time, insertion
//! sequence). The insertion sequence breaks ties, so two events due at the same
//! millisecond always run in the order they were scheduled, on every machine.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

struct Entry<E> {
    at: u64,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<E> Eq for Entry<E> {}
impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Entry<E> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Scheduled events. Bounded by `capacity`: a run that schedules more than that is a
/// runaway (an event storm), and we would rather fail loudly than eat memory.
pub struct EventQueue<E> {
    heap: BinaryHeap<Reverse<Entry<E>>>,
    next_seq: u64,
    capacity: usize,
}

impl<E> EventQueue<E> {
    pub fn new(capacity: usize) -> Self {
        EventQueue {
            heap: BinaryHeap::new(),
            next_seq: 0,
            capacity,
        }
    }

    /// Schedule `event` at `at`. Returns false (and drops it) when the queue is full.
    #[must_use]
    pub fn push(&mut self, at: u64, event: E) -> bool {
        if self.heap.len() >= self.capacity {
            return false;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Reverse(Entry { at, seq, event }));
        true
    }

    /// The earliest event, ties in insertion order.
    pub fn pop(&mut self) -> Option<(u64, E)> {
        self.heap.pop().map(|Reverse(e)| (e.at, e.event))
    }

    pub fn peek_time(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_by_time_then_insertion_order() {
        let mut q = EventQueue::new(16);
        assert!(q.push(5, "late"));
        assert!(q.push(1, "first"));
        assert!(q.push(1, "second"));
        assert!(q.push(3, "middle"));
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(
            order,
            vec![(1, "first"), (1, "second"), (3, "middle"), (5, "late")]
        );
    }

    #[test]
    fn refuses_past_capacity() {
        let mut q = EventQueue::new(1);
        assert!(q.push(1, ()));
        assert!(!q.push(2, ()));
        assert_eq!(q.len(), 1);
    }
}
