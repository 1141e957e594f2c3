//! The pull watchdog's decisions, per consumer. The transport owns the pull machinery
//! (async-nats' pull stream in production, the modelled client in the simulator); the
//! host decides when to start pulling afresh:
//!
//! - at start, every consumer;
//! - a pull that went silent (no message and no idle heartbeat for two heartbeat
//!   intervals; the client library notices): at once. async-nats would pull again only
//!   when its request expires (`expires` + 5 s, 35 s) and the server may hold no pull
//!   request of ours at all;
//! - a new leader elected for the consumer (JetStream's LEADER_ELECTED advisory): at
//!   once. The pull request the old leader held died with it; the new leader has none
//!   of ours, and the heartbeats that would tell us so take two intervals to be missed;
//! - a pull that ended, or could not be started: after `retry_ms`;
//! - never while shutting down.

use crate::core::Time;

/// The idle heartbeat a pull asks for unless configured (`router.pull_heartbeat_ms`):
/// a pull that hears nothing for twice this is reported `Stalled`. The simulator's
/// modelled client uses the same value.
pub const DEFAULT_PULL_HEARTBEAT_MS: u64 = 1_000;

/// What the transport reports about one consumer's pulling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum PullEvent {
    /// Pulling started (the pull stream is open).
    Started,
    /// Pulling could not be started (no stream, no connection, refused).
    StartFailed,
    /// The pull heard neither a message nor an idle heartbeat for two heartbeats.
    Stalled,
    /// The pull ended (the stream closed).
    Ended,
    /// The consumer has a new leader: whatever pull request we had is at the old one.
    LeaderElected,
}

#[derive(Debug)]
pub struct Pulls {
    retry_ms: u64,
    /// Per consumer: when to start pulling again, if it is not pulling now.
    due: Vec<Option<Time>>,
    restarts: Vec<u64>,
    leader_moves: Vec<u64>,
    stopped: bool,
}

impl Pulls {
    pub fn new(consumers: usize, retry_ms: u64) -> Self {
        Pulls {
            retry_ms,
            due: vec![None; consumers],
            restarts: vec![0; consumers],
            leader_moves: vec![0; consumers],
            stopped: false,
        }
    }

    /// Start every consumer now.
    pub fn start_all(&mut self, now: Time) {
        self.due.iter_mut().for_each(|d| *d = Some(now));
    }

    /// Take in what the transport reported; pulling is due again if the pull is gone.
    pub fn on_event(&mut self, consumer: usize, event: PullEvent, now: Time) {
        let Some(due) = self.due.get_mut(consumer) else {
            return;
        };
        *due = match event {
            PullEvent::Started => None,
            PullEvent::Stalled => {
                self.restarts[consumer] += 1;
                Some(now)
            }
            PullEvent::LeaderElected => {
                self.leader_moves[consumer] += 1;
                Some(now)
            }
            PullEvent::StartFailed | PullEvent::Ended => Some(now.after(self.retry_ms)),
        };
    }

    /// Consumers due to start pulling at `now`; they are no longer due (until the
    /// transport reports again).
    pub fn take_due(&mut self, now: Time) -> Vec<usize> {
        if self.stopped {
            return Vec::new();
        }
        let mut due = Vec::new();
        for (i, at) in self.due.iter_mut().enumerate() {
            if at.is_some_and(|at| at <= now) {
                *at = None;
                due.push(i);
            }
        }
        due
    }

    pub fn next_due(&self) -> Option<Time> {
        if self.stopped {
            return None;
        }
        self.due.iter().flatten().min().copied()
    }

    /// Shutting down: no more pulls.
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    /// Pulls started afresh because the previous one went silent, per consumer.
    pub fn restarts(&self) -> &[u64] {
        &self.restarts
    }

    /// Pulls started afresh because the consumer's leader changed, per consumer.
    pub fn leader_moves(&self) -> &[u64] {
        &self.leader_moves
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_restarts_at_once_an_end_after_the_retry_delay() {
        let mut p = Pulls::new(2, 1_000);
        p.start_all(Time(0));
        assert_eq!(p.take_due(Time(0)), vec![0, 1]);
        assert_eq!(p.next_due(), None, "taken, awaiting the transport's word");
        p.on_event(0, PullEvent::Started, Time(1));
        p.on_event(1, PullEvent::Started, Time(1));
        p.on_event(0, PullEvent::Stalled, Time(10_000));
        p.on_event(1, PullEvent::Ended, Time(10_000));
        assert_eq!(p.take_due(Time(10_000)), vec![0]);
        assert_eq!(p.next_due(), Some(Time(11_000)));
        assert_eq!(p.take_due(Time(11_000)), vec![1]);
        assert_eq!(p.restarts(), &[1, 0]);
        // A new leader: pull again at once, whatever the current pull looks like.
        p.on_event(1, PullEvent::Started, Time(11_001));
        p.on_event(1, PullEvent::LeaderElected, Time(12_000));
        assert_eq!(p.take_due(Time(12_000)), vec![1]);
        assert_eq!(p.leader_moves(), &[0, 1]);
        p.on_event(1, PullEvent::StartFailed, Time(12_001));
        p.stop();
        assert_eq!(p.next_due(), None);
        assert!(p.take_due(Time(99_999)).is_empty());
    }
}
