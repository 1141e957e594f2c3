//! One message in flight, as the core holds it between its delivery and its fate: where
//! it came from, what it still waits on (its decide work, a claim, its publishes), and
//! what a DLQ record will need to know of it. `Router` owns the table of these
//! (`Router::in_flight`); the flows change one entry at a time.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::contracts::subjects::HEADER_MSG_ID;
use crate::contracts::{DecideRequest, Decision};

use super::answers::SeqKey;
use super::digest::PayloadDigest;
use super::env::{Env, Time};
use super::extensions::Pipeline;
use super::io::{
    header, Command, Delivery, DeliveryId, Headers, Publish, PublishId, RequestId, Source,
};
use super::shared::SharedAnswer;
use super::timers::Timers;

/// What a publish was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Purpose {
    Reply,
    Dlq,
    Assignment,
    Usage,
    /// The usage event again, published by a duplicate result while its carrier is in
    /// flight (the stream drops it): not counted as emitted.
    UsageCopy,
}

/// What a timer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TimerPurpose {
    RetryDlq(SeqKey),
    RetryExtension(SeqKey),
}

/// What the message still waits on before its publishes go out.
#[derive(Debug)]
pub(super) enum Work {
    /// Running its extension pipeline.
    Deciding(Box<DecideWork>),
    /// Another message with the same (tenant, idempotency key) is being decided: wait
    /// for its answer and reply with the same bytes.
    AwaitingClaim { reply_to: String },
    /// Waiting for the shared bucket to say whose answer this key has
    /// (`KvOp::Create`); nothing is published before it does.
    Claiming(Box<PendingAnswer>),
    /// Publishes sent (or none needed); the fate follows their outcomes.
    Publishing,
}

/// A decide request between intake and its reply.
#[derive(Debug)]
pub(super) struct DecideWork {
    pub request: DecideRequest,
    pub policy_id: String,
    pub reply_to: String,
    pub inbound_headers: Headers,
    pub pipeline: Pipeline,
    /// Set at selection; its metadata is rebuilt after post-processors ran.
    pub decision: Option<Decision>,
    /// Retry / fallback bookkeeping of the choice, kept in the decision's metadata.
    pub extra: Map<String, Value>,
    /// The shared bucket was asked for this request's sticky session (or need not be).
    pub sticky_checked: bool,
}

/// A decided answer waiting for the shared bucket's verdict.
#[derive(Debug)]
pub(super) struct PendingAnswer {
    pub reply_to: String,
    pub claim: (String, String),
    pub answer: SharedAnswer,
}

/// One message (one stream sequence) between its delivery and its fate.
#[derive(Debug)]
pub(super) struct InFlight {
    pub source: Source,
    /// Every delivery of this sequence seen while in flight; the fate goes to each.
    pub deliveries: Vec<DeliveryId>,
    /// The highest server delivery count seen.
    pub delivered: u64,
    pub received_at: Time,
    /// When the server last heard from us about this message (delivery or `+WPI`).
    pub last_progress: Time,
    pub origin: Origin,
    pub work: Work,
    /// Publishes not yet confirmed or failed.
    pub pending: Vec<(PublishId, Purpose)>,
    /// A publish the fate depends on failed.
    pub failed: bool,
    /// Set when the message must end in the DLQ (refused, or exhausted).
    pub dlq: Option<Publish>,
    pub dlq_confirmed: bool,
    /// A reply to the gateway was confirmed: a dead letter then needs no error reply.
    pub replied: bool,
}

/// What a DLQ record needs to know about the original message, kept instead of the
/// payload itself (which may be large and may hold personal data).
#[derive(Debug)]
pub(super) struct Origin {
    pub subject: String,
    pub digest: PayloadDigest,
    pub msg_id: Option<String>,
    /// Filled in once intake has read them.
    pub request_id: Option<String>,
    pub tenant_id: Option<String>,
    /// For results: the correlation key, marked settled when the result is acked.
    pub result_key: Option<String>,
    /// For decide: where the gateway waits for the answer.
    pub reply_to: Option<String>,
}

impl Origin {
    pub(super) fn of(d: &Delivery) -> Self {
        Origin {
            subject: d.subject.clone(),
            digest: d.digest,
            msg_id: header(&d.headers, HEADER_MSG_ID).map(str::to_string),
            request_id: None,
            tenant_id: None,
            result_key: None,
            reply_to: None,
        }
    }
}

/// The table of messages in flight and everything keyed to them: the I/O each awaits (by
/// the id the core gave it), the idempotency keys being decided, the core's timers. One
/// owner, so that a message and its pending operations are created and dropped together;
/// the flows reach the parts as disjoint fields (a message and the publish table at once).
#[derive(Debug)]
pub(super) struct Flights {
    /// Keyed by (stream, sequence): each consumer's stream numbers its own messages.
    pub messages: BTreeMap<SeqKey, InFlight>,
    pub publishes: BTreeMap<PublishId, SeqKey>,
    /// Extension calls in flight -> the message whose pipeline made them.
    pub requests: BTreeMap<RequestId, SeqKey>,
    /// Shared-bucket creates in flight -> the message whose answer they claim.
    pub kv_claims: BTreeMap<RequestId, SeqKey>,
    /// Sticky-session reads in flight -> the message waiting to choose.
    pub kv_lookups: BTreeMap<RequestId, SeqKey>,
    /// (tenant, idempotency key) being decided (through the extension pipeline) -> the
    /// message deciding it and the messages waiting for its answer.
    pub claims: BTreeMap<(String, String), (SeqKey, Vec<SeqKey>)>,
    pub timers: Timers<TimerPurpose>,
    next_id: u64,
}

impl Default for Flights {
    fn default() -> Self {
        Flights {
            messages: BTreeMap::new(),
            publishes: BTreeMap::new(),
            requests: BTreeMap::new(),
            kv_claims: BTreeMap::new(),
            kv_lookups: BTreeMap::new(),
            claims: BTreeMap::new(),
            timers: Timers::default(),
            next_id: 1,
        }
    }
}

impl Flights {
    /// Publish on behalf of message `seq`: numbered afresh, tracked until its outcome, and
    /// counted among what the message's fate waits on.
    pub fn send(
        &mut self,
        seq: SeqKey,
        msg: &mut InFlight,
        mut publish: Publish,
        purpose: Purpose,
        env: &mut impl Env,
    ) {
        publish.id = self.next_id();
        self.publishes.insert(publish.id, seq);
        msg.pending.push((publish.id, purpose));
        env.execute(Command::Publish(publish));
    }

    /// `send` for a message that stays in the table (`messages`), as the same fields apart:
    /// no need to take it out to publish for it. Nothing is sent (and no id is used) for a
    /// message not held.
    pub fn send_held(
        &mut self,
        seq: SeqKey,
        mut publish: Publish,
        purpose: Purpose,
        env: &mut impl Env,
    ) {
        let Some(msg) = self.messages.get_mut(&seq) else {
            return;
        };
        publish.id = self.next_id;
        self.next_id += 1;
        self.publishes.insert(publish.id, seq);
        msg.pending.push((publish.id, purpose));
        env.execute(Command::Publish(publish));
    }

    /// A fresh id for a publish, request or bucket operation: never reused in a process.
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }
}
