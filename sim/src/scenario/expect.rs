//! Expectations: a metric measured from a run's report (counters, the core's stats, what
//! the gateways saw), an operator and a threshold. Metric names are checked when the
//! scenario is parsed; a metric the run cannot measure (no circuit-breaker fallback at
//! all, say) fails its expectation.

use std::fmt;

use crate::report::RunReport;

/// Metrics read from `RunReport::counters`.
pub const COUNTERS: [&str; 21] = [
    "planned",
    "accepted",
    "answered",
    "replies",
    "duplicate_replies",
    "cross_process_divergence",
    "dlq",
    "exhausted",
    "deliveries",
    "redeliveries",
    "usage_events",
    "faults",
    "crashes",
    "stops",
    "stops_drained",
    "stops_cut",
    "broker_restarts",
    "lost_in_transit",
    "node_crashes",
    "ambiguous_stored",
    "pulls_terminated",
];

/// Metrics derived from what the gateways saw (`RunReport::observations`).
pub const DERIVED: [&str; 15] = [
    "requests_replied",
    "unanswered",
    "answered_permille",
    "attempts",
    "retries",
    "decisions",
    "errors",
    "reply_latency_p50_ms",
    "reply_latency_p95_ms",
    "reply_latency_p99_ms",
    "reply_latency_max_ms",
    "first_breaker_effect_ms",
    "last_reply_ms",
    "redelivery_permille",
    "sim_time_ms",
];

/// Decision reasons (`DecisionReason::as_str`), for `decisions.<reason>`.
pub const REASONS: [&str; 5] = [
    "sticky",
    "weighted",
    "retry",
    "fallback",
    "circuit_breaker_fallback",
];

/// The core's counters (`beamline_router::core::Stats`), for `core.<name>`.
pub fn core_stat_names() -> Vec<String> {
    serde_json::to_value(beamline_router::core::Stats::default())
        .ok()
        .and_then(|v| v.as_object().map(|m| m.keys().cloned().collect()))
        .unwrap_or_default()
}

/// Why a metric name is not one we can measure, or `None` if it is.
pub fn check_metric(name: &str) -> Option<String> {
    if COUNTERS.contains(&name) || DERIVED.contains(&name) {
        return None;
    }
    if let Some(stat) = name.strip_prefix("core.") {
        let names = core_stat_names();
        return (!names.iter().any(|n| n == stat))
            .then(|| format!("unknown core stat {stat:?} (known: {})", names.join(", ")));
    }
    if let Some(reason) = name.strip_prefix("decisions.") {
        return (!REASONS.contains(&reason))
            .then(|| format!("unknown decision reason {reason:?} (known: {REASONS:?})"));
    }
    if let Some(code) = name.strip_prefix("errors.") {
        let ok = !code.is_empty() && code.chars().all(|c| c.is_ascii_lowercase() || c == '_');
        return (!ok).then(|| format!("an error code is lower_snake_case, not {code:?}"));
    }
    if let Some(field) = name.strip_prefix("models.") {
        let known = serde_json::to_value(crate::models::ModelCounters::default())
            .ok()
            .is_some_and(|v| v.get(field).is_some());
        return (!known)
            .then(|| format!("unknown model counter {field:?} (models::ModelCounters)"));
    }
    if let Some(probe) = name.strip_prefix("probes.") {
        return beamline_router::core::probes::spec(probe)
            .is_none()
            .then(|| format!("unknown probe {probe:?} (core::probes::PROBES)"));
    }
    Some(format!(
        "unknown metric {name:?}; known: {}, {}, core.<stat>, decisions.<reason>, errors.<code>, probes.<probe>, models.<counter>",
        COUNTERS.join(", "),
        DERIVED.join(", ")
    ))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Eq,
    Ne,
    Ge,
    Gt,
}

impl Op {
    pub fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "<" => Op::Lt,
            "<=" => Op::Le,
            "==" => Op::Eq,
            "!=" => Op::Ne,
            ">=" => Op::Ge,
            ">" => Op::Gt,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Ge => ">=",
            Op::Gt => ">",
        }
    }

    pub fn holds(self, measured: f64, threshold: f64) -> bool {
        match self {
            Op::Lt => measured < threshold,
            Op::Le => measured <= threshold,
            Op::Eq => measured == threshold,
            Op::Ne => measured != threshold,
            Op::Ge => measured >= threshold,
            Op::Gt => measured > threshold,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expectation {
    pub metric: String,
    pub op: Op,
    pub value: f64,
    pub why: Option<String>,
}

/// One expectation checked against one run.
#[derive(Clone, Debug, PartialEq)]
pub struct Checked {
    pub expectation: Expectation,
    /// `None`: the run gave nothing to measure (fails).
    pub measured: Option<f64>,
    pub ok: bool,
}

/// A number as a scenario writes it: integers without a fraction.
pub fn num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x:.3}")
    }
}

impl fmt::Display for Checked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.expectation;
        write!(
            f,
            "{}={} ({} {}) {}",
            e.metric,
            self.measured.map_or("none".to_string(), num),
            e.op.as_str(),
            num(e.value),
            if self.ok { "ok" } else { "FAIL" }
        )
    }
}

/// The `q`-quantile (nearest rank) of sorted values.
fn quantile(sorted: &[u64], q_permille: u64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (sorted.len() as u64 * q_permille).div_ceil(1000).max(1) as usize;
    Some(sorted[rank.min(sorted.len()) - 1] as f64)
}

/// Measure `metric` in `report`.
pub fn measure(metric: &str, report: &RunReport) -> Option<f64> {
    let c = &report.counters;
    let o = &report.observations;
    let counter = |n: u64| Some(n as f64);
    if let Some(stat) = metric.strip_prefix("core.") {
        return Some(
            report
                .core_stats
                .get(stat)
                .and_then(|v| v.as_u64())
                .unwrap_or(0) as f64,
        );
    }
    if let Some(reason) = metric.strip_prefix("decisions.") {
        return Some(o.decisions.get(reason).copied().unwrap_or(0) as f64);
    }
    if let Some(code) = metric.strip_prefix("errors.") {
        return Some(o.errors.get(code).copied().unwrap_or(0) as f64);
    }
    if let Some(field) = metric.strip_prefix("models.") {
        let v = serde_json::to_value(&report.models).ok()?;
        return v
            .get(field)
            .and_then(serde_json::Value::as_u64)
            .and_then(counter);
    }
    if let Some(probe) = metric.strip_prefix("probes.") {
        let hits = report
            .probes
            .iter()
            .find(|(n, _)| *n == probe)
            .map_or(0, |&(_, c)| c);
        return counter(hits);
    }
    let mut latencies = o.reply_latency_ms.clone();
    latencies.sort_unstable();
    match metric {
        "planned" => counter(c.planned),
        "accepted" => counter(c.accepted),
        "answered" => counter(c.answered),
        "replies" => counter(c.replies),
        "duplicate_replies" => counter(c.duplicate_replies),
        "cross_process_divergence" => counter(c.cross_process_divergence),
        "dlq" => counter(c.dlq),
        "exhausted" => counter(c.exhausted),
        "deliveries" => counter(c.deliveries),
        "redeliveries" => counter(c.redeliveries),
        "usage_events" => counter(c.usage_events),
        "faults" => counter(c.faults),
        "crashes" => counter(c.crashes),
        "stops" => counter(c.stops),
        "stops_drained" => counter(c.stops_drained),
        "stops_cut" => counter(c.stops_cut),
        "broker_restarts" => counter(c.broker_restarts),
        "node_crashes" => counter(c.node_crashes),
        "ambiguous_stored" => counter(c.ambiguous_stored),
        "pulls_terminated" => counter(c.pulls_terminated),
        "lost_in_transit" => counter(c.lost_in_transit),
        "requests_replied" => counter(o.requests_replied),
        "unanswered" => counter(c.planned.saturating_sub(o.requests_replied)),
        "answered_permille" => {
            (c.planned > 0).then(|| (o.requests_replied * 1000 / c.planned) as f64)
        }
        "attempts" => counter(o.attempts),
        "retries" => counter(o.attempts.saturating_sub(c.planned)),
        "decisions" => counter(o.decisions.values().sum()),
        "errors" => counter(o.errors.values().sum()),
        "reply_latency_p50_ms" => quantile(&latencies, 500),
        "reply_latency_p95_ms" => quantile(&latencies, 950),
        "reply_latency_p99_ms" => quantile(&latencies, 990),
        "reply_latency_max_ms" => latencies.last().map(|&x| x as f64),
        "first_breaker_effect_ms" => o.first_breaker_effect_ms.map(|x| x as f64),
        "last_reply_ms" => counter(o.last_reply_ms),
        "redelivery_permille" => {
            (c.deliveries > 0).then(|| (c.redeliveries * 1000 / c.deliveries) as f64)
        }
        "sim_time_ms" => counter(report.sim_time_ms),
        _ => None,
    }
}

pub fn check(e: &Expectation, report: &RunReport) -> Checked {
    let measured = measure(&e.metric, report);
    Checked {
        expectation: e.clone(),
        measured,
        ok: measured.is_some_and(|m| e.op.holds(m, e.value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_are_checked() {
        assert!(check_metric("dlq").is_none());
        assert!(check_metric("core.backpressure_naks").is_none());
        assert!(check_metric("decisions.circuit_breaker_fallback").is_none());
        assert!(check_metric("errors.policy_not_found").is_none());
        assert!(check_metric("probes.breaker.opened").is_none());
        assert!(check_metric("probes.no.such").is_some());
        assert!(check_metric("models.rate_checks").is_none());
        assert!(check_metric("models.nope").is_some());
        assert!(check_metric("core.nope").is_some());
        assert!(check_metric("decisions.random").is_some());
        assert!(check_metric("p95").is_some());
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 950), Some(95.0));
        assert_eq!(quantile(&v, 500), Some(50.0));
        assert_eq!(quantile(&[7], 990), Some(7.0));
        assert_eq!(quantile(&[], 500), None);
    }

    #[test]
    fn operators_hold_as_written() {
        assert!(Op::parse("<").unwrap().holds(1.0, 2.0));
        assert!(!Op::parse("==").unwrap().holds(1.0, 2.0));
        assert!(Op::parse(">=").unwrap().holds(2.0, 2.0));
        assert!(Op::parse("=<").is_none());
    }
}
