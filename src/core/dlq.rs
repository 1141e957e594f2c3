//! DLQ records, built from what the router kept of the original message.

use crate::contracts::{DlqError, DlqReason, DlqRecord};
use crate::intake::Rejection;

use super::env::Time;
use super::flight::Origin;
use super::io::{Delivery, Source};

/// The DLQ record's `Nats-Msg-Id`: `dlq-<seq>` for decide messages (the documented
/// contract), `dlq-<source>-<seq>` for the other streams, whose sequences overlap. It
/// depends on the message's source and sequence only, never on how an operator spelled
/// a subject, so every instance (and every version) names one message's record alike.
pub fn msg_id(source: Source, stream_seq: u64) -> String {
    match source {
        Source::Decide => format!("dlq-{stream_seq}"),
        other => format!("dlq-{}-{stream_seq}", other.as_str()),
    }
}

pub fn reason_str(reason: DlqReason) -> &'static str {
    match reason {
        DlqReason::ValidationFailed => "validation_failed",
        DlqReason::MaxdeliverExhausted => "maxdeliver_exhausted",
    }
}

pub fn refused(
    origin: &Origin,
    d: &Delivery,
    rejection: &Rejection,
    now: Time,
    node: &str,
) -> Vec<u8> {
    encode(&DlqRecord {
        reason: DlqReason::ValidationFailed,
        original_subject: origin.subject.clone(),
        original_payload_hash: origin.digest.hex(),
        stream_seq: d.stream_seq,
        delivered: d.delivered,
        msg_id: origin.msg_id.clone(),
        request_id: rejection.request_id.clone(),
        tenant_id: rejection.tenant_id.clone(),
        trace_id: rejection.trace_id.clone(),
        error: DlqError::intake(rejection.code, rejection.message.clone()),
        received_at: now.millis(),
        router_node_id: node.to_string(),
    })
}

/// Why a valid message was given up on, for its DLQ record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exhaustion {
    /// Its last delivery reached us, and a publish it needed failed.
    PublishFailed,
    /// The server gave up on it (MAX_DELIVERIES advisory) before we completed a delivery.
    ServerGaveUp,
    /// Its last delivery reached us while we were overloaded: a nak would exhaust it.
    Overloaded,
}

pub fn exhausted(
    origin: &Origin,
    seq: u64,
    delivered: u64,
    why: Exhaustion,
    now: Time,
    node: &str,
) -> Vec<u8> {
    let message = match why {
        Exhaustion::PublishFailed => {
            format!("reply could not be published in {delivered} deliveries")
        }
        Exhaustion::ServerGaveUp => format!(
            "the server gave up after {delivered} deliveries, none of which the router completed"
        ),
        Exhaustion::Overloaded => format!(
            "the router was overloaded at each of its {delivered} deliveries, the last included"
        ),
    };
    encode(&DlqRecord {
        reason: DlqReason::MaxdeliverExhausted,
        original_subject: origin.subject.clone(),
        original_payload_hash: origin.digest.hex(),
        stream_seq: seq,
        delivered,
        msg_id: origin.msg_id.clone(),
        request_id: origin.request_id.clone(),
        tenant_id: origin.tenant_id.clone(),
        trace_id: None,
        error: DlqError {
            code: "MAXDELIVER_EXHAUSTED".to_string(),
            message,
            severity: "error".to_string(),
        },
        received_at: now.millis(),
        router_node_id: node.to_string(),
    })
}

/// A record holds only strings and integers, which always encode; should that ever
/// break, the record still names its reason and message rather than being empty.
fn encode(record: &DlqRecord) -> Vec<u8> {
    serde_json::to_vec(record).unwrap_or_else(|_| {
        format!(
            r#"{{"reason":"{}","stream_seq":{},"error":{{"code":"INTERNAL","message":"record encoding failed","severity":"error"}}}}"#,
            reason_str(record.reason),
            record.stream_seq
        )
        .into_bytes()
    })
}
