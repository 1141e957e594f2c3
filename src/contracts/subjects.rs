//! Subject names and header names of the wire contract (docs/API_CONTRACTS.md).

pub const DECIDE: &str = "beamline.router.v1.decide";
pub const DECIDE_REPLY: &str = "beamline.router.v1.decide.reply";
pub const DECIDE_DLQ: &str = "beamline.router.v1.decide.dlq";

/// The caller's reply subject. A plain NATS request to a subject that a stream captures
/// is answered by the stream's PubAck, so the real reply subject travels in a header.
pub const HEADER_REPLY_TO: &str = "Reply-To";
pub const HEADER_MSG_ID: &str = "Nats-Msg-Id";
pub const HEADER_VERSION: &str = "version";
pub const HEADER_TENANT_ID: &str = "tenant_id";
pub const HEADER_TRACE_ID: &str = "trace_id";
pub const HEADER_DLQ_REASON: &str = "x-dlq-reason";
pub const HEADER_ORIGINAL_MSG_ID: &str = "x-original-msg-id";
