//! An extension service answering the core's `Command::Request`s (core NATS
//! request-reply): `normalize_text` (pre-processor), `pii_guard` (validator), `mask_pii`
//! (post-processor), as the built-in registry names them.
//!
//! During the chaos phase a service behaves as its seed drew: healthy, slow (often past
//! the caller's timeout), flapping (unsubscribed every few seconds, so calls get "no
//! responders", and now and then a garbage answer) or dead (never subscribed). In the
//! liveness phase every service is healthy.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{ActorTimer, Out};
use crate::faults::ExtBehaviour;
use crate::net::NodeId;
use crate::rng::SimRng;
use crate::topology::EXTENSIONS;
use crate::wire::Up;

#[derive(Debug)]
pub struct Extension {
    index: usize,
    behaviour: ExtBehaviour,
    /// Flapping services are unsubscribed while this is false.
    available: bool,
    timeout_ms: u64,
    rng: SimRng,
    answers: BTreeMap<u64, Vec<u8>>,
    next: u64,
}

impl Extension {
    pub fn new(index: usize, behaviour: ExtBehaviour, timeout_ms: u64, rng: SimRng) -> Self {
        Extension {
            index,
            behaviour,
            available: true,
            timeout_ms,
            rng,
            answers: BTreeMap::new(),
            next: 0,
        }
    }

    pub fn id(&self) -> &'static str {
        EXTENSIONS[self.index]
    }

    pub fn behaviour(&self) -> ExtBehaviour {
        self.behaviour
    }

    /// Whether the service has a subscription the server can route a call to.
    pub fn subscribed(&self) -> bool {
        match self.behaviour {
            ExtBehaviour::Dead => false,
            ExtBehaviour::Flapping => self.available,
            ExtBehaviour::Healthy | ExtBehaviour::Slow => true,
        }
    }

    /// Start flapping (called once at the start of the run).
    pub fn start(&mut self, now: u64, out: &mut Out) {
        if self.behaviour == ExtBehaviour::Flapping {
            out.timer(now + self.rng.between(500, 5_000), ActorTimer::ExtFlap);
        }
    }

    pub fn flap(&mut self, now: u64, out: &mut Out) {
        if self.behaviour != ExtBehaviour::Flapping {
            return;
        }
        self.available = !self.available;
        out.timer(now + self.rng.between(500, 10_000), ActorTimer::ExtFlap);
    }

    /// The liveness phase: healthy from now on.
    pub fn heal(&mut self) {
        self.behaviour = ExtBehaviour::Healthy;
        self.available = true;
    }

    /// A call arrived: answer it after a while (or, for a slow service, maybe too late).
    pub fn on_request(&mut self, to: NodeId, id: u64, payload: &[u8], now: u64, out: &mut Out) {
        let latency = match self.behaviour {
            ExtBehaviour::Slow if self.rng.chance(500) => {
                self.rng.between(self.timeout_ms, self.timeout_ms * 3)
            }
            _ => self.rng.between(1, 20),
        };
        let garbage = self.behaviour == ExtBehaviour::Flapping && self.rng.chance(100);
        let answer = if garbage {
            b"<html>502 Bad Gateway</html>".to_vec()
        } else {
            answer(self.index, payload)
        };
        self.next += 1;
        self.answers.insert(self.next, answer);
        out.timer(
            now + latency,
            ActorTimer::ExtAnswer {
                to,
                id,
                seq: self.next,
            },
        );
    }

    /// The answer is ready: send it.
    pub fn answer_ready(&mut self, to: NodeId, id: u64, seq: u64, out: &mut Out) {
        if let Some(payload) = self.answers.remove(&seq) {
            out.send(Up::Respond { to, id, payload });
        }
    }
}

/// What each built-in extension answers (docs/API_CONTRACTS.md, "Extensions").
pub fn answer(index: usize, request: &[u8]) -> Vec<u8> {
    let req: Value = serde_json::from_slice(request).unwrap_or(Value::Null);
    let text = req
        .pointer("/payload/text")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let reply = match EXTENSIONS[index] {
        "normalize_text" => json!({
            "payload": {"text": text.to_lowercase()},
            "metadata": {"normalized": true},
        }),
        "pii_guard" => {
            if contains_pii(&text) {
                json!({"valid": false, "reason": "pii_detected"})
            } else {
                json!({"valid": true})
            }
        }
        _ => json!({"metadata": {"pii_masked": true}}),
    };
    reply.to_string().into_bytes()
}

/// The gateway marks PII with an SSN; any case.
pub fn contains_pii(text: &str) -> bool {
    text.to_lowercase().contains("ssn")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_validator_refuses_pii_and_the_normalizer_lowercases() {
        let call = |text: &str| json!({"payload": {"text": text}}).to_string().into_bytes();
        let v: Value = serde_json::from_slice(&answer(1, &call("my SSN is 1"))).unwrap();
        assert_eq!(v["valid"], false);
        let v: Value = serde_json::from_slice(&answer(1, &call("hello"))).unwrap();
        assert_eq!(v["valid"], true);
        let v: Value = serde_json::from_slice(&answer(0, &call("Hello"))).unwrap();
        assert_eq!(v["payload"]["text"], "hello");
    }

    #[test]
    fn dead_services_are_never_subscribed_and_healing_fixes_them() {
        let mut e = Extension::new(0, ExtBehaviour::Dead, 100, SimRng::stream(1, "x"));
        assert!(!e.subscribed());
        e.heal();
        assert!(e.subscribed());
    }
}
