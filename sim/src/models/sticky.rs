//! Sticky sessions: per (process, tenant, session), the provider the session is pinned
//! to and until when, on the process's clock.
//!
//! A decision for a session pins it for the policy's `ttl` from then (a sticky hit
//! refreshes it); a session read from the shared bucket and still live is adopted with
//! the expiry written there. Checks, on every fresh decision of a sticky policy:
//! - reason `sticky` for a session that is not live (never pinned, or past its TTL):
//!   `sticky_after_ttl`;
//! - reason `sticky` with another provider than the pinned one: `sticky_wrong_provider`;
//! - a weighted draw while the session is live and its provider still weighted (and, in
//!   a policy with breakers, every provider admitted): `sticky_session_moved`.

use std::collections::{BTreeMap, BTreeSet};

use beamline_router::core::shared::{sticky_key, SharedSession};
use beamline_router::core::{Command, Input, KvOp, KvOutcome};
use beamline_router::policy::PolicyStore;

use super::breakers::AllAdmitted;
use super::{policy_of, Answer, Finding, ModelCounters, StepView};
use crate::actors::gateway::Workload;
use crate::invariants::Proc;

/// A sticky policy as the model needs it.
#[derive(Clone, Debug)]
struct StickyPolicy {
    ttl_ms: u64,
    providers: Vec<String>,
    gated: bool,
}

#[derive(Clone, Debug)]
struct Pin {
    provider: String,
    expires_at: u64,
}

pub struct StickyModel {
    /// (tenant, policy) -> its sticky rule, for policies keyed by the tenant (the only
    /// session key whose value the model can tell from a request).
    policies: BTreeMap<(String, String), StickyPolicy>,
    /// (process, tenant) -> the session's pin (the session value is the tenant).
    pins: BTreeMap<(Proc, String), Pin>,
    /// (process, KV id) -> the tenant whose session a bucket read asked for.
    reads: BTreeMap<(Proc, u64), String>,
    unreadable: BTreeSet<Proc>,
    /// The latest each process's clock has read. A pin that expired by then may have
    /// been swept, so after the clock steps back over its expiry it is neither live nor
    /// gone for certain, and its decisions are not judged.
    high_water: BTreeMap<Proc, u64>,
}

impl StickyModel {
    pub fn new(policies: &PolicyStore) -> StickyModel {
        let policies = policies
            .iter()
            .filter_map(|(tenant, p)| {
                let s = p.sticky.as_ref().filter(|s| s.session_key == "tenant_id")?;
                let rule = StickyPolicy {
                    ttl_ms: s.ttl_seconds * 1_000,
                    providers: p
                        .providers
                        .iter()
                        .filter(|w| w.weight > 0)
                        .map(|w| w.name.clone())
                        .collect(),
                    gated: p.circuit_breaker.is_some(),
                };
                Some(((tenant.to_string(), p.policy_id.clone()), rule))
            })
            .collect();
        StickyModel {
            policies,
            pins: BTreeMap::new(),
            reads: BTreeMap::new(),
            unreadable: BTreeSet::new(),
            high_water: BTreeMap::new(),
        }
    }

    pub fn forget(&mut self, proc: Proc) {
        self.pins.retain(|(p, _), _| *p != proc);
        self.high_water.remove(&proc);
    }

    /// A session read from the shared bucket that the core adopted.
    fn on_bucket_read(&mut self, step: &StepView) {
        for command in step.commands {
            if let Command::Kv {
                id,
                op: KvOp::Get { key },
            } = command
            {
                let tenant = self
                    .policies
                    .keys()
                    .map(|(t, _)| t)
                    .find(|t| sticky_key(t, t) == *key);
                if let Some(t) = tenant {
                    self.reads.insert((step.proc, *id), t.clone());
                }
            }
        }
        let Input::KvDone { id, outcome } = step.input else {
            return;
        };
        let Some(tenant) = self.reads.remove(&(step.proc, *id)) else {
            return;
        };
        let KvOutcome::Found { value } = outcome else {
            return;
        };
        let adopted = step.delta(|s| s.shared_sessions_adopted) > 0;
        if let (true, Some(s)) = (adopted, SharedSession::decode(value)) {
            if s.expires_at_ms > step.local {
                self.pins.insert(
                    (step.proc, tenant),
                    Pin {
                        provider: s.provider,
                        expires_at: s.expires_at_ms,
                    },
                );
            }
        }
    }

    pub fn on_step(
        &mut self,
        step: &StepView,
        fresh: Option<&[&Answer]>,
        workload: &Workload,
        admitted: &AllAdmitted,
        c: &mut ModelCounters,
        found: &mut Vec<Finding>,
    ) {
        let high_water = self.high_water.entry(step.proc).or_insert(step.local);
        *high_water = (*high_water).max(step.local);
        let high_water = *high_water;
        self.on_bucket_read(step);
        let Some(fresh) = fresh else {
            self.unreadable.insert(step.proc);
            return;
        };
        for a in fresh {
            let Some((tenant, policy)) = policy_of(workload.request(a.request).kind) else {
                continue;
            };
            let key = (tenant.to_string(), policy.to_string());
            let Some(rule) = self.policies.get(&key).cloned() else {
                continue;
            };
            let (Some(provider), Some(reason)) = (a.provider.clone(), a.reason.as_deref()) else {
                continue;
            };
            let now = step.local;
            let pin_key = (step.proc, tenant.to_string());
            let pin = self.pins.get(&pin_key).cloned();
            // A session the model never saw pinned may have been pinned by a decision
            // that failed after its draw: only an expiry the model saw is judged.
            let seen = pin.is_some();
            let uncertain = pin
                .as_ref()
                .is_some_and(|p| p.expires_at > now && p.expires_at <= high_water);
            let live = pin.filter(|p| p.expires_at > now);
            if !self.unreadable.contains(&step.proc) && !uncertain {
                c.sticky_checks += 1;
                let who = format!(
                    "router-{}, request r-{} ({tenant}/{policy})",
                    step.proc.router + 1,
                    a.request
                );
                let pinned = live.as_ref().map(|p| p.provider.clone());
                let problem = match (reason, &pinned) {
                    ("sticky", None) if seen => Some((
                        "sticky_after_ttl",
                        format!("{who}: sticky decision to {provider} at {now} ms, but the session was not live (TTL {} ms)", rule.ttl_ms),
                    )),
                    ("sticky", Some(p)) if *p != provider => Some((
                        "sticky_wrong_provider",
                        format!("{who}: sticky decision to {provider}, the session is pinned to {p}"),
                    )),
                    ("weighted", Some(p))
                        if rule.providers.contains(p)
                            && (!rule.gated || admitted.contains(&a.request)) =>
                    {
                        Some((
                            "sticky_session_moved",
                            format!("{who}: weighted decision to {provider} at {now} ms while the session was pinned to {p} until {} ms", live.as_ref().map_or(0, |l| l.expires_at)),
                        ))
                    }
                    _ => None,
                };
                if let Some((invariant, message)) = problem {
                    found.push(Finding {
                        invariant,
                        seq: None,
                        message,
                    });
                }
            }
            if matches!(reason, "sticky" | "weighted") {
                self.pins.insert(
                    pin_key,
                    Pin {
                        provider,
                        expires_at: now + rule.ttl_ms,
                    },
                );
            }
        }
    }
}
