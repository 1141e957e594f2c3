//! Moving messages: client to server (`send_up`), server to client (`send_down`), their
//! arrival (a message sent on a connection that is gone by then is lost), and the core
//! NATS routing between clients (requests, their answers, replies to inboxes) with its
//! faults: partitions, lost and duplicated messages.

use serde_json::json;

use super::{Event, World};
use crate::actors::Out;
use crate::net::{Direction, NodeId, SlowFault};
use crate::topology::Role;
use crate::wire::{Down, ReplyOutcome, Up};

impl World {
    fn slow_fault(&self) -> SlowFault {
        if self.in_chaos() {
            self.profile.faults.slow()
        } else {
            SlowFault::default()
        }
    }

    /// A client sends a message to the server on its connection.
    pub(super) fn send_up(&mut self, from: NodeId, msg: Up) {
        if !self.nodes[from].alive {
            return;
        }
        if let Up::Ack { cons, seq, kind } = &msg {
            let loss = self.profile.faults.ack_loss_permille;
            if self.in_chaos() && loss > 0 && self.faults_rng.chance(loss) {
                self.count_fault();
                self.trace.record(
                    self.now,
                    "fault.ack-lost",
                    self.topo.name(from),
                    &json!({"cons": cons, "seq": seq, "kind": kind}),
                );
                return;
            }
        }
        let slow = self.slow_fault();
        let transit = self.net.send(self.now, from, Direction::ToServer, slow);
        if transit.slow {
            self.count_fault();
        }
        let epoch = self.net.epoch(from);
        self.schedule_at(
            transit.arrives_at,
            Event::AtBroker {
                from,
                epoch,
                sent: self.now,
                msg,
            },
        );
    }

    /// The server sends a message to a client, on the client's current connection.
    pub(super) fn send_down(&mut self, to: NodeId, msg: Down) {
        let slow = self.slow_fault();
        let transit = self.net.send(self.now, to, Direction::ToClient, slow);
        if transit.slow {
            self.count_fault();
        }
        let (epoch, inc) = (self.net.epoch(to), self.nodes[to].incarnation);
        self.schedule_at(
            transit.arrives_at,
            Event::AtClient {
                to,
                epoch,
                inc,
                sent: self.now,
                msg,
            },
        );
    }

    /// Carry out what an actor asked for.
    pub(super) fn apply_out(&mut self, node: NodeId, out: Out) {
        for up in out.sends {
            self.send_up(node, up);
        }
        for (at, timer) in out.timers {
            self.timer(node, at, timer);
        }
    }

    /// Whether a message arriving at the server from `from` gets there; traces it.
    pub(super) fn arrives_at_broker(
        &mut self,
        from: NodeId,
        epoch: u64,
        sent: u64,
        msg: &Up,
    ) -> bool {
        let ok = self.broker_up && self.net.delivers(from, epoch);
        let name = self.topo.name(from).to_string();
        self.trace_msg(ok, &name, "nats", sent, &msg.label());
        ok
    }

    /// Whether a message arriving at client `to` gets there; traces it.
    pub(super) fn arrives_at_client(
        &mut self,
        to: NodeId,
        epoch: u64,
        inc: u64,
        sent: u64,
        msg: &Down,
    ) -> bool {
        let n = &self.nodes[to];
        let ok = n.alive && n.incarnation == inc && self.net.delivers(to, epoch);
        let name = self.topo.name(to).to_string();
        self.trace_msg(ok, "nats", &name, sent, &msg.label());
        ok
    }

    fn trace_msg(&mut self, arrived: bool, from: &str, to: &str, sent: u64, label: &str) {
        if !arrived {
            self.counters.lost_in_transit += 1;
        }
        let kind = if arrived { "net" } else { "net.lost" };
        let detail = json!({"from": from, "sent": sent, "m": label});
        self.trace.record(self.now, kind, to, &detail);
    }

    /// A core message the server routes from `from` to subscriber `to`: partitions and
    /// the lost/duplicated-message faults apply. Returns whether it was sent at all.
    pub(super) fn route_core(&mut self, from: NodeId, to: NodeId, msg: Down) -> bool {
        if self.net.partitioned(from, to, self.now) {
            self.count_fault();
            let detail = json!({"from": self.topo.name(from), "m": msg.label()});
            self.trace
                .record(self.now, "fault.partitioned", self.topo.name(to), &detail);
            return false;
        }
        let f = &self.profile.faults;
        let (loss, dup) = (f.reply_loss_permille, f.reply_dup_permille);
        if self.in_chaos() && loss > 0 && self.faults_rng.chance(loss) {
            self.count_fault();
            let detail = json!({"from": self.topo.name(from), "m": msg.label()});
            self.trace
                .record(self.now, "fault.core-lost", self.topo.name(to), &detail);
            return false;
        }
        let twice = self.in_chaos() && dup > 0 && self.faults_rng.chance(dup);
        if twice {
            self.count_fault();
            self.trace.record(
                self.now,
                "fault.core-dup",
                self.topo.name(to),
                &json!({"m": msg.label()}),
            );
            self.send_down(to, msg.clone());
        }
        self.send_down(to, msg);
        true
    }

    /// A core request reaches the server: route it to one subscriber, or answer "no
    /// responders" at once.
    pub(super) fn route_request(
        &mut self,
        from: NodeId,
        id: u64,
        subject: String,
        headers: beamline_router::core::Headers,
        payload: Vec<u8>,
    ) {
        let responder = self.responder_for(&subject);
        match responder {
            None => {
                let reply = Down::Reply {
                    id,
                    outcome: ReplyOutcome::NoResponders,
                };
                self.send_down(from, reply);
            }
            Some(to) => {
                let msg = Down::Msg {
                    subject,
                    headers,
                    payload,
                    reply: Some((from, id)),
                };
                self.route_core(from, to, msg);
            }
        }
    }

    /// Who the server would hand a request on `subject` to: an extension service for its
    /// subject, one of the router processes (a queue group) for the router's own subjects.
    fn responder_for(&mut self, subject: &str) -> Option<NodeId> {
        let reachable = |w: &World, node: NodeId| {
            w.nodes[node].alive && !w.nodes[node].server_knows_down && w.broker_up
        };
        let registry = self.core_config.extensions.clone();
        if let Some(def) = registry.iter().find(|d| d.subject == subject) {
            let i = crate::topology::EXTENSIONS
                .iter()
                .position(|e| *e == def.id)?;
            let node = self.topo.ext(i);
            return (self.exts[i].subscribed() && reachable(self, node)).then_some(node);
        }
        use beamline_router::contracts::subjects::{
            ADMIN_NODE_PREFIX, ADMIN_PREFIX, BACKPRESSURE_STATUS,
        };
        let ours = subject == BACKPRESSURE_STATUS || subject.starts_with(ADMIN_PREFIX);
        if !ours {
            return None;
        }
        // `admin.node.<node_id>.<op>` reaches that instance only (router r is
        // `router-<r+1>`); everything else one instance of the queue group.
        let addressed = subject
            .strip_prefix(ADMIN_NODE_PREFIX)
            .and_then(|rest| rest.split('.').next())
            .map(str::to_string);
        let candidates: Vec<NodeId> = (0..self.topo.routers())
            .filter(|&r| {
                addressed
                    .as_deref()
                    .is_none_or(|id| id == format!("router-{}", r + 1))
            })
            .map(|r| (r, self.topo.router(r)))
            .filter(|&(r, n)| reachable(self, n) && self.routers[r].host.is_some())
            .map(|(_, n)| n)
            .collect();
        if candidates.is_empty() {
            return None;
        }
        Some(*self.route_rng.pick(&candidates))
    }

    /// A client answered a request it was routed: back to the requester.
    pub(super) fn route_response(&mut self, from: NodeId, to: NodeId, id: u64, payload: Vec<u8>) {
        let msg = Down::Reply {
            id,
            outcome: ReplyOutcome::Reply(payload),
        };
        self.route_core(from, to, msg);
    }

    /// The gateway node a reply inbox belongs to.
    pub(super) fn inbox_owner(&self, subject: &str) -> Option<NodeId> {
        let (request, _) = crate::actors::gateway::parse_inbox(subject)?;
        (request < self.workload.len())
            .then(|| self.topo.gateway(self.workload.request(request).gateway))
    }

    /// Whether `node` is a router process.
    pub(super) fn router_index(&self, node: NodeId) -> Option<usize> {
        match self.topo.role(node) {
            Role::Router(r) => Some(r),
            _ => None,
        }
    }
}
