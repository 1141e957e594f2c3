//! Circuit breakers: a model of each (process, tenant, provider) breaker, fed with the
//! results that process took in, and asked about every decision it made.
//!
//! The rules, as docs/ROUTING.md states them for a policy's `circuit_breaker`:
//! - closed: `failure_threshold` consecutive failures, or a failure that brings the
//!   error rate over `error_rate_window` to `error_rate_threshold` with at least
//!   `min_requests` results, or `failure_threshold` consecutive slow results, open it;
//! - open: no traffic until `timeout_ms` has passed since it opened; the first decision
//!   after that finds it half-open;
//! - half-open: at most `half_open_max_calls` probes out at once (slots held by
//!   probes sent `timeout_ms` ago are given back); a probe's failure re-opens it,
//!   `success_threshold` probe successes close it; results that are no probe's count for
//!   nothing;
//! - a result feeds its provider's breaker once per correlation key.
//!
//! Checks: a decision to a provider whose modelled breaker admits nothing is
//! `decision_to_open_breaker`; a `no_provider_available` answer while the model admits a
//! weighted provider is `no_provider_while_breaker_allows` (a breaker that stays open
//! after its timeout, or never closes); the core's count of breaker records differing
//! from the results' first sightings is `breaker_record_count`. The weights model takes
//! the decisions this model saw made with every provider admitted. The states an
//! operator is shown (`get_circuit_breaker_states`) must be the model's:
//! `breaker_state_differs` (a breaker that never closes shows half-open for ever).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use beamline_router::contracts::UsageEvent;
use beamline_router::core::breaker::{BreakerConfig, WINDOW_CAP};
use beamline_router::core::decider::breaker_config;
use beamline_router::core::{Command, Input, RouterConfig};
use beamline_router::policy::{Policy, PolicyStore, DEFAULT_POLICY_ID};
use serde_json::Value;

use super::{policy_of, Answer, Finding, ModelCounters, StepView};
use crate::actors::gateway::Workload;
use crate::invariants::Proc;
use crate::wire::Cons;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Success,
    Failure,
    Neither,
}

#[derive(Clone, Debug)]
struct Model {
    state: State,
    since: u64,
    consecutive_failures: u32,
    consecutive_slow: u32,
    probe_successes: u32,
    probes_out: u32,
    last_probe_at: u64,
    window: VecDeque<(u64, bool)>,
}

impl Model {
    fn new(now: u64) -> Model {
        Model {
            state: State::Closed,
            since: now,
            consecutive_failures: 0,
            consecutive_slow: 0,
            probe_successes: 0,
            probes_out: 0,
            last_probe_at: now,
            window: VecDeque::new(),
        }
    }

    fn enter(&mut self, state: State, now: u64) {
        *self = Model {
            state,
            ..Model::new(now)
        };
    }

    fn record(&mut self, cfg: &BreakerConfig, now: u64, outcome: Outcome, latency_ms: u64) {
        match (self.state, outcome) {
            (State::Open, _) | (State::Closed, Outcome::Neither) => {}
            (State::HalfOpen, _) if self.probes_out == 0 => {}
            (State::HalfOpen, outcome) => {
                self.probes_out -= 1;
                match outcome {
                    Outcome::Failure => self.enter(State::Open, now),
                    Outcome::Success => {
                        self.probe_successes += 1;
                        if self.probe_successes >= cfg.success_threshold.max(1) {
                            self.enter(State::Closed, now);
                        }
                    }
                    Outcome::Neither => {}
                }
            }
            (State::Closed, outcome) => {
                let failed = outcome == Outcome::Failure;
                while let Some(&(at, _)) = self.window.front() {
                    if at + cfg.error_rate_window_ms > now && self.window.len() < WINDOW_CAP {
                        break;
                    }
                    self.window.pop_front();
                }
                self.window.push_back((now, failed));
                self.consecutive_failures = if failed {
                    self.consecutive_failures + 1
                } else {
                    0
                };
                if let Some(limit) = cfg.latency_threshold_ms {
                    self.consecutive_slow = if latency_ms > limit {
                        self.consecutive_slow + 1
                    } else {
                        0
                    };
                }
                let total = self.window.len() as u64;
                let failures = self.window.iter().filter(|e| e.1).count() as u64;
                let threshold = cfg.failure_threshold.max(1);
                let trips = (failed && self.consecutive_failures >= threshold)
                    || (failed
                        && total >= u64::from(cfg.min_requests)
                        && failures * 1000 >= u64::from(cfg.error_rate_permille) * total)
                    || self.consecutive_slow >= threshold;
                if trips {
                    self.enter(State::Open, now);
                }
            }
        }
    }

    /// The state an operator is shown: an open breaker past its timeout is half-open.
    fn shown(&self, cfg: &BreakerConfig, now: u64) -> &'static str {
        match self.state {
            State::Closed => "closed",
            State::Open if now.saturating_sub(self.since) >= cfg.open_timeout_ms => "half_open",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }

    fn admits(&self, cfg: &BreakerConfig, now: u64) -> bool {
        match self.state {
            State::Closed => true,
            State::Open => now.saturating_sub(self.since) >= cfg.open_timeout_ms,
            State::HalfOpen => {
                self.probes_out < cfg.half_open_max_calls.max(1)
                    || now.saturating_sub(self.last_probe_at) >= cfg.open_timeout_ms
            }
        }
    }

    /// A decision went to this provider.
    fn admit(&mut self, cfg: &BreakerConfig, now: u64) {
        if self.state == State::Open && now.saturating_sub(self.since) >= cfg.open_timeout_ms {
            self.enter(State::HalfOpen, now);
        }
        if self.state == State::HalfOpen {
            if self.probes_out > 0 && now.saturating_sub(self.last_probe_at) >= cfg.open_timeout_ms
            {
                self.probes_out = 0;
            }
            if self.probes_out < cfg.half_open_max_calls.max(1) {
                self.probes_out += 1;
                self.last_probe_at = now;
            }
        }
    }
}

/// How a worker's result counts for its provider's breaker: a success, a provider
/// fault (time-out, connection, unavailable, 5xx), or neither (the caller's fault).
fn outcome_of(result: &Value) -> Outcome {
    const FAULT_CODES: [&str; 6] = [
        "timeout",
        "connection_error",
        "provider_unavailable",
        "5xx",
        "http_5xx",
        "server_error",
    ];
    let field = |k: &str| {
        result
            .get(k)
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
    };
    let fault = |v: Option<String>| v.is_some_and(|v| FAULT_CODES.contains(&v.as_str()));
    match field("status").as_deref() {
        Some("success") => Outcome::Success,
        Some("timeout") => Outcome::Failure,
        Some("error") if fault(field("error_code")) || fault(field("error_type")) => {
            Outcome::Failure
        }
        _ => Outcome::Neither,
    }
}

/// Every decision a step made with every provider of its policy admitted, by request.
pub type AllAdmitted = BTreeSet<usize>;

pub struct BreakerModel {
    /// The breaker configuration each tenant's results are judged by (its default
    /// policy's), for tenants whose policies gate decisions on breakers.
    record_cfg: BTreeMap<String, BreakerConfig>,
    /// (tenant, policy) -> (its breaker configuration, its weighted providers).
    gated: BTreeMap<(String, String), (BreakerConfig, Vec<String>)>,
    breakers: BTreeMap<(Proc, String, String), Model>,
    /// Result keys each process fed.
    fed: BTreeSet<(Proc, String)>,
    /// Processes whose decisions could not be read in some step: not judged further.
    unreadable: BTreeSet<Proc>,
}

fn weighted(policy: &Policy) -> Vec<String> {
    policy
        .providers
        .iter()
        .filter(|p| p.weight > 0)
        .map(|p| p.name.clone())
        .collect()
}

impl BreakerModel {
    pub fn new(_config: &RouterConfig, policies: &PolicyStore) -> BreakerModel {
        let mut gated = BTreeMap::new();
        let mut record_cfg = BTreeMap::new();
        for (tenant, policy) in policies.iter() {
            if let Some(cfg) = breaker_config(policy) {
                let key = (tenant.to_string(), policy.policy_id.clone());
                gated.insert(key, (cfg, weighted(policy)));
                let default = policies
                    .get(tenant, DEFAULT_POLICY_ID)
                    .and_then(breaker_config);
                // Results are judged by the default policy's breaker settings: a gated
                // tenant without one is not modelled.
                if let Some(d) = default {
                    record_cfg.insert(tenant.to_string(), d);
                }
            }
        }
        BreakerModel {
            record_cfg,
            gated,
            breakers: BTreeMap::new(),
            fed: BTreeSet::new(),
            unreadable: BTreeSet::new(),
        }
    }

    pub fn forget(&mut self, proc: Proc) {
        self.breakers.retain(|(p, _, _), _| *p != proc);
        self.fed.retain(|(p, _)| *p != proc);
    }

    pub fn on_step(
        &mut self,
        step: &StepView,
        answers: &[Answer],
        fresh: Option<&[&Answer]>,
        workload: &Workload,
        c: &mut ModelCounters,
        found: &mut Vec<Finding>,
    ) -> AllAdmitted {
        self.on_results(step, found);
        self.on_states_shown(step, c, found);
        let Some(fresh) = fresh else {
            self.unreadable.insert(step.proc);
            return AllAdmitted::new();
        };
        if self.unreadable.contains(&step.proc) {
            return AllAdmitted::new();
        }
        let mut all = AllAdmitted::new();
        for a in fresh {
            if self.on_decision(step, a, workload, c, found) {
                all.insert(a.request);
            }
        }
        // A refusal that no provider could be chosen, decided in this step.
        let replayed = step.delta(|s| s.idempotent_replays) > 0;
        if !replayed && step.delta(|s| s.replies_error) > 0 {
            for a in answers.iter().filter(|a| !a.ok) {
                if a.error.as_deref() == Some("no_provider_available") {
                    self.on_no_provider(step, a, workload, c, found);
                }
            }
        }
        all
    }

    /// Feed the breaker with a result seen for the first time, and hold the core's
    /// count of breaker records to it.
    fn on_results(&mut self, step: &StepView, found: &mut Vec<Finding>) {
        let mut expected = 0u64;
        if let Some((Cons::Results, _)) = step.message {
            for command in step.commands {
                let Command::Publish(p) = command else {
                    continue;
                };
                let Ok(usage) = serde_json::from_slice::<UsageEvent>(&p.payload) else {
                    continue;
                };
                let key = usage.usage_id.clone();
                if usage.provider_id.is_empty() || !self.fed.insert((step.proc, key)) {
                    continue;
                }
                expected += 1;
                let Some(cfg) = self.record_cfg.get(&usage.tenant_id) else {
                    continue;
                };
                let status = serde_json::to_value(usage.status).unwrap_or(Value::Null);
                let mut result = serde_json::Map::new();
                result.insert("status".into(), status);
                if let Some(original) = step.payload {
                    if let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(original) {
                        for k in ["error_code", "error_type"] {
                            if let Some(v) = o.get(k) {
                                result.insert(k.into(), v.clone());
                            }
                        }
                    }
                }
                let outcome = outcome_of(&Value::Object(result));
                let id = (
                    step.proc,
                    usage.tenant_id.clone(),
                    usage.provider_id.clone(),
                );
                let exists = self.breakers.contains_key(&id);
                if !exists && outcome == Outcome::Neither {
                    continue;
                }
                self.breakers
                    .entry(id)
                    .or_insert_with(|| Model::new(step.local))
                    .record(cfg, step.local, outcome, usage.latency_ms);
            }
        }
        let records = step.delta(|s| s.breaker_records);
        if records != expected {
            found.push(Finding {
                invariant: "breaker_record_count",
                seq: step.message.map(|(_, s)| s),
                message: format!(
                    "router-{} fed {records} result(s) to breakers in one step; {expected} result key(s) were new to it",
                    step.proc.router + 1
                ),
            });
        }
    }

    /// An operator asked for the breakers' states (`get_circuit_breaker_states`): each
    /// one shown must be the model's.
    fn on_states_shown(&self, step: &StepView, c: &mut ModelCounters, found: &mut Vec<Finding>) {
        let Input::Inbound(request) = step.input else {
            return;
        };
        if !request.subject.ends_with(".get_circuit_breaker_states") {
            return;
        }
        for command in step.commands {
            let Command::Respond { payload, .. } = command else {
                continue;
            };
            let Ok(answer) = serde_json::from_slice::<Value>(payload) else {
                continue;
            };
            let shown = answer.get("breakers").and_then(Value::as_array);
            for b in shown.into_iter().flatten() {
                let text = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or_default();
                let (tenant, provider, state) =
                    (text("tenant_id"), text("provider_id"), text("state"));
                let Some(cfg) = self.record_cfg.get(tenant) else {
                    continue;
                };
                c.breaker_checks += 1;
                let id = (step.proc, tenant.to_string(), provider.to_string());
                let want = self
                    .breakers
                    .get(&id)
                    .map_or("closed", |m| m.shown(cfg, step.local));
                if state != want {
                    found.push(Finding {
                        invariant: "breaker_state_differs",
                        seq: None,
                        message: format!(
                            "router-{} showed the {tenant}/{provider} breaker {state} at {} ms; from the results it took in it is {want}",
                            step.proc.router + 1,
                            step.local
                        ),
                    });
                }
            }
        }
    }

    /// The policy's gating, for a decision about `request`.
    fn gate(&self, request: usize, workload: &Workload) -> Option<(String, String)> {
        let (tenant, policy) = policy_of(workload.request(request).kind)?;
        let key = (tenant.to_string(), policy.to_string());
        self.gated.contains_key(&key).then_some(key)
    }

    fn admits(
        &self,
        proc: Proc,
        tenant: &str,
        provider: &str,
        cfg: &BreakerConfig,
        now: u64,
    ) -> bool {
        self.breakers
            .get(&(proc, tenant.to_string(), provider.to_string()))
            .is_none_or(|b| b.admits(cfg, now))
    }

    /// Returns whether every weighted provider was admitted when it was made.
    fn on_decision(
        &mut self,
        step: &StepView,
        a: &Answer,
        workload: &Workload,
        c: &mut ModelCounters,
        found: &mut Vec<Finding>,
    ) -> bool {
        let Some(key) = self.gate(a.request, workload) else {
            return true; // no breaker gates this policy
        };
        let Some(provider) = a.provider.clone() else {
            return false;
        };
        let (cfg, providers) = self.gated[&key].clone();
        let tenant = key.0.clone();
        let now = step.local;
        c.breaker_checks += 1;
        let all = providers
            .iter()
            .all(|p| self.admits(step.proc, &tenant, p, &cfg, now));
        if !self.admits(step.proc, &tenant, &provider, &cfg, now) {
            found.push(Finding {
                invariant: "decision_to_open_breaker",
                seq: None,
                message: format!(
                    "router-{} sent request r-{} ({}/{}) to {provider} at {now} ms, whose breaker admits nothing then",
                    step.proc.router + 1,
                    a.request,
                    key.0,
                    key.1
                ),
            });
        }
        if let Some(b) = self
            .breakers
            .get_mut(&(step.proc, tenant, provider.clone()))
        {
            b.admit(&cfg, now);
        }
        all
    }

    fn on_no_provider(
        &mut self,
        step: &StepView,
        a: &Answer,
        workload: &Workload,
        c: &mut ModelCounters,
        found: &mut Vec<Finding>,
    ) {
        if self.unreadable.contains(&step.proc) {
            return;
        }
        let Some(key) = self.gate(a.request, workload) else {
            return;
        };
        let (cfg, providers) = &self.gated[&key];
        c.breaker_checks += 1;
        let open: Vec<&String> = providers
            .iter()
            .filter(|p| self.admits(step.proc, &key.0, p, cfg, step.local))
            .collect();
        if let Some(p) = open.first() {
            found.push(Finding {
                invariant: "no_provider_while_breaker_allows",
                seq: None,
                message: format!(
                    "router-{} answered request r-{} ({}/{}) no_provider_available at {} ms, but {p}'s breaker admits traffic then",
                    step.proc.router + 1,
                    a.request,
                    key.0,
                    key.1,
                    step.local
                ),
            });
        }
    }
}
