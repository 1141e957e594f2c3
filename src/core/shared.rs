//! Answers shared between router instances through a key-value bucket (NATS KV in
//! production, a model of it in the simulator).
//!
//! With one instance the answer book in memory is enough. With several sharing one
//! durable consumer, a gateway's retry (same tenant and idempotency key, a new message)
//! may land on another instance, which has never seen the key. So, with
//! `RouterConfig::shared_idempotency` on, a keyed answer is *claimed* in the bucket
//! before it is published: a create-if-absent of the whole answer (reply bytes and the
//! assignment decided with it). Whoever creates the entry first owns the answer; an
//! instance that finds the entry already there publishes the bytes it holds instead of
//! its own, so every instance says the same thing about the same key.
//!
//! Sticky sessions are shared the same way when the bucket is on: a session with no
//! live mapping in this instance is looked up in the bucket before the provider is
//! chosen, and the mapping chosen (or refreshed) is written back.
//!
//! This module has one job: the bucket keys and the stored values. The flow lives in
//! `flow_decide.rs`.

use serde::{Deserialize, Serialize};

use super::answers::StoredPublish;
use super::digest::sha256_hex;

/// The bucket key of a (tenant, idempotency key). Hashed: NATS KV keys allow only
/// `[-/_=.a-zA-Z0-9]`, and idempotency keys are free text. A NUL separates the two parts
/// so ("ab", "c") and ("a", "bc") never meet.
pub fn bucket_key(tenant: &str, idempotency_key: &str) -> String {
    hashed_key("idem", tenant, idempotency_key)
}

fn hashed_key(prefix: &str, tenant: &str, name: &str) -> String {
    let mut joined = Vec::with_capacity(tenant.len() + name.len() + 1);
    joined.extend_from_slice(tenant.as_bytes());
    joined.push(0);
    joined.extend_from_slice(name.as_bytes());
    format!("{prefix}.{}", sha256_hex(&joined))
}

/// What the bucket holds for a key. Versioned, so a rolling upgrade can tell an entry it
/// cannot read from a foreign answer.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Envelope {
    v: u32,
    /// The reply, exactly as published (always UTF-8 JSON: the core wrote it).
    reply: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    assignment: Option<SharedAssignment>,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SharedAssignment {
    subject: String,
    headers: Vec<(String, String)>,
    payload: String,
    msg_id: String,
}

const VERSION: u32 = 1;

/// An answer as it travels through the bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedAnswer {
    pub reply: Vec<u8>,
    pub assignment: Option<StoredPublish>,
}

impl SharedAnswer {
    /// `None` if it cannot be encoded (never, for the types it holds): nothing is
    /// written then, rather than an empty value.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let envelope = Envelope {
            v: VERSION,
            reply: String::from_utf8_lossy(&self.reply).into_owned(),
            assignment: self.assignment.as_ref().map(|a| SharedAssignment {
                subject: a.subject.clone(),
                headers: a.headers.clone(),
                payload: String::from_utf8_lossy(&a.payload).into_owned(),
                msg_id: a.msg_id.clone(),
            }),
        };
        serde_json::to_vec(&envelope).ok()
    }

    /// `None` for a value this version cannot read (another version, or not ours).
    pub fn decode(bytes: &[u8]) -> Option<SharedAnswer> {
        let envelope: Envelope = serde_json::from_slice(bytes).ok()?;
        if envelope.v != VERSION {
            return None;
        }
        Some(SharedAnswer {
            reply: envelope.reply.into_bytes(),
            assignment: envelope.assignment.map(|a| StoredPublish {
                subject: a.subject,
                headers: a.headers,
                payload: a.payload.into_bytes(),
                msg_id: a.msg_id,
            }),
        })
    }
}

/// The bucket key of a sticky session (tenant, session value), hashed like
/// `bucket_key`.
pub fn sticky_key(tenant: &str, session: &str) -> String {
    hashed_key("sticky", tenant, session)
}

/// A sticky session as the bucket holds it: the provider and when the mapping ends
/// (milliseconds on the instances' clocks, which in production are wall clocks).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedSession {
    pub provider: String,
    pub expires_at_ms: u64,
}

impl SharedSession {
    /// `None` if it cannot be encoded (never, for the types it holds): nothing is
    /// written then, rather than an empty value.
    pub fn encode(&self) -> Option<Vec<u8>> {
        serde_json::to_vec(self).ok()
    }

    pub fn decode(bytes: &[u8]) -> Option<SharedSession> {
        serde_json::from_slice(bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_kv_keys_and_scoped_by_tenant() {
        let k = bucket_key("acme", "order 17/ü");
        assert!(k
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-/_=.".contains(c)));
        assert_ne!(k, bucket_key("globex", "order 17/ü"));
        assert_ne!(bucket_key("ab", "c"), bucket_key("a", "bc"));
        assert_eq!(k, bucket_key("acme", "order 17/ü"));
    }

    #[test]
    fn answers_round_trip_with_and_without_assignment() {
        let plain = SharedAnswer {
            reply: br#"{"ok":true,"decision":{"provider_id":"openai"}}"#.to_vec(),
            assignment: None,
        };
        assert_eq!(SharedAnswer::decode(&plain.encode().unwrap()), Some(plain));
        let with = SharedAnswer {
            reply: br#"{"ok":true}"#.to_vec(),
            assignment: Some(StoredPublish {
                subject: "caf.exec.assign.v1".into(),
                headers: vec![("Nats-Msg-Id".into(), "a-1".into())],
                payload: br#"{"assignment_id":"a-1"}"#.to_vec(),
                msg_id: "a-1".into(),
            }),
        };
        assert_eq!(SharedAnswer::decode(&with.encode().unwrap()), Some(with));
    }

    #[test]
    fn sessions_round_trip_and_keys_differ_from_answers() {
        let s = SharedSession {
            provider: "openai".into(),
            expires_at_ms: 42,
        };
        assert_eq!(SharedSession::decode(&s.encode().unwrap()), Some(s));
        assert_ne!(sticky_key("acme", "u-1"), bucket_key("acme", "u-1"));
        assert_eq!(SharedSession::decode(b"{}"), None);
    }

    #[test]
    fn foreign_values_are_not_read() {
        assert_eq!(SharedAnswer::decode(b"not json"), None);
        assert_eq!(SharedAnswer::decode(br#"{"v":2,"reply":"{}"}"#), None);
    }
}
