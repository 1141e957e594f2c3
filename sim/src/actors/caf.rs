//! A CAF worker: pulls assignments from `caf.exec.assign.v1` (durable `caf`, shared by
//! the workers), "executes" each for a while, publishes an `ExecResult` to
//! `caf.exec.result.v1`, and acks the assignment once the result's PubAck came back.
//!
//! Workers misbehave as the fault menu says: a job fails (status `error` or `timeout`),
//! a result is published twice, a result is malformed (no tenant: intake refuses it).
//! Whether results carry a `Nats-Msg-Id` is a per-seed setting: without one, every
//! duplicate reaches the router, whose result book must absorb it.

use std::collections::BTreeMap;

use beamline_router::contracts::subjects::{self, HEADER_MSG_ID};
use beamline_router::contracts::ExecAssignment;
use serde_json::json;

use super::{ActorTimer, Ids, Out, Puller};
use crate::faults::Faults;
use crate::jetstream::AckKind;
use crate::rng::SimRng;
use crate::wire::{Cons, Up};

const PUBLISH_TRIES: u32 = 4;

#[derive(Debug)]
struct Job {
    /// The assignment's stream sequence (acks name it).
    seq: u64,
    assignment: Option<ExecAssignment>,
    result: Option<Vec<u8>>,
    msg_id: Option<String>,
    publish: Option<u64>,
    tries: u32,
    duplicate_sent: bool,
}

#[derive(Debug)]
pub struct Caf {
    pub puller: Puller,
    pub ids: Ids,
    rng: SimRng,
    jobs: BTreeMap<u64, Job>,
    /// publish id -> job (assignment seq)
    publishes: BTreeMap<u64, u64>,
    latency_max_ms: u64,
    publish_timeout_ms: u64,
    use_msg_id: bool,
}

impl Caf {
    pub fn new(
        node: usize,
        rng: SimRng,
        batch: u64,
        expires_ms: u64,
        latency_max_ms: u64,
        publish_timeout_ms: u64,
        use_msg_id: bool,
    ) -> Self {
        Caf {
            puller: Puller::new(Cons::Assign, batch, expires_ms),
            ids: Ids::new(node),
            rng,
            jobs: BTreeMap::new(),
            publishes: BTreeMap::new(),
            latency_max_ms,
            publish_timeout_ms,
            use_msg_id,
        }
    }

    /// Jobs under way (a worker with none is idle).
    pub fn busy(&self) -> usize {
        self.jobs.len()
    }

    pub fn on_delivery(&mut self, seq: u64, payload: &[u8], now: u64, out: &mut Out) {
        if self.jobs.contains_key(&seq) {
            return; // a duplicate of a job under way
        }
        let assignment = serde_json::from_slice::<ExecAssignment>(payload).ok();
        if assignment.is_none() {
            // Not an assignment: nothing to execute, never redeliver.
            out.send(Up::Ack {
                cons: Cons::Assign,
                seq,
                kind: AckKind::Term,
            });
            return;
        }
        self.jobs.insert(
            seq,
            Job {
                seq,
                assignment,
                result: None,
                msg_id: None,
                publish: None,
                tries: 0,
                duplicate_sent: false,
            },
        );
        let latency = self.rng.between(10, self.latency_max_ms.max(10));
        out.timer(now + latency, ActorTimer::CafWorkDone { seq });
    }

    /// The job is done: build its result and publish it.
    pub fn work_done(
        &mut self,
        seq: u64,
        now: u64,
        faults: &Faults,
        in_chaos: bool,
        out: &mut Out,
    ) {
        let rng = &mut self.rng;
        let Some(job) = self.jobs.get_mut(&seq) else {
            return;
        };
        let Some(a) = &job.assignment else {
            return;
        };
        let roll = rng.below(1000);
        let (error, timeout) = if in_chaos {
            (faults.caf_error_permille, faults.caf_timeout_permille)
        } else {
            (0, 0)
        };
        let status = if roll < error {
            "error"
        } else if roll < error + timeout {
            "timeout"
        } else {
            "success"
        };
        let latency_ms = rng.between(20, 2_000);
        let mut result = json!({
            "version": "1",
            "assignment_id": a.assignment_id,
            "request_id": a.request_id,
            "status": status,
            "provider_id": a.executor.provider_id,
            "job": {"type": a.job.get("type").cloned().unwrap_or_default()},
            "latency_ms": latency_ms,
            "cost": 0.002,
            "tenant_id": a.tenant_id,
            "timestamp": now,
        });
        if let Some(t) = &a.correlation.trace_id {
            result["trace_id"] = t.clone().into();
        }
        if status == "error" {
            result["error_code"] = "503".into();
            result["error_type"] = "provider_unavailable".into();
            result["error_message"] = "upstream said no".into();
        }
        if in_chaos && rng.chance(faults.caf_malformed_permille) {
            if let Some(obj) = result.as_object_mut() {
                obj.remove("tenant_id");
            }
        }
        job.msg_id = self
            .use_msg_id
            .then(|| format!("result-{}", a.assignment_id));
        job.result = Some(result.to_string().into_bytes());
        job.duplicate_sent = !(in_chaos && rng.chance(faults.caf_dup_permille));
        self.publish(seq, now, out);
    }

    fn publish(&mut self, seq: u64, now: u64, out: &mut Out) {
        let id = self.ids.fresh();
        let Some(job) = self.jobs.get_mut(&seq) else {
            return;
        };
        let Some(result) = &job.result else {
            return;
        };
        job.tries += 1;
        job.publish = Some(id);
        self.publishes.insert(id, seq);
        let mut headers = Vec::new();
        if let Some(m) = &job.msg_id {
            headers.push((HEADER_MSG_ID.to_string(), m.clone()));
        }
        out.send(Up::Publish {
            id,
            subject: subjects::RESULT.to_string(),
            headers,
            payload: result.clone(),
            js: true,
        });
        out.timer(
            now + self.publish_timeout_ms,
            ActorTimer::CafPubAckTimeout { publish: id },
        );
    }

    /// A PubAck for a result (or its error, or its timeout with `error` set).
    pub fn on_puback(&mut self, publish: u64, error: bool, now: u64, out: &mut Out) {
        let Some(seq) = self.publishes.remove(&publish) else {
            return;
        };
        let Some(job) = self.jobs.get_mut(&seq) else {
            return;
        };
        if job.publish != Some(publish) {
            return;
        }
        if error {
            if job.tries < PUBLISH_TRIES {
                self.publish(seq, now, out);
            } else {
                // Give the assignment back; whoever gets it next runs it again.
                let seq = job.seq;
                self.jobs.remove(&seq);
                out.send(Up::Ack {
                    cons: Cons::Assign,
                    seq,
                    kind: AckKind::Nak { delay_ms: 1_000 },
                });
            }
            return;
        }
        if !job.duplicate_sent {
            // The fault: the same result once more, as a worker retrying blindly would.
            job.duplicate_sent = true;
            job.tries = 0;
            self.publish(seq, now, out);
            return;
        }
        let seq = job.seq;
        self.jobs.remove(&seq);
        out.send(Up::Ack {
            cons: Cons::Assign,
            seq,
            kind: AckKind::Ack,
        });
    }
}
