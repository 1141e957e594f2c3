//! Subject names and header names of the wire contract (docs/API_CONTRACTS.md).

pub const DECIDE: &str = "beamline.router.v1.decide";
pub const DECIDE_REPLY: &str = "beamline.router.v1.decide.reply";
pub const DECIDE_DLQ: &str = "beamline.router.v1.decide.dlq";
pub const RESULT: &str = "caf.exec.result.v1";
pub const RESULT_DLQ: &str = "caf.exec.result.v1.dlq";
pub const ASSIGNMENT: &str = "caf.exec.assign.v1";
pub const ASSIGNMENT_ACK: &str = "caf.exec.assign.v1.ack";
pub const USAGE: &str = "beamline.usage.v1.metered";
pub const BACKPRESSURE_STATUS: &str = "beamline.router.v1.status.backpressure";
/// Admin request-reply subjects share this prefix.
pub const ADMIN_PREFIX: &str = "beamline.router.v1.admin.";
/// `beamline.router.v1.admin.node.<node_id>.<op>`: one instance, by its `node_id`.
pub const ADMIN_NODE_PREFIX: &str = "beamline.router.v1.admin.node.";
/// `beamline.router.v1.admin.all.<op>`: every instance answers (gather the replies).
pub const ADMIN_ALL_PREFIX: &str = "beamline.router.v1.admin.all.";
/// The queue group of the status and admin subjects: one instance answers each request.
pub const ROUTER_QUEUE_GROUP: &str = "beamline-router";

/// The caller's reply subject. A plain NATS request to a subject that a stream captures
/// is answered by the stream's PubAck, so the real reply subject travels in a header.
pub const HEADER_REPLY_TO: &str = "Reply-To";
pub const HEADER_MSG_ID: &str = "Nats-Msg-Id";
pub const HEADER_VERSION: &str = "version";
pub const HEADER_TENANT_ID: &str = "tenant_id";
pub const HEADER_REQUEST_ID: &str = "request_id";
pub const HEADER_TRACE_ID: &str = "trace_id";
pub const HEADER_TRACEPARENT: &str = "traceparent";
pub const HEADER_SPAN_ID: &str = "span_id";
pub const HEADER_DLQ_REASON: &str = "x-dlq-reason";
pub const HEADER_ORIGINAL_MSG_ID: &str = "x-original-msg-id";
