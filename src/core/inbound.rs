//! Requests addressed to the router itself: the backpressure status a gateway polls,
//! and the admin subjects. Admin requests need the configured token; without one
//! configured, every admin request is refused.

use serde_json::{json, Map, Value};

use crate::contracts::subjects::{
    ADMIN_ALL_PREFIX, ADMIN_NODE_PREFIX, ADMIN_PREFIX, BACKPRESSURE_STATUS,
};
use crate::policy::DEFAULT_POLICY_ID;

use super::breaker::Breakers;
use super::config::RouterConfig;
use super::decider::{self, Stores};
use super::env::Env;
use super::io::header;
use super::io::{Command, InboundRequest};
use super::services::Services;
use super::stats::{Stats, TableSizes};
use super::sticky::StickyStore;
use crate::policy::PolicyStore;

/// Requests to the router itself, answered from what the router knows: it reads the
/// configuration, policies and services, and counts in the stats; it never touches a
/// message in flight.
pub(super) struct InboundFlow<'a> {
    pub config: &'a RouterConfig,
    pub policies: &'a PolicyStore,
    pub services: &'a Services,
    /// The table sizes as the request arrived (`get_stats`).
    pub tables: TableSizes,
    pub stats: &'a mut Stats,
}

impl InboundFlow<'_> {
    pub(super) fn handle(&mut self, request: InboundRequest, env: &mut impl Env) {
        self.stats.inbound_requests += 1;
        let body: Value = serde_json::from_slice(&request.payload).unwrap_or(Value::Null);
        let mut reply = if request.subject == BACKPRESSURE_STATUS {
            self.backpressure_status(&body, env.now().millis())
        } else if let Some(op) = self.admin_op(&request.subject) {
            match self.authorize(&request, &body) {
                Ok(()) if op == "reload_policies" => {
                    // Reading the policy directory is the transport's I/O: the host
                    // reads it, puts it in force or refuses it whole, and answers.
                    env.execute(Command::ReloadPolicies { id: request.id });
                    return;
                }
                Ok(()) => self.admin(op, &body, env),
                Err(why) => {
                    self.stats.admin_refused += 1;
                    env.probe("admin.refused");
                    json!({"ok": false, "error": {"code": "unauthorized", "message": why}})
                }
            }
        } else {
            json!({"ok": false, "error": {"code": "invalid_request", "message": format!("unknown subject {}", request.subject)}})
        };
        // Every answer says which instance gave it: with several instances behind one
        // queue group, or `admin.all`, the caller needs to know.
        if let Value::Object(fields) = &mut reply {
            fields.insert("node_id".into(), self.config.node_id.clone().into());
        }
        env.execute(Command::Respond {
            id: request.id,
            payload: super::reply::to_bytes(&reply),
        });
    }

    /// The admin operation a subject names: `admin.<op>` (any one instance, a queue
    /// group), `admin.node.<node_id>.<op>` (this instance only) or `admin.all.<op>`
    /// (every instance). Another instance's node subject is not ours.
    fn admin_op<'s>(&self, subject: &'s str) -> Option<&'s str> {
        if let Some(rest) = subject.strip_prefix(ADMIN_NODE_PREFIX) {
            let op = rest.strip_prefix(self.config.node_id.as_str())?;
            return op.strip_prefix('.');
        }
        subject
            .strip_prefix(ADMIN_ALL_PREFIX)
            .or_else(|| subject.strip_prefix(ADMIN_PREFIX))
    }

    fn authorize(&self, request: &InboundRequest, body: &Value) -> Result<(), &'static str> {
        let Some(expected) = &self.config.admin_token else {
            return Err("admin API disabled: no admin token configured");
        };
        let given = header(&request.headers, "authorization")
            .map(|v| v.strip_prefix("Bearer ").unwrap_or(v))
            .or_else(|| body.get("token").and_then(Value::as_str))
            .or_else(|| body.get("api_key").and_then(Value::as_str));
        match given {
            None => Err("missing admin token"),
            // Compare without an early exit, so timing says nothing about the token.
            Some(t) if constant_time_eq(t.as_bytes(), expected.as_bytes()) => Ok(()),
            Some(_) => Err("invalid admin token"),
        }
    }

    /// Spec 8.7's gateway protocol.
    fn backpressure_status(&self, body: &Value, now_ms: u64) -> Value {
        let subject = body
            .get("subject")
            .and_then(Value::as_str)
            .unwrap_or(&self.config.decide_subject);
        if subject.is_empty() || subject.len() >= 1024 {
            return json!({"success": false, "data": {"subject": subject, "status": "unknown"}, "error": "invalid_subject"});
        }
        if subject != self.config.decide_subject {
            return json!({"success": true, "data": {"subject": subject, "status": "unknown", "timestamp": now_ms}});
        }
        let s = self
            .services
            .backpressure
            .status(self.tables.in_flight as u64);
        let cfg = self.services.backpressure.config();
        json!({"success": true, "data": {
            "subject": subject,
            "status": s.level.as_str(),
            "metrics": {"pending_messages": s.pending, "latency_p95_ms": s.latency_p95_ms, "inflight_messages": s.inflight},
            "thresholds": {"queue_overload": cfg.queue_overload, "latency_overload_ms": cfg.latency_overload_ms, "inflight_overload": cfg.inflight_overload},
            "policy": {"retry_after_seconds": s.retry_after_seconds},
            "timestamp": now_ms,
        }})
    }

    fn admin(&mut self, op: &str, body: &Value, env: &mut impl Env) -> Value {
        let now = env.now();
        match op {
            "get_circuit_breaker_states" => {
                let states: Vec<Value> = self
                    .services
                    .breakers
                    .snapshot(now)
                    .into_iter()
                    .map(|b| json!({
                        "tenant_id": b.tenant_id, "provider_id": b.provider_id, "state": b.state.as_str(),
                        "failure_count": b.failure_count, "window_requests": b.window_requests,
                        "window_failures": b.window_failures, "remaining_open_ms": b.remaining_open_ms,
                    }))
                    .collect();
                json!({"ok": true, "breakers": states})
            }
            "get_backpressure_status" => self.backpressure_status(&Value::Null, now.millis()),
            "get_extension_health" => {
                let breakers: Vec<Value> = self
                    .services
                    .extension_breakers
                    .snapshot(now)
                    .into_iter()
                    .map(|b| json!({"extension_id": b.provider_id, "state": b.state.as_str(), "window_requests": b.window_requests, "window_failures": b.window_failures}))
                    .collect();
                let registry: Vec<Value> = self
                    .config
                    .extensions
                    .iter()
                    .map(|e| json!({"id": e.id, "type": e.kind.as_str(), "subject": e.subject, "timeout_ms": e.timeout_ms, "retry": e.retry, "enabled": e.enabled}))
                    .collect();
                json!({"ok": true, "extensions": registry, "breakers": breakers})
            }
            "dry_run" | "dry_run_pipeline" => self.dry_run(body, env),
            "get_stats" => json!({"ok": true, "stats": *self.stats, "tables": self.tables}),
            _ => {
                json!({"ok": false, "error": {"code": "invalid_request", "message": format!("unknown admin operation {op}")}})
            }
        }
    }

    /// Which provider would be chosen, without extensions (upstream skips them on dry
    /// runs) and without touching breakers or sticky sessions.
    fn dry_run(&mut self, body: &Value, env: &mut impl Env) -> Value {
        let Some(tenant) = body.get("tenant_id").and_then(Value::as_str) else {
            return json!({"ok": false, "error": {"code": "invalid_request", "message": "tenant_id is required"}});
        };
        let policy_id = body
            .get("policy_id")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_POLICY_ID);
        let Some(policy) = self.policies.get(tenant, policy_id) else {
            return json!({"ok": false, "error": {"code": "policy_not_found", "message": "Policy not found in store"}});
        };
        let mut context: Map<String, Value> = body
            .get("context")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        context.insert("tenant_id".into(), tenant.into());
        let revision = policy.revision.clone();
        let mut breakers: Breakers = self.services.breakers.clone();
        let mut sticky = StickyStore::new(1);
        let stores = Stores {
            breakers: &mut breakers,
            sticky: &mut sticky,
        };
        match decider::choose(policy, tenant, &context, env.now(), stores, env) {
            Ok(c) => {
                json!({"ok": true, "decision": {"provider_id": c.provider_id, "reason": c.reason.as_str(), "priority": c.reason.priority(), "policy_revision": revision, "steps": c.steps}})
            }
            Err(none) => {
                json!({"ok": false, "error": {"code": "decision_failed", "message": "No provider available"}, "steps": none.steps})
            }
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The answer to an authorized `reload_policies`: what the reload did. Built here with
/// the other admin answers; the host sends it once the transport has read the set.
pub fn reload_answer(node_id: &str, outcome: Result<usize, &str>) -> Vec<u8> {
    let v = match outcome {
        Ok(policies) => {
            json!({"ok": true, "reloaded": true, "policies": policies, "node_id": node_id})
        }
        Err(error) => json!({"ok": false, "error": {"code": "reload_refused", "message": error},
            "node_id": node_id}),
    };
    super::reply::to_bytes(&v)
}
