//! The server's side of the world: requests stored by the gateway, pull requests,
//! deliveries handed out, acks applied, and publishes arriving from the router (stored in
//! streams and forwarded to the gateway's subscriptions).

use beamline_router::contracts::subjects::{self, HEADER_MSG_ID};
use beamline_router::core::{Publish, PublishKind, PublishOutcome};
use serde_json::json;

use super::{Event, World, DLQ_STREAM, DURABLE};
use crate::invariants::Role;
use crate::jetstream::AckKind;
use crate::network::Direction;
use crate::profile::Faults;

impl World {
    pub(super) fn on_gateway_publish(&mut self, index: usize) {
        let r = self.gateway.request(index);
        let (headers, payload, kind) = (r.headers(), r.payload.clone(), r.kind);
        let Some(ack) = self
            .js
            .publish(self.now, subjects::DECIDE, &headers, &payload)
        else {
            self.checker.fail(
                self.now,
                "world",
                "no stream captures the decide subject".into(),
            );
            return;
        };
        self.trace.record_json(
            self.now,
            "gw.publish",
            &json!({ "request": index, "seq": ack.seq, "duplicate": ack.duplicate }),
        );
        if !ack.duplicate {
            self.checker.on_stored(ack.seq, index, kind);
        }
        self.dispatch();
    }

    pub(super) fn on_pull_arrive(&mut self, epoch: u64, id: u64) {
        if !self.link.delivers(epoch) {
            self.lost("pull", &json!({ "pull": id }));
            return;
        }
        let (batch, expires) = (self.profile.pull_batch, self.profile.pull_expires_ms);
        let now = self.now;
        let accepted = self
            .js
            .consumer_mut(DURABLE)
            .is_some_and(|c| c.pull(now, id, batch, expires));
        self.trace.record_json(
            now,
            "js.pull",
            &json!({ "pull": id, "batch": batch, "accepted": accepted }),
        );
        self.dispatch();
    }

    /// Let the server hand out whatever it can now, then note its next deadline.
    pub(super) fn dispatch(&mut self) {
        while let Some(d) = self.js.next_delivery(self.now, DURABLE) {
            self.counters.deliveries += 1;
            if d.delivered > 1 {
                self.counters.redeliveries += 1;
            }
            self.trace.record_json(
                self.now,
                "js.deliver",
                &json!({ "seq": d.stream_seq, "delivered": d.delivered, "pull": d.pull }),
            );
            self.checker
                .on_delivery(self.now, d.stream_seq, d.delivered);
            // A pull is answered on the client's inbox, not on the connection that sent it:
            // async-nats resubscribes its inboxes on reconnect, so deliveries for a pull
            // made before a drop reach the new connection. Only what the server sends
            // while the connection is down (half-open: it has not noticed) or what is in
            // flight at the drop is lost.
            let epoch = self.link.epoch();
            let in_chaos = self.in_chaos();
            let transit = self.link.send(
                self.now,
                Direction::ToClient,
                &self.profile.faults,
                in_chaos,
            );
            self.count_slow(transit.slow);
            let arrives_at = transit.arrives_at;
            self.schedule(arrives_at, Event::DeliveryArrive { epoch, delivery: d });
        }
        if let Some(consumer) = self.js.consumer_mut(DURABLE) {
            for advisory in consumer.take_advisories() {
                self.trace.record_json(self.now, "js.advisory", &advisory);
            }
        }
        let next = self.js.consumer(DURABLE).and_then(|c| c.next_deadline());
        if let Some(deadline) = next {
            if self.wake_at.is_none_or(|w| deadline < w) {
                self.wake_at = Some(deadline);
                self.schedule(deadline, Event::ConsumerWake);
            }
        }
    }

    pub(super) fn on_ack_arrive(&mut self, epoch: u64, stream_seq: u64, kind: AckKind) {
        if !self.link.delivers(epoch) {
            self.lost("ack", &json!({ "seq": stream_seq, "kind": kind }));
            return;
        }
        let now = self.now;
        let result = self
            .js
            .consumer_mut(DURABLE)
            .map(|c| c.ack(now, stream_seq, kind));
        self.trace.record_json(
            now,
            "js.ack",
            &json!({ "seq": stream_seq, "kind": kind, "result": result }),
        );
        self.dispatch();
    }

    pub(super) fn on_publish_arrive(&mut self, epoch: u64, publish: Publish) {
        if !self.link.delivers(epoch) {
            self.lost(
                "publish",
                &json!({ "publish": publish.id, "subject": publish.subject }),
            );
            return;
        }
        let refuse = self.faults().publish_error_permille;
        let outcome = if self.in_chaos() && refuse > 0 && self.faults_rng.chance(refuse) {
            self.counters.faults += 1;
            self.trace.record_json(
                self.now,
                "fault.publish-refused",
                &json!({ "publish": publish.id }),
            );
            PublishOutcome::Failed {
                reason: "injected: server refused the publish".to_string(),
            }
        } else {
            self.route(&publish)
        };
        let in_chaos = self.in_chaos();
        let transit = self.link.send(
            self.now,
            Direction::ToClient,
            &self.profile.faults,
            in_chaos,
        );
        self.count_slow(transit.slow);
        self.schedule(
            transit.arrives_at,
            Event::PublishConfirm {
                epoch,
                id: publish.id,
                outcome,
            },
        );
    }

    /// The server receives a publish: streams that capture its subject store it, core
    /// subscribers (the gateway's inboxes and the default reply subject) get a copy.
    pub(super) fn route(&mut self, p: &Publish) -> PublishOutcome {
        let header_id = p
            .headers
            .iter()
            .find(|(k, _)| k == HEADER_MSG_ID)
            .map(|(_, v)| v.clone());
        if let (Some(h), Some(m)) = (&header_id, &p.msg_id) {
            if h != m {
                self.checker.fail(
                    self.now,
                    "msg_id_mismatch",
                    format!("publish {}: header {h} vs msg_id {m}", p.id),
                );
            }
        }
        // The production shell sends `msg_id` as the header when the core left it out.
        let mut headers = p.headers.clone();
        if header_id.is_none() {
            if let Some(m) = &p.msg_id {
                headers.push((HEADER_MSG_ID.to_string(), m.clone()));
            }
        }
        let stored = self.js.publish(self.now, &p.subject, &headers, &p.payload);
        if let Some(ack) = &stored {
            self.trace.record_json(
                self.now,
                "js.store",
                &json!({ "publish": p.id, "ack": ack }),
            );
            if ack.stream == DLQ_STREAM {
                if let Some((seq, Role::Dlq)) = self.checker.attribution(p.id) {
                    self.counters.dlq += u64::from(!ack.duplicate);
                    self.checker.on_dlq_stored(self.now, seq, ack.duplicate);
                }
            }
        }
        let subscribed = self.gateway.inbox_owner(&p.subject).is_some()
            || p.subject == self.core_config.default_reply_subject;
        if subscribed {
            self.counters.replies += 1;
            self.checker
                .on_reply_at_server(self.now, p.id, &p.payload, &self.gateway);
            let transit =
                self.gateway_link
                    .send(self.now, Direction::ToClient, &Faults::none(), false);
            self.schedule(
                transit.arrives_at,
                Event::ReplyArrive {
                    subject: p.subject.clone(),
                    payload: p.payload.clone(),
                },
            );
        }
        match (p.kind, stored) {
            (PublishKind::JetStream, None) => PublishOutcome::Failed {
                reason: "no responders".to_string(),
            },
            _ => PublishOutcome::Confirmed,
        }
    }
}
