//! The core's inputs and commands. Everything that crosses the boundary between the
//! deterministic core and a shell is one of these values, so a trace of them is a
//! complete record of a run.

use serde::Serialize;

/// A shell-assigned token for one delivery of one JetStream message. Unique within a
/// process; the shell maps it back to its ack handle.
pub type DeliveryId = u64;

/// A core-assigned id for one publish, echoed back in `Input::PublishDone`.
pub type PublishId = u64;

/// A core-assigned timer key, echoed back in `Input::Timer`.
pub type TimerKey = u64;

/// A core-assigned id for one outbound request (an extension call), echoed back in
/// `Input::RequestDone`.
pub type RequestId = u64;

/// A shell-assigned id for one inbound request to the router (status, admin), echoed
/// back in `Command::Respond`.
pub type InboundId = u64;

/// Message headers in the order they arrived. A `Vec`, not a map: order is part of the
/// trace, and NATS allows repeated names.
pub type Headers = Vec<(String, String)>;

/// One delivery of a message from a durable pull consumer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub id: DeliveryId,
    /// The subject the message was published to (e.g. `beamline.router.v1.decide`).
    pub subject: String,
    pub headers: Headers,
    #[serde(serialize_with = "serialize_lossy")]
    pub payload: Vec<u8>,
    /// The message's sequence in its stream: stable across redeliveries and restarts.
    pub stream_seq: u64,
    /// The server's delivery count (1 on first delivery). The core trusts this, never a
    /// counter of its own, to decide when `max_deliver` is reached.
    pub delivered: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum PublishOutcome {
    /// Core publish: flushed to the server. JetStream publish: PubAck received.
    Confirmed,
    /// The publish failed or its confirmation did not arrive in time (ambiguous).
    Failed { reason: String },
}

/// How an outbound request ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum RequestOutcome {
    Reply {
        #[serde(serialize_with = "serialize_lossy")]
        payload: Vec<u8>,
    },
    /// No reply within the request's timeout.
    Timeout,
    /// No responders, connection lost, or another transport error.
    Failed { reason: String },
}

/// A core NATS request addressed to the router itself (backpressure status, admin).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InboundRequest {
    pub id: InboundId,
    pub subject: String,
    pub headers: Headers,
    #[serde(serialize_with = "serialize_lossy")]
    pub payload: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ConnectionEvent {
    Up,
    Down,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Input {
    Delivery(Delivery),
    PublishDone {
        id: PublishId,
        outcome: PublishOutcome,
    },
    RequestDone {
        id: RequestId,
        outcome: RequestOutcome,
    },
    Inbound(InboundRequest),
    Timer {
        key: TimerKey,
    },
    Connection(ConnectionEvent),
    /// The decide consumer's pending count, as last read from the server (backpressure).
    ConsumerPending {
        pending: u64,
    },
    /// The server gave up on a message (its `MAX_DELIVERIES` advisory), and the shell
    /// fetched the message from the stream. The core may never have seen its last
    /// delivery (lost on the wire), so it dead-letters the message unless it already
    /// settled it.
    Exhausted(Exhausted),
    /// How a `Command::KvCreate` ended.
    KvDone {
        id: RequestId,
        outcome: KvOutcome,
    },
}

/// How a create-if-absent in the shared answer bucket ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum KvOutcome {
    /// The entry did not exist; ours is stored.
    Created,
    /// The entry existed (another instance, or an earlier attempt of ours whose outcome
    /// was lost): its current value.
    Exists {
        #[serde(serialize_with = "serialize_lossy")]
        value: Vec<u8>,
    },
    /// `KvGet`: the entry's value. `KvPut`: stored.
    Found {
        #[serde(serialize_with = "serialize_lossy")]
        value: Vec<u8>,
    },
    /// `KvGet`: no such entry (never written, or expired).
    Missing,
    /// The bucket did not answer in time or refused: the create (or put) may or may not
    /// have happened.
    Failed { reason: String },
}

/// A message the server will not deliver again, as read back from its stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Exhausted {
    pub subject: String,
    pub headers: Headers,
    #[serde(serialize_with = "serialize_lossy")]
    pub payload: Vec<u8>,
    pub stream_seq: u64,
    /// The delivery count the advisory reported.
    pub deliveries: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum PublishKind {
    /// A plain NATS publish; confirmed once flushed to the server.
    Core,
    /// A JetStream publish; confirmed by its PubAck. The message id lets the stream
    /// drop a retry of a publish whose ack was lost.
    JetStream,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Publish {
    pub id: PublishId,
    pub subject: String,
    pub headers: Headers,
    #[serde(serialize_with = "serialize_lossy")]
    pub payload: Vec<u8>,
    pub kind: PublishKind,
    /// `Nats-Msg-Id` for JetStream publishes (also carried in `headers`).
    pub msg_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Command {
    /// Done with this message: `+ACK`.
    Ack {
        delivery: DeliveryId,
    },
    /// Redeliver after `delay_ms`: `-NAK {"delay":..}`.
    Nak {
        delivery: DeliveryId,
        delay_ms: u64,
    },
    /// Never redeliver: `+TERM`. Always preceded by a confirmed DLQ record.
    Term {
        delivery: DeliveryId,
    },
    /// Still working, reset the ack timer: `+WPI`.
    InProgress {
        delivery: DeliveryId,
    },
    Publish(Publish),
    /// Deliver `Input::Timer { key }` at `at` (milliseconds on the core's clock).
    SetTimer {
        key: TimerKey,
        at: u64,
    },
    /// A core NATS request (extension call); the outcome comes back as
    /// `Input::RequestDone`. The shell enforces `timeout_ms`.
    Request {
        id: RequestId,
        subject: String,
        headers: Headers,
        #[serde(serialize_with = "serialize_lossy")]
        payload: Vec<u8>,
        timeout_ms: u64,
    },
    /// Create `key` with `value` in the shared answer bucket unless it exists (NATS KV
    /// `create`); the outcome comes back as `Input::KvDone`. The shell enforces its own
    /// timeout and reports it as `KvOutcome::Failed`.
    KvCreate {
        id: RequestId,
        key: String,
        #[serde(serialize_with = "serialize_lossy")]
        value: Vec<u8>,
    },
    /// Read `key` from the shared bucket (sticky sessions); the outcome comes back as
    /// `Input::KvDone` with `Found`, `Missing` or `Failed`.
    KvGet {
        id: RequestId,
        key: String,
    },
    /// Write `key` (sticky sessions), replacing what is there; `Input::KvDone` with
    /// `Found` (stored) or `Failed`. The core does not wait for it.
    KvPut {
        id: RequestId,
        key: String,
        #[serde(serialize_with = "serialize_lossy")]
        value: Vec<u8>,
    },
    /// The answer to an inbound request.
    Respond {
        id: InboundId,
        #[serde(serialize_with = "serialize_lossy")]
        payload: Vec<u8>,
    },
}

fn serialize_lossy<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(bytes))
}
