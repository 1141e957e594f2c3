//! The network between the actors and the server. Every client actor (a router process,
//! a gateway, a CAF worker, an extension service, the usage consumer, the operator) has
//! one connection to the NATS server; everything it sends or receives travels on it.
//!
//! - Each message carries the epoch of the connection it was sent on and arrives only if
//!   that connection is still up when it gets there: a drop loses what is in flight, and
//!   a reconnect is a new connection, so nothing sent on the old one sneaks through.
//! - Like TCP, each direction is FIFO: a message never overtakes an earlier one on the
//!   same connection, so a slow one holds up those behind it (head-of-line blocking).
//! - Latency is a few ms, more for a "slow" message (a per-message fault) or during a
//!   latency spike (a timed fault on one connection or all of them).
//! - A partition between two actors drops the core NATS messages the server routes from
//!   one to the other (a route between cluster nodes is cut); each still reaches the
//!   server, so JetStream traffic is unaffected.

use crate::rng::SimRng;

/// An actor's index in the world's node table.
pub type NodeId = usize;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client to server: pulls, acks, publishes, requests.
    ToServer,
    /// Server to client: deliveries, confirmations, routed messages.
    ToClient,
}

#[derive(Clone, Debug)]
struct Link {
    up: bool,
    epoch: u64,
    /// The latest arrival time scheduled in each direction on this connection.
    last_to_server: u64,
    last_to_client: u64,
}

/// A latency spike: messages on `node`'s connection (every connection if `None`) take
/// up to `extra_ms` longer until `until`.
#[derive(Clone, Copy, Debug)]
struct Spike {
    node: Option<NodeId>,
    until: u64,
    extra_ms: u64,
}

/// When a message sent now arrives, and whether a per-message slow fault hit it.
#[derive(Clone, Copy, Debug)]
pub struct Transit {
    pub arrives_at: u64,
    pub slow: bool,
}

/// Per-message latency faults, on during the chaos phase only.
#[derive(Clone, Copy, Debug, Default)]
pub struct SlowFault {
    pub permille: u64,
    pub max_ms: u64,
}

#[derive(Debug)]
pub struct Net {
    links: Vec<Link>,
    rng: SimRng,
    spikes: Vec<Spike>,
    partitions: Vec<(NodeId, NodeId, u64)>,
}

impl Net {
    pub fn new(nodes: usize, rng: SimRng) -> Self {
        Net {
            links: vec![
                Link {
                    up: true,
                    epoch: 0,
                    last_to_server: 0,
                    last_to_client: 0,
                };
                nodes
            ],
            rng,
            spikes: Vec::new(),
            partitions: Vec::new(),
        }
    }

    pub fn is_up(&self, node: NodeId) -> bool {
        self.links[node].up
    }

    pub fn epoch(&self, node: NodeId) -> u64 {
        self.links[node].epoch
    }

    /// Whether a message sent on `node`'s connection `epoch` arrives now.
    pub fn delivers(&self, node: NodeId, epoch: u64) -> bool {
        let l = &self.links[node];
        l.up && l.epoch == epoch
    }

    pub fn drop_connection(&mut self, node: NodeId) {
        self.links[node].up = false;
    }

    /// A new connection with a new epoch.
    pub fn reconnect(&mut self, node: NodeId) {
        let l = &mut self.links[node];
        l.up = true;
        l.epoch += 1;
        l.last_to_server = 0;
        l.last_to_client = 0;
    }

    pub fn add_spike(&mut self, node: Option<NodeId>, until: u64, extra_ms: u64) {
        self.spikes.push(Spike {
            node,
            until,
            extra_ms,
        });
    }

    pub fn add_partition(&mut self, a: NodeId, b: NodeId, until: u64) {
        self.partitions.push((a, b, until));
    }

    /// Heal every spike and partition (the liveness phase begins).
    pub fn heal(&mut self) {
        self.spikes.clear();
        self.partitions.clear();
    }

    /// Whether core messages between `a` and `b` are cut now.
    pub fn partitioned(&mut self, a: NodeId, b: NodeId, now: u64) -> bool {
        self.partitions.retain(|&(_, _, until)| until > now);
        self.partitions
            .iter()
            .any(|&(x, y, _)| (x == a && y == b) || (x == b && y == a))
    }

    /// When a message sent now on `node`'s connection in `direction` arrives.
    pub fn send(
        &mut self,
        now: u64,
        node: NodeId,
        direction: Direction,
        slow_fault: SlowFault,
    ) -> Transit {
        let slow = slow_fault.permille > 0 && self.rng.chance(slow_fault.permille);
        let mut ms = if slow {
            self.rng.between(50, slow_fault.max_ms.max(50))
        } else {
            self.rng.between(1, 5)
        };
        self.spikes.retain(|s| s.until > now);
        let extra = self
            .spikes
            .iter()
            .filter(|s| s.node.is_none_or(|n| n == node))
            .map(|s| s.extra_ms)
            .max();
        if let Some(extra) = extra {
            ms += self.rng.between(extra / 2, extra.max(1));
        }
        let link = &mut self.links[node];
        let last = match direction {
            Direction::ToServer => &mut link.last_to_server,
            Direction::ToClient => &mut link.last_to_client,
        };
        let arrives_at = (now + ms).max(*last);
        *last = arrives_at;
        Transit { arrives_at, slow }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_direction_is_fifo() {
        let mut net = Net::new(1, SimRng::stream(1, "net"));
        let slow = SlowFault {
            permille: 500,
            max_ms: 3_000,
        };
        let mut last = 0;
        for t in 0..200 {
            let tr = net.send(t, 0, Direction::ToServer, slow);
            assert!(tr.arrives_at >= last && tr.arrives_at > t);
            last = tr.arrives_at;
        }
    }

    #[test]
    fn a_drop_loses_what_was_sent_on_the_old_connection() {
        let mut net = Net::new(2, SimRng::stream(1, "net"));
        let epoch = net.epoch(1);
        net.drop_connection(1);
        assert!(!net.delivers(1, epoch));
        net.reconnect(1);
        assert!(!net.delivers(1, epoch));
        assert!(net.delivers(1, net.epoch(1)));
        assert!(net.delivers(0, 0));
    }

    #[test]
    fn partitions_and_spikes_end_on_time() {
        let mut net = Net::new(3, SimRng::stream(1, "net"));
        net.add_partition(0, 2, 1_000);
        assert!(net.partitioned(2, 0, 999));
        assert!(!net.partitioned(0, 1, 999));
        assert!(!net.partitioned(0, 2, 1_000));
        net.add_spike(Some(1), 500, 2_000);
        let slow = net.send(0, 1, Direction::ToClient, SlowFault::default());
        assert!(slow.arrives_at >= 1_000);
        let fast = net.send(600, 1, Direction::ToServer, SlowFault::default());
        assert!(fast.arrives_at <= 605);
    }
}
