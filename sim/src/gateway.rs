//! The gateway actor: a client that publishes decide requests into the stream at random
//! times, each with its own reply inbox in `Reply-To` and a `Nats-Msg-Id`, and collects
//! the replies that reach it. A few requests are published twice (a gateway retry after a
//! lost PubAck) so that stream dedupe is exercised. Its connection is always healthy in
//! v0: faults are injected on the router's side.

use std::collections::BTreeMap;

use beamline_router::contracts::subjects::{HEADER_MSG_ID, HEADER_REPLY_TO};
use beamline_router::core::Headers;
use serde::Serialize;
use serde_json::json;

use crate::policies::{TENANT_WITHOUT_POLICY, TENANT_WITH_POLICY};
use crate::rng::SimRng;

/// Reply inboxes look like `_INBOX.gw.<request index>`, as a NATS request's would.
const INBOX_PREFIX: &str = "_INBOX.gw.";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum RequestKind {
    /// Well-formed, for a tenant with a policy: expect a `DecideResponse`.
    Valid,
    /// Well-formed, for a tenant without a policy: expect an `ErrorResponse`.
    NoPolicy,
    /// Refused at intake: expect an error reply and a DLQ record.
    Invalid(Invalid),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Invalid {
    BadJson,
    MissingTenant,
    WrongVersion,
}

#[derive(Clone, Debug)]
pub struct PlannedRequest {
    pub index: usize,
    pub kind: RequestKind,
    pub request_id: String,
    pub msg_id: String,
    pub inbox: String,
    pub payload: Vec<u8>,
    pub publish_at: u64,
    /// A second publish of the same message (same `Nats-Msg-Id`), if planned.
    pub retry_at: Option<u64>,
}

impl PlannedRequest {
    pub fn headers(&self) -> Headers {
        vec![
            (HEADER_MSG_ID.to_string(), self.msg_id.clone()),
            (HEADER_REPLY_TO.to_string(), self.inbox.clone()),
        ]
    }
}

#[derive(Debug)]
pub struct Gateway {
    requests: Vec<PlannedRequest>,
    /// request index -> replies received, in arrival order.
    replies: BTreeMap<usize, Vec<Vec<u8>>>,
    /// Replies to a subject the gateway did not expect (not one of its inboxes).
    stray_replies: u64,
}

impl Gateway {
    /// Plan `count` requests spread over `window_ms`.
    pub fn plan(rng: &mut SimRng, count: u64, window_ms: u64) -> Gateway {
        let requests = (0..count as usize)
            .map(|index| {
                let kind = match rng.below(100) {
                    0..=79 => RequestKind::Valid,
                    80..=87 => RequestKind::NoPolicy,
                    _ => RequestKind::Invalid(*rng.pick(&[
                        Invalid::BadJson,
                        Invalid::MissingTenant,
                        Invalid::WrongVersion,
                    ])),
                };
                let publish_at = rng.below(window_ms.max(1));
                let retry_at = rng
                    .chance(50)
                    .then(|| publish_at + rng.between(1_000, 3_000));
                let request_id = format!("r-{index}");
                PlannedRequest {
                    index,
                    kind,
                    payload: payload(kind, &request_id, index),
                    msg_id: format!("gw-{index}"),
                    inbox: format!("{INBOX_PREFIX}{index}"),
                    request_id,
                    publish_at,
                    retry_at,
                }
            })
            .collect();
        Gateway {
            requests,
            replies: BTreeMap::new(),
            stray_replies: 0,
        }
    }

    pub fn requests(&self) -> &[PlannedRequest] {
        &self.requests
    }

    pub fn request(&self, index: usize) -> &PlannedRequest {
        &self.requests[index]
    }

    /// The request whose inbox is `subject`, if it is one of ours.
    pub fn inbox_owner(&self, subject: &str) -> Option<usize> {
        let index: usize = subject.strip_prefix(INBOX_PREFIX)?.parse().ok()?;
        (index < self.requests.len()).then_some(index)
    }

    /// The request with this `request_id`, for replies sent to the default reply subject.
    pub fn by_request_id(&self, request_id: &str) -> Option<usize> {
        let index: usize = request_id.strip_prefix("r-")?.parse().ok()?;
        (index < self.requests.len()).then_some(index)
    }

    pub fn on_reply(&mut self, subject: &str, payload: &[u8]) {
        match self.inbox_owner(subject) {
            Some(i) => self.replies.entry(i).or_default().push(payload.to_vec()),
            None => self.stray_replies += 1,
        }
    }

    pub fn replies_received(&self) -> usize {
        self.replies.values().map(Vec::len).sum()
    }
}

fn payload(kind: RequestKind, request_id: &str, index: usize) -> Vec<u8> {
    let text = format!("hello world {index}");
    let doc = match kind {
        RequestKind::Valid | RequestKind::NoPolicy => {
            let tenant = if kind == RequestKind::Valid {
                TENANT_WITH_POLICY
            } else {
                TENANT_WITHOUT_POLICY
            };
            json!({
                "version": "1",
                "request_id": request_id,
                "tenant_id": tenant,
                "task": {"type": "text.generate", "payload": {"text": text}},
                "idempotency_key": request_id,
            })
        }
        RequestKind::Invalid(Invalid::BadJson) => {
            return format!(r#"{{"version":"1","request_id":"{request_id}","task":"#).into_bytes();
        }
        RequestKind::Invalid(Invalid::MissingTenant) => json!({
            "version": "1",
            "request_id": request_id,
            "task": {"type": "text.generate", "payload": {"text": text}},
        }),
        RequestKind::Invalid(Invalid::WrongVersion) => json!({
            "version": "2",
            "request_id": request_id,
            "tenant_id": TENANT_WITH_POLICY,
            "task": {"type": "text.generate", "payload": {"text": text}},
        }),
    };
    doc.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_a_function_of_the_seed() {
        let a = Gateway::plan(&mut SimRng::stream(5, "gateway"), 50, 60_000);
        let b = Gateway::plan(&mut SimRng::stream(5, "gateway"), 50, 60_000);
        let key = |g: &Gateway| -> Vec<(u64, Vec<u8>)> {
            g.requests()
                .iter()
                .map(|r| (r.publish_at, r.payload.clone()))
                .collect()
        };
        assert_eq!(key(&a), key(&b));
        assert!(a.requests().iter().any(|r| r.kind == RequestKind::Valid));
    }

    #[test]
    fn inboxes_map_back_to_requests() {
        let g = Gateway::plan(&mut SimRng::stream(1, "gateway"), 3, 1_000);
        assert_eq!(g.inbox_owner("_INBOX.gw.2"), Some(2));
        assert_eq!(g.inbox_owner("_INBOX.gw.3"), None);
        assert_eq!(g.inbox_owner("beamline.router.v1.decide.reply"), None);
        assert_eq!(g.by_request_id("r-1"), Some(1));
    }
}
