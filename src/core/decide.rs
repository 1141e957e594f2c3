//! The decision for a validated request, rendered as reply bytes. This slice covers
//! policy lookup, the weighted draw and the legacy fallback; breakers, sticky sessions,
//! rate limits and extensions join here.

use serde_json::{Map, Value};

use crate::contracts::{
    DecideRequest, DecideResponse, Decision, DecisionReason, ErrorBody, ErrorCode, ErrorResponse,
    ResponseContext,
};
use crate::intake::Rejection;
use crate::policy::{PolicyStore, DEFAULT_POLICY_ID};

use super::env::Entropy;

/// Used when the request's context says nothing better (upstream's decider defaults).
const DEFAULT_EXPECTED_LATENCY_MS: u64 = 500;
const DEFAULT_EXPECTED_COST: f64 = 0.01;

/// Decide, returning the reply bytes and whether the reply is `ok: true`.
pub fn decide(
    request: &DecideRequest,
    policies: &PolicyStore,
    entropy: &mut impl Entropy,
) -> (Vec<u8>, bool) {
    let context = ResponseContext {
        request_id: Some(request.request_id.clone()),
        trace_id: request.trace_id.clone(),
    };
    let policy_id = request.policy_id.as_deref().unwrap_or(DEFAULT_POLICY_ID);
    let Some(policy) = policies.get(&request.tenant_id, policy_id) else {
        let mut details = Map::new();
        details.insert("tenant_id".into(), request.tenant_id.clone().into());
        details.insert("policy_id".into(), policy_id.into());
        return (
            error_bytes(
                ErrorCode::PolicyNotFound,
                "Policy not found in store".into(),
                None,
                Some(details),
                context,
            ),
            false,
        );
    };

    let total = policy.total_weight();
    let choice = if total > 0 {
        let point = entropy.below(total);
        policy
            .provider_at(point)
            .map(|p| (p.name.clone(), DecisionReason::Weighted))
    } else {
        None
    };
    let choice = choice.or_else(|| {
        policy
            .fallback
            .clone()
            .map(|p| (p, DecisionReason::Fallback))
    });
    let Some((provider_id, reason)) = choice else {
        return (
            error_bytes(
                ErrorCode::DecisionFailed,
                "No provider available: weights failed and no fallback configured".into(),
                None,
                None,
                context,
            ),
            false,
        );
    };

    // Context = constraints, then metadata over them, then the tenant (spec 3.3).
    let mut metadata: Map<String, Value> = request.constraints.clone();
    metadata.extend(request.metadata.clone());
    metadata.insert("tenant_id".into(), request.tenant_id.clone().into());
    let expected_latency_ms = metadata
        .get("expected_latency_ms")
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_EXPECTED_LATENCY_MS);
    let expected_cost = metadata
        .get("expected_cost")
        .and_then(Value::as_f64)
        .filter(|c| c.is_finite() && *c >= 0.0)
        .unwrap_or(DEFAULT_EXPECTED_COST);
    let response = DecideResponse {
        ok: true,
        decision: Decision {
            provider_id,
            priority: reason.priority(),
            expected_latency_ms,
            expected_cost,
            reason,
            metadata: Some(metadata),
        },
        context,
    };
    (to_bytes(&response), true)
}

/// The error reply for a message refused at intake.
pub fn rejection_reply(rejection: &Rejection) -> Vec<u8> {
    let mut details = Map::new();
    details.insert("reason".into(), rejection.reason.clone().into());
    error_bytes(
        rejection.code.gateway_code(),
        rejection.message.clone(),
        Some(rejection.code),
        Some(details),
        ResponseContext {
            request_id: rejection.request_id.clone(),
            trace_id: rejection.trace_id.clone(),
        },
    )
}

fn error_bytes(
    code: ErrorCode,
    message: String,
    intake_error_code: Option<crate::contracts::IntakeErrorCode>,
    details: Option<Map<String, Value>>,
    context: ResponseContext,
) -> Vec<u8> {
    to_bytes(&ErrorResponse {
        ok: false,
        error: ErrorBody {
            code,
            message,
            intake_error_code,
            details,
        },
        context,
    })
}

/// Our reply types hold only strings, integers, finite floats and JSON values, which
/// always serialise; the fallback exists so that even a broken invariant cannot panic.
fn to_bytes<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|_| {
        br#"{"ok":false,"error":{"code":"internal","message":"reply encoding failed"},"context":{}}"#
            .to_vec()
    })
}
