//! `ErrorResponse` and the two code sets: intake codes (why a message was refused at the
//! door) and gateway codes (what a caller should do about it). Spec 3.4 and 3.5.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::decide::ResponseContext;

/// Why intake refused a message. Stable strings: operators alert on them.
///
/// Upstream also defined `IDEMPOTENCY_VIOLATION` (a key reused for another request) and
/// `INTERNAL_VALIDATION_ERROR` (an exception inside validation) but never produced
/// either. Neither has a path here: validation is a total function, and a reused key is
/// answered with the first reply's bytes (the idempotency contract); so both are gone
/// rather than kept as codes nothing emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IntakeErrorCode {
    SchemaValidationFailed,
    VersionUnsupported,
    CorrelationFieldsInvalid,
    TenantForbidden,
    PayloadTooSmall,
}

impl IntakeErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            IntakeErrorCode::SchemaValidationFailed => "SCHEMA_VALIDATION_FAILED",
            IntakeErrorCode::VersionUnsupported => "VERSION_UNSUPPORTED",
            IntakeErrorCode::CorrelationFieldsInvalid => "CORRELATION_FIELDS_INVALID",
            IntakeErrorCode::TenantForbidden => "TENANT_FORBIDDEN",
            IntakeErrorCode::PayloadTooSmall => "PAYLOAD_TOO_SMALL",
        }
    }

    /// The gateway code a caller sees for this intake failure.
    pub fn gateway_code(self) -> ErrorCode {
        match self {
            IntakeErrorCode::TenantForbidden => ErrorCode::Unauthorized,
            _ => ErrorCode::InvalidRequest,
        }
    }

    pub fn severity(self) -> &'static str {
        match self {
            IntakeErrorCode::PayloadTooSmall => "warn",
            _ => "error",
        }
    }
}

/// The `error.code` a gateway maps to HTTP. Stable strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidRequest,
    Unauthorized,
    PolicyNotFound,
    DecisionFailed,
    RateLimited,
    ExtensionNotFound,
    ExtensionTimeout,
    ValidatorBlocked,
    PostProcessorFailed,
    ExtensionUnavailable,
    ExtensionError,
    /// The server gave up on the request after `max_deliver` deliveries (the router was
    /// overloaded, disconnected or failing); it was dead-lettered, never decided. Safe to
    /// send again.
    DeliveryExhausted,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::PolicyNotFound => "policy_not_found",
            ErrorCode::DecisionFailed => "decision_failed",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::ExtensionNotFound => "extension_not_found",
            ErrorCode::ExtensionTimeout => "extension_timeout",
            ErrorCode::ValidatorBlocked => "validator_blocked",
            ErrorCode::PostProcessorFailed => "post_processor_failed",
            ErrorCode::ExtensionUnavailable => "extension_unavailable",
            ErrorCode::ExtensionError => "extension_error",
            ErrorCode::DeliveryExhausted => "delivery_exhausted",
            ErrorCode::Internal => "internal",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intake_error_code: Option<IntakeErrorCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Map<String, Value>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// Always `false`.
    pub ok: bool,
    pub error: ErrorBody,
    pub context: ResponseContext,
}
