//! The router state machine under an arbitrary short script of deliveries, redeliveries,
//! publish outcomes, timer firings and clock steps.
//!
//! The router runs with `RouterConfig::default()` and either no policy or one policy
//! (tenant `acme`, policy `default`, two weighted providers, optionally rate-limited).
//! After every input the commands it emitted are checked against what the harness has
//! confirmed so far:
//! - every `Ack` of a decide-stream delivery comes after a confirmed reply publish (a core
//!   publish) for that delivery's message (stream, stream_seq);
//! - every `Term` comes after a confirmed DLQ publish (a JetStream publish to a subject
//!   ending in `.dlq`, carrying `x-dlq-reason`) for that delivery's message;
//! - every settle (`Ack`, `Nak`, `Term`, `Progress`) names a delivery the router was
//!   given, and each delivery gets at most one final settle, with no `Progress` after it;
//! - no panic.
//!
//! Publishes are attributed to the message whose input produced them: a delivery's
//! message, or the message of the publish whose outcome was fed in. The core owns its
//! timers; a publish a timer fires (a DLQ retry) is attributed by its message id.

#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

use beamline_router::contracts::subjects;
use beamline_router::core::{
    Command, Delivery, DeliveryId, Input, PublishId, PublishKind, PublishOutcome, RecordingEnv,
    Router, RouterConfig, Settle, Source as Stream, Time,
};
use beamline_router::policy::{parse_policy, PolicyStore};

const MAX_STEPS: usize = 64;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum SubjectChoice {
    Decide,
    Result,
    AssignmentAck,
    Other,
}

impl SubjectChoice {
    fn as_str(self) -> &'static str {
        match self {
            SubjectChoice::Decide => subjects::DECIDE,
            SubjectChoice::Result => subjects::RESULT,
            SubjectChoice::AssignmentAck => subjects::ASSIGNMENT_ACK,
            SubjectChoice::Other => "beamline.router.v1.decide.other",
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Tenant {
    Acme,
    Other,
    Empty,
}

impl Tenant {
    fn as_str(self) -> &'static str {
        match self {
            Tenant::Acme => "acme",
            Tenant::Other => "globex",
            Tenant::Empty => "",
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum PolicyChoice {
    Unnamed,
    Default,
    Missing,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum ResultStatus {
    Success,
    Error,
    Timeout,
    Bogus,
}

#[derive(Arbitrary, Debug, Clone)]
enum Body {
    Decide {
        request: u8,
        tenant: Tenant,
        idempotency_key: Option<u8>,
        push_assignment: bool,
        policy: PolicyChoice,
        tiny_task_payload: bool,
    },
    Result {
        assignment: u8,
        tenant: Tenant,
        status: ResultStatus,
        provider: bool,
    },
    Ack {
        assignment: u8,
        accepted: bool,
    },
    Raw(Vec<u8>),
}

impl Body {
    fn render(&self) -> Vec<u8> {
        match self {
            Body::Decide {
                request,
                tenant,
                idempotency_key,
                push_assignment,
                policy,
                tiny_task_payload,
            } => {
                let mut doc = serde_json::json!({
                    "version": "1",
                    "request_id": format!("r-{request}"),
                    "tenant_id": tenant.as_str(),
                    "task": {"type": "text.generate", "payload":
                        if *tiny_task_payload { serde_json::json!({}) }
                        else { serde_json::json!({"text": "hello world"}) }},
                    "push_assignment": push_assignment,
                });
                let obj = doc.as_object_mut().expect("an object");
                if let Some(k) = idempotency_key {
                    obj.insert("idempotency_key".into(), format!("k-{k}").into());
                }
                match policy {
                    PolicyChoice::Unnamed => {}
                    PolicyChoice::Default => {
                        obj.insert("policy_id".into(), "default".into());
                    }
                    PolicyChoice::Missing => {
                        obj.insert("policy_id".into(), "nope".into());
                    }
                }
                serde_json::to_vec(&doc).expect("serialises")
            }
            Body::Result {
                assignment,
                tenant,
                status,
                provider,
            } => {
                let status = match status {
                    ResultStatus::Success => "success",
                    ResultStatus::Error => "error",
                    ResultStatus::Timeout => "timeout",
                    ResultStatus::Bogus => "done",
                };
                let mut doc = serde_json::json!({
                    "version": "1",
                    "assignment_id": format!("a-{assignment}"),
                    "tenant_id": tenant.as_str(),
                    "status": status,
                    "latency_ms": 120,
                    "cost": 0.25,
                });
                if *provider {
                    doc["provider_id"] = "openai".into();
                }
                serde_json::to_vec(&doc).expect("serialises")
            }
            Body::Ack {
                assignment,
                accepted,
            } => serde_json::to_vec(&serde_json::json!({
                "version": "1",
                "assignment_id": format!("a-{assignment}"),
                "tenant_id": "acme",
                "status": if *accepted { "accepted" } else { "rejected" },
            }))
            .expect("serialises"),
            Body::Raw(bytes) => bytes.clone(),
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum ReplyTo {
    Absent,
    Inbox,
    /// A reply subject that looks like a DLQ subject: the harness must not mistake the
    /// reply for a DLQ record.
    DlqLooking,
    Invalid,
}

#[derive(Arbitrary, Debug, Clone)]
struct DeliverSpec {
    subject: SubjectChoice,
    body: Body,
    reply_to: ReplyTo,
    msg_id: bool,
    seq: u8,
    delivered: u8,
}

#[derive(Arbitrary, Debug, Clone)]
enum Step {
    Deliver(DeliverSpec),
    /// The server redelivers an earlier message: same subject, headers, payload and
    /// sequence, delivery count one higher (at most 5).
    Redeliver {
        which: u8,
    },
    /// The outcome of one pending publish.
    Complete {
        which: u8,
        ok: bool,
    },
    /// Outcomes for every pending publish, oldest first.
    CompleteAll {
        ok: bool,
    },
    /// An outcome for a publish id the router may never have used.
    StrayOutcome {
        id: u16,
        ok: bool,
    },
    FireTimer {
        which: u8,
    },
    Advance {
        seconds: u8,
    },
}

/// The policy store: empty, or one policy for tenant `acme` (id `default`).
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Policies {
    Empty,
    Weighted,
    /// The same providers under a rate limit of 1 request/s, burst 2.
    RateLimited,
}

#[derive(Arbitrary, Debug)]
struct RouterInput {
    policies: Policies,
    steps: Vec<Step>,
}

/// Which stream a message came from, as the router tells them apart (by subject).

type Key = (Stream, u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Reply,
    Dlq,
    Other,
}

#[derive(Default)]
struct Harness {
    next_delivery: DeliveryId,
    /// Every delivery handed to the router, and its message.
    deliveries: BTreeMap<DeliveryId, Key>,
    /// Deliveries that got `Ack`, `Nak` or `Term`.
    finished: BTreeSet<DeliveryId>,
    /// Messages delivered so far, for redeliveries: (delivery as first sent, count).
    sent: Vec<Delivery>,
    pending: Vec<(PublishId, Key, Class)>,
    publish_owner: BTreeMap<PublishId, (Key, Class)>,
    confirmed: BTreeSet<(Key, Class)>,
    /// The message of every JetStream message id published so far.
    msg_id_owner: BTreeMap<String, Key>,
}

fn stream_of(config: &RouterConfig, subject: &str) -> Stream {
    if subject == config.result_subject {
        Stream::Result
    } else if subject == config.ack_subject {
        Stream::AssignmentAck
    } else {
        Stream::Decide
    }
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Harness {
    /// Feed one input, attributing what it emits to `owner`, then check the commands.
    fn feed<E: FnMut() -> u64>(
        &mut self,
        router: &mut Router,
        env: &mut RecordingEnv<E>,
        input: Input,
        owner: Option<Key>,
    ) {
        router.handle(input, env);
        for command in env.take() {
            self.check(command, owner);
        }
    }

    fn check(&mut self, command: Command, owner: Option<Key>) {
        match command {
            Command::Publish(p) => {
                let by_msg_id = p.msg_id.as_ref().and_then(|m| self.msg_id_owner.get(m));
                let owner = owner.or(by_msg_id.copied()).unwrap_or_else(|| {
                    panic!("publish {p:?} emitted by an input that belongs to no message")
                });
                if let Some(m) = &p.msg_id {
                    self.msg_id_owner.insert(m.clone(), owner);
                }
                let class = match p.kind {
                    PublishKind::Core => Class::Reply,
                    PublishKind::JetStream
                        if p.subject.ends_with(".dlq")
                            && p.headers.iter().any(|(k, _)| k == "x-dlq-reason") =>
                    {
                        Class::Dlq
                    }
                    PublishKind::JetStream => Class::Other,
                };
                assert!(
                    !self.publish_owner.contains_key(&p.id),
                    "publish id {} used twice",
                    p.id
                );
                self.publish_owner.insert(p.id, (owner, class));
                self.pending.push((p.id, owner, class));
            }
            Command::Settle {
                delivery,
                how: Settle::Ack,
            } => {
                let key = self.finish(delivery, "Ack");
                if key.0 == Stream::Decide {
                    assert!(
                        self.confirmed.contains(&(key, Class::Reply)),
                        "Ack of delivery {delivery} ({key:?}) without a confirmed reply publish"
                    );
                }
            }
            Command::Settle {
                delivery,
                how: Settle::Term,
            } => {
                let key = self.finish(delivery, "Term");
                assert!(
                    self.confirmed.contains(&(key, Class::Dlq)),
                    "Term of delivery {delivery} ({key:?}) without a confirmed DLQ publish"
                );
            }
            Command::Settle {
                delivery,
                how: Settle::Nak { .. },
            } => {
                self.finish(delivery, "Nak");
            }
            Command::Settle {
                delivery,
                how: Settle::Progress,
            } => {
                assert!(
                    self.deliveries.contains_key(&delivery),
                    "InProgress of unknown {delivery}"
                );
                assert!(
                    !self.finished.contains(&delivery),
                    "InProgress of delivery {delivery} after its Ack/Nak/Term"
                );
            }
            Command::Request { .. } | Command::Respond { .. } | Command::Kv { .. } => {}
        }
    }

    fn finish(&mut self, delivery: DeliveryId, what: &str) -> Key {
        let Some(&key) = self.deliveries.get(&delivery) else {
            panic!("{what} of unknown delivery {delivery}");
        };
        assert!(
            self.finished.insert(delivery),
            "{what} of delivery {delivery} ({key:?}), which already got Ack/Nak/Term"
        );
        key
    }
}

fn policies(choice: Policies) -> PolicyStore {
    static STORES: OnceLock<[PolicyStore; 3]> = OnceLock::new();
    let stores = STORES.get_or_init(|| {
        let one = |text: &str| {
            let mut store = PolicyStore::new();
            store.insert(
                "acme",
                parse_policy("default", text).expect("the fixed policy parses"),
            );
            store
        };
        let providers = r#""providers":[{"name":"openai","weight":70},{"name":"anthropic","weight":30}]"#;
        [
            PolicyStore::new(),
            one(&format!("{{{providers}}}")),
            one(&format!(
                r#"{{{providers},"rate_limit":{{"enabled":true,"requests_per_second":1,"burst":2}}}}"#
            )),
        ]
    });
    stores[choice as usize].clone()
}

fuzz_target!(|input: RouterInput| {
    let config = RouterConfig::default();
    let mut router = Router::new(config.clone(), policies(input.policies));
    let mut rng = 7u64;
    let mut env = RecordingEnv::new(Time(1_000_000), move || splitmix(&mut rng));
    let mut h = Harness::default();

    for step in input.steps.into_iter().take(MAX_STEPS) {
        match step {
            Step::Deliver(spec) => {
                let mut headers = Vec::new();
                match spec.reply_to {
                    ReplyTo::Absent => {}
                    ReplyTo::Inbox => headers.push(("Reply-To".into(), "_INBOX.gw.1".into())),
                    ReplyTo::DlqLooking => {
                        headers.push(("Reply-To".into(), "_INBOX.gw.dlq".into()))
                    }
                    ReplyTo::Invalid => headers.push(("Reply-To".into(), "a..b".into())),
                }
                let stream = stream_of(&config, spec.subject.as_str());
                // Streams number their messages independently: the decide, result and
                // ack streams' sequences overlap here as they do on a real server.
                let seq = 1 + u64::from(spec.seq % 16);
                if spec.msg_id {
                    headers.push(("Nats-Msg-Id".into(), format!("m-{seq}")));
                }
                h.next_delivery += 1;
                let d = Delivery {
                    id: h.next_delivery,
                    source: stream,
                    subject: spec.subject.as_str().to_string(),
                    headers,
                    payload: spec.body.render(),
                    stream_seq: seq,
                    delivered: 1 + u64::from(spec.delivered % 5),
                };
                let key = (stream, seq);
                h.deliveries.insert(d.id, key);
                h.sent.push(d.clone());
                h.feed(&mut router, &mut env, Input::Delivery(d), Some(key));
            }
            Step::Redeliver { which } => {
                if h.sent.is_empty() {
                    continue;
                }
                let i = usize::from(which) % h.sent.len();
                if h.sent[i].delivered >= 5 {
                    continue;
                }
                h.next_delivery += 1;
                let mut d = h.sent[i].clone();
                d.id = h.next_delivery;
                d.delivered += 1;
                h.sent[i].delivered = d.delivered;
                let key = (d.source, d.stream_seq);
                h.deliveries.insert(d.id, key);
                h.feed(&mut router, &mut env, Input::Delivery(d), Some(key));
            }
            Step::Complete { which, ok } => {
                if h.pending.is_empty() {
                    continue;
                }
                let (id, key, class) = h.pending.remove(usize::from(which) % h.pending.len());
                complete(&mut h, &mut router, &mut env, id, key, class, ok);
            }
            Step::CompleteAll { ok } => {
                for (id, key, class) in std::mem::take(&mut h.pending) {
                    complete(&mut h, &mut router, &mut env, id, key, class, ok);
                }
            }
            Step::StrayOutcome { id, ok } => {
                let id = u64::from(id);
                // A second outcome for a publish already reported, or one for an id
                // never used: the router must ignore it.
                if h.pending.iter().any(|(p, _, _)| *p == id) {
                    continue;
                }
                let owner = h.publish_owner.get(&id).map(|(k, _)| *k);
                let outcome = if ok {
                    PublishOutcome::Confirmed
                } else {
                    PublishOutcome::Failed {
                        reason: "stray".into(),
                    }
                };
                h.feed(
                    &mut router,
                    &mut env,
                    Input::PublishDone { id, outcome },
                    owner,
                );
            }
            // The core owns its timers: they fire in deadline order, so `which` says how
            // many of the earliest fire now (one to three).
            Step::FireTimer { which } => {
                for _ in 0..=(which % 3) {
                    let Some(at) = router.poll_timeout() else {
                        break;
                    };
                    env.now = Time(env.now.0.max(at.millis()));
                    h.feed(&mut router, &mut env, Input::Timeout, None);
                }
            }
            Step::Advance { seconds } => {
                env.now = env.now.after(u64::from(seconds) * 1_000);
            }
        }
    }
});

fn complete<E: FnMut() -> u64>(
    h: &mut Harness,
    router: &mut Router,
    env: &mut RecordingEnv<E>,
    id: PublishId,
    key: Key,
    class: Class,
    ok: bool,
) {
    let outcome = if ok {
        // Recorded before the router hears of it: an Ack or Term this input causes
        // comes after the confirmation.
        h.confirmed.insert((key, class));
        PublishOutcome::Confirmed
    } else {
        PublishOutcome::Failed {
            reason: "fuzz".into(),
        }
    };
    h.feed(router, env, Input::PublishDone { id, outcome }, Some(key));
}
