//! `DecideRequest` in, `DecideResponse` out (spec sections 3.1 and 3.3).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A validated decide request. Intake builds it from raw JSON only after every rule of
/// the validation pipeline has passed, so its fields can be trusted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecideRequest {
    pub version: String,
    pub request_id: String,
    pub tenant_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    pub task: Task,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_id: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub constraints: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    #[serde(default)]
    pub push_assignment: bool,
    /// Overrides the CAF subject for this request's assignment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment_subject: Option<String>,
    /// Merged over the assignment's `options` defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    #[serde(rename = "type")]
    pub task_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Map<String, Value>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionReason {
    Sticky,
    Weighted,
    Retry,
    Fallback,
    CircuitBreakerFallback,
}

impl DecisionReason {
    /// Fixed priorities of the contract (spec 3.3).
    pub fn priority(self) -> u32 {
        match self {
            DecisionReason::Sticky => 100,
            DecisionReason::Weighted | DecisionReason::Retry => 50,
            DecisionReason::Fallback => 25,
            DecisionReason::CircuitBreakerFallback => 20,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DecisionReason::Sticky => "sticky",
            DecisionReason::Weighted => "weighted",
            DecisionReason::Retry => "retry",
            DecisionReason::Fallback => "fallback",
            DecisionReason::CircuitBreakerFallback => "circuit_breaker_fallback",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub provider_id: String,
    pub priority: u32,
    pub expected_latency_ms: u64,
    pub expected_cost: f64,
    pub reason: DecisionReason,
    /// The revision of the policy that decided (`Policy::revision`), so that a reload
    /// can be traced in the replies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecideResponse {
    /// Always `true`; errors are `ErrorResponse`.
    pub ok: bool,
    pub decision: Decision,
    pub context: ResponseContext,
}
