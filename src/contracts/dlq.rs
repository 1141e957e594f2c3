//! The dead-letter record published to `beamline.router.v1.decide.dlq` before a message
//! is terminated. It carries a hash of the payload, never the payload: DLQ streams are
//! read by people, and payloads may hold personal data.

use serde::{Deserialize, Serialize};

use super::errors::IntakeErrorCode;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DlqReason {
    /// Intake refused the message; it can never succeed.
    ValidationFailed,
    /// The last delivery allowed by `max_deliver` could not be answered.
    MaxdeliverExhausted,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlqError {
    /// An intake code, or `MAXDELIVER_EXHAUSTED`.
    pub code: String,
    pub message: String,
    pub severity: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlqRecord {
    pub reason: DlqReason,
    pub original_subject: String,
    /// SHA-256 of the raw payload, lowercase hex.
    pub original_payload_hash: String,
    pub stream_seq: u64,
    /// The server's delivery count of the delivery that dead-lettered.
    pub delivered: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    pub error: DlqError,
    pub received_at: u64,
    pub router_node_id: String,
}

impl DlqError {
    pub fn intake(code: IntakeErrorCode, message: String) -> Self {
        DlqError {
            code: code.as_str().to_string(),
            message,
            severity: code.severity().to_string(),
        }
    }
}
