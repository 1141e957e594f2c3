//! A JetStream cluster's availability: N nodes (1, 3 or 5), and one raft group per
//! stream, per durable consumer and for the KV bucket, each replicated on
//! `min(3, N)` peers with one leader. A group serves (stores, delivers, takes acks,
//! answers reads) only while it has a leader; a leader needs a quorum of its peers up.
//!
//! What a group holds is not modelled here: `JetStream` and `KvBucket` are the
//! committed state every leader agrees on (an R3 write is acknowledged after a quorum
//! stored it, so a new leader has it). This model says only *who* can serve *when*:
//! a leader's crash opens an election window (nats-server: 4 to 9 s after a SIGKILL,
//! measured in docs/OPERATIONS.md), a majority down stalls the group until a peer
//! returns. Pure: the world schedules the elections it is told about.

use std::collections::BTreeMap;

use crate::rng::SimRng;

/// The name of the KV bucket's group (its stream is `KV_<bucket>` in nats-server).
pub const KV_GROUP: &str = "KV";

#[derive(Clone, Debug)]
struct Group {
    /// The nodes that replicate this group.
    peers: Vec<usize>,
    leader: Option<usize>,
    /// An election is under way and ends then (a quorum was up when it started).
    electing_until: Option<u64>,
}

/// The cluster's nodes and groups.
#[derive(Clone, Debug)]
pub struct Cluster {
    up: Vec<bool>,
    groups: BTreeMap<String, Group>,
}

impl Cluster {
    /// `size` nodes; each of `groups` gets `min(3, size)` peers drawn from `rng`, the
    /// first of them its leader.
    pub fn new(size: usize, groups: &[&str], rng: &mut SimRng) -> Cluster {
        let size = size.max(1);
        let replicas = size.min(3);
        let groups = groups
            .iter()
            .map(|&name| {
                let mut nodes: Vec<usize> = (0..size).collect();
                let mut peers = Vec::with_capacity(replicas);
                for _ in 0..replicas {
                    let i = rng.below(nodes.len() as u64) as usize;
                    peers.push(nodes.remove(i));
                }
                let leader = Some(peers[0]);
                (
                    name.to_string(),
                    Group {
                        peers,
                        leader,
                        electing_until: None,
                    },
                )
            })
            .collect();
        Cluster {
            up: vec![true; size],
            groups,
        }
    }

    pub fn size(&self) -> usize {
        self.up.len()
    }

    pub fn is_up(&self, node: usize) -> bool {
        self.up.get(node).copied().unwrap_or(false)
    }

    /// Whether `group` has a leader now (an unknown group always serves).
    pub fn serves(&self, group: &str) -> bool {
        self.groups.get(group).is_none_or(|g| g.leader.is_some())
    }

    pub fn leader(&self, group: &str) -> Option<usize> {
        self.groups.get(group).and_then(|g| g.leader)
    }

    /// The groups `node` leads now, in name order.
    pub fn led_by(&self, node: usize) -> Vec<String> {
        self.groups
            .iter()
            .filter(|(_, g)| g.leader == Some(node))
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn has_quorum(&self, g: &Group) -> bool {
        let up = g.peers.iter().filter(|&&p| self.is_up(p)).count();
        up > g.peers.len() / 2
    }

    /// More than half of the cluster's nodes are down.
    pub fn majority_down(&self) -> bool {
        let down = self.up.iter().filter(|&&u| !u).count();
        down > self.size() / 2
    }

    /// `node` dies. Every group it led loses its leader, and every group of which it was
    /// a peer and that now lacks a quorum stops serving. Returns the groups that lost
    /// their leader, each with the end of its election (`None`: no quorum, it waits for
    /// a peer to return).
    pub fn crash(&mut self, node: usize, now: u64, elect_ms: u64) -> Vec<(String, Option<u64>)> {
        if !self.is_up(node) {
            return Vec::new();
        }
        self.up[node] = false;
        let mut lost = Vec::new();
        let names: Vec<String> = self.groups.keys().cloned().collect();
        for name in names {
            let g = &self.groups[&name];
            if !g.peers.contains(&node) {
                continue;
            }
            let quorum = self.has_quorum(g);
            let g = self.groups.get_mut(&name).expect("group");
            if g.leader == Some(node) || (!quorum && g.leader.is_some()) {
                g.leader = None;
                g.electing_until = quorum.then_some(now + elect_ms);
                lost.push((name, g.electing_until));
            } else if !quorum {
                g.electing_until = None;
            }
        }
        lost
    }

    /// `node` is back (its store intact, or caught up from its peers). Returns the
    /// leaderless groups that regained a quorum and start an election now.
    pub fn restart(&mut self, node: usize, now: u64, elect_ms: u64) -> Vec<(String, u64)> {
        if node >= self.size() || self.is_up(node) {
            return Vec::new();
        }
        self.up[node] = true;
        let mut started = Vec::new();
        let names: Vec<String> = self.groups.keys().cloned().collect();
        for name in names {
            let g = &self.groups[&name];
            if g.leader.is_some() || g.electing_until.is_some() || !self.has_quorum(g) {
                continue;
            }
            let until = now + elect_ms;
            self.groups.get_mut(&name).expect("group").electing_until = Some(until);
            started.push((name, until));
        }
        started
    }

    /// The election of `group` ends at `now`: the first peer up after the old leader
    /// (in peer order) leads. `None` if it is not due, or its quorum went meanwhile.
    pub fn elect(&mut self, group: &str, now: u64) -> Option<usize> {
        let g = self.groups.get(group)?;
        if g.leader.is_some() || g.electing_until.is_none_or(|t| t > now) || !self.has_quorum(g) {
            return None;
        }
        let leader = g.peers.iter().copied().find(|&p| self.is_up(p))?;
        let g = self.groups.get_mut(group).expect("group");
        // Rotate so that the next election prefers another peer.
        g.peers.rotate_left(1);
        g.leader = Some(leader);
        g.electing_until = None;
        Some(leader)
    }

    /// Everything heals: every node is up and every group has a leader. Returns the
    /// groups that were leaderless.
    pub fn heal(&mut self) -> Vec<String> {
        self.up.iter_mut().for_each(|u| *u = true);
        let mut elected = Vec::new();
        for (name, g) in &mut self.groups {
            if g.leader.is_none() {
                g.leader = Some(g.peers[0]);
                g.electing_until = None;
                elected.push(name.clone());
            }
        }
        elected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Cluster {
        Cluster::new(3, &["A", "B"], &mut SimRng::stream(1, "cluster"))
    }

    #[test]
    fn a_leader_crash_elects_another_peer_after_the_window() {
        let mut c = three();
        let leader = c.leader("A").unwrap();
        let lost = c.crash(leader, 100, 5_000);
        assert!(lost.contains(&("A".to_string(), Some(5_100))));
        assert!(!c.serves("A"));
        assert_eq!(c.elect("A", 5_099), None, "not before the window ends");
        let new = c.elect("A", 5_100).unwrap();
        assert_ne!(new, leader);
        assert!(c.serves("A"));
    }

    #[test]
    fn a_majority_down_stalls_until_a_peer_returns() {
        let mut c = three();
        let leader = c.leader("A").unwrap();
        let other = (0..3).find(|&n| n != leader).unwrap();
        c.crash(other, 0, 1_000);
        assert!(
            c.serves("A"),
            "one follower down: the leader keeps its quorum"
        );
        let lost = c.crash(leader, 10, 1_000);
        assert!(lost.contains(&("A".to_string(), None)), "{lost:?}");
        assert!(c.majority_down());
        assert_eq!(c.elect("A", 99_999), None);
        let started = c.restart(other, 2_000, 1_000);
        assert!(started.contains(&("A".to_string(), 3_000)));
        assert!(c.elect("A", 3_000).is_some());
    }

    #[test]
    fn a_single_node_is_every_group_s_only_peer() {
        let mut c = Cluster::new(1, &["A"], &mut SimRng::stream(1, "cluster"));
        assert_eq!(c.crash(0, 0, 1_000), vec![("A".to_string(), None)]);
        assert_eq!(c.restart(0, 500, 1_000), vec![("A".to_string(), 1_500)]);
        assert_eq!(c.elect("A", 1_500), Some(0));
    }

    #[test]
    fn heal_gives_every_group_a_leader() {
        let mut c = Cluster::new(5, &["A", "B", "C"], &mut SimRng::stream(2, "cluster"));
        for n in 0..5 {
            c.crash(n, 0, 1_000);
        }
        assert!(!c.serves("A") && !c.serves("B") && !c.serves("C"));
        c.heal();
        assert!(c.serves("A") && c.serves("B") && c.serves("C"));
    }
}
