//! Weights: over a run, each provider's share of a policy's weighted decisions matches
//! its weight.
//!
//! Only draws among all of a policy's weighted providers count: decisions of policies
//! without breakers, and of policies with breakers when the breaker model admitted every
//! provider at that moment. Each such draw is an independent trial with success
//! probability weight / total for each provider, so the count `k` of `n` draws that went
//! to a provider is Binomial(n, p). At the end of the run both exact tails of `k` are
//! computed (in log space); a tail below `ALPHA` is `weights_skewed`.
//!
//! The false-alarm rate: each run tests at most 2 tails x (providers of the world's
//! policies, 6 today), so a correct router fails a run with probability below
//! 12 x 1e-9, about one run in 80 million; a 3,000-seed sweep below 4e-5.
//! A draw that never picks a provider of weight 0.3 is caught from about 60 draws
//! (0.7^60 < 1e-9).

use std::collections::BTreeMap;

use beamline_router::policy::PolicyStore;

use super::breakers::AllAdmitted;
use super::{policy_of, Answer, Finding, ModelCounters};
use crate::actors::gateway::Workload;

pub const ALPHA: f64 = 1e-9;

struct PolicyDraws {
    gated: bool,
    /// (provider, weight) in policy order.
    weights: Vec<(String, u64)>,
    counts: BTreeMap<String, u64>,
}

pub struct Weights {
    policies: BTreeMap<(String, String), PolicyDraws>,
}

impl Weights {
    pub fn new(policies: &PolicyStore) -> Weights {
        let policies = policies
            .iter()
            .filter_map(|(tenant, p)| {
                let weights: Vec<(String, u64)> = p
                    .providers
                    .iter()
                    .filter(|w| w.weight > 0)
                    .map(|w| (w.name.clone(), w.weight))
                    .collect();
                (weights.len() > 1).then(|| {
                    let draws = PolicyDraws {
                        gated: p.circuit_breaker.is_some(),
                        weights,
                        counts: BTreeMap::new(),
                    };
                    ((tenant.to_string(), p.policy_id.clone()), draws)
                })
            })
            .collect();
        Weights { policies }
    }

    pub fn on_decisions(
        &mut self,
        fresh: &[&Answer],
        workload: &Workload,
        admitted: &AllAdmitted,
        c: &mut ModelCounters,
    ) {
        for a in fresh {
            if a.reason.as_deref() != Some("weighted") {
                continue;
            }
            let Some((tenant, policy)) = policy_of(workload.request(a.request).kind) else {
                continue;
            };
            let Some(draws) = self
                .policies
                .get_mut(&(tenant.to_string(), policy.to_string()))
            else {
                continue;
            };
            if draws.gated && !admitted.contains(&a.request) {
                continue;
            }
            if let Some(provider) = &a.provider {
                c.weighted_decisions += 1;
                *draws.counts.entry(provider.clone()).or_default() += 1;
            }
        }
    }

    pub fn finish(&mut self, found: &mut Vec<Finding>) {
        for ((tenant, policy), draws) in &self.policies {
            let n: u64 = draws.counts.values().sum();
            let total: u64 = draws.weights.iter().map(|(_, w)| w).sum();
            if n == 0 || total == 0 {
                continue;
            }
            for (provider, w) in &draws.weights {
                let k = draws.counts.get(provider).copied().unwrap_or(0);
                let p = *w as f64 / total as f64;
                let (low, high) = binomial_tails(n, k, p);
                if low.min(high) < ALPHA {
                    found.push(Finding {
                        invariant: "weights_skewed",
                        seq: None,
                        message: format!(
                            "{tenant}/{policy}: {provider} got {k} of {n} weighted decisions, weight {w}/{total} (expected {:.1}); P(X<={k}) = {low:.2e}, P(X>={k}) = {high:.2e}, bound {ALPHA:e}",
                            n as f64 * p
                        ),
                    });
                }
            }
        }
    }
}

/// ln(i!) for i in 0..=n.
fn ln_factorials(n: u64) -> Vec<f64> {
    let mut out = Vec::with_capacity(n as usize + 1);
    let mut acc = 0.0;
    out.push(0.0);
    for i in 1..=n {
        acc += (i as f64).ln();
        out.push(acc);
    }
    out
}

/// (P(X <= k), P(X >= k)) for X ~ Binomial(n, p), 0 < p < 1, exactly (summed in log
/// space so that tails far below f64's smallest normal number still compare).
pub fn binomial_tails(n: u64, k: u64, p: f64) -> (f64, f64) {
    let lf = ln_factorials(n);
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    let ln_pmf = |i: u64| {
        lf[n as usize] - lf[i as usize] - lf[(n - i) as usize] + i as f64 * lp + (n - i) as f64 * lq
    };
    let ln_sum = |range: std::ops::RangeInclusive<u64>| {
        let terms: Vec<f64> = range.map(ln_pmf).collect();
        let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if max == f64::NEG_INFINITY {
            return f64::NEG_INFINITY;
        }
        max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln()
    };
    let low = ln_sum(0..=k).exp().min(1.0);
    let high = ln_sum(k..=n).exp().min(1.0);
    (low, high)
}
