//! Rendering replies: `DecideResponse` and `ErrorResponse` bytes.

use serde_json::{Map, Value};

use crate::contracts::{
    DecideRequest, Decision, ErrorBody, ErrorCode, ErrorResponse, IntakeErrorCode, ResponseContext,
};
use crate::intake::Rejection;

use super::decider::Choice;
use super::env::Time;
use super::extensions::{Executed, Pipeline, PipelineError};
use super::rate_limit::RateLimited;

fn context(request: &DecideRequest) -> ResponseContext {
    ResponseContext {
        request_id: Some(request.request_id.clone()),
        trace_id: request.trace_id.clone(),
    }
}

/// The decision's metadata: the request context (constraints, then metadata, then
/// extension enrichments), the choice's bookkeeping and the executed extensions.
pub fn metadata(
    context: &Map<String, Value>,
    extra: &Map<String, Value>,
    executed: &[Executed],
) -> Map<String, Value> {
    let mut m = context.clone();
    m.extend(extra.clone());
    if !executed.is_empty() {
        m.insert(
            "executed_extensions".into(),
            serde_json::to_value(executed).unwrap_or(Value::Null),
        );
    }
    m
}

pub fn decision(
    choice: &Choice,
    pipeline: &Pipeline,
    latency_ms: u64,
    cost_micros: u64,
    with_metadata: bool,
) -> Decision {
    Decision {
        provider_id: choice.provider_id.clone(),
        priority: choice.reason.priority(),
        expected_latency_ms: latency_ms,
        // Micro-units back to a currency amount; exact for the values we store.
        expected_cost: cost_micros as f64 / 1e6,
        reason: choice.reason,
        policy_revision: None,
        metadata: with_metadata
            .then(|| metadata(&pipeline.context, &choice.extra, &pipeline.executed)),
    }
}

pub fn success(request: &DecideRequest, decision: &Decision) -> Vec<u8> {
    /// `DecideResponse`, field for field, borrowing the decision.
    #[derive(serde::Serialize)]
    struct Borrowed<'a> {
        ok: bool,
        decision: &'a Decision,
        context: ResponseContext,
    }
    to_bytes(&Borrowed {
        ok: true,
        decision,
        context: context(request),
    })
}

pub fn error(
    request: &DecideRequest,
    code: ErrorCode,
    reason: &str,
    message: String,
    mut details: Map<String, Value>,
) -> Vec<u8> {
    details.insert("reason".into(), reason.into());
    error_bytes(code, message, None, Some(details), context(request))
}

pub fn policy_not_found(request: &DecideRequest, policy_id: &str) -> Vec<u8> {
    let mut details = Map::new();
    details.insert("tenant_id".into(), request.tenant_id.clone().into());
    details.insert("policy_id".into(), policy_id.into());
    error_bytes(
        ErrorCode::PolicyNotFound,
        "Policy not found in store".into(),
        None,
        Some(details),
        context(request),
    )
}

pub fn rate_limited(request: &DecideRequest, limited: &RateLimited) -> Vec<u8> {
    let mut details = Map::new();
    details.insert(
        "retry_after_seconds".into(),
        limited.retry_after_seconds.into(),
    );
    details.insert("limit".into(), limited.limit.into());
    details.insert("burst".into(), limited.burst.into());
    details.insert("scope".into(), "policy".into());
    error_bytes(
        ErrorCode::RateLimited,
        format!(
            "Rate limit exceeded; retry after {} s",
            limited.retry_after_seconds
        ),
        None,
        Some(details),
        context(request),
    )
}

/// An aborted extension pipeline, with upstream's code mapping (spec 3.5).
pub fn pipeline_error(
    request: &DecideRequest,
    e: &PipelineError,
    executed: &[Executed],
    policy_id: &str,
    now: Time,
) -> Vec<u8> {
    let code = match e.reason {
        "extension_not_found" => ErrorCode::ExtensionNotFound,
        "extension_timeout" => ErrorCode::ExtensionTimeout,
        "validator_blocked" => ErrorCode::ValidatorBlocked,
        "post_processor_failed" => ErrorCode::PostProcessorFailed,
        "extension_circuit_open" => ErrorCode::ExtensionUnavailable,
        "pre_processor_failed" => ErrorCode::Internal,
        _ => ErrorCode::ExtensionError,
    };
    let mut details = Map::new();
    details.insert("error_type".into(), e.reason.into());
    details.insert("extension_id".into(), e.extension_id.clone().into());
    details.insert("policy_id".into(), policy_id.into());
    details.insert("tenant_id".into(), request.tenant_id.clone().into());
    details.insert("timestamp_ms".into(), now.millis().into());
    details.insert(
        "executed_extensions".into(),
        serde_json::to_value(executed).unwrap_or(Value::Null),
    );
    error_bytes(
        code,
        format!("{}: {}", e.reason, e.detail),
        None,
        Some(details),
        context(request),
    )
}

/// The error reply for a decide message the server gave up on before it was answered
/// (`max_deliver` deliveries): it was dead-lettered, and the gateway may send it again.
pub fn exhausted(request_id: Option<String>, trace_id: Option<String>, deliveries: u64) -> Vec<u8> {
    let mut details = Map::new();
    details.insert("reason".into(), "maxdeliver_exhausted".into());
    details.insert("deliveries".into(), deliveries.into());
    error_bytes(
        ErrorCode::DeliveryExhausted,
        format!("Not decided: the server gave up after {deliveries} deliveries"),
        None,
        Some(details),
        ResponseContext {
            request_id,
            trace_id,
        },
    )
}

/// The error reply for a message refused at intake.
pub fn rejection(rejection: &Rejection) -> Vec<u8> {
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
    intake_error_code: Option<IntakeErrorCode>,
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
pub fn to_bytes<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|_| {
        br#"{"ok":false,"error":{"code":"internal","message":"reply encoding failed"},"context":{}}"#.to_vec()
    })
}
