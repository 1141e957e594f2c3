//! What the gateways see, collected for scenario expectations (`crate::scenario`):
//! first-reply latencies, decisions by reason, errors by code, and (only when the run
//! keeps its trace) a compact, human-readable log with one line per first reply and per
//! scheduled fault, which `tests/scenario_traces.rs` keeps as insta snapshots.
//! Nothing here feeds back into the run: it reads, it never schedules or draws.

use serde_json::Value;

use super::World;
use crate::faults::FaultKind;
use crate::net::NodeId;

/// `12.345s` from virtual milliseconds.
fn secs(ms: u64) -> String {
    format!("{}.{:03}s", ms / 1_000, ms % 1_000)
}

impl World {
    /// The first reply to `request` reached its gateway `to` (on `attempt`).
    pub(super) fn observe_first_reply(
        &mut self,
        to: NodeId,
        request: usize,
        attempt: u64,
        payload: &[u8],
    ) {
        let planned = self.workload.request(request).publish_at;
        let latency = self.now.saturating_sub(planned);
        self.obs.reply_latency_ms.push(latency);
        self.obs.requests_replied += 1;
        self.obs.last_reply_ms = self.now;
        let doc: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
        let outcome = if doc["ok"] == Value::Bool(true) {
            let reason = doc["decision"]["reason"]
                .as_str()
                .unwrap_or("?")
                .to_string();
            if reason == "circuit_breaker_fallback" {
                self.obs.first_breaker_effect_ms.get_or_insert(self.now);
            }
            let line = format!(
                "-> {} ({}, p={})",
                doc["decision"]["provider_id"].as_str().unwrap_or("?"),
                reason,
                doc["decision"]["priority"]
            );
            *self.obs.decisions.entry(reason).or_default() += 1;
            line
        } else {
            let code = doc["error"]["code"]
                .as_str()
                .unwrap_or("unparsable")
                .to_string();
            if code == "decision_failed" {
                self.obs.first_breaker_effect_ms.get_or_insert(self.now);
            }
            let line = format!("-> error {code}");
            *self.obs.errors.entry(code).or_default() += 1;
            line
        };
        if self.options.keep_trace {
            let r = self.workload.request(request);
            let retry = if attempt > 1 {
                format!(" (attempt {attempt})")
            } else {
                String::new()
            };
            let line = format!(
                "{} {} {} {} decide {}{} +{}ms",
                secs(self.now),
                self.topo.name(to),
                r.request_id,
                r.tenant.unwrap_or("-"),
                outcome,
                retry,
                latency
            );
            self.obs.log.push(line);
        }
    }

    pub(super) fn observe_fault(&mut self, kind: &FaultKind) {
        if !self.options.keep_trace {
            return;
        }
        let name = |n: NodeId| self.topo.name(n).to_string();
        let what = match kind {
            FaultKind::LinkDrop {
                node,
                down_ms,
                server_notices,
                ..
            } => format!(
                "link drop {} for {down_ms}ms{}",
                name(*node),
                if *server_notices { "" } else { " (half-open)" }
            ),
            FaultKind::Partition { a, b, ms } => {
                format!("partition {} | {} for {ms}ms", name(*a), name(*b))
            }
            FaultKind::Spike { node, ms, extra_ms } => format!(
                "latency spike {} +{extra_ms}ms for {ms}ms",
                node.map_or("all".to_string(), name)
            ),
            FaultKind::Storm { cons } => format!("redelivery storm {}", cons.durable()),
            FaultKind::Burst { gateway, count } => {
                format!("overload burst gw-{} x{count}", gateway + 1)
            }
            FaultKind::Crash {
                router, down_ms, ..
            } => format!("crash router-{} for {down_ms}ms", router + 1),
            FaultKind::Stop {
                router,
                grace_ms,
                down_ms,
            } => format!(
                "graceful stop router-{} (grace {grace_ms}ms), down {down_ms}ms",
                router + 1
            ),
            FaultKind::BrokerRestart { down_ms } => format!("broker restart, down {down_ms}ms"),
            FaultKind::SkewJump { router, delta_ms } => {
                format!("clock jump router-{} {delta_ms:+}ms", router + 1)
            }
            FaultKind::LeaderMove {
                cons,
                advisory,
                elect_ms,
            } => format!(
                "consumer leader move {} (elected in {elect_ms}ms{})",
                cons.durable(),
                if *advisory { "" } else { ", advisory lost" }
            ),
            FaultKind::NodeCrash {
                target,
                down_ms,
                elect_ms,
            } => format!(
                "cluster node crash {} for {down_ms}ms (elections of {elect_ms}ms)",
                match target {
                    crate::faults::NodeTarget::Node(n) => format!("nats-{}", n + 1),
                    crate::faults::NodeTarget::LeaderOf(g) => format!("(leader of {g})"),
                }
            ),
        };
        self.obs
            .log
            .push(format!("{} FAULT {what}", secs(self.now)));
    }

    pub(super) fn observe_heal(&mut self) {
        if self.options.keep_trace {
            self.obs
                .log
                .push(format!("{} HEAL chaos phase over", secs(self.now)));
        }
    }
}
