//! Provider selection for one request: breaker pre-check, sticky session, weighted draw
//! over providers whose breaker allows traffic, breaker-aware fallback, ordered fallback
//! rules, legacy fallback. Pure apart from the stores it is handed.

use serde_json::{Map, Value};

use crate::contracts::DecisionReason;
use crate::policy::{when, CircuitBreaker, Policy};

use super::breaker::{BreakerConfig, Breakers};
use super::env::{Buggify, Entropy, Time};
use super::sticky::StickyStore;

/// The chosen provider, why, and the steps that led there.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    pub provider_id: String,
    pub reason: DecisionReason,
    /// Keys added to the decision metadata (retry / fallback bookkeeping).
    pub extra: Map<String, Value>,
    pub steps: Vec<String>,
}

/// Nothing could be chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoProvider {
    pub steps: Vec<String>,
}

/// The breaker settings a policy asks for, if it enables breakers.
pub fn breaker_config(policy: &Policy) -> Option<BreakerConfig> {
    policy.circuit_breaker.as_ref().map(breaker_config_of)
}

pub fn breaker_config_of(cb: &CircuitBreaker) -> BreakerConfig {
    BreakerConfig {
        failure_threshold: cb.failure_threshold,
        success_threshold: cb.success_threshold,
        open_timeout_ms: cb.timeout_ms,
        half_open_max_calls: cb.half_open_max_calls,
        error_rate_permille: cb.error_rate_threshold_permille,
        error_rate_window_ms: cb.error_rate_window_seconds.saturating_mul(1_000),
        min_requests: cb.min_requests,
        latency_threshold_ms: cb.latency_threshold_ms,
    }
}

/// The stores a decision reads and updates.
pub struct Stores<'a> {
    pub breakers: &'a mut Breakers,
    pub sticky: &'a mut StickyStore,
}

/// Choose the provider for one request, and tell its breaker of the call.
///
/// The candidates are filtered with `Breakers::would_allow`, which is read-only; the
/// chosen provider's breaker is then `admit`ted, so that an open breaker past its timeout
/// moves to half-open and the call holds one of its probe slots. Without that step the
/// stored state stayed `Open` for good: results are ignored while open, so a breaker
/// never closed after its probes succeeded, and never re-opened either (found by the
/// simulator's coverage probes: no seed of 3 000 reached `breaker.closed_after_probes`).
pub fn choose(
    policy: &Policy,
    tenant_id: &str,
    context: &Map<String, Value>,
    now: Time,
    stores: Stores<'_>,
    env: &mut (impl Entropy + Buggify),
) -> Result<Choice, NoProvider> {
    let Stores { breakers, sticky } = stores;
    let chosen = pick(
        policy,
        tenant_id,
        context,
        now,
        Stores {
            breakers: &mut *breakers,
            sticky,
        },
        env,
    );
    if let (Ok(choice), Some(cfg)) = (&chosen, breaker_config(policy)) {
        breakers.admit(tenant_id, &choice.provider_id, now, &cfg);
    }
    chosen
}

fn pick(
    policy: &Policy,
    tenant_id: &str,
    context: &Map<String, Value>,
    now: Time,
    stores: Stores<'_>,
    env: &mut (impl Entropy + Buggify),
) -> Result<Choice, NoProvider> {
    let Stores { breakers, sticky } = stores;
    let cb = breaker_config(policy);
    let allowed = |breakers: &Breakers, provider: &str| match &cb {
        Some(cfg) => breakers.would_allow(tenant_id, provider, now, cfg),
        None => true,
    };
    let mut steps = Vec::new();
    let choice = |provider_id: String, reason, steps: Vec<String>| Choice {
        provider_id,
        reason,
        extra: Map::new(),
        steps,
    };

    // 1. The caller pinned a provider whose breaker is open: its fallback instead.
    if let Some(selected) = context.get("selected_provider").and_then(Value::as_str) {
        if cb.is_some() && !allowed(breakers, selected) {
            steps.push(format!(
                "1. Breaker of selected provider {selected} is open"
            ));
            let candidate = context
                .get("fallback_provider")
                .and_then(Value::as_str)
                .map(str::to_string)
                .into_iter()
                .chain(policy.fallback_rules.iter().map(|r| r.to.clone()))
                .find(|p| allowed(breakers, p));
            if let Some(p) = candidate {
                steps.push(format!("2. Circuit-breaker fallback to {p}"));
                return Ok(choice(p, DecisionReason::CircuitBreakerFallback, steps));
            }
        }
    }

    // 2. Sticky session: the session's provider, if it may still take traffic.
    let session = session_of(policy, context);
    if let Some((value, ttl_ms)) = &session {
        // Planted bug `sticky-never-expires`: the session is read at time zero.
        let read_at = if env.planted("sticky-never-expires") {
            Time(0)
        } else {
            now
        };
        let known = sticky.get(tenant_id, value, read_at).map(str::to_string);
        match known {
            Some(p)
                if policy.providers.iter().any(|w| w.name == p && w.weight > 0)
                    && allowed(breakers, &p) =>
            {
                sticky.refresh(tenant_id, value, now, *ttl_ms);
                steps.push(format!("1. Checked sticky session: hit, provider {p}"));
                return Ok(choice(p, DecisionReason::Sticky, steps));
            }
            Some(p) => steps.push(format!("1. Checked sticky session: {p} unavailable")),
            None => steps.push("1. Checked sticky session: miss".to_string()),
        }
    }

    // 3. Weighted draw over providers whose breaker allows traffic.
    let weighted: Vec<_> = policy.providers.iter().filter(|p| p.weight > 0).collect();
    let open: Vec<&str> = weighted
        .iter()
        .filter(|p| !allowed(breakers, &p.name))
        .map(|p| p.name.as_str())
        .collect();
    let candidates: Vec<_> = weighted
        .iter()
        .filter(|p| !open.contains(&p.name.as_str()))
        .collect();
    let total: u64 = candidates.iter().map(|p| p.weight).sum();
    if total > 0 {
        // Planted bug `weighted-skips-last`: the draw never reaches the last candidate.
        let last = candidates.last().map_or(0, |p| p.weight);
        let mut point = if candidates.len() > 1 && env.planted("weighted-skips-last") {
            env.below(total - last)
        } else {
            env.below(total)
        };
        let picked = candidates
            .iter()
            .find(|p| {
                if point < p.weight {
                    true
                } else {
                    point -= p.weight;
                    false
                }
            })
            .map(|p| p.name.clone())
            .unwrap_or_default();
        steps.push(format!(
            "2. Applied weighted distribution: {} providers, total weight: {}{}",
            candidates.len(),
            total,
            if open.is_empty() {
                String::new()
            } else {
                format!(" (breaker open: {})", open.join(", "))
            }
        ));
        if let Some((value, ttl_ms)) = &session {
            sticky.put(tenant_id, value, &picked, now, *ttl_ms);
        }
        return Ok(choice(picked, DecisionReason::Weighted, steps));
    }

    // 4. Every weighted provider is behind an open breaker: the first fallback that is not.
    if !open.is_empty() {
        steps.push(format!(
            "2. All weighted providers have open breakers: {}",
            open.join(", ")
        ));
        let candidate = policy
            .fallback_rules
            .iter()
            .map(|r| r.to.clone())
            .chain(policy.fallback.clone())
            .find(|p| allowed(breakers, p));
        if let Some(p) = candidate {
            steps.push(format!("3. Circuit-breaker fallback to {p}"));
            return Ok(choice(p, DecisionReason::CircuitBreakerFallback, steps));
        }
    }

    // 5. Ordered fallback rules, advisory: retry the current provider while attempts
    // remain, then fall back.
    for rule in &policy.fallback_rules {
        if !when::matches(&rule.when, context) {
            continue;
        }
        let used = context
            .get(&format!("retry_attempts_{}", rule.rule_id))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let current = context.get("current_provider").and_then(Value::as_str);
        if used < u64::from(rule.retry) {
            let Some(current) = current else { continue };
            let attempt = used + 1;
            let backoff_ms = rule
                .backoff
                .delay_ms(attempt as u32, |b| env.below(b.max(1)));
            steps.push(format!(
                "3. Retry attempt {attempt}/{} with backoff {backoff_ms}ms (strategy: {})",
                rule.retry,
                rule.backoff.strategy.as_str()
            ));
            let mut c = choice(current.to_string(), DecisionReason::Retry, steps);
            c.extra
                .insert("fallback_rule_id".into(), rule.rule_id.clone().into());
            c.extra.insert("retry_attempt".into(), attempt.into());
            c.extra.insert("retry_max".into(), rule.retry.into());
            c.extra.insert("backoff_ms".into(), backoff_ms.into());
            return Ok(c);
        }
        if !allowed(breakers, &rule.to) {
            continue;
        }
        steps.push(format!(
            "3. Applied fallback rule after {used}/{} retry attempts exhausted (rule: {})",
            rule.retry, rule.rule_id
        ));
        let mut c = choice(rule.to.clone(), DecisionReason::Fallback, steps);
        c.extra
            .insert("fallback_rule_id".into(), rule.rule_id.clone().into());
        c.extra.insert("retry_attempts_used".into(), used.into());
        c.extra.insert("fallback_applied".into(), true.into());
        return Ok(c);
    }

    // 6. Legacy single fallback.
    if let Some(p) = &policy.fallback {
        if allowed(breakers, p) {
            steps.push(format!("3. Legacy fallback to {p}"));
            return Ok(choice(p.clone(), DecisionReason::Fallback, steps));
        }
    }
    steps.push("No provider available: weights failed and no fallback configured".to_string());
    Err(NoProvider { steps })
}

#[cfg(test)]
#[path = "decider_tests.rs"]
mod tests;

/// The request's sticky session under `policy`, if the policy is sticky and the context
/// names one: (session value, TTL in milliseconds).
pub fn session_of(policy: &Policy, context: &Map<String, Value>) -> Option<(String, u64)> {
    let s = policy.sticky.as_ref()?;
    let value = match context.get(&s.session_key)? {
        Value::String(v) if !v.is_empty() => v.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    Some((value, s.ttl_seconds.saturating_mul(1_000)))
}
