//! The wire contract: messages, codes and subjects, as serde types. See
//! docs/API_CONTRACTS.md for the prose version.

pub mod decide;
pub mod dlq;
pub mod errors;
pub mod exec;
pub mod subjects;

pub use decide::{DecideRequest, DecideResponse, Decision, DecisionReason, ResponseContext, Task};
pub use dlq::{DlqError, DlqReason, DlqRecord};
pub use errors::{ErrorBody, ErrorCode, ErrorResponse, IntakeErrorCode};
pub use exec::{
    AckStatus, AssignmentOptions, Correlation, ExecAssignment, ExecAssignmentAck, ExecResult,
    ExecStatus, Executor, RetryOptions, UsageEvent,
};

/// The only schema version this router speaks.
pub const VERSION: &str = "1";
