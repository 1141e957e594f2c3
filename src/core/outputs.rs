//! The publishes the core builds: replies (core NATS) and where they go, outputs kept for
//! replay and DLQ records (JetStream, each under a message id the stream dedupes on), the
//! refusal of a message at intake and the gateway's notice of an exhausted one. Free
//! functions over what they need, so that every flow can use them without reaching for
//! the whole router.

use crate::contracts::subjects::{
    HEADER_DLQ_REASON, HEADER_MSG_ID, HEADER_ORIGINAL_MSG_ID, HEADER_REPLY_TO,
};
use crate::contracts::DlqReason;

use super::answers::{SeqKey, StoredPublish};
use super::config::RouterConfig;
use super::dlq;
use super::env::Env;
use super::flight::{Flights, InFlight, Origin, Purpose};
use super::io::{header, Delivery, Headers, Publish, PublishKind, Source};
use super::stats::Stats;

/// Where the answer to a decide message goes: its `Reply-To` header if that is a subject
/// we may publish to, else the configured default.
pub(super) fn reply_subject(config: &RouterConfig, headers: &[(String, String)]) -> String {
    header(headers, HEADER_REPLY_TO)
        .filter(|s| crate::intake::valid_publish_subject(s))
        .unwrap_or(&config.default_reply_subject)
        .to_string()
}

pub(super) fn core_publish(subject: String, headers: Headers, payload: Vec<u8>) -> Publish {
    Publish {
        id: 0,
        subject,
        headers,
        payload,
        kind: PublishKind::Core,
        msg_id: None,
    }
}

/// The publish of an output kept for replay (assignment, usage event), under its own
/// message id, for the first time or again.
pub(super) fn publish_stored(stored: StoredPublish) -> Publish {
    jetstream_publish(
        stored.subject,
        stored.headers,
        stored.payload,
        stored.msg_id,
    )
}

pub(super) fn jetstream_publish(
    subject: String,
    mut headers: Headers,
    payload: Vec<u8>,
    msg_id: String,
) -> Publish {
    if !headers.iter().any(|(k, _)| k == HEADER_MSG_ID) {
        headers.insert(0, (HEADER_MSG_ID.to_string(), msg_id.clone()));
    }
    Publish {
        id: 0,
        subject,
        headers,
        payload,
        kind: PublishKind::JetStream,
        msg_id: Some(msg_id),
    }
}

pub(super) fn dlq_subject(config: &RouterConfig, source: Source) -> String {
    match source {
        Source::Decide => config.dlq_subject.clone(),
        Source::Result => format!("{}{}", config.result_subject, config.dlq_suffix),
        Source::AssignmentAck => {
            format!("{}{}", config.ack_subject, config.dlq_suffix)
        }
    }
}

/// A DLQ record as a JetStream publish. Its message id is derived from the stream
/// sequence, so a retry (or a redelivery refused again) cannot store a second copy.
pub(super) fn dlq_publish(
    config: &RouterConfig,
    source: Source,
    seq: SeqKey,
    origin: &Origin,
    record: Vec<u8>,
    reason: DlqReason,
) -> Publish {
    let mut headers = vec![(
        HEADER_DLQ_REASON.to_string(),
        dlq::reason_str(reason).to_string(),
    )];
    if let Some(original) = &origin.msg_id {
        headers.push((HEADER_ORIGINAL_MSG_ID.to_string(), original.clone()));
    }
    let msg_id = dlq::msg_id(source, seq.1);
    let subject = dlq_subject(config, source);
    jetstream_publish(subject, headers, record, msg_id)
}

/// The DLQ record of a message whose deliveries ran out (`how`: the server gave up, or
/// our last delivery's publishes failed), as a publish.
pub(super) fn exhausted_dlq(
    config: &RouterConfig,
    msg: &InFlight,
    seq: SeqKey,
    deliveries: u64,
    how: dlq::Exhaustion,
    now: super::env::Time,
) -> Publish {
    let record = dlq::exhausted(&msg.origin, seq.1, deliveries, how, now, &config.node_id);
    dlq_publish(
        config,
        msg.source,
        seq,
        &msg.origin,
        record,
        DlqReason::MaxdeliverExhausted,
    )
}

/// Send a refused message to its DLQ (and, for decide, the error reply).
#[allow(clippy::too_many_arguments)]
pub(super) fn refuse(
    config: &RouterConfig,
    stats: &mut Stats,
    flights: &mut Flights,
    seq: SeqKey,
    msg: &mut InFlight,
    d: &Delivery,
    rejection: &crate::intake::Rejection,
    env: &mut impl Env,
) {
    stats.rejected += 1;
    env.probe("intake.refused");
    let record = dlq::refused(&msg.origin, d, rejection, env.now(), &config.node_id);
    let publish = dlq_publish(
        config,
        msg.source,
        seq,
        &msg.origin,
        record,
        DlqReason::ValidationFailed,
    );
    msg.dlq = Some(publish.clone());
    flights.send(seq, msg, publish, Purpose::Dlq, env);
}

/// Tell the gateway that a decide message it never got an answer to was given up on, so
/// that it can send it again at once instead of waiting out its timeout. Best effort
/// (core NATS): the DLQ record, not this reply, is the message's fate.
pub(super) fn reply_exhausted(
    stats: &mut Stats,
    flights: &mut Flights,
    seq: SeqKey,
    msg: &mut InFlight,
    deliveries: u64,
    env: &mut impl Env,
) {
    let Some(reply_to) = msg.origin.reply_to.clone() else {
        return;
    };
    if msg.replied {
        return;
    }
    stats.replies_error += 1;
    let body = super::reply::exhausted(msg.origin.request_id.clone(), None, deliveries);
    let publish = core_publish(reply_to, Vec::new(), body);
    flights.send(seq, msg, publish, Purpose::Reply, env);
}
