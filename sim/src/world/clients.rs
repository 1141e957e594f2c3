//! The actors other than the router processes: what reaches them, and their timers.

use serde_json::json;

use super::World;
use crate::actors::{ActorTimer, Out};
use crate::jetstream::AckKind;
use crate::net::NodeId;
use crate::topology::Role;
use crate::wire::{Cons, Down, ReplyOutcome, Up};

impl World {
    pub(super) fn at_client(&mut self, to: NodeId, epoch: u64, inc: u64, sent: u64, msg: Down) {
        if !self.arrives_at_client(to, epoch, inc, sent, &msg) {
            return;
        }
        if let Down::PullTerminated { cons, pull } = msg {
            // As async-nats' pull stream: a 409 on the current pull means pull again.
            let current = match self.topo.role(to) {
                Role::Router(r) => self.routers[r]
                    .host
                    .as_mut()
                    .and_then(|h| h.puller(cons))
                    .map(|p| p.current()),
                Role::Caf(i) => Some(self.cafs[i].puller.current()),
                Role::Usage => Some(self.usage.puller.current()),
                _ => None,
            };
            if current == Some(pull) {
                self.pull(to, cons);
            }
            return;
        }
        let now = self.now;
        let mut out = Out::default();
        match self.topo.role(to) {
            Role::Router(r) => return self.at_router(r, msg),
            Role::Gateway(_) => match msg {
                Down::PubAck { id, error } => {
                    self.workload.on_puback(id, error.is_some(), now, &mut out);
                }
                Down::Msg {
                    subject, payload, ..
                } => {
                    let first = crate::actors::gateway::parse_inbox(&subject)
                        .is_some_and(|(i, _)| i < self.workload.len() && !self.workload.replied(i));
                    if let Some((request, attempt)) = self.workload.on_reply(&subject) {
                        if first {
                            self.observe_first_reply(to, request, attempt, &payload);
                        }
                        self.trace.record(
                            now,
                            "gw.reply",
                            self.topo.name(to),
                            &json!({"request": request, "attempt": attempt}),
                        );
                    }
                }
                Down::Reply {
                    id,
                    outcome: ReplyOutcome::Reply(payload),
                } if self.workload.poll_done(id) => {
                    self.checker.on_status_answer(now, &payload);
                }
                _ => {}
            },
            Role::Caf(i) => match msg {
                Down::Delivery { d, .. } => {
                    let batch_done = self.cafs[i].puller.on_delivery(d.pull);
                    self.cafs[i].on_delivery(d.stream_seq, &d.payload, now, &mut out);
                    if batch_done {
                        self.apply_out(to, std::mem::take(&mut out));
                        self.pull(to, Cons::Assign);
                    }
                }
                Down::PubAck { id, error } => {
                    self.cafs[i].on_puback(id, error.is_some(), now, &mut out)
                }
                _ => {}
            },
            Role::Ext(i) => {
                if let Down::Msg {
                    payload,
                    reply: Some((from, id)),
                    ..
                } = msg
                {
                    self.exts[i].on_request(from, id, &payload, now, &mut out);
                }
            }
            Role::Usage => {
                if let Down::Delivery { d, .. } = msg {
                    let batch_done = self.usage.puller.on_delivery(d.pull);
                    self.checker
                        .on_usage_consumed(now, d.stream_seq, &d.payload, &self.workload);
                    out.send(Up::Ack {
                        cons: Cons::Usage,
                        seq: d.stream_seq,
                        kind: AckKind::Ack,
                    });
                    if batch_done {
                        self.apply_out(to, std::mem::take(&mut out));
                        self.pull(to, Cons::Usage);
                    }
                }
            }
            Role::Ops => {
                if let Down::Reply { id, outcome } = msg {
                    if let (Some((op, auth)), ReplyOutcome::Reply(payload)) =
                        (self.ops.done(id), outcome)
                    {
                        self.checker.on_admin_answer(now, op, auth, &payload);
                    }
                }
            }
        }
        self.apply_out(to, out);
    }

    pub(super) fn on_timer(&mut self, node: NodeId, timer: ActorTimer) {
        let now = self.now;
        let mut out = Out::default();
        match (self.topo.role(node), &timer) {
            (Role::Router(r), _) => return self.router_timer(r, timer),
            (_, ActorTimer::PullExpire { cons, pull }) => {
                let expired = match self.topo.role(node) {
                    Role::Caf(i) => self.cafs[i].puller.expired(*pull),
                    Role::Usage => self.usage.puller.expired(*pull),
                    _ => false,
                };
                if expired {
                    self.pull(node, *cons);
                }
            }
            (Role::Gateway(_), ActorTimer::GwPoll) => {
                let ids = &mut self.gateway_ids[node - self.topo.gateway(0)];
                self.workload.poll(now, ids, &mut out);
            }
            (Role::Gateway(_), ActorTimer::RequestGiveUp { id }) => {
                self.workload.poll_done(*id);
            }
            (Role::Gateway(_), _) => {
                let ids = &mut self.gateway_ids[node - self.topo.gateway(0)];
                self.workload.on_timer(&timer, now, ids, &mut out);
            }
            (Role::Caf(i), ActorTimer::CafWorkDone { seq }) => {
                let in_chaos = self.in_chaos();
                self.cafs[i].work_done(*seq, now, &self.profile.faults, in_chaos, &mut out);
            }
            (Role::Caf(i), ActorTimer::CafPubAckTimeout { publish }) => {
                self.cafs[i].on_puback(*publish, true, now, &mut out);
            }
            (Role::Ext(i), ActorTimer::ExtAnswer { to, id, seq }) => {
                self.exts[i].answer_ready(*to, *id, *seq, &mut out);
            }
            (Role::Ext(i), ActorTimer::ExtFlap) if self.in_chaos() => {
                self.exts[i].flap(now, &mut out);
            }
            (Role::Ops, ActorTimer::OpsTick) => self.ops.tick(now, &mut out),
            (Role::Ops, ActorTimer::RequestGiveUp { id }) => {
                self.ops.done(*id);
            }
            _ => {}
        }
        self.apply_out(node, out);
    }

    /// A client other than a router (re)connected: pull again.
    pub(super) fn client_connected(&mut self, node: NodeId) {
        match self.topo.role(node) {
            Role::Caf(_) => self.pull(node, Cons::Assign),
            Role::Usage => self.pull(node, Cons::Usage),
            _ => {}
        }
    }
}
