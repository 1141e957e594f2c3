//! Execution messages between the router and CAF workers, and the usage event
//! (spec sections 3.6-3.9).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::decide::Decision;

/// Router -> CAF on `caf.exec.assign.v1`, published through JetStream with
/// `Nats-Msg-Id` = `assignment_id`, so that a retried publish is never stored twice.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecAssignment {
    pub version: String,
    pub assignment_id: String,
    pub request_id: String,
    pub tenant_id: String,
    pub executor: Executor,
    /// The request's `task`, verbatim.
    pub job: Value,
    pub options: AssignmentOptions,
    pub correlation: Correlation,
    pub decision: Decision,
    pub metadata: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Executor {
    pub provider_id: String,
    pub channel: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AssignmentOptions {
    pub priority: u32,
    pub deadline_ms: u64,
    pub retry: RetryOptions,
    /// Keys of the request's `options` that are not ours, passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryOptions {
    pub max_attempts: u32,
    pub backoff_ms: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Correlation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// CAF -> router on `caf.exec.result.v1`, after intake.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub status: ExecStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_type: Option<String>,
    #[serde(default)]
    pub latency_ms: u64,
    #[serde(default)]
    pub cost: f64,
    pub tenant_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

impl ExecResult {
    /// The key results are deduplicated by: the assignment id, else the request id.
    pub fn correlation_key(&self) -> &str {
        self.assignment_id
            .as_deref()
            .or(self.request_id.as_deref())
            .unwrap_or_default()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecStatus {
    Success,
    Error,
    Timeout,
    Cancelled,
}

impl ExecStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecStatus::Success => "success",
            ExecStatus::Error => "error",
            ExecStatus::Timeout => "timeout",
            ExecStatus::Cancelled => "cancelled",
        }
    }
}

/// CAF -> router on `caf.exec.assign.v1.ack` (informational).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecAssignmentAck {
    pub assignment_id: String,
    pub status: AckStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub tenant_id: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckStatus {
    Accepted,
    Rejected,
    Error,
}

/// Router -> metering on `beamline.usage.v1.metered`, once per result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UsageEvent {
    pub version: String,
    pub usage_id: String,
    pub tenant_id: String,
    pub provider_id: String,
    pub event_type: String,
    pub latency_ms: u64,
    pub cost: f64,
    pub status: ExecStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    pub timestamp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}
