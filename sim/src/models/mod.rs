//! Reference models of the routing semantics, held against every step of every run.
//!
//! The message checkers (`invariants`) judge fates: acked after the reply, DLQ record
//! before term, one set of bytes per key. These models judge *what* was decided: each
//! keeps its own small copy of one rule of the router (a token bucket, a breaker, a
//! session table, a weighted draw, a backoff table), fed from what a step shows (the
//! delivery, the commands, the replies and KV values written, the process's clock and
//! the core's public counters), and reports where the router's behaviour leaves it:
//!
//! - `fates.rs`: nak delays and exhaustion DLQ records;
//! - `rate.rs`: per (process, tenant, policy) token buckets;
//! - `breakers.rs`: per (process, tenant, provider) circuit breakers, and one breaker
//!   record per result key;
//! - `sticky.rs`: per (process, tenant, session) sticky sessions;
//! - `weights.rs`: each provider's share of weighted decisions, at the end of a run;
//! - `extensions.rs`: extension retries only after time-outs.
//!
//! Every model is written from the rule as documented, not from the core's code, and each
//! has a planted bug (`--bug`) that only it catches (docs/INVARIANTS.md).

mod breakers;
mod extensions;
mod fates;
mod rate;
mod sticky;
mod weights;

use beamline_router::contracts::subjects;
use beamline_router::core::shared::SharedAnswer;
use beamline_router::core::{Command, DeliveryId, Input, KvOp, RouterConfig, Stats};
use beamline_router::policy::{PolicyStore, DEFAULT_POLICY_ID};
use serde::Serialize;
use serde_json::Value;

use crate::actors::gateway::{parse_inbox, RequestKind, Workload};
use crate::host::DeliveryRef;
use crate::invariants::Proc;
use crate::policies::{EXT_POLICY, TENANT_RATE_LIMITED, TENANT_WITH_POLICY};
use crate::wire::Cons;

/// A broken rule, as a model reports it; the checker keeps the first.
#[derive(Clone, Debug)]
pub struct Finding {
    pub invariant: &'static str,
    pub seq: Option<u64>,
    pub message: String,
}

/// What one core step shows the models.
pub struct StepView<'a> {
    /// World time.
    pub at: u64,
    /// The process's own clock (skew and its jumps included), in ms.
    pub local: u64,
    pub proc: Proc,
    pub input: &'a Input,
    /// The message of a delivery or exhaustion input.
    pub message: Option<(Cons, u64)>,
    /// The decide request the step's message carries, when it is a decide message.
    pub request: Option<usize>,
    pub commands: &'a [Command],
    /// The payload of the step's message, as stored in its stream.
    pub payload: Option<&'a [u8]>,
    pub handles: &'a [(DeliveryId, DeliveryRef)],
    pub before: &'a Stats,
    pub after: &'a Stats,
}

impl StepView<'_> {
    fn delta(&self, field: impl Fn(&Stats) -> u64) -> u64 {
        field(self.after).saturating_sub(field(self.before))
    }

    fn handle(&self, id: DeliveryId) -> Option<DeliveryRef> {
        self.handles.iter().find(|(d, _)| *d == id).map(|(_, h)| *h)
    }
}

/// A reply the step wrote: published to the gateway's inbox, or put into the shared
/// answer bucket as the claim that publishes it once stored.
#[derive(Clone, Debug)]
pub(crate) struct Answer {
    pub request: usize,
    pub ok: bool,
    pub provider: Option<String>,
    pub reason: Option<String>,
    /// The error's `reason` (for example `no_provider_available`, `rate_limited`).
    pub error: Option<String>,
}

impl Answer {
    fn parse(request: usize, bytes: &[u8]) -> Option<Answer> {
        let v: Value = serde_json::from_slice(bytes).ok()?;
        let ok = v.get("ok").and_then(Value::as_bool).unwrap_or(false);
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
        Some(Answer {
            request,
            ok,
            provider: text(v.pointer("/decision/provider_id")),
            reason: text(v.pointer("/decision/reason")),
            error: text(v.pointer("/error/details/reason"))
                .or_else(|| text(v.pointer("/error/reason")))
                .or_else(|| text(v.pointer("/error/code"))),
        })
    }
}

/// Which (tenant, policy) a planned request is decided under.
pub(crate) fn policy_of(kind: RequestKind) -> Option<(&'static str, &'static str)> {
    match kind {
        RequestKind::Valid => Some((TENANT_WITH_POLICY, DEFAULT_POLICY_ID)),
        RequestKind::ValidExt => Some((TENANT_WITH_POLICY, EXT_POLICY)),
        RequestKind::Limited => Some((TENANT_RATE_LIMITED, DEFAULT_POLICY_ID)),
        RequestKind::NoPolicy | RequestKind::Invalid(_) => None,
    }
}

/// The fresh decisions of a step: the `ok` replies it wrote, if the core's count of
/// decisions rose by as many (a replay of a recorded answer writes the same bytes
/// without deciding). `None` when the two disagree and the step cannot be read.
fn fresh_decisions<'a>(step: &StepView, answers: &'a [Answer]) -> Option<Vec<&'a Answer>> {
    let ok: Vec<&Answer> = answers.iter().filter(|a| a.ok).collect();
    let decided = step.delta(|s| s.replies_ok) as usize;
    match decided {
        0 => Some(Vec::new()),
        n if n == ok.len() => Some(ok),
        _ => None,
    }
}

/// Every reply a step wrote.
fn answers_of(commands: &[Command], workload: &Workload) -> Vec<Answer> {
    let mut out = Vec::new();
    for c in commands {
        match c {
            Command::Publish(p) => {
                if let Some((request, _)) = parse_inbox(&p.subject) {
                    out.extend(Answer::parse(request, &p.payload));
                }
            }
            Command::Kv {
                op: KvOp::Create { value, .. },
                ..
            } => {
                let Some(shared) = SharedAnswer::decode(value) else {
                    continue;
                };
                let v: Option<Value> = serde_json::from_slice(&shared.reply).ok();
                let id = v
                    .as_ref()
                    .and_then(|v| v.pointer("/context/request_id"))
                    .and_then(Value::as_str);
                if let Some(request) = id.and_then(|id| workload.by_request_id(id)) {
                    out.extend(Answer::parse(request, &shared.reply));
                }
            }
            _ => {}
        }
    }
    out
}

/// How often the models judged, and how often a step could not be read.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ModelCounters {
    pub rate_checks: u64,
    pub breaker_checks: u64,
    pub sticky_checks: u64,
    pub weighted_decisions: u64,
    pub nak_checks: u64,
    pub extension_retries: u64,
    /// Steps whose decisions could not be told from replays: the breaker and sticky
    /// models of that process stop judging it (should stay near zero).
    pub unreadable_steps: u64,
}

pub struct Models {
    pub(crate) fates: fates::Fates,
    rate: rate::RateModel,
    breakers: breakers::BreakerModel,
    sticky: sticky::StickyModel,
    weights: weights::Weights,
    extensions: extensions::ExtensionModel,
    pub counters: ModelCounters,
    found: Vec<Finding>,
}

impl std::fmt::Debug for Models {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Models")
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl Models {
    pub fn new(config: &RouterConfig, policies: &PolicyStore) -> Models {
        Models {
            fates: fates::Fates::new(config),
            rate: rate::RateModel::new(policies),
            breakers: breakers::BreakerModel::new(config, policies),
            sticky: sticky::StickyModel::new(policies),
            weights: weights::Weights::new(policies),
            extensions: extensions::ExtensionModel::default(),
            counters: ModelCounters::default(),
            found: Vec::new(),
        }
    }

    /// Hold one core step to every model.
    pub fn on_step(&mut self, step: &StepView, workload: &Workload) {
        let answers = answers_of(step.commands, workload);
        let fresh = fresh_decisions(step, &answers);
        if fresh.is_none() {
            self.counters.unreadable_steps += 1;
        }
        let f = &mut self.found;
        let c = &mut self.counters;
        self.fates.on_step(step, c, f);
        self.rate.on_step(step, workload, c, f);
        self.extensions.on_step(step, c, f);
        let allowed = self
            .breakers
            .on_step(step, &answers, fresh.as_deref(), workload, c, f);
        self.sticky
            .on_step(step, fresh.as_deref(), workload, &allowed, c, f);
        if let Some(fresh) = &fresh {
            self.weights.on_decisions(fresh, workload, &allowed, c);
        }
    }

    /// The host put a settle on the wire (after any host bug).
    pub fn on_wire_nak(&mut self, proc: Proc, d: DeliveryRef, delay_ms: u64) {
        self.fates
            .on_wire_nak(proc, d, delay_ms, &mut self.counters, &mut self.found);
    }

    /// A process ended: its memory (buckets, breakers, sessions) is gone.
    pub fn on_process_end(&mut self, proc: Proc) {
        self.rate.forget(proc);
        self.breakers.forget(proc);
        self.sticky.forget(proc);
    }

    /// The end-of-run rules (the weights).
    pub fn finish(&mut self) {
        self.weights.finish(&mut self.found);
    }

    /// What the models found since last asked.
    pub fn take_findings(&mut self) -> Vec<Finding> {
        std::mem::take(&mut self.found)
    }
}

/// The DLQ subjects' consumers, for the fate model.
pub(crate) fn dlq_cons(subject: &str) -> Option<Cons> {
    match subject {
        subjects::DECIDE_DLQ => Some(Cons::Decide),
        subjects::RESULT_DLQ => Some(Cons::Results),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
