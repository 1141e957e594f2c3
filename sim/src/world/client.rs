//! The router's side of the world: the host feeds inputs to the core and carries out its
//! commands (acks, publishes, requests, timers) over the router's connection.

use beamline_router::core::{Command, Input, Publish, PublishOutcome};
use serde_json::json;

use super::{Event, World};
use crate::invariants::Role;
use crate::jetstream::{AckKind, Delivered};
use crate::network::Direction;
use crate::options::Bug;

impl World {
    /// The client asks for the next batch (as async-nats' pull stream does when a batch
    /// is used up or a pull expires). Nothing is asked while the client knows it is
    /// disconnected; it pulls again on reconnect.
    pub(super) fn issue_pull(&mut self) {
        if !self.host.connected() {
            return;
        }
        let id = self.host.new_pull();
        let epoch = self.link.epoch();
        let in_chaos = self.in_chaos();
        let transit = self.link.send(
            self.now,
            Direction::ToServer,
            &self.profile.faults,
            in_chaos,
        );
        self.count_slow(transit.slow);
        self.schedule(transit.arrives_at, Event::PullArrive { epoch, id });
        self.schedule(
            self.now + self.profile.pull_expires_ms + 1,
            Event::PullExpire { id },
        );
    }

    pub(super) fn on_delivery_arrive(&mut self, epoch: u64, d: Delivered) {
        if !self.link.delivers(epoch) {
            self.lost(
                "delivery",
                &json!({ "seq": d.stream_seq, "delivered": d.delivered }),
            );
            return;
        }
        let delivery = self.host.register_delivery(&d);
        self.checker.on_core_delivery(d.stream_seq, d.delivered);
        let batch_done = self.host.on_pull_delivery(d.pull, self.profile.pull_batch);
        if self.options.bug == Some(Bug::AckOnDelivery) {
            self.trace.record_json(
                self.now,
                "bug.ack-on-delivery",
                &json!({ "delivery": delivery.id }),
            );
            self.send_ack(delivery.id, AckKind::Ack);
        }
        self.feed(Input::Delivery(delivery));
        if batch_done {
            self.issue_pull();
        }
    }

    /// Hand one input to the core and carry out its commands.
    pub(super) fn feed(&mut self, input: Input) {
        self.trace.record_json(self.now, "core.in", &input);
        let in_chaos = self.in_chaos();
        let step = self.host.handle(self.now, in_chaos, input);
        for site in step.fired {
            self.trace.record(self.now, "core.buggify", site);
        }
        for command in step.commands {
            self.trace.record_json(self.now, "core.cmd", &command);
            self.execute(command);
        }
    }

    pub(super) fn execute(&mut self, command: Command) {
        match command {
            Command::Ack { delivery } => self.send_ack(delivery, AckKind::Ack),
            Command::Nak { delivery, delay_ms } => {
                self.send_ack(delivery, AckKind::Nak { delay_ms })
            }
            Command::Term { delivery } => self.send_ack(delivery, AckKind::Term),
            Command::InProgress { delivery } => self.send_ack(delivery, AckKind::Progress),
            Command::Publish(publish) => self.send_publish(publish),
            Command::SetTimer { key, at } => {
                self.host.arm_timer(key, at);
                self.schedule(at, Event::CoreTimer { key, at });
            }
            Command::Request { id, timeout_ms, .. } => self.send_request(id, timeout_ms),
            Command::Respond { id, .. } => {
                // The v0 world sends the router no inbound requests to answer.
                self.checker.fail(
                    self.now,
                    "unknown_inbound",
                    format!("Respond to inbound request {id}, never sent"),
                );
            }
        }
    }

    pub(super) fn send_ack(&mut self, delivery: u64, kind: AckKind) {
        let Some(r) = self.host.delivery(delivery) else {
            self.checker.fail(
                self.now,
                "unknown_delivery",
                format!("{kind:?} for delivery {delivery}, never delivered"),
            );
            return;
        };
        match kind {
            AckKind::Ack => self.checker.on_ack(self.now, r.stream_seq, delivery),
            AckKind::Term => self.checker.on_term(self.now, r.stream_seq, delivery),
            AckKind::Nak { .. } | AckKind::Progress => {}
        }
        let loss = self.faults().ack_loss_permille;
        if self.in_chaos() && loss > 0 && self.faults_rng.chance(loss) {
            self.counters.faults += 1;
            self.trace.record_json(
                self.now,
                "fault.ack-lost",
                &json!({ "seq": r.stream_seq, "kind": kind }),
            );
            return;
        }
        let epoch = self.link.epoch();
        let in_chaos = self.in_chaos();
        let transit = self.link.send(
            self.now,
            Direction::ToServer,
            &self.profile.faults,
            in_chaos,
        );
        self.count_slow(transit.slow);
        self.schedule(
            transit.arrives_at,
            Event::AckArrive {
                epoch,
                stream_seq: r.stream_seq,
                kind,
            },
        );
    }

    pub(super) fn send_request(&mut self, id: u64, timeout_ms: u64) {
        if !self.host.track_request(id) {
            self.checker.fail(
                self.now,
                "request_id_reused",
                format!("request id {id} reused while in flight"),
            );
            return;
        }
        self.schedule(self.now + timeout_ms, Event::RequestTimeout { id });
        let epoch = self.link.epoch();
        let in_chaos = self.in_chaos();
        let transit = self.link.send(
            self.now,
            Direction::ToServer,
            &self.profile.faults,
            in_chaos,
        );
        self.count_slow(transit.slow);
        self.schedule(transit.arrives_at, Event::RequestArrive { epoch, id });
    }

    pub(super) fn send_publish(&mut self, publish: Publish) {
        let id = publish.id;
        self.checker
            .on_publish_sent(self.now, &publish, &self.gateway);
        if !self.host.track_publish(id) {
            self.checker.fail(
                self.now,
                "publish_id_reused",
                format!("publish id {id} reused while in flight"),
            );
            return;
        }
        self.schedule(
            self.now + self.profile.publish_timeout_ms,
            Event::PublishTimeout { id },
        );
        let epoch = self.link.epoch();
        let in_chaos = self.in_chaos();
        let transit = self.link.send(
            self.now,
            Direction::ToServer,
            &self.profile.faults,
            in_chaos,
        );
        self.count_slow(transit.slow);
        let swallow = self.options.bug == Some(Bug::DropReplies)
            && matches!(self.checker.attribution(id), Some((_, Role::Reply)));
        if swallow {
            self.trace
                .record_json(self.now, "bug.drop-reply", &json!({ "publish": id }));
            self.schedule(
                transit.arrives_at + 1,
                Event::PublishConfirm {
                    epoch,
                    id,
                    outcome: PublishOutcome::Confirmed,
                },
            );
            return;
        }
        self.schedule(transit.arrives_at, Event::PublishArrive { epoch, publish });
    }

    pub(super) fn publish_done(&mut self, id: u64, outcome: PublishOutcome) {
        self.checker.on_publish_done(id, &outcome);
        self.feed(Input::PublishDone { id, outcome });
    }
}
