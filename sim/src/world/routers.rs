//! The router processes: starting, crashing and restarting them, and carrying the
//! shared host's actions over the simulated wire and what arrives back to it, as the
//! production driver does with async-nats. No decision is made here: deliveries,
//! outcomes, time-outs, timers, advisories, the pending feed and the pull watchdog are
//! the host's (`beamline_router::host`). What this file adds is the world's view: the
//! trace of every core step and the checkers that judge it.

use beamline_router::contracts::subjects;
use beamline_router::core::{
    Command, ConnectionEvent, Input, KvOutcome, PayloadDigest, PublishKind, PublishOutcome,
    RequestOutcome, Source,
};
use beamline_router::host::{
    Action, Arrival, CoreStep, Event as HostEvent, Fetched, PullEvent, Settle,
};
use serde_json::json;

use super::{Event, World};
use crate::actors::{ActorTimer, Out};
use crate::host::{
    consumer_index, DeliveryRef, HostSettings, ReplyRef, RouterHost, SimEnv, SimHost, CONSUMERS,
};
use crate::invariants::decide::{Original, StepInput};
use crate::jetstream::AckKind;
use crate::net::NodeId;
use crate::options::Bug;
use crate::policies::world_policies;
use crate::rng::SimRng;
use crate::wire::{Cons, Down, KvReply, ReplyOutcome, Up};

/// How long a router waits for the shared bucket (the shell's `state.kv_timeout_ms`).
const KV_TIMEOUT_MS: u64 = 2_000;
/// The advisory consumer's `max_ack_pending` (`build_jetstream`).
const ADVISORIES_MAX_ACK_PENDING: u64 = 1_000;

type SimEvent = HostEvent<DeliveryRef, ReplyRef>;
type SimAction = Action<DeliveryRef, ReplyRef>;

impl World {
    fn host_settings(&self) -> HostSettings {
        HostSettings {
            batch: self.profile.pull_batch,
            expires_ms: self.profile.pull_expires_ms,
            publish_timeout_ms: self.profile.publish_timeout_ms,
            kv_timeout_ms: KV_TIMEOUT_MS,
            max_ack_pending: self.profile.max_ack_pending as u64,
            advisories_max_ack_pending: ADVISORIES_MAX_ACK_PENDING,
        }
    }

    /// Build router `r`'s process (a new incarnation), start its host and connect it.
    pub(super) fn start_router(&mut self, r: usize) {
        let node = self.topo.router(r);
        let inc = self.nodes[node].incarnation;
        let mut config = self.core_config.clone();
        config.node_id = format!("router-{}", r + 1);
        let entropy = SimRng::stream(self.options.seed, &format!("core-{r}-{inc}"));
        let settings = self.host_settings();
        self.routers[r].host = Some(RouterHost::new(
            node,
            config,
            world_policies(self.profile.shared_answers),
            entropy,
            self.routers[r].clock_offset,
            &settings,
        ));
        self.routers[r].told_connected = false;
        self.nodes[node].alive = true;
        self.nodes[node].connected = false;
        self.trace.record(
            self.now,
            "router.start",
            self.topo.name(node),
            &json!({"incarnation": inc, "clock_offset_ms": self.routers[r].clock_offset}),
        );
        self.drive(r, false, |host, now, _| host.start(now));
        self.try_reconnect(node);
    }

    /// A router process dies: its memory is gone; the server keeps its unacked messages.
    pub(super) fn crash_router(&mut self, r: usize, down_ms: u64, server_notices: bool) {
        if !self.nodes[self.topo.router(r)].alive {
            return;
        }
        self.routers[r].crashes += 1;
        self.counters.crashes += 1;
        self.end_process(r, down_ms, server_notices, "fault.crash");
    }

    /// The process is gone (crashed, or exited after a graceful stop): memory lost,
    /// connection closed; it starts again after `down_ms`.
    fn end_process(&mut self, r: usize, down_ms: u64, server_notices: bool, what: &str) {
        let node = self.topo.router(r);
        if !self.nodes[node].alive {
            return;
        }
        if let Some(h) = self.routers[r].host.take() {
            super::add_stats(&mut self.crashed_stats, h.router().stats());
        }
        let proc = self.proc_of(r);
        self.checker.on_process_end(proc);
        self.nodes[node].alive = false;
        self.nodes[node].connected = false;
        self.net.drop_connection(node);
        if server_notices {
            self.server_forgets(node);
        }
        self.trace.record(
            self.now,
            what,
            self.topo.name(node),
            &json!({"down_ms": down_ms, "server_notices": server_notices}),
        );
        self.schedule_at(self.now + down_ms, Event::RouterRestart { router: r });
    }

    /// An operator's SIGTERM: the host stops intake and drains (`Event::Shutdown`); its
    /// `Exit` action ends the process (`perform`), which restarts `down_ms` later.
    pub(super) fn stop_router(&mut self, r: usize, grace_ms: u64, down_ms: u64) {
        let node = self.topo.router(r);
        let draining = self.routers[r]
            .host
            .as_ref()
            .is_none_or(|h| h.host.is_draining());
        if !self.nodes[node].alive || draining {
            return;
        }
        self.counters.stops += 1;
        self.routers[r].stop_down_ms = Some(down_ms);
        self.trace.record(
            self.now,
            "fault.stop",
            self.topo.name(node),
            &json!({"grace_ms": grace_ms, "down_ms": down_ms}),
        );
        let grace_ms = if self.options.bug == Some(crate::options::Bug::SkipDrain) {
            0
        } else {
            grace_ms
        };
        self.host_event(r, SimEvent::Shutdown { grace_ms });
    }

    pub(super) fn restart_router(&mut self, r: usize) {
        let node = self.topo.router(r);
        if self.nodes[node].alive {
            return;
        }
        self.nodes[node].incarnation += 1;
        self.start_router(r);
    }

    /// Hand one transport event to router `r`'s host.
    pub(super) fn host_event(&mut self, r: usize, event: SimEvent) {
        self.drive(r, false, |host, now, env| host.handle(now, event, env));
    }

    /// Run `f` on router `r`'s host at its clock's now; then trace and check every core
    /// step it took, perform its actions and schedule its next wake-up.
    fn drive(
        &mut self,
        r: usize,
        from_wake: bool,
        f: impl FnOnce(&mut SimHost, beamline_router::core::Time, &mut SimEnv),
    ) {
        let in_chaos = self.in_chaos();
        let Some(process) = self.routers[r].host.as_mut() else {
            return;
        };
        let now = process.core_now(self.now);
        let (host, mut env) = process.env(&mut self.buggify, in_chaos);
        f(host, now, &mut env);
        let (fired, activated) = (env.fired, env.activated);
        for name in env.probed {
            *self.probes.entry(name).or_default() += 1;
        }
        let steps = host.take_steps();
        let name = self.topo.name(self.topo.router(r)).to_string();
        for (site, active) in &activated {
            self.trace.record(
                self.now,
                "buggify.site",
                &name,
                &json!({"site": site, "active": active}),
            );
        }
        for site in &fired {
            self.trace.record(self.now, "buggify.fired", &name, site);
        }
        for step in steps {
            self.observe_step(r, &name, step);
        }
        self.check_host_contract(r);
        self.perform(r);
        self.schedule_wake(r, from_wake);
    }

    /// Trace one core step and hold it to the invariants.
    fn observe_step(&mut self, r: usize, name: &str, step: CoreStep<DeliveryRef>) {
        let in_chaos = self.in_chaos();
        self.trace.record(self.now, "core.in", name, &step.input);
        match &step.input {
            Input::PublishDone {
                id,
                outcome: PublishOutcome::Failed { reason },
            } => self.publish_failed(r, *id, reason),
            Input::RequestDone {
                id,
                outcome: RequestOutcome::Timeout,
            } => self.request_failed(r, *id, "timeout"),
            Input::RequestDone {
                id,
                outcome: RequestOutcome::Failed { reason },
            } => self.request_failed(r, *id, reason),
            _ => {}
        }
        if !in_chaos && step.after.backpressure_naks > step.before.backpressure_naks {
            self.backpressure_after_heal = true;
        }
        let message = match &step.input {
            Input::Delivery(d) => step
                .consumer
                .and_then(|i| CONSUMERS.get(i))
                .map(|&cons| (cons, d.stream_seq)),
            Input::Exhausted(e) => Some((cons_of_source(e.source), e.stream_seq)),
            _ => None,
        };
        let proc = self.proc_of(r);
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
        let handles = &step.handles;
        self.checker.on_core_step(
            self.now,
            proc,
            StepInput { message },
            &step.commands,
            |id| handles.iter().find(|(d, _)| *d == id).map(|(_, h)| *h),
            original,
            &pending,
            &self.workload,
            &step.before,
            &step.after,
        );
        let request = match message {
            Some((Cons::Decide, seq)) => self.checker.request_of(seq),
            _ => None,
        };
        let payload = message
            .and_then(|(cons, seq)| original(cons, seq))
            .map(|o| o.payload);
        let local = self.routers[r]
            .host
            .as_ref()
            .map_or(self.now, |h| h.core_now(self.now).millis());
        let view = crate::models::StepView {
            at: self.now,
            local,
            proc,
            input: &step.input,
            message,
            request,
            commands: &step.commands,
            payload,
            handles: &step.handles,
            before: &step.before,
            after: &step.after,
        };
        self.checker.on_model_step(&view, &self.workload);
        for command in &step.commands {
            self.trace.record(self.now, "core.cmd", name, command);
            if let Command::Request { id, .. } = command {
                self.checker
                    .publish_sent_at
                    .insert((proc, u64::MAX - id), self.now);
            }
        }
    }

    /// What the host counts and the core must never cause: an operation id reused while
    /// in flight, a settle or answer for a handle it never had (the world's tables are
    /// large enough never to evict).
    fn check_host_contract(&mut self, r: usize) {
        let Some(process) = self.routers[r].host.as_mut() else {
            return;
        };
        let c = process.host.counters();
        let evicted = c.deliveries_evicted + c.inbound_evicted;
        let (reused, unknown) = (c.io_ids_reused, c.unknown_handles.saturating_sub(evicted));
        if reused > process.seen_reused {
            process.seen_reused = reused;
            self.checker.fail(
                self.now,
                "io_id_reused",
                "the core reused a publish, request or KV id while it was in flight".to_string(),
            );
        } else if unknown > process.seen_unknown {
            process.seen_unknown = unknown;
            self.checker.fail(
                self.now,
                "unknown_handle",
                "the core settled a delivery or answered a request it never received".to_string(),
            );
        }
    }

    /// Carry out what router `r`'s host asked for.
    fn perform(&mut self, r: usize) {
        let node = self.topo.router(r);
        let mut actions = Vec::new();
        if let Some(process) = self.routers[r].host.as_mut() {
            while let Some(action) = process.host.poll_action() {
                actions.push(action);
            }
        }
        let mut reports = Vec::new();
        for action in actions {
            match action {
                SimAction::Settle { ack, how } => {
                    let kind = match how {
                        Settle::Ack => AckKind::Ack,
                        Settle::Nak { delay_ms } => {
                            let delay_ms = if self.options.bug == Some(Bug::NakWithoutDelay) {
                                0
                            } else {
                                delay_ms
                            };
                            let proc = self.proc_of(r);
                            self.checker.on_wire_nak(self.now, proc, ack, delay_ms);
                            AckKind::Nak { delay_ms }
                        }
                        Settle::Term => AckKind::Term,
                        Settle::Progress => AckKind::Progress,
                    };
                    self.send_up(
                        node,
                        Up::Ack {
                            cons: ack.cons,
                            seq: ack.stream_seq,
                            kind,
                        },
                    );
                }
                SimAction::Respond {
                    reply: (to, id),
                    payload,
                } => self.send_up(node, Up::Respond { to, id, payload }),
                SimAction::Io { command, .. } => self.perform_io(r, command),
                SimAction::Fetch { id, stream, seq } => {
                    self.send_up(node, Up::DirectGet { id, stream, seq })
                }
                // A read while the client knows it is disconnected fails at once, as
                // async-nats' does; the host keeps its last value.
                SimAction::ReadPending if self.nodes[node].connected => {
                    self.send_up(node, Up::ConsumerInfo { cons: Cons::Decide })
                }
                SimAction::ReadPending => {}
                SimAction::Pull { consumer } => {
                    if let Some(&cons) = CONSUMERS.get(consumer) {
                        // The modelled client pulls now if connected, else on reconnect.
                        self.pull(node, cons);
                        reports.push(SimEvent::Pull {
                            consumer,
                            event: PullEvent::Started,
                        });
                    }
                }
                // The process's policy directory is the world's: read again, it is the
                // same set, put in force through the host's one reload path.
                SimAction::LoadPolicies { reply } => reports.push(SimEvent::PoliciesLoaded {
                    reply,
                    loaded: Ok(beamline_router::host::Reload {
                        policies: world_policies(self.profile.shared_answers),
                        extensions: None,
                    }),
                }),
                SimAction::StopIntake => {
                    if let Some(process) = self.routers[r].host.as_mut() {
                        process.intake_stopped = true;
                    }
                }
                SimAction::Exit { drained } => {
                    self.trace
                        .record(self.now, "router.exit", self.topo.name(node), &drained);
                    if drained {
                        self.counters.stops_drained += 1;
                    } else {
                        self.counters.stops_cut += 1;
                    }
                    // The process exits: its connection closes cleanly (the server
                    // notices), and it is started again after the stop's down time.
                    let down_ms = self.routers[r].stop_down_ms.take().unwrap_or(1_000);
                    self.end_process(r, down_ms, true, "router.exited");
                    return;
                }
            }
        }
        for report in reports {
            self.host_event(r, report);
        }
    }

    /// A publish, request or shared-bucket operation, onto the wire (with the
    /// deliberately broken hosts' mischief).
    fn perform_io(&mut self, r: usize, command: Command) {
        let node = self.topo.router(r);
        let now = self.now;
        match command {
            Command::Request {
                id,
                subject,
                headers,
                payload,
                ..
            } => self.send_up(
                node,
                Up::Request {
                    id,
                    subject,
                    headers,
                    payload,
                },
            ),
            Command::Kv { id, op } => self.send_up(node, Up::Kv { id, op }),
            Command::Publish(p) => {
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
                let mut p = p;
                if bug == Some(Bug::FreshMsgIdOnRetry) {
                    self.fresh_msg_id_on_retry(r, &mut p);
                }
                if bug == Some(Bug::DoubleUsage) && p.subject == subjects::USAGE {
                    let mut headers = p.headers.clone();
                    for h in &mut headers {
                        if h.0 == subjects::HEADER_MSG_ID {
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
            other => self.checker.fail(
                now,
                "host_io",
                format!("the host asked for I/O that is not I/O: {other:?}"),
            ),
        }
    }

    /// The `fresh-msg-id-on-retry` bug: a message id this process published before gets
    /// a suffix, as if the retry were a new message.
    fn fresh_msg_id_on_retry(&mut self, r: usize, p: &mut beamline_router::core::Publish) {
        let Some(process) = self.routers[r].host.as_mut() else {
            return;
        };
        for h in &mut p.headers {
            if h.0 != subjects::HEADER_MSG_ID {
                continue;
            }
            let n = process.msg_ids_sent.entry(h.1.clone()).or_insert(0);
            *n += 1;
            if *n > 1 {
                h.1 = format!("{}-retry{}", h.1, *n - 1);
                self.trace.record(
                    self.now,
                    "bug.fresh-msg-id",
                    self.topo.name(self.topo.router(r)),
                    &json!({"publish": p.id, "msg_id": h.1}),
                );
            }
        }
    }

    /// Wake router `r`'s host at its next deadline, unless an earlier wake-up is due.
    fn schedule_wake(&mut self, r: usize, from_wake: bool) {
        let node = self.topo.router(r);
        let now = self.now;
        let Some(process) = self.routers[r].host.as_mut() else {
            return;
        };
        let Some(at) = process.host.poll_timeout() else {
            return;
        };
        // Right after a wake-up, nothing is due at this instant any more.
        let world_at = process
            .world_time_of(at, now)
            .max(now + u64::from(from_wake));
        if process.wake.is_some_and(|w| w <= world_at && w >= now) {
            return;
        }
        process.wake = Some(world_at);
        self.timer(node, world_at, ActorTimer::HostWake { at: world_at });
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
                if matches!(cons, Cons::Decide | Cons::Results | Cons::Advisories) {
                    self.on_delivery(r, cons, d, pending);
                }
                if batch_done {
                    self.pull(node, cons);
                }
            }
            Down::PubAck { id, error } => {
                let outcome = match error {
                    None => PublishOutcome::Confirmed,
                    Some(reason) => PublishOutcome::Failed { reason },
                };
                self.host_event(r, SimEvent::PublishDone { id, outcome });
            }
            Down::Reply { id, outcome } => {
                let outcome = match outcome {
                    ReplyOutcome::Reply(payload) => RequestOutcome::Reply { payload },
                    ReplyOutcome::NoResponders => RequestOutcome::Failed {
                        reason: "no responders".to_string(),
                    },
                };
                self.host_event(r, SimEvent::RequestDone { id, outcome });
            }
            Down::Msg {
                subject,
                headers,
                payload,
                reply,
            } => {
                let Some(reply) = reply else { return };
                let intake_stopped = self.routers[r]
                    .host
                    .as_ref()
                    .is_some_and(|h| h.intake_stopped);
                if !intake_stopped {
                    let event = SimEvent::Inbound {
                        reply,
                        subject,
                        headers,
                        payload,
                    };
                    self.host_event(r, event);
                }
            }
            Down::Got { id, msg } => {
                let message = match msg {
                    Some(m) => Fetched::Found {
                        subject: m.subject,
                        headers: m.headers,
                        payload: m.payload,
                    },
                    None => Fetched::Gone,
                };
                self.host_event(r, SimEvent::Fetched { id, message });
            }
            Down::Kv { id, reply } => {
                let outcome = match reply {
                    KvReply::Created => KvOutcome::Created,
                    KvReply::Exists(value) => KvOutcome::Exists { value },
                    KvReply::Value(Some(value)) => KvOutcome::Found { value },
                    KvReply::Value(None) => KvOutcome::Missing,
                    KvReply::Stored => KvOutcome::Stored,
                    KvReply::Refused(reason) => KvOutcome::Failed { reason },
                };
                self.host_event(r, SimEvent::KvDone { id, outcome });
            }
            Down::ConsumerInfo { pending, .. } => self.host_event(r, SimEvent::Pending { pending }),
            // Handled as the client library does, before the host (`at_client`).
            Down::PullTerminated { .. } => {}
        }
    }

    fn on_delivery(&mut self, r: usize, cons: Cons, d: crate::jetstream::Delivered, pending: u64) {
        let node = self.topo.router(r);
        let bug = self.options.bug;
        if cons == Cons::Advisories && bug == Some(Bug::DropAdvisories) {
            let ack = Up::Ack {
                cons,
                seq: d.stream_seq,
                kind: AckKind::Ack,
            };
            self.send_up(node, ack);
            return;
        }
        let Some(consumer) = consumer_index(cons) else {
            return;
        };
        if cons == Cons::Decide {
            let proc = self.proc_of(r);
            self.checker.on_core_delivery(self.now, proc, d.stream_seq);
        }
        let Some(host) = self.routers[r].host.as_mut() else {
            return;
        };
        let told = if bug == Some(Bug::IgnoreDelivered) && cons != Cons::Advisories {
            1
        } else {
            d.delivered
        };
        if cons == Cons::Decide && bug == Some(Bug::ForgetAnswers) && host.router().in_flight() == 0
        {
            host.reset_core();
            self.trace.record(
                self.now,
                "bug.forget-answers",
                self.topo.name(node),
                &d.stream_seq,
            );
        }
        let Some(host) = self.routers[r].host.as_mut() else {
            return;
        };
        let handle = DeliveryRef {
            cons,
            stream_seq: d.stream_seq,
            delivered: d.delivered,
        };
        if cons == Cons::Decide && bug == Some(Bug::AckOnDelivery) {
            let stats = host.router().stats().clone();
            self.trace.record(
                self.now,
                "bug.ack-on-delivery",
                self.topo.name(node),
                &json!({"seq": d.stream_seq}),
            );
            let proc = self.proc_of(r);
            let ack = [Command::Settle {
                delivery: 0,
                how: Settle::Ack,
            }];
            self.checker.on_core_step(
                self.now,
                proc,
                StepInput { message: None },
                &ack,
                |_| Some(handle),
                |_, _| None,
                &|_, _| false,
                &self.workload,
                &stats,
                &stats,
            );
            let kind = AckKind::Ack;
            self.send_up(
                node,
                Up::Ack {
                    cons,
                    seq: d.stream_seq,
                    kind,
                },
            );
        }
        let arrival = Arrival {
            consumer,
            ack: handle,
            subject: d.subject,
            headers: d.headers,
            digest: PayloadDigest::of(&d.payload),
            payload: d.payload,
            stream_seq: d.stream_seq,
            delivered: told,
            pending: Some(pending),
        };
        self.host_event(r, SimEvent::Delivery(arrival));
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
        let Some(process) = self.routers[r].host.as_mut() else {
            return;
        };
        match timer {
            ActorTimer::HostWake { at } => {
                if process.wake == Some(at) {
                    process.wake = None;
                }
                self.drive(r, true, |host, now, env| host.handle_timeout(now, env));
            }
            ActorTimer::PullExpire { cons, pull } => {
                let expired = process.puller(cons).is_some_and(|p| p.expired(pull));
                if expired {
                    self.pull(node, cons);
                }
            }
            ActorTimer::LeaderElected { cons } => {
                let Some(consumer) = crate::host::consumer_index(cons) else {
                    return;
                };
                if self.options.bug == Some(crate::options::Bug::IgnoreLeaderMoves) {
                    return;
                }
                self.host_event(
                    r,
                    SimEvent::Pull {
                        consumer,
                        event: PullEvent::LeaderElected,
                    },
                );
            }
            ActorTimer::PullSilent { cons, pull } => {
                // Pulled again since (the advisory, a reconnect, an expiry): not silent.
                let silent = process.puller(cons).is_some_and(|p| p.current() == pull);
                let Some(consumer) = crate::host::consumer_index(cons) else {
                    return;
                };
                if !silent || self.options.bug == Some(crate::options::Bug::IgnoreLeaderMoves) {
                    return;
                }
                self.host_event(
                    r,
                    SimEvent::Pull {
                        consumer,
                        event: PullEvent::Stalled,
                    },
                );
            }
            _ => {}
        }
    }

    /// Router `r`'s clock jumped: wake its host by the new reading.
    pub(super) fn rearm_timers(&mut self, r: usize) {
        if let Some(process) = self.routers[r].host.as_mut() {
            process.wake = None;
        }
        self.schedule_wake(r, false);
    }

    /// Tell router `r`'s host its connection changed, and pull again when it is up (the
    /// client re-pulls on reconnect, as async-nats' pull stream does).
    pub(super) fn router_connection(&mut self, r: usize, up: bool) {
        let node = self.topo.router(r);
        let was = self.routers[r].told_connected;
        if up {
            if was {
                // The client learns of the old connection's end at the latest now.
                self.host_event(r, SimEvent::Connection(ConnectionEvent::Down));
            }
            self.routers[r].told_connected = true;
            self.host_event(r, SimEvent::Connection(ConnectionEvent::Up));
            for cons in CONSUMERS {
                self.pull(node, cons);
            }
        } else if was {
            self.routers[r].told_connected = false;
            self.host_event(r, SimEvent::Connection(ConnectionEvent::Down));
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

/// The world's consumer of an exhausted message's source.
fn cons_of_source(source: Source) -> Cons {
    match source {
        Source::Result => Cons::Results,
        // The world runs no assignment-ack consumer for the router.
        Source::Decide | Source::AssignmentAck => Cons::Decide,
    }
}
