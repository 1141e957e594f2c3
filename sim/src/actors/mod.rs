//! The client actors besides the router processes: gateways (`gateway.rs`, with the
//! workload they send), CAF workers (`caf.rs`), extension services (`extension.rs`), the
//! usage consumer (`usage.rs`) and an operator polling the admin API (`ops.rs`).
//!
//! Each actor is a small state machine like the core: the world hands it what arrived
//! and it answers with an `Out` (messages to send to the server, timers to arm). None
//! schedules anything itself.

pub mod caf;
pub mod extension;
pub mod gateway;
pub mod ops;
pub mod usage;

use serde::Serialize;

use crate::net::NodeId;
use crate::wire::{Cons, Up};

/// A timer of some actor, delivered back to it as `Event::Timer`.
#[derive(Clone, Debug, Serialize)]
pub enum ActorTimer {
    // --- any client that pulls ---
    PullExpire {
        cons: Cons,
        pull: u64,
    },
    // --- router processes ---
    /// The consumer's new leader announced itself (its LEADER_ELECTED advisory reached
    /// this router's connection).
    LeaderElected {
        cons: Cons,
    },
    /// Two idle heartbeats have passed since pull `pull` of `cons` was lost with its
    /// consumer leader: the client reports the pull silent unless it pulled again since.
    PullSilent {
        cons: Cons,
        pull: u64,
    },
    /// The host's next deadline (`Host::poll_timeout`), at this world time.
    HostWake {
        at: u64,
    },
    // --- gateways ---
    GwStart {
        request: usize,
    },
    GwPubAckTimeout {
        request: usize,
        attempt: u64,
        publish: u64,
    },
    GwRepublish {
        request: usize,
        attempt: u64,
    },
    GwReplyTimeout {
        request: usize,
        attempt: u64,
    },
    GwPoll,
    // --- CAF workers ---
    CafWorkDone {
        seq: u64,
    },
    CafPubAckTimeout {
        publish: u64,
    },
    // --- extension services ---
    ExtAnswer {
        to: NodeId,
        id: u64,
        seq: u64,
    },
    ExtFlap,
    // --- the operator ---
    OpsTick,
    /// A core request of a gateway or the operator got no answer in time.
    RequestGiveUp {
        id: u64,
    },
}

/// What an actor wants done after handling something.
#[derive(Debug, Default)]
pub struct Out {
    pub sends: Vec<Up>,
    pub timers: Vec<(u64, ActorTimer)>,
}

impl Out {
    pub fn send(&mut self, up: Up) {
        self.sends.push(up);
    }

    pub fn timer(&mut self, at: u64, timer: ActorTimer) {
        self.timers.push((at, timer));
    }
}

/// Ids an actor hands out (pulls, publishes, requests): unique per node across the
/// whole world, so the server can tell whose a pull is from its id alone.
#[derive(Clone, Debug)]
pub struct Ids {
    node: NodeId,
    next: u64,
}

impl Ids {
    pub fn new(node: NodeId) -> Self {
        Ids { node, next: 1 }
    }

    pub fn fresh(&mut self) -> u64 {
        let id = ((self.node as u64) << 40) | self.next;
        self.next += 1;
        id
    }
}

/// One outstanding pull request on one consumer, renewed when its batch is used up or it
/// expires, as async-nats' pull stream does. Nothing is pulled while the client knows it
/// is disconnected; it pulls again on reconnect.
#[derive(Clone, Debug)]
pub struct Puller {
    pub cons: Cons,
    batch: u64,
    expires_ms: u64,
    current: u64,
    received: u64,
}

impl Puller {
    pub fn new(cons: Cons, batch: u64, expires_ms: u64) -> Self {
        Puller {
            cons,
            batch: batch.max(1),
            expires_ms,
            current: 0,
            received: 0,
        }
    }

    /// Issue a new pull (replacing the current one).
    pub fn pull(&mut self, now: u64, ids: &mut Ids, out: &mut Out) {
        self.current = ids.fresh();
        self.received = 0;
        out.send(Up::Pull {
            cons: self.cons,
            pull: self.current,
            batch: self.batch,
            expires_ms: self.expires_ms,
        });
        out.timer(
            now + self.expires_ms + 1,
            ActorTimer::PullExpire {
                cons: self.cons,
                pull: self.current,
            },
        );
    }

    /// Count a delivery against its pull; true when the batch is used up.
    pub fn on_delivery(&mut self, pull: u64) -> bool {
        if pull != self.current {
            return false;
        }
        self.received += 1;
        self.received >= self.batch
    }

    /// The pull expired: pull again if it is still the current one.
    pub fn expired(&self, pull: u64) -> bool {
        pull == self.current
    }

    /// The pull this client holds now (its latest).
    pub fn current(&self) -> u64 {
        self.current
    }
}
