//! What travels between the actors and the NATS server: `Up` from a client to the
//! server, `Down` from the server to a client. One enum each, so the network and the
//! trace treat every message alike.

use beamline_router::core::{Headers, KvOp};
use serde::Serialize;

use crate::jetstream::{AckKind, Delivered};
use crate::net::NodeId;

/// The durable consumers of the world, each on its own stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Cons {
    /// `DECIDE` / durable `router`: decide requests, pulled by the router processes.
    Decide,
    /// `RESULTS` / `router-results`: CAF results, pulled by the router processes.
    Results,
    /// `ADVISORIES` / `router-advisories`: the server's MAX_DELIVERIES advisories for the
    /// two consumers above, pulled by the router processes.
    Advisories,
    /// `ASSIGN` / `caf`: assignments, pulled by the CAF workers.
    Assign,
    /// `USAGE` / `usage`: usage events, pulled by the usage consumer.
    Usage,
}

impl Cons {
    pub const ALL: [Cons; 5] = [
        Cons::Decide,
        Cons::Results,
        Cons::Advisories,
        Cons::Assign,
        Cons::Usage,
    ];

    pub fn durable(self) -> &'static str {
        match self {
            Cons::Decide => "router",
            Cons::Results => "router-results",
            Cons::Advisories => "router-advisories",
            Cons::Assign => "caf",
            Cons::Usage => "usage",
        }
    }

    pub fn stream(self) -> &'static str {
        match self {
            Cons::Decide => "DECIDE",
            Cons::Results => "RESULTS",
            Cons::Advisories => "ADVISORIES",
            Cons::Assign => "ASSIGN",
            Cons::Usage => "USAGE",
        }
    }

    pub fn from_durable(durable: &str) -> Option<Cons> {
        Cons::ALL.into_iter().find(|c| c.durable() == durable)
    }
}

/// Client to server.
#[derive(Clone, Debug, Serialize)]
pub enum Up {
    Pull {
        cons: Cons,
        pull: u64,
        batch: u64,
        expires_ms: u64,
    },
    Ack {
        cons: Cons,
        seq: u64,
        kind: AckKind,
    },
    /// A publish; `js` asks for a PubAck (JetStream) instead of a flush confirmation.
    Publish {
        id: u64,
        subject: String,
        headers: Headers,
        #[serde(skip)]
        payload: Vec<u8>,
        js: bool,
    },
    /// A core NATS request; the answer comes back as `Down::Reply { id }`.
    Request {
        id: u64,
        subject: String,
        headers: Headers,
        #[serde(skip)]
        payload: Vec<u8>,
    },
    /// The answer to a request this client received (`Down::Msg` with a reply handle).
    Respond {
        to: NodeId,
        id: u64,
        #[serde(skip)]
        payload: Vec<u8>,
    },
    /// An operation on the shared bucket, as the core asked for it. A create's follow-up
    /// read of an existing entry (the client's) is folded into the same round trip.
    Kv {
        id: u64,
        #[serde(skip)]
        op: KvOp,
    },
    /// `STREAM.MSG.GET`: read one message of a stream by sequence.
    DirectGet {
        id: u64,
        stream: String,
        seq: u64,
    },
    /// `CONSUMER.INFO`: the consumer's pending count.
    ConsumerInfo {
        cons: Cons,
    },
}

/// How a core request ended, at the requester.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum ReplyOutcome {
    Reply(#[serde(skip)] Vec<u8>),
    NoResponders,
}

/// How a `KvCreate` ended, at the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum KvReply {
    Created,
    Exists(#[serde(skip)] Vec<u8>),
    /// A read: the entry's value, if any.
    Value(#[serde(skip)] Option<Vec<u8>>),
    /// A write stored.
    Stored,
    Refused(String),
}

/// A message read back from a stream.
#[derive(Clone, Debug, Serialize)]
pub struct GotMessage {
    pub subject: String,
    pub headers: Headers,
    #[serde(skip)]
    pub payload: Vec<u8>,
}

/// Server to client.
#[derive(Clone, Debug, Serialize)]
pub enum Down {
    Delivery {
        cons: Cons,
        #[serde(serialize_with = "delivered_brief")]
        d: Delivered,
        /// Messages the consumer has not delivered yet (the delivery's metadata).
        pending: u64,
    },
    /// A publish's confirmation: its PubAck, or the flush of a core publish.
    PubAck {
        id: u64,
        error: Option<String>,
    },
    /// A core message routed to this client's subscription, with a reply handle for a
    /// request: (requester, request id).
    Msg {
        subject: String,
        headers: Headers,
        #[serde(skip)]
        payload: Vec<u8>,
        reply: Option<(NodeId, u64)>,
    },
    Reply {
        id: u64,
        outcome: ReplyOutcome,
    },
    Got {
        id: u64,
        msg: Option<GotMessage>,
    },
    Kv {
        id: u64,
        reply: KvReply,
    },
    /// The answer to `Up::ConsumerInfo`.
    ConsumerInfo {
        cons: Cons,
        pending: u64,
    },
    /// `409 Leadership Change` on pull request `pull`: the consumer's new leader says
    /// it will not serve it (async-nats then pulls again at once).
    PullTerminated {
        cons: Cons,
        pull: u64,
    },
}

fn delivered_brief<S: serde::Serializer>(d: &Delivered, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    let mut st = s.serialize_struct("Delivered", 3)?;
    st.serialize_field("seq", &d.stream_seq)?;
    st.serialize_field("delivered", &d.delivered)?;
    st.serialize_field("pull", &d.pull)?;
    st.end()
}

impl Up {
    /// A short name for traces and timelines.
    pub fn label(&self) -> String {
        match self {
            Up::Pull { cons, .. } => format!("pull {}", cons.durable()),
            Up::Ack { cons, seq, kind } => format!("{} {} #{seq}", ack_word(kind), cons.durable()),
            Up::Publish { subject, .. } => format!("pub {subject}"),
            Up::Request { subject, .. } => format!("req {subject}"),
            Up::Respond { .. } => "respond".to_string(),
            Up::Kv { op, .. } => match op {
                KvOp::Create { key, .. } => format!("kv create {key}"),
                KvOp::Get { key } => format!("kv get {key}"),
                KvOp::Put { key, .. } => format!("kv put {key}"),
            },
            Up::DirectGet { seq, .. } => format!("get #{seq}"),
            Up::ConsumerInfo { cons } => format!("info {}", cons.durable()),
        }
    }
}

impl Down {
    pub fn label(&self) -> String {
        match self {
            Down::Delivery { cons, d, .. } => {
                format!("{} #{} ({})", cons.durable(), d.stream_seq, d.delivered)
            }
            Down::PubAck { error: None, .. } => "puback".to_string(),
            Down::PubAck { error: Some(_), .. } => "puback error".to_string(),
            Down::Msg { subject, .. } => format!("msg {subject}"),
            Down::Reply {
                outcome: ReplyOutcome::NoResponders,
                ..
            } => "no responders".to_string(),
            Down::Reply { .. } => "reply".to_string(),
            Down::Got { .. } => "got".to_string(),
            Down::ConsumerInfo { pending, .. } => format!("info pending={pending}"),
            Down::PullTerminated { cons, .. } => {
                format!("409 leadership change {}", cons.durable())
            }
            Down::Kv { reply, .. } => match reply {
                KvReply::Created => "kv created".to_string(),
                KvReply::Exists(_) => "kv exists".to_string(),
                KvReply::Value(Some(_)) => "kv value".to_string(),
                KvReply::Value(None) => "kv missing".to_string(),
                KvReply::Stored => "kv stored".to_string(),
                KvReply::Refused(_) => "kv refused".to_string(),
            },
        }
    }
}

pub fn ack_word(kind: &AckKind) -> &'static str {
    match kind {
        AckKind::Ack => "ack",
        AckKind::Nak { .. } => "nak",
        AckKind::Term => "term",
        AckKind::Progress => "wpi",
    }
}
