//! The core's inputs and commands. Everything that crosses the boundary between the
//! deterministic core and a shell is one of these values, so a trace of them is a
//! complete record of a run.

use serde::Serialize;

use super::digest::PayloadDigest;

/// A shell-assigned token for one delivery of one JetStream message. Unique within a
/// process; the shell maps it back to its ack handle.
pub type DeliveryId = u64;

/// A core-assigned id for one publish, echoed back in `Input::PublishDone`.
pub type PublishId = u64;

/// A core-assigned timer key. The core keeps its timers itself (`Router::poll_timeout`,
/// `Input::Timeout`); the key only orders timers due at the same moment.
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

/// Which of the router's consumers a message came from. The host knows it from the
/// consumer it pulled; the core never guesses it from a (configurable) subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Source {
    /// Decide requests from gateways.
    Decide,
    /// Workers' execution results.
    Result,
    /// Workers' acks of assignments.
    AssignmentAck,
}

impl Source {
    /// A stable short name: DLQ message ids and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Decide => "decide",
            Source::Result => "results",
            Source::AssignmentAck => "acks",
        }
    }
}

/// One delivery of a message from a durable pull consumer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub id: DeliveryId,
    pub source: Source,
    /// The subject the message was published to (e.g. `beamline.router.v1.decide`).
    pub subject: String,
    pub headers: Headers,
    #[serde(serialize_with = "serialize_lossy")]
    pub payload: Vec<u8>,
    /// The payload's SHA-256, taken once by whoever received the message.
    #[serde(skip)]
    pub digest: PayloadDigest,
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
    /// Time passed: run every core timer due by now (`Router::poll_timeout` says when).
    Timeout,
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
    /// How a `Command::Kv` ended.
    KvDone {
        id: RequestId,
        outcome: KvOutcome,
    },
}

/// One operation on the shared bucket (NATS KV).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum KvOp {
    /// Create `key` with `value` unless it exists (KV `create`): shared answers.
    /// Outcomes: `Created`, `Exists`, `Failed`.
    Create {
        key: String,
        #[serde(serialize_with = "serialize_lossy")]
        value: Vec<u8>,
    },
    /// Read `key`: sticky sessions. Outcomes: `Found`, `Missing`, `Failed`.
    Get { key: String },
    /// Write `key`, replacing what is there: sticky sessions. Outcomes: `Stored`,
    /// `Failed`. The core does not wait for it.
    Put {
        key: String,
        #[serde(serialize_with = "serialize_lossy")]
        value: Vec<u8>,
    },
}

/// How a `KvOp` ended; each operation has its own outcomes (see `KvOp`), and `Failed`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum KvOutcome {
    /// `Create`: the entry did not exist; ours is stored.
    Created,
    /// `Create`: the entry existed (another instance, or an earlier attempt of ours
    /// whose outcome was lost): its current value.
    Exists {
        #[serde(serialize_with = "serialize_lossy")]
        value: Vec<u8>,
    },
    /// `Get`: the entry's value.
    Found {
        #[serde(serialize_with = "serialize_lossy")]
        value: Vec<u8>,
    },
    /// `Get`: no such entry (never written, or expired).
    Missing,
    /// `Put`: stored.
    Stored,
    /// The bucket did not answer in time or refused: a create or put may or may not
    /// have happened.
    Failed { reason: String },
}

/// A message the server will not deliver again, as read back from its stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Exhausted {
    pub source: Source,
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

/// How a delivery is settled with the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Settle {
    /// Done with this message: `+ACK`.
    Ack,
    /// Redeliver after `delay_ms`: `-NAK {"delay":..}`.
    Nak { delay_ms: u64 },
    /// Never redeliver: `+TERM`. Always preceded by a confirmed DLQ record.
    Term,
    /// Still working, reset the ack timer: `+WPI`. Not final: the delivery stays.
    Progress,
}

/// Short constructors for the tests' expected commands.
#[cfg(test)]
impl Command {
    pub(crate) fn ack(delivery: DeliveryId) -> Self {
        Command::Settle {
            delivery,
            how: Settle::Ack,
        }
    }

    pub(crate) fn term(delivery: DeliveryId) -> Self {
        Command::Settle {
            delivery,
            how: Settle::Term,
        }
    }

    pub(crate) fn nak(delivery: DeliveryId, delay_ms: u64) -> Self {
        Command::Settle {
            delivery,
            how: Settle::Nak { delay_ms },
        }
    }
}

impl Settle {
    /// Whether the delivery is over after this (everything but `Progress`).
    pub fn is_final(self) -> bool {
        !matches!(self, Settle::Progress)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Command {
    /// Tell the server what became of one delivery.
    Settle {
        delivery: DeliveryId,
        how: Settle,
    },
    Publish(Publish),
    /// A core NATS request (extension call); the outcome comes back as
    /// `Input::RequestDone`. The host enforces `timeout_ms`.
    Request {
        id: RequestId,
        subject: String,
        headers: Headers,
        #[serde(serialize_with = "serialize_lossy")]
        payload: Vec<u8>,
        timeout_ms: u64,
    },
    /// An operation on the shared bucket; the outcome comes back as `Input::KvDone`. The
    /// host enforces its time-out and reports it as `KvOutcome::Failed`.
    Kv {
        id: RequestId,
        op: KvOp,
    },
    /// The answer to an inbound request.
    Respond {
        id: InboundId,
        #[serde(serialize_with = "serialize_lossy")]
        payload: Vec<u8>,
    },
    /// An operator asked (authorized) to reload the policies: the host has them read
    /// again, puts them in force or refuses them whole (`Host::reload`), and answers
    /// inbound `id` with the outcome.
    ReloadPolicies {
        id: InboundId,
    },
}

/// The first value of header `name` (case-insensitive), if any.
pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn serialize_lossy<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(bytes))
}
