//! The server's side: pulls, acks, publishes (stored in streams, or routed to core
//! subscribers), requests, direct gets; handing out deliveries; and the MAX_DELIVERIES
//! advisories, which it publishes into the `ADVISORIES` stream as nats-server would into
//! a stream capturing `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>`.

use beamline_router::contracts::subjects::{self, HEADER_MSG_ID};
use beamline_router::core::{Headers, KvOp};
use serde_json::json;

use super::{Event, World, MAX_DELIVERIES_PREFIX};
use crate::invariants::Attr;
use crate::jetstream::{AckKind, AckResult, Advisory, KvCreate};
use crate::net::NodeId;
use crate::wire::{Cons, Down, GotMessage, KvReply, Up};

impl World {
    pub(super) fn at_broker(&mut self, from: NodeId, epoch: u64, sent: u64, msg: Up) {
        if !self.arrives_at_broker(from, epoch, sent, &msg) {
            return;
        }
        match msg {
            Up::Pull {
                cons,
                pull,
                batch,
                expires_ms,
            } => {
                if !self.consumer_serves(cons) {
                    return self.pull_lost(from, cons, pull);
                }
                let now = self.now;
                let accepted = self
                    .js
                    .consumer_mut(cons.durable())
                    .is_some_and(|c| c.pull(now, pull, batch, expires_ms));
                if accepted {
                    let inc = self.nodes[from].incarnation;
                    self.pull_owner.insert(pull, (from, inc));
                }
                self.dispatch(cons);
            }
            Up::Ack { cons, .. } if !self.consumer_serves(cons) => {
                self.unanswered(from, "ack", cons.durable());
            }
            Up::Ack { cons, seq, kind } => self.on_ack(from, cons, seq, kind),
            Up::Publish {
                id,
                subject,
                headers,
                payload,
                js,
            } => self.on_publish(from, id, subject, headers, payload, js),
            Up::Request {
                id,
                subject,
                headers,
                payload,
            } => self.route_request(from, id, subject, headers, payload),
            Up::Respond { to, id, payload } => self.route_response(from, to, id, payload),
            Up::Kv { op, .. } if !self.kv_serves() => self.kv_unanswered(from, op),
            Up::Kv {
                id,
                op: KvOp::Create { key, value },
            } => self.on_kv_create(from, id, key, value),
            Up::Kv {
                id,
                op: KvOp::Get { key },
            } => {
                let value = self.kv.get(self.now, &key).map(<[u8]>::to_vec);
                self.send_down(
                    from,
                    Down::Kv {
                        id,
                        reply: KvReply::Value(value),
                    },
                );
            }
            Up::Kv {
                id,
                op: KvOp::Put { key, value },
            } => {
                self.kv.put(self.now, &key, &value);
                self.send_down(
                    from,
                    Down::Kv {
                        id,
                        reply: KvReply::Stored,
                    },
                );
            }
            Up::DirectGet { stream, .. } if !self.cluster.serves(&stream) => {
                self.unanswered(from, "direct get", &stream);
            }
            Up::DirectGet { id, stream, seq } => {
                let msg = self
                    .js
                    .stream(&stream)
                    .and_then(|s| s.get(seq))
                    .map(|m| GotMessage {
                        subject: m.subject.clone(),
                        headers: m.headers.clone(),
                        payload: m.payload.clone(),
                    });
                self.send_down(from, Down::Got { id, msg });
            }
            Up::ConsumerInfo { cons } if !self.consumer_serves(cons) => {
                self.unanswered(from, "consumer info", cons.durable());
            }
            Up::ConsumerInfo { cons } => {
                let pending = self.js.num_pending(cons.durable());
                self.send_down(from, Down::ConsumerInfo { cons, pending });
            }
        }
    }

    /// A create in the shared answer bucket. The server may refuse it like any publish
    /// (the `publish_error` fault); a refusal is a definite "not stored".
    fn on_kv_create(&mut self, from: NodeId, id: u64, key: String, value: Vec<u8>) {
        let refuse = self.profile.faults.publish_error_permille;
        let reply = if self.in_chaos() && refuse > 0 && self.faults_rng.chance(refuse) {
            self.count_fault();
            KvReply::Refused("injected: server refused the create".to_string())
        } else if self.options.bug == Some(crate::options::Bug::BlindClaims) {
            KvReply::Created
        } else {
            match self.kv.create(self.now, &key, &value) {
                KvCreate::Created => KvReply::Created,
                KvCreate::Exists(value) => KvReply::Exists(value),
            }
        };
        self.trace.record(
            self.now,
            "kv.create",
            "nats",
            &json!({"from": self.topo.name(from), "id": id, "key": key, "reply": reply}),
        );
        self.send_down(from, Down::Kv { id, reply });
    }

    fn on_ack(&mut self, from: NodeId, cons: Cons, seq: u64, kind: AckKind) {
        let now = self.now;
        let result = self
            .js
            .consumer_mut(cons.durable())
            .map(|c| c.ack(now, seq, kind));
        if result == Some(AckResult::Applied) && matches!(kind, AckKind::Ack | AckKind::Term) {
            self.finals.entry(cons).or_default().insert(seq);
        }
        self.trace.record(
            now,
            "js.ack",
            "nats",
            &json!({"from": self.topo.name(from), "cons": cons, "seq": seq, "kind": kind, "result": result}),
        );
        self.dispatch(cons);
    }

    fn on_publish(
        &mut self,
        from: NodeId,
        id: u64,
        subject: String,
        headers: Headers,
        payload: Vec<u8>,
        js: bool,
    ) {
        if js && !self.stream_serves(&subject) {
            if self.unanswered_publish(from, id, &subject) {
                self.store(from, id, &subject, &headers, &payload);
            }
            let bug = self.options.bug == Some(crate::options::Bug::TimeoutConfirms);
            if bug && self.router_index(from).is_some() {
                // The bug: the client takes the silence for a confirmation.
                self.send_down(from, Down::PubAck { id, error: None });
            }
            return;
        }
        let router = self.router_index(from);
        let f = &self.profile.faults;
        let refuse = if f.publish_error_routers_only && router.is_none() {
            0
        } else {
            f.publish_error_permille
        };
        let error = if self.in_chaos() && refuse > 0 && self.faults_rng.chance(refuse) {
            self.count_fault();
            self.trace.record(
                self.now,
                "fault.publish-refused",
                "nats",
                &json!({"from": self.topo.name(from), "publish": id}),
            );
            Some("injected: server refused the publish".to_string())
        } else if js {
            match self.store(from, id, &subject, &headers, &payload) {
                true => None,
                false => Some("no responders".to_string()),
            }
        } else {
            self.core_publish(from, id, &subject, &headers, &payload, router);
            None
        };
        self.send_down(from, Down::PubAck { id, error });
    }

    /// A JetStream publish: store it in the stream that captures its subject, then let
    /// the world's observers see it. False if no stream captures the subject.
    fn store(
        &mut self,
        from: NodeId,
        id: u64,
        subject: &str,
        headers: &Headers,
        payload: &[u8],
    ) -> bool {
        let Some(ack) = self.js.publish(self.now, subject, headers, payload) else {
            return false;
        };
        self.trace.record(
            self.now,
            "js.store",
            "nats",
            &json!({"from": self.topo.name(from), "publish": id, "subject": subject, "stream": ack.stream, "seq": ack.seq, "duplicate": ack.duplicate,
                "msg_id": headers.iter().find(|(k, _)| k == HEADER_MSG_ID).map(|(_, v)| v)}),
        );
        let now = self.now;
        let router = self.router_index(from);
        match ack.stream.as_str() {
            "DECIDE" => {
                let msg_id = headers
                    .iter()
                    .find(|(k, _)| k == HEADER_MSG_ID)
                    .map(|(_, v)| v.as_str());
                let attempt = msg_id.and_then(parse_gateway_msg_id);
                if let (false, Some((request, attempt))) = (ack.duplicate, attempt) {
                    self.checker
                        .on_decide_stored(now, ack.seq, request, attempt);
                    self.checker
                        .history_request(&self.workload, request, msg_id);
                }
                self.dispatch(Cons::Decide);
            }
            "RESULTS" => {
                if !ack.duplicate {
                    self.checker.on_result_stored(now, ack.seq, payload);
                }
                self.dispatch(Cons::Results);
            }
            "DECIDE_DLQ" | "RESULTS_DLQ" => {
                let cons = if ack.stream == "DECIDE_DLQ" {
                    Cons::Decide
                } else {
                    Cons::Results
                };
                if !ack.duplicate {
                    self.checker
                        .history_stored(&ack.stream, ack.seq, headers, payload);
                }
                let attr = router.and_then(|r| self.checker_attr(r, id));
                if let Some(Attr::Dlq { seq, .. }) = attr {
                    self.checker.on_dlq_stored(now, cons, seq, ack.duplicate);
                }
            }
            "ASSIGN" => {
                self.checker
                    .on_assignment_stored(now, payload, ack.duplicate, &self.workload);
                self.dispatch(Cons::Assign);
            }
            "USAGE" => {
                self.checker.on_usage_stored(now, payload, ack.duplicate);
                if !ack.duplicate {
                    self.checker
                        .history_stored(&ack.stream, ack.seq, headers, payload);
                }
                self.dispatch(Cons::Usage);
            }
            _ => {}
        }
        true
    }

    fn checker_attr(&self, router: usize, publish: u64) -> Option<Attr> {
        self.checker
            .publishes
            .get(&(self.proc_of(router), publish))
            .cloned()
    }

    /// A core publish: handed to the subscribers of its subject (a gateway's inbox).
    fn core_publish(
        &mut self,
        from: NodeId,
        id: u64,
        subject: &str,
        headers: &Headers,
        payload: &[u8],
        router: Option<usize>,
    ) {
        if let Some(r) = router {
            if let Some(Attr::Reply { seq }) = self.checker_attr(r, id) {
                let proc = self.proc_of(r);
                self.counters.replies += 1;
                self.checker
                    .on_reply_at_server(self.now, proc, seq, payload, &self.workload);
            }
        }
        let to = self
            .inbox_owner(subject)
            .or_else(|| (subject == subjects::DECIDE_REPLY).then(|| self.topo.gateway(0)));
        if let Some(to) = to {
            let msg = Down::Msg {
                subject: subject.to_string(),
                headers: headers.clone(),
                payload: payload.to_vec(),
                reply: None,
            };
            self.route_core(from, to, msg);
        }
    }

    /// Let a consumer hand out whatever it can now, publish its advisories, and note its
    /// next deadline.
    pub(super) fn dispatch(&mut self, cons: Cons) {
        if !self.broker_up || !self.consumer_serves(cons) {
            return;
        }
        let durable = cons.durable();
        while let Some(d) = self.js.next_delivery(self.now, durable) {
            self.counters.deliveries += 1;
            if d.delivered > 1 {
                self.counters.redeliveries += 1;
            }
            let was_final = self
                .finals
                .get(&cons)
                .is_some_and(|f| f.contains(&d.stream_seq));
            let max = self
                .js
                .consumer(durable)
                .map_or(0, |c| c.config().max_deliver);
            self.checker.on_server_delivery(
                self.now,
                cons,
                d.stream_seq,
                d.delivered,
                max,
                was_final,
            );
            let owner = self.pull_owner.get(&d.pull).copied();
            let target = owner.filter(|&(node, inc)| {
                self.nodes[node].alive && self.nodes[node].incarnation == inc
            });
            let to = owner
                .map_or("nobody", |(n, _)| self.topo.name(n))
                .to_string();
            self.trace.record(
                self.now,
                "js.deliver",
                "nats",
                &json!({"cons": cons, "seq": d.stream_seq, "delivered": d.delivered, "to": to}),
            );
            self.checker.note(cons, d.stream_seq, self.now, || {
                format!("delivery {} sent to {to}", d.delivered)
            });
            let Some((node, _)) = target else {
                // The pull belonged to a process that died: the delivery goes nowhere,
                // but the server counts it.
                self.counters.lost_in_transit += 1;
                continue;
            };
            let pending = self.js.num_pending(durable);
            let dup = self.profile.faults.delivery_dup_permille;
            if self.in_chaos() && dup > 0 && self.faults_rng.chance(dup) {
                self.count_fault();
                self.trace.record(
                    self.now,
                    "fault.delivery-dup",
                    self.topo.name(node),
                    &json!({"seq": d.stream_seq}),
                );
                self.send_down(
                    node,
                    Down::Delivery {
                        cons,
                        d: d.clone(),
                        pending,
                    },
                );
            }
            self.send_down(node, Down::Delivery { cons, d, pending });
        }
        let advisories = self
            .js
            .consumer_mut(durable)
            .map(|c| c.take_advisories())
            .unwrap_or_default();
        for advisory in advisories {
            self.trace.record(
                self.now,
                "js.advisory",
                "nats",
                &json!({"cons": cons, "advisory": advisory}),
            );
            if let Advisory::MaxDeliveries {
                stream_seq,
                deliveries,
            } = advisory
            {
                self.finals.entry(cons).or_default().insert(stream_seq);
                self.checker.note(cons, stream_seq, self.now, || {
                    format!("exhausted by the server after {deliveries} deliveries (MAX_DELIVERIES advisory)")
                });
                if matches!(cons, Cons::Decide | Cons::Results) {
                    self.publish_advisory(cons, stream_seq, deliveries);
                }
            }
        }
        let next = self.js.consumer(durable).and_then(|c| c.next_deadline());
        if let Some(deadline) = next {
            if self.wake_at.get(&cons).is_none_or(|&w| deadline < w) {
                self.wake_at.insert(cons, deadline);
                self.schedule_at(deadline, Event::ConsumerWake { cons });
            }
        }
    }

    /// The server publishes a MAX_DELIVERIES advisory; the `ADVISORIES` stream keeps it.
    fn publish_advisory(&mut self, cons: Cons, stream_seq: u64, deliveries: u64) {
        let subject = format!(
            "{MAX_DELIVERIES_PREFIX}.{}.{}",
            cons.stream(),
            cons.durable()
        );
        let payload = json!({
            "type": "io.nats.jetstream.advisory.v1.max_deliver",
            "stream": cons.stream(),
            "consumer": cons.durable(),
            "stream_seq": stream_seq,
            "deliveries": deliveries,
        })
        .to_string()
        .into_bytes();
        if !self.cluster.serves("ADVISORIES") {
            // nats-server publishes advisories with core NATS: no leader, no capture.
            self.trace.record(
                self.now,
                "cluster.advisory-lost",
                "nats",
                &json!({"cons": cons, "seq": stream_seq}),
            );
            return;
        }
        if self.js.publish(self.now, &subject, &[], &payload).is_some() {
            self.dispatch(Cons::Advisories);
        }
    }
}

/// (request, attempt) of a gateway's `Nats-Msg-Id` (`gw-<request>-<attempt>`).
fn parse_gateway_msg_id(id: &str) -> Option<(usize, u64)> {
    let (r, a) = id.strip_prefix("gw-")?.split_once('-')?;
    Some((r.parse().ok()?, a.parse().ok()?))
}
