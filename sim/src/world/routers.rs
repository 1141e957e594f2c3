//! The router processes: starting, crashing and restarting them, handing the core what
//! arrives (deliveries, confirmations, answers, inbound requests, advisories turned into
//! `Input::Exhausted`), and carrying out its commands.

use beamline_router::contracts::subjects;
use beamline_router::core::{
    Command, ConnectionEvent, Exhausted, Input, KvOutcome, PublishKind, PublishOutcome,
    RequestOutcome,
};
use serde_json::json;

use super::{Event, World};
use crate::actors::{ActorTimer, Out};
use crate::host::{dlq_msg_id, parse_advisory, RouterHost};
use crate::invariants::decide::{Original, StepInput};
use crate::jetstream::AckKind;
use crate::net::NodeId;
use crate::options::Bug;
use crate::policies::world_policies;
use crate::rng::SimRng;
use crate::wire::{Cons, Down, KvReply, ReplyOutcome, Up};

/// How long a router waits for the shared bucket (the shell's `state.kv_timeout_ms`).
const KV_TIMEOUT_MS: u64 = 2_000;

impl World {
    /// Build router `r`'s process (a new incarnation) and connect it.
    pub(super) fn start_router(&mut self, r: usize) {
        let node = self.topo.router(r);
        let inc = self.nodes[node].incarnation;
        let mut config = self.core_config.clone();
        config.node_id = format!("router-{}", r + 1);
        let entropy = SimRng::stream(self.options.seed, &format!("core-{r}-{inc}"));
        self.routers[r].host = Some(RouterHost::new(
            node,
            config,
            world_policies(self.profile.shared_answers),
            entropy,
            self.routers[r].clock_offset,
            self.profile.pull_batch,
            self.profile.pull_expires_ms,
        ));
        self.nodes[node].alive = true;
        self.nodes[node].connected = false;
        self.trace.record(
            self.now,
            "router.start",
            self.topo.name(node),
            &json!({"incarnation": inc, "clock_offset_ms": self.routers[r].clock_offset}),
        );
        self.try_reconnect(node);
    }

    /// A router process dies: its memory is gone; the server keeps its unacked messages.
    pub(super) fn crash_router(&mut self, r: usize, down_ms: u64, server_notices: bool) {
        let node = self.topo.router(r);
        if !self.nodes[node].alive {
            return;
        }
        if let Some(h) = self.routers[r].host.take() {
            super::add_stats(&mut self.crashed_stats, h.router().stats());
        }
        self.routers[r].crashes += 1;
        self.counters.crashes += 1;
        self.nodes[node].alive = false;
        self.nodes[node].connected = false;
        self.net.drop_connection(node);
        if server_notices {
            self.server_forgets(node);
        }
        self.trace.record(
            self.now,
            "fault.crash",
            self.topo.name(node),
            &json!({"down_ms": down_ms, "server_notices": server_notices}),
        );
        self.schedule_at(self.now + down_ms, Event::RouterRestart { router: r });
    }

    pub(super) fn restart_router(&mut self, r: usize) {
        let node = self.topo.router(r);
        if self.nodes[node].alive {
            return;
        }
        self.nodes[node].incarnation += 1;
        self.start_router(r);
    }

    /// Hand one input to router `r`'s core and carry out its commands.
    pub(super) fn feed(&mut self, r: usize, input: Input) {
        self.feed_with(r, input, StepInput { message: None });
    }

    fn feed_with(&mut self, r: usize, input: Input, step_input: StepInput) -> Vec<Command> {
        let node = self.topo.router(r);
        let in_chaos = self.in_chaos();
        let Some(host) = self.routers[r].host.as_mut() else {
            return Vec::new();
        };
        let name = self.topo.name(node).to_string();
        self.trace.record(self.now, "core.in", &name, &input);
        let before = host.router().stats().clone();
        let step = host.handle(self.now, in_chaos, &mut self.buggify, input);
        for (site, active) in &step.activated {
            self.trace.record(
                self.now,
                "buggify.site",
                &name,
                &json!({"site": site, "active": active}),
            );
        }
        for site in &step.fired {
            self.trace.record(self.now, "buggify.fired", &name, site);
        }
        let proc = self.proc_of(r);
        {
            let host = self.routers[r].host.as_ref().expect("fed above");
            let after = host.router().stats().clone();
            if !in_chaos && after.backpressure_naks > before.backpressure_naks {
                self.backpressure_after_heal = true;
            }
            let js = &self.js;
            let pending = |cons: Cons, seq: u64| {
                js.consumer(cons.durable()).is_some_and(|c| {
                    matches!(c.state(seq), crate::jetstream::MessageState::Pending { .. })
                })
            };
            let original = |cons: Cons, seq: u64| {
                js.stream(cons.stream())
                    .and_then(|s| s.get(seq))
                    .map(|m| Original {
                        subject: &m.subject,
                        headers: &m.headers,
                        payload: &m.payload,
                    })
            };
            self.checker.on_core_step(
                self.now,
                proc,
                step_input,
                &step.commands,
                |id| host.delivery(id),
                original,
                &pending,
                &self.workload,
                &before,
                &after,
            );
        }
        for command in &step.commands {
            self.trace.record(self.now, "core.cmd", &name, command);
        }
        for command in step.commands.iter().cloned() {
            self.execute(r, command);
        }
        self.ack_advisories(r);
        step.commands
    }

    /// A sticky-session read or write of the shared bucket, timed out like a create.
    fn kv_access(&mut self, r: usize, id: u64, up: Up) {
        let node = self.topo.router(r);
        let now = self.now;
        let Some(host) = self.routers[r].host.as_mut() else {
            return;
        };
        if !host.track_request(id) {
            self.checker.fail(
                now,
                "request_id_reused",
                format!("kv access id {id} reused while in flight"),
            );
            return;
        }
        self.timer(node, now + KV_TIMEOUT_MS, ActorTimer::KvTimeout { id });
        self.send_up(node, up);
    }

    fn execute(&mut self, r: usize, command: Command) {
        let node = self.topo.router(r);
        let now = self.now;
        let Some(host) = self.routers[r].host.as_mut() else {
            return;
        };
        match command {
            Command::Ack { delivery } => self.send_ack(r, delivery, AckKind::Ack),
            Command::Nak { delivery, delay_ms } => {
                self.send_ack(r, delivery, AckKind::Nak { delay_ms })
            }
            Command::Term { delivery } => self.send_ack(r, delivery, AckKind::Term),
            Command::InProgress { delivery } => self.send_ack(r, delivery, AckKind::Progress),
            Command::SetTimer { key, at } => {
                host.arm_timer(key, at);
                let world_at = host.world_time_of(at, now);
                self.timer(node, world_at, ActorTimer::CoreTimer { key, at });
            }
            Command::Request {
                id,
                subject,
                headers,
                payload,
                timeout_ms,
            } => {
                if !host.track_request(id) {
                    self.checker.fail(
                        now,
                        "request_id_reused",
                        format!("request id {id} reused while in flight"),
                    );
                    return;
                }
                self.checker
                    .publish_sent_at
                    .insert((self.proc_of(r), u64::MAX - id), now);
                self.timer(node, now + timeout_ms, ActorTimer::RequestTimeout { id });
                self.send_up(
                    node,
                    Up::Request {
                        id,
                        subject,
                        headers,
                        payload,
                    },
                );
            }
            Command::KvCreate { id, key, value } => {
                if !host.track_request(id) {
                    self.checker.fail(
                        now,
                        "request_id_reused",
                        format!("kv create id {id} reused while in flight"),
                    );
                    return;
                }
                self.timer(node, now + KV_TIMEOUT_MS, ActorTimer::KvTimeout { id });
                self.send_up(node, Up::KvCreate { id, key, value });
            }
            Command::KvGet { id, key } => self.kv_access(r, id, Up::KvGet { id, key }),
            Command::KvPut { id, key, value } => {
                self.kv_access(r, id, Up::KvPut { id, key, value })
            }
            Command::Respond { id, payload } => match host.take_inbound(id) {
                Some((to, request)) => self.send_up(
                    node,
                    Up::Respond {
                        to,
                        id: request,
                        payload,
                    },
                ),
                None => self.checker.fail(
                    now,
                    "unknown_inbound",
                    format!("Respond to inbound request {id}, never received"),
                ),
            },
            Command::Publish(p) => {
                if !host.track_publish(p.id, p.msg_id.clone()) {
                    self.checker.fail(
                        now,
                        "publish_id_reused",
                        format!("publish id {} reused while in flight", p.id),
                    );
                    return;
                }
                self.timer(
                    node,
                    now + self.profile.publish_timeout_ms,
                    ActorTimer::PublishTimeout { id: p.id },
                );
                let reply = p.kind == PublishKind::Core
                    && p.subject.starts_with(crate::actors::gateway::INBOX_PREFIX);
                let dlq = p.subject == subjects::DECIDE_DLQ || p.subject == subjects::RESULT_DLQ;
                let bug = self.options.bug;
                if (bug == Some(Bug::DropReplies) && reply) || (bug == Some(Bug::SkipDlq) && dlq) {
                    // The bug: swallow it and claim it went out.
                    self.trace.record(
                        now,
                        "bug.swallowed",
                        self.topo.name(node),
                        &json!({"publish": p.id, "subject": p.subject}),
                    );
                    self.schedule_at(
                        now + 2,
                        Event::AtClient {
                            to: node,
                            epoch: self.net.epoch(node),
                            inc: self.nodes[node].incarnation,
                            sent: now,
                            msg: Down::PubAck {
                                id: p.id,
                                error: None,
                            },
                        },
                    );
                    return;
                }
                if bug == Some(Bug::DoubleUsage) && p.subject == subjects::USAGE {
                    let mut headers = p.headers.clone();
                    for h in &mut headers {
                        if h.0 == beamline_router::contracts::subjects::HEADER_MSG_ID {
                            h.1 = format!("{}-again", h.1);
                        }
                    }
                    self.trace.record(
                        now,
                        "bug.double-usage",
                        self.topo.name(node),
                        &json!({"publish": p.id}),
                    );
                    let id = u64::MAX / 2 + p.id;
                    self.send_up(
                        node,
                        Up::Publish {
                            id,
                            subject: p.subject.clone(),
                            headers,
                            payload: p.payload.clone(),
                            js: true,
                        },
                    );
                }
                self.send_up(
                    node,
                    Up::Publish {
                        id: p.id,
                        subject: p.subject,
                        headers: p.headers,
                        payload: p.payload,
                        js: p.kind == PublishKind::JetStream,
                    },
                );
            }
        }
    }

    fn send_ack(&mut self, r: usize, delivery: u64, kind: AckKind) {
        let node = self.topo.router(r);
        let Some(d) = self.routers[r]
            .host
            .as_ref()
            .and_then(|h| h.delivery(delivery))
        else {
            self.checker.fail(
                self.now,
                "unknown_delivery",
                format!("{kind:?} for delivery {delivery}, never delivered"),
            );
            return;
        };
        self.send_up(
            node,
            Up::Ack {
                cons: d.cons,
                seq: d.stream_seq,
                kind,
            },
        );
    }

    fn ack_advisories(&mut self, r: usize) {
        let node = self.topo.router(r);
        let done = self.routers[r]
            .host
            .as_mut()
            .map(|h| h.take_advisories_done())
            .unwrap_or_default();
        for seq in done {
            self.send_up(
                node,
                Up::Ack {
                    cons: Cons::Advisories,
                    seq,
                    kind: AckKind::Ack,
                },
            );
        }
    }

    /// Something reached router process `r`.
    pub(super) fn at_router(&mut self, r: usize, msg: Down) {
        let node = self.topo.router(r);
        match msg {
            Down::Delivery { cons, d, pending } => {
                let batch_done = self.routers[r]
                    .host
                    .as_mut()
                    .and_then(|h| h.puller(cons))
                    .is_some_and(|p| p.on_delivery(d.pull));
                match cons {
                    Cons::Advisories => self.on_advisory(r, d.stream_seq, &d.payload),
                    Cons::Decide | Cons::Results => self.on_delivery(r, cons, d, pending),
                    Cons::Assign | Cons::Usage => {}
                }
                if batch_done {
                    self.pull(node, cons);
                }
            }
            Down::PubAck { id, error } => {
                let confirmed = error.is_none();
                let known = self.routers[r]
                    .host
                    .as_mut()
                    .is_some_and(|h| h.settle_publish(id, confirmed));
                if known {
                    let outcome = match error {
                        None => PublishOutcome::Confirmed,
                        Some(reason) => {
                            self.publish_failed(r, id, &reason);
                            PublishOutcome::Failed { reason }
                        }
                    };
                    self.feed(r, Input::PublishDone { id, outcome });
                }
            }
            Down::Reply { id, outcome } => {
                if self.routers[r]
                    .host
                    .as_mut()
                    .is_some_and(|h| h.settle_request(id))
                {
                    let outcome = match outcome {
                        ReplyOutcome::Reply(payload) => RequestOutcome::Reply { payload },
                        ReplyOutcome::NoResponders => {
                            self.request_failed(r, id, "no responders");
                            RequestOutcome::Failed {
                                reason: "no responders".to_string(),
                            }
                        }
                    };
                    self.feed(r, Input::RequestDone { id, outcome });
                }
            }
            Down::Msg {
                subject,
                headers,
                payload,
                reply,
            } => {
                let Some((from, request)) = reply else { return };
                let Some(host) = self.routers[r].host.as_mut() else {
                    return;
                };
                let id = host.register_inbound(from, request);
                let inbound = beamline_router::core::InboundRequest {
                    id,
                    subject,
                    headers,
                    payload,
                };
                self.feed(r, Input::Inbound(inbound));
            }
            Down::Got { id, msg } => self.on_got(r, id, msg),
            Down::Kv { id, reply } => {
                if self.routers[r]
                    .host
                    .as_mut()
                    .is_some_and(|h| h.settle_request(id))
                {
                    let outcome = match reply {
                        KvReply::Created => KvOutcome::Created,
                        KvReply::Exists(value) => KvOutcome::Exists { value },
                        KvReply::Value(Some(value)) => KvOutcome::Found { value },
                        KvReply::Value(None) => KvOutcome::Missing,
                        KvReply::Stored => KvOutcome::Found { value: Vec::new() },
                        KvReply::Refused(reason) => KvOutcome::Failed { reason },
                    };
                    self.feed(r, Input::KvDone { id, outcome });
                }
            }
        }
    }

    fn on_delivery(&mut self, r: usize, cons: Cons, d: crate::jetstream::Delivered, pending: u64) {
        let node = self.topo.router(r);
        let bug = self.options.bug;
        let Some(host) = self.routers[r].host.as_mut() else {
            return;
        };
        if cons == Cons::Decide && host.pending_changed(pending) {
            self.feed(r, Input::ConsumerPending { pending });
        }
        if cons == Cons::Decide {
            let proc = self.proc_of(r);
            self.checker.on_core_delivery(self.now, proc, d.stream_seq);
        }
        let Some(host) = self.routers[r].host.as_mut() else {
            return;
        };
        let told = if bug == Some(Bug::IgnoreDelivered) {
            1
        } else {
            d.delivered
        };
        let delivery = host.register_delivery(cons, &d, told);
        if cons == Cons::Decide && bug == Some(Bug::ForgetAnswers) && host.router().in_flight() == 0
        {
            host.reset_core();
        }
        if cons == Cons::Decide && bug == Some(Bug::AckOnDelivery) {
            self.trace.record(
                self.now,
                "bug.ack-on-delivery",
                self.topo.name(node),
                &json!({"delivery": delivery.id}),
            );
            let proc = self.proc_of(r);
            let ack = [Command::Ack {
                delivery: delivery.id,
            }];
            let host = self.routers[r].host.as_ref().expect("present");
            let stats = host.router().stats().clone();
            self.checker.on_core_step(
                self.now,
                proc,
                StepInput { message: None },
                &ack,
                |id| host.delivery(id),
                |_, _| None,
                &|_, _| false,
                &self.workload,
                &stats,
                &stats,
            );
            self.send_ack(r, delivery.id, AckKind::Ack);
        }
        self.feed_with(
            r,
            Input::Delivery(delivery),
            StepInput {
                message: Some((cons, d.stream_seq)),
            },
        );
    }

    /// A MAX_DELIVERIES advisory reached router `r`: fetch the message it names.
    fn on_advisory(&mut self, r: usize, advisory_seq: u64, payload: &[u8]) {
        let node = self.topo.router(r);
        let advisory = parse_advisory(advisory_seq, payload);
        let ours = advisory
            .as_ref()
            .is_some_and(|a| a.stream == "DECIDE" || a.stream == "RESULTS");
        if self.options.bug == Some(Bug::DropAdvisories) || !ours {
            self.send_up(
                node,
                Up::Ack {
                    cons: Cons::Advisories,
                    seq: advisory_seq,
                    kind: AckKind::Ack,
                },
            );
            return;
        }
        let Some(advisory) = advisory else { return };
        let Some(host) = self.routers[r].host.as_mut() else {
            return;
        };
        let id = host.ids.fresh();
        let (stream, seq) = (advisory.stream.clone(), advisory.stream_seq);
        host.start_get(id, advisory);
        self.send_up(node, Up::DirectGet { id, stream, seq });
    }

    /// The message an advisory named, read back from its stream: `Input::Exhausted`.
    fn on_got(&mut self, r: usize, id: u64, msg: Option<crate::wire::GotMessage>) {
        let node = self.topo.router(r);
        let Some(advisory) = self.routers[r].host.as_mut().and_then(|h| h.take_get(id)) else {
            return;
        };
        let Some(msg) = msg else {
            // Gone from the stream: nothing left to dead-letter.
            self.send_up(
                node,
                Up::Ack {
                    cons: Cons::Advisories,
                    seq: advisory.advisory_seq,
                    kind: AckKind::Ack,
                },
            );
            return;
        };
        let (cons, dlq_subject) = if advisory.stream == "DECIDE" {
            (Cons::Decide, subjects::DECIDE_DLQ)
        } else {
            (Cons::Results, subjects::RESULT_DLQ)
        };
        let input = Input::Exhausted(Exhausted {
            subject: msg.subject,
            headers: msg.headers,
            payload: msg.payload,
            stream_seq: advisory.stream_seq,
            deliveries: advisory.deliveries,
        });
        let commands = self.feed_with(
            r,
            input,
            StepInput {
                message: Some((cons, advisory.stream_seq)),
            },
        );
        if let Some(host) = self.routers[r].host.as_mut() {
            host.after_exhausted(
                &advisory,
                cons,
                dlq_msg_id(dlq_subject, advisory.stream_seq),
                &commands,
            );
        }
        self.ack_advisories(r);
    }

    fn publish_failed(&mut self, r: usize, id: u64, reason: &str) {
        let proc = self.proc_of(r);
        if let Some(&sent) = self.checker.publish_sent_at.get(&(proc, id)) {
            self.checker
                .on_failure(self.now, proc, &format!("publish {id}"), sent, reason);
        }
    }

    fn request_failed(&mut self, r: usize, id: u64, reason: &str) {
        let proc = self.proc_of(r);
        if let Some(&sent) = self.checker.publish_sent_at.get(&(proc, u64::MAX - id)) {
            self.checker.on_failure(
                self.now,
                proc,
                &format!("extension request {id}"),
                sent,
                reason,
            );
        }
    }

    /// A timer of router process `r`.
    pub(super) fn router_timer(&mut self, r: usize, timer: ActorTimer) {
        let node = self.topo.router(r);
        let now = self.now;
        let Some(host) = self.routers[r].host.as_mut() else {
            return;
        };
        match timer {
            ActorTimer::CoreTimer { key, at } => {
                if host.fire_timer(key, at, now) {
                    self.feed(r, Input::Timer { key });
                } else if host.timer_armed(key, at) {
                    // Not due on this process's clock (it jumped back): wait for it.
                    let world_at = host.world_time_of(at, now).max(now + 1);
                    self.timer(node, world_at, ActorTimer::CoreTimer { key, at });
                }
            }
            ActorTimer::PublishTimeout { id } if host.settle_publish(id, false) => {
                self.publish_failed(r, id, "timeout");
                let outcome = PublishOutcome::Failed {
                    reason: "timeout".to_string(),
                };
                self.feed(r, Input::PublishDone { id, outcome });
            }
            ActorTimer::RequestTimeout { id } if host.settle_request(id) => {
                self.request_failed(r, id, "timeout");
                self.feed(
                    r,
                    Input::RequestDone {
                        id,
                        outcome: RequestOutcome::Timeout,
                    },
                );
            }
            ActorTimer::KvTimeout { id } if host.settle_request(id) => {
                self.feed(
                    r,
                    Input::KvDone {
                        id,
                        outcome: KvOutcome::Failed {
                            reason: "timeout".to_string(),
                        },
                    },
                );
            }
            ActorTimer::PullExpire { cons, pull } => {
                let expired = host.puller(cons).is_some_and(|p| p.expired(pull));
                if expired {
                    self.pull(node, cons);
                }
            }
            _ => {}
        }
    }

    /// Re-arm every core timer of router `r` after its clock jumped.
    pub(super) fn rearm_timers(&mut self, r: usize) {
        let node = self.topo.router(r);
        let Some(host) = self.routers[r].host.as_ref() else {
            return;
        };
        let timers: Vec<(u64, u64)> = host
            .armed_timers()
            .into_iter()
            .map(|(key, at)| (key, host.world_time_of(at, self.now)))
            .collect();
        let armed = host.armed_timers();
        for ((key, at), (_, world_at)) in armed.into_iter().zip(timers) {
            self.timer(node, world_at, ActorTimer::CoreTimer { key, at });
        }
    }

    /// Tell router `r`'s core its connection changed, and pull again when it is up.
    pub(super) fn router_connection(&mut self, r: usize, up: bool) {
        let node = self.topo.router(r);
        let was = self.routers[r].host.as_ref().is_some_and(|h| h.connected());
        if up {
            if was {
                // The client learns of the old connection's end at the latest now.
                self.feed(r, Input::Connection(ConnectionEvent::Down));
            }
            self.feed(r, Input::Connection(ConnectionEvent::Up));
            for cons in [Cons::Decide, Cons::Results, Cons::Advisories] {
                self.pull(node, cons);
            }
        } else if was {
            self.feed(r, Input::Connection(ConnectionEvent::Down));
        }
    }

    /// Issue a new pull for `cons` from `node`, if it believes it is connected.
    pub(super) fn pull(&mut self, node: NodeId, cons: Cons) {
        if !self.nodes[node].connected || !self.nodes[node].alive {
            return;
        }
        let now = self.now;
        let mut out = Out::default();
        match self.topo.role(node) {
            crate::topology::Role::Router(r) => {
                if let Some(h) = self.routers[r].host.as_mut() {
                    h.pull(cons, now, &mut out);
                }
            }
            crate::topology::Role::Caf(i) => {
                let c = &mut self.cafs[i];
                c.puller.pull(now, &mut c.ids, &mut out);
            }
            crate::topology::Role::Usage => {
                let u = &mut self.usage;
                u.puller.pull(now, &mut u.ids, &mut out);
            }
            _ => {}
        }
        self.apply_out(node, out);
    }
}
