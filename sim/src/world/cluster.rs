//! The JetStream cluster around the server model: node crashes, elections, and what a
//! group without a leader does to the requests that reach it (`jetstream::Cluster`
//! says who leads; this file makes the world act on it).
//!
//! While a stream has no leader a publish to it gets no PubAck (the client's own
//! time-out reports it failed), though now and then it was stored all the same (the old
//! leader had replicated it before it died: an ambiguous publish); its direct gets go
//! unanswered, and advisories meant for it are lost. While a consumer has no leader (or
//! its stream has none) it delivers nothing, its pull requests and acks are lost and its
//! info goes unanswered. A crash loses the pull requests waiting at the consumers the
//! node led; the new leader tells those it knew of (replicated, mostly) with a
//! `409 Leadership Change`, and publishes LEADER_ELECTED. Clients connected to the dead
//! node lose their connection and reconnect to another.

use serde_json::json;

use super::{Event, World};
use crate::actors::ActorTimer;
use crate::faults::NodeTarget;
use crate::jetstream::KV_GROUP;
use crate::net::NodeId;
use crate::topology::Role;
use crate::wire::{Cons, Down};
use beamline_router::core::KvOp;

/// How often a new consumer leader knows the pull requests waiting at the old one (they
/// are replicated to the group as proposals, nats-server >= 2.7.1).
const PULLS_KNOWN_PERMILLE: u64 = 800;
/// How often a router hears a new consumer leader's LEADER_ELECTED advisory (core NATS).
const ADVISORY_HEARD_PERMILLE: u64 = 700;

impl World {
    /// Does the group of the stream capturing `subject` serve now? (No such stream: yes,
    /// the publish fails on its own.)
    pub(super) fn stream_serves(&self, subject: &str) -> bool {
        self.js
            .stream_capturing(subject)
            .is_none_or(|s| self.cluster.serves(s))
    }

    /// Does `cons` serve now: its own group and its stream's both have a leader?
    pub(super) fn consumer_serves(&self, cons: Cons) -> bool {
        self.cluster.serves(cons.durable()) && self.cluster.serves(cons.stream())
    }

    pub(super) fn kv_serves(&self) -> bool {
        self.cluster.serves(KV_GROUP)
    }

    /// A publish reached a stream without a leader: no PubAck. True when it is stored
    /// anyway (ambiguous).
    pub(super) fn unanswered_publish(&mut self, from: NodeId, id: u64, subject: &str) -> bool {
        let stored = self.stored_anyway();
        self.count_fault();
        self.counters.ambiguous_stored += u64::from(stored);
        self.trace.record(
            self.now,
            "cluster.publish-unanswered",
            "nats",
            &json!({"from": self.topo.name(from), "publish": id, "subject": subject, "stored": stored}),
        );
        stored
    }

    /// A request to a group without a leader goes unanswered.
    pub(super) fn unanswered(&mut self, from: NodeId, what: &str, group: &str) {
        self.trace.record(
            self.now,
            "cluster.unanswered",
            "nats",
            &json!({"from": self.topo.name(from), "what": what, "group": group}),
        );
    }

    /// A KV request reached the bucket without a leader: unanswered, though a write is
    /// now and then applied all the same (ambiguous, as a stream publish).
    pub(super) fn kv_unanswered(&mut self, from: NodeId, op: KvOp) {
        let (key, applied) = match op {
            KvOp::Get { key } => (key, false),
            KvOp::Create { key, value } => {
                let applied = self.stored_anyway();
                if applied {
                    self.kv.create(self.now, &key, &value);
                }
                (key, applied)
            }
            KvOp::Put { key, value } => {
                let applied = self.stored_anyway();
                if applied {
                    self.kv.put(self.now, &key, &value);
                }
                (key, applied)
            }
        };
        self.trace.record(
            self.now,
            "cluster.kv-unanswered",
            "nats",
            &json!({"from": self.topo.name(from), "key": key, "applied": applied}),
        );
    }

    /// Whether a write that reached a leaderless group was replicated all the same.
    fn stored_anyway(&mut self) -> bool {
        let permille = self.profile.faults.ambiguous_permille;
        permille > 0 && self.cluster_rng.chance(permille)
    }

    /// A pull request reached a consumer without a leader: lost. A router's client
    /// hears no heartbeat for it and reports it silent.
    pub(super) fn pull_lost(&mut self, from: NodeId, cons: Cons, pull: u64) {
        self.unanswered(from, "pull", cons.durable());
        if let Role::Router(_) = self.topo.role(from) {
            let at = self.now + 2 * crate::host::PULL_HEARTBEAT_MS;
            self.timer(from, at, ActorTimer::PullSilent { cons, pull });
        }
    }

    pub(super) fn node_crash(&mut self, target: NodeTarget, down_ms: u64, elect_ms: u64) {
        let node = match target {
            NodeTarget::Node(n) => Some(n),
            NodeTarget::LeaderOf(group) => self.cluster.leader(&group),
        };
        let Some(node) = node.filter(|&n| self.cluster.is_up(n)) else {
            self.trace
                .record(self.now, "cluster.crash-skipped", "nats", &json!({}));
            return;
        };
        let lost = self.cluster.crash(node, self.now, elect_ms);
        self.counters.node_crashes += 1;
        self.trace.record(
            self.now,
            "cluster.node-down",
            "nats",
            &json!({"node": node, "leaderless": lost}),
        );
        for (group, until) in lost {
            if let Some(cons) = Cons::from_durable(&group) {
                self.consumer_leader_lost(cons);
            }
            if let Some(at) = until {
                self.schedule_at(at, Event::ElectionDone { group });
            }
        }
        if self.profile.faults.tail_loss && self.cluster.majority_down() {
            // Jepsen (nats-server 2.10): a majority that dies together loses what it had
            // not yet synced, acknowledged or not.
            self.lose_unsynced_tail();
        }
        // Its clients: the connection drops (the server side is gone, so it "notices"),
        // and they reconnect to another node after their backoff.
        let size = self.cluster.size();
        let next_up = (1..size)
            .map(|k| (node + k) % size)
            .find(|&n| self.cluster.is_up(n))
            .unwrap_or(node);
        for client in self.topo.nodes() {
            if self.client_node[client] != node {
                continue;
            }
            self.client_node[client] = next_up;
            let detect = self
                .cluster_rng
                .between(0, self.profile.faults.detect_max_ms);
            let reconnect = self.cluster_rng.between(0, 1_000);
            self.drop_link(client, reconnect, detect, true);
        }
        self.schedule_at(self.now + down_ms, Event::NodeBack { node });
    }

    /// `cons` lost its leader: its waiting pull requests are gone with it (remembered
    /// for the new leader's 409), and each router's pull on it falls silent.
    fn consumer_leader_lost(&mut self, cons: Cons) {
        let pulls = self
            .js
            .consumer_mut(cons.durable())
            .map(|c| c.take_pulls())
            .unwrap_or_default();
        self.lost_pulls.entry(cons).or_default().extend(pulls);
        self.router_pulls_lost(cons, None);
    }

    pub(super) fn node_back(&mut self, node: usize) {
        let elect_ms = self
            .cluster_rng
            .between(200, self.profile.faults.elect_max_ms.max(200));
        let started = self.cluster.restart(node, self.now, elect_ms);
        self.trace.record(
            self.now,
            "cluster.node-up",
            "nats",
            &json!({"node": node, "electing": started}),
        );
        for (group, at) in started {
            self.schedule_at(at, Event::ElectionDone { group });
        }
    }

    pub(super) fn election_done(&mut self, group: String) {
        let Some(leader) = self.cluster.elect(&group, self.now) else {
            return;
        };
        self.trace.record(
            self.now,
            "cluster.elected",
            "nats",
            &json!({"group": group, "leader": leader}),
        );
        self.group_serves_again(&group);
    }

    /// `group` has a leader again: a consumer's new leader tells the pull requests it
    /// knew of that they are void (`409 Leadership Change`) and announces itself; then
    /// whatever waited on the group moves.
    fn group_serves_again(&mut self, group: &str) {
        if let Some(cons) = Cons::from_durable(group) {
            let pulls = self.lost_pulls.remove(&cons).unwrap_or_default();
            for pull in pulls {
                let owner = self.pull_owner.get(&pull).copied();
                let Some((node, inc)) = owner else { continue };
                let alive = self.nodes[node].alive && self.nodes[node].incarnation == inc;
                if alive && self.cluster_rng.chance(PULLS_KNOWN_PERMILLE) {
                    self.counters.pulls_terminated += 1;
                    self.send_down(node, Down::PullTerminated { cons, pull });
                }
            }
            for r in 0..self.routers.len() {
                let node = self.topo.router(r);
                let heard = self.cluster_rng.chance(ADVISORY_HEARD_PERMILLE);
                if heard && self.nodes[node].connected && self.routers[r].host.is_some() {
                    self.timer(node, self.now, ActorTimer::LeaderElected { cons });
                }
            }
        }
        for cons in Cons::ALL {
            self.dispatch(cons);
        }
    }

    /// The heal: every node is up and every group has a leader.
    pub(super) fn heal_cluster(&mut self) {
        for group in self.cluster.heal() {
            self.trace.record(
                self.now,
                "cluster.elected",
                "nats",
                &json!({"group": group, "leader": self.cluster.leader(&group)}),
            );
            if let Some(cons) = Cons::from_durable(&group) {
                self.lost_pulls.remove(&cons);
            }
        }
    }
}
