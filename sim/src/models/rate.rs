//! Rate limits: a token bucket per (process, tenant, policy), as the policy documents it
//! (`burst` tokens, refilled at `requests_per_second`), kept on the process's own clock
//! (the skew the world draws and its jumps included; a clock that steps back refills
//! nothing until it passes where it was).
//!
//! The core's `rate_admitted` and `rate_limited` counters say when it checked a bucket
//! and what it answered; the step's message says whose. An admission the model's bucket
//! could not pay for is `rate_limit_exceeded` (more decisions than burst + rate x time);
//! a refusal while the model's bucket held a whole token is `rate_limited_early`.

use std::collections::BTreeMap;

use beamline_router::policy::PolicyStore;

use super::{policy_of, Finding, ModelCounters, StepView};
use crate::actors::gateway::Workload;
use crate::invariants::Proc;

const MILLI: u64 = 1_000;

type Key = (String, String);

#[derive(Clone, Debug)]
struct Bucket {
    milli_tokens: u64,
    refilled_at: u64,
}

pub struct RateModel {
    /// (tenant, policy) -> (requests per second, burst).
    limits: BTreeMap<Key, (u64, u64)>,
    buckets: BTreeMap<(Proc, Key), Bucket>,
}

impl RateModel {
    pub fn new(policies: &PolicyStore) -> RateModel {
        let limits = policies
            .iter()
            .filter_map(|(tenant, p)| {
                let l = p.rate_limit.as_ref()?;
                let key = (tenant.to_string(), p.policy_id.clone());
                Some((key, (l.requests_per_second.max(1), l.burst.max(1))))
            })
            .collect();
        RateModel {
            limits,
            buckets: BTreeMap::new(),
        }
    }

    pub fn forget(&mut self, proc: Proc) {
        self.buckets.retain(|(p, _), _| *p != proc);
    }

    /// Whose bucket the step checked: its message's policy, or the world's only
    /// limited policy.
    fn key_of(&self, step: &StepView, workload: &Workload) -> Option<Key> {
        let by_request = step
            .request
            .and_then(|r| policy_of(workload.request(r).kind))
            .map(|(t, p)| (t.to_string(), p.to_string()))
            .filter(|k| self.limits.contains_key(k));
        by_request.or_else(|| {
            (self.limits.len() == 1)
                .then(|| self.limits.keys().next().cloned())
                .flatten()
        })
    }

    pub fn on_step(
        &mut self,
        step: &StepView,
        workload: &Workload,
        c: &mut ModelCounters,
        found: &mut Vec<Finding>,
    ) {
        let admitted = step.delta(|s| s.rate_admitted);
        let refused = step.delta(|s| s.rate_limited);
        if admitted + refused == 0 {
            return;
        }
        let Some(key) = self.key_of(step, workload) else {
            return;
        };
        let Some(&(rps, burst)) = self.limits.get(&key) else {
            return;
        };
        c.rate_checks += 1;
        let capacity = burst * MILLI;
        let now = step.local;
        let bucket = self
            .buckets
            .entry((step.proc, key.clone()))
            .or_insert(Bucket {
                milli_tokens: capacity,
                refilled_at: now,
            });
        let elapsed = now.saturating_sub(bucket.refilled_at);
        bucket.milli_tokens = (bucket.milli_tokens + elapsed.saturating_mul(rps)).min(capacity);
        bucket.refilled_at = bucket.refilled_at.max(now);
        let (tenant, policy) = &key;
        let who = format!("router-{}, {tenant}/{policy}", step.proc.router + 1);
        // In one step, admissions come before refusals: nothing refills within a step.
        let cost = admitted * MILLI;
        if bucket.milli_tokens < cost {
            found.push(Finding {
                invariant: "rate_limit_exceeded",
                seq: None,
                message: format!(
                    "{who}: {admitted} request(s) admitted at {now} ms with {} milli-tokens in the bucket (burst {burst}, {rps}/s)",
                    bucket.milli_tokens
                ),
            });
        }
        bucket.milli_tokens = bucket.milli_tokens.saturating_sub(cost);
        if refused > 0 && bucket.milli_tokens >= MILLI {
            found.push(Finding {
                invariant: "rate_limited_early",
                seq: None,
                message: format!(
                    "{who}: rate_limited at {now} ms with {} milli-tokens in the bucket (burst {burst}, {rps}/s)",
                    bucket.milli_tokens
                ),
            });
        }
    }
}
