//! Router tests of the flows beyond the plain decide path: extensions, assignments,
//! results, rate limits, backpressure, inbound requests.

use super::*;
use crate::contracts::{DecideResponse, ErrorResponse, ExecAssignment, UsageEvent};
use crate::core::env::{RecordingEnv, Time};
use crate::core::io::{InboundRequest, KvOp, KvOutcome, RequestOutcome};
use crate::core::io::{Publish, PublishKind};
use crate::policy::parse_policy;
use serde_json::{json, Value};

type Env = RecordingEnv<Box<dyn FnMut() -> u64>>;

fn env() -> Env {
    let mut x = 11u64;
    RecordingEnv::new(
        Time(1_000_000),
        Box::new(move || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x ^ (x >> 31)
        }),
    )
}

fn router_with(policy: &str, tweak: impl FnOnce(&mut RouterConfig)) -> Router {
    let mut store = PolicyStore::new();
    store.insert("acme", parse_policy("default", policy).unwrap());
    let mut config = RouterConfig {
        max_deliver: 3,
        ..RouterConfig::default()
    };
    tweak(&mut config);
    Router::new(config, store)
}

fn decide(id: DeliveryId, seq: u64, body: Value) -> Input {
    Input::Delivery(Delivery {
        id,
        source: Source::Decide,
        subject: "beamline.router.v1.decide".into(),
        headers: vec![
            ("Reply-To".into(), "_INBOX.gw".into()),
            (
                "traceparent".into(),
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            ),
        ],
        digest: PayloadDigest::of(&body.to_string().into_bytes()),
        payload: body.to_string().into_bytes(),
        stream_seq: seq,
        delivered: 1,
    })
}

fn request(id: &str) -> Value {
    json!({"version":"1","request_id":id,"tenant_id":"acme","task":{"type":"t","payload":{"text":"hello world"}},"metadata":{"user_id":"u-1"}})
}

fn result_msg(id: DeliveryId, seq: u64, body: Value) -> Input {
    Input::Delivery(Delivery {
        id,
        source: Source::Result,
        subject: "caf.exec.result.v1".into(),
        headers: vec![],
        digest: PayloadDigest::of(&body.to_string().into_bytes()),
        payload: body.to_string().into_bytes(),
        stream_seq: seq,
        delivered: 1,
    })
}

fn confirm_all(r: &mut Router, env: &mut Env, cmds: &[Command]) -> Vec<Command> {
    for c in cmds {
        if let Command::Publish(p) = c {
            r.handle(
                Input::PublishDone {
                    id: p.id,
                    outcome: PublishOutcome::Confirmed,
                },
                env,
            );
        }
    }
    env.take()
}

fn publishes(cmds: &[Command]) -> Vec<Publish> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Publish(p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

const WEIGHTED: &str =
    r#"{"providers":[{"name":"openai","weight":70},{"name":"anthropic","weight":30}]}"#;

#[test]
fn push_assignment_publishes_an_exec_assignment_and_acks_after_both() {
    let mut r = router_with(WEIGHTED, |_| {});
    let mut env = env();
    let mut body = request("r-1");
    body["push_assignment"] = json!(true);
    body["trace_id"] = json!("4bf92f3577b34da6a3ce929d0e0e4736");
    r.handle(decide(1, 1, body), &mut env);
    let cmds = env.take();
    let ps = publishes(&cmds);
    assert_eq!(ps.len(), 2);
    let reply: DecideResponse = serde_json::from_slice(&ps[0].payload).unwrap();
    let a: ExecAssignment = serde_json::from_slice(&ps[1].payload).unwrap();
    assert_eq!(ps[1].subject, "caf.exec.assign.v1");
    assert_eq!(ps[1].kind, PublishKind::JetStream);
    assert_eq!(ps[1].msg_id.as_deref(), Some(a.assignment_id.as_str()));
    assert_eq!(a.executor.provider_id, reply.decision.provider_id);
    assert_eq!(a.job["type"], "t");
    assert_eq!(a.options.deadline_ms, 5_000);
    let tp = ps[1]
        .headers
        .iter()
        .find(|(k, _)| k == "traceparent")
        .unwrap();
    assert!(
        tp.1.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{tp:?}"
    );

    // The reply alone is not enough.
    r.handle(
        Input::PublishDone {
            id: ps[0].id,
            outcome: PublishOutcome::Confirmed,
        },
        &mut env,
    );
    assert!(env.take().is_empty());
    // A failed assignment naks; the redelivery repeats the same assignment id.
    r.handle(
        Input::PublishDone {
            id: ps[1].id,
            outcome: PublishOutcome::Failed {
                reason: "timeout".into(),
            },
        },
        &mut env,
    );
    assert!(matches!(
        env.take()[..],
        [Command::Settle {
            delivery: 1,
            how: Settle::Nak { .. }
        }]
    ));
    let mut again = request("r-1");
    again["push_assignment"] = json!(true);
    again["trace_id"] = json!("4bf92f3577b34da6a3ce929d0e0e4736");
    let Input::Delivery(mut d) = decide(2, 1, again) else {
        unreachable!()
    };
    d.delivered = 2;
    r.handle(Input::Delivery(d), &mut env);
    let cmds = env.take();
    let ps2 = publishes(&cmds);
    assert_eq!(ps2[0].payload, ps[0].payload, "same reply");
    assert_eq!(ps2[1].payload, ps[1].payload, "same assignment");
    assert_eq!(confirm_all(&mut r, &mut env, &cmds), vec![Command::ack(2)]);
}

#[test]
fn assignment_kill_switch_skips_it() {
    let mut r = router_with(WEIGHTED, |c| c.assignment.enabled = false);
    let mut env = env();
    let mut body = request("r-1");
    body["push_assignment"] = json!("true");
    r.handle(decide(1, 1, body), &mut env);
    assert_eq!(publishes(&env.take()).len(), 1);
    assert_eq!(r.stats().assignments_skipped, 1);
}

const WITH_EXTENSIONS: &str = r#"{"providers":[{"name":"openai","weight":100}],
    "pre":[{"id":"normalize_text","mode":"required"}],
    "validators":[{"id":"pii_guard","on_fail":"block"}],
    "post":[{"id":"mask_pii","mode":"optional"}]}"#;

fn request_of(cmds: &[Command]) -> (u64, String, u64) {
    match cmds {
        [Command::Request {
            id,
            subject,
            timeout_ms,
            ..
        }] => (*id, subject.clone(), *timeout_ms),
        other => panic!("expected one request, got {other:?}"),
    }
}

#[test]
fn extension_pipeline_runs_through_requests() {
    let mut r = router_with(WITH_EXTENSIONS, |_| {});
    let mut env = env();
    r.handle(decide(1, 1, request("r-1")), &mut env);
    let (id, subject, timeout) = request_of(&env.take());
    assert_eq!(
        (subject.as_str(), timeout),
        ("beamline.ext.pre.normalize_text.v1", 100)
    );
    r.handle(
        Input::RequestDone {
            id,
            outcome: RequestOutcome::Reply {
                payload: br#"{"metadata":{"lang":"en"}}"#.to_vec(),
            },
        },
        &mut env,
    );
    let (id, subject, _) = request_of(&env.take());
    assert_eq!(subject, "beamline.ext.validate.pii_guard.v1");
    r.handle(
        Input::RequestDone {
            id,
            outcome: RequestOutcome::Reply {
                payload: br#"{"valid":true}"#.to_vec(),
            },
        },
        &mut env,
    );
    let (id, subject, _) = request_of(&env.take());
    assert_eq!(subject, "beamline.ext.post.mask_pii.v1");
    r.handle(
        Input::RequestDone {
            id,
            outcome: RequestOutcome::Timeout,
        },
        &mut env,
    );
    let cmds = env.take();
    let reply: DecideResponse = serde_json::from_slice(&publishes(&cmds)[0].payload).unwrap();
    let meta = reply.decision.metadata.unwrap();
    assert_eq!(meta["lang"], "en");
    assert_eq!(
        meta["executed_extensions"],
        json!([
        {"type":"pre","id":"normalize_text","status":"ok"},
        {"type":"validator","id":"pii_guard","status":"ok"},
        {"type":"post","id":"mask_pii","status":"warn"}])
    );
    assert_eq!(confirm_all(&mut r, &mut env, &cmds), vec![Command::ack(1)]);
}

#[test]
fn blocked_validator_answers_an_error_and_acks() {
    let mut r = router_with(WITH_EXTENSIONS, |_| {});
    let mut env = env();
    r.handle(decide(1, 1, request("r-1")), &mut env);
    let (id, _, _) = request_of(&env.take());
    r.handle(
        Input::RequestDone {
            id,
            outcome: RequestOutcome::Reply {
                payload: b"{}".to_vec(),
            },
        },
        &mut env,
    );
    let (id, _, _) = request_of(&env.take());
    r.handle(
        Input::RequestDone {
            id,
            outcome: RequestOutcome::Reply {
                payload: br#"{"valid":false,"reason":"pii"}"#.to_vec(),
            },
        },
        &mut env,
    );
    let cmds = env.take();
    let err: ErrorResponse = serde_json::from_slice(&publishes(&cmds)[0].payload).unwrap();
    assert_eq!(err.error.code.as_str(), "validator_blocked");
    assert_eq!(err.error.details.unwrap()["extension_id"], "pii_guard");
    assert_eq!(confirm_all(&mut r, &mut env, &cmds), vec![Command::ack(1)]);
}

#[test]
fn slow_extension_does_not_block_other_requests() {
    let mut r = router_with(WITH_EXTENSIONS, |_| {});
    let mut env = env();
    r.handle(decide(1, 1, request("r-1")), &mut env);
    let (slow, _, _) = request_of(&env.take());
    // A second request goes all the way while the first waits.
    r.handle(decide(2, 2, request("r-2")), &mut env);
    for payload in [&b"{}"[..], br#"{"valid":true}"#, b"{}"] {
        let (id, _, _) = request_of(&env.take());
        r.handle(
            Input::RequestDone {
                id,
                outcome: RequestOutcome::Reply {
                    payload: payload.to_vec(),
                },
            },
            &mut env,
        );
    }
    let cmds = env.take();
    assert_eq!(confirm_all(&mut r, &mut env, &cmds), vec![Command::ack(2)]);
    assert_eq!(r.in_flight(), 1);
    // The first one times out, with a retry timer for normalize_text? Its retry is 0: fails.
    r.handle(
        Input::RequestDone {
            id: slow,
            outcome: RequestOutcome::Timeout,
        },
        &mut env,
    );
    let cmds = env.take();
    let err: ErrorResponse = serde_json::from_slice(&publishes(&cmds)[0].payload).unwrap();
    assert_eq!(err.error.code.as_str(), "extension_timeout");
}

#[test]
fn long_pipelines_keep_the_message_alive() {
    let mut r = router_with(WITH_EXTENSIONS, |c| c.ack_wait_ms = 1_000);
    let mut env = env();
    r.handle(decide(1, 1, request("r-1")), &mut env);
    let (id, _, _) = request_of(&env.take());
    env.now = Time(env.now.0 + 600);
    r.handle(
        Input::RequestDone {
            id,
            outcome: RequestOutcome::Reply {
                payload: b"{}".to_vec(),
            },
        },
        &mut env,
    );
    let cmds = env.take();
    assert!(
        cmds.contains(&Command::Settle {
            delivery: 1,
            how: Settle::Progress
        }),
        "{cmds:?}"
    );
}

#[test]
fn rate_limit_refuses_with_retry_after() {
    let mut r = router_with(
        r#"{"providers":[{"name":"openai","weight":100}],"rate_limit":{"enabled":true,"requests_per_second":1,"burst":2}}"#,
        |_| {},
    );
    let mut env = env();
    let mut codes = Vec::new();
    for seq in 1..=3 {
        r.handle(decide(seq, seq, request(&format!("r-{seq}"))), &mut env);
        let cmds = env.take();
        let body: Value = serde_json::from_slice(&publishes(&cmds)[0].payload).unwrap();
        codes.push(body["ok"].as_bool().unwrap());
        if seq == 3 {
            assert_eq!(body["error"]["code"], "rate_limited");
            assert_eq!(body["error"]["details"]["retry_after_seconds"], 1);
        }
        confirm_all(&mut r, &mut env, &cmds);
    }
    assert_eq!(codes, [true, true, false]);
    assert_eq!(r.stats().rate_limited, 1);
}

#[test]
fn active_backpressure_naks_before_parsing() {
    let mut r = router_with(WEIGHTED, |c| {
        c.backpressure.queue_overload = 10;
        c.backpressure.inflight_overload = 0;
    });
    let mut env = env();
    r.handle(Input::ConsumerPending { pending: 11 }, &mut env);
    // One in flight (inflight > 0) plus pending > 10: two flags, active.
    r.handle(decide(1, 1, request("r-1")), &mut env);
    env.take();
    r.handle(decide(2, 2, json!("not even a request")), &mut env);
    assert_eq!(env.take(), vec![Command::nak(2, 30_000)]);
    assert_eq!(r.stats().backpressure_naks, 1);
    r.handle(
        Input::Inbound(InboundRequest {
            id: 7,
            subject: "beamline.router.v1.status.backpressure".into(),
            headers: vec![],
            payload: br#"{"subject":"beamline.router.v1.decide"}"#.to_vec(),
        }),
        &mut env,
    );
    let Command::Respond { id, payload } = &env.take()[0] else {
        panic!()
    };
    let status: Value = serde_json::from_slice(payload).unwrap();
    assert_eq!(*id, 7);
    assert_eq!(status["data"]["status"], "active");
    assert_eq!(status["data"]["metrics"]["pending_messages"], 11);
}

#[test]
fn results_feed_breakers_and_emit_usage_once() {
    let mut r = router_with(
        r#"{"providers":[{"name":"openai","weight":50},{"name":"anthropic","weight":50}],"circuit_breaker":{"enabled":true,"failure_threshold":2}}"#,
        |_| {},
    );
    let mut env = env();
    let failure = |a: &str| json!({"version":"1","assignment_id":a,"request_id":"r","status":"timeout","provider_id":"openai","job":{"type":"t"},"latency_ms":900,"cost":0.0,"tenant_id":"acme"});
    r.handle(result_msg(1, 1, failure("a-1")), &mut env);
    let cmds = env.take();
    let usage = publishes(&cmds);
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].msg_id.as_deref(), Some("usage-a-1"));
    let event: UsageEvent = serde_json::from_slice(&usage[0].payload).unwrap();
    assert_eq!(
        (event.provider_id.as_str(), event.latency_ms),
        ("openai", 900)
    );
    assert_eq!(confirm_all(&mut r, &mut env, &cmds), vec![Command::ack(1)]);
    // The same result again (CAF published twice): acked, no usage, no breaker count.
    r.handle(result_msg(2, 2, failure("a-1")), &mut env);
    assert_eq!(env.take(), vec![Command::ack(2)]);
    assert_eq!(r.stats().results_duplicate, 1);
    // A second distinct failure opens openai's breaker: decisions avoid it.
    r.handle(result_msg(3, 3, failure("a-2")), &mut env);
    let cmds = env.take();
    confirm_all(&mut r, &mut env, &cmds);
    for seq in 10..40 {
        r.handle(decide(seq, seq, request(&format!("r-{seq}"))), &mut env);
        let cmds = env.take();
        let reply: DecideResponse = serde_json::from_slice(&publishes(&cmds)[0].payload).unwrap();
        assert_eq!(reply.decision.provider_id, "anthropic");
        confirm_all(&mut r, &mut env, &cmds);
    }
}

#[test]
fn invalid_result_is_dead_lettered_and_termed() {
    let mut r = router_with(WEIGHTED, |_| {});
    let mut env = env();
    r.handle(
        result_msg(
            1,
            5,
            json!({"version":"1","status":"success","tenant_id":"acme"}),
        ),
        &mut env,
    );
    let cmds = env.take();
    let ps = publishes(&cmds);
    assert_eq!(ps.len(), 1);
    assert_eq!(ps[0].subject, "caf.exec.result.v1.dlq");
    assert_eq!(ps[0].msg_id.as_deref(), Some("dlq-results-5"));
    assert_eq!(confirm_all(&mut r, &mut env, &cmds), vec![Command::term(1)]);
}

#[test]
fn admin_requires_the_token() {
    let mut r = router_with(WEIGHTED, |c| c.admin_token = Some("s3cret-token".into()));
    let mut env = env();
    let ask = |r: &mut Router, env: &mut Env, headers: Vec<(String, String)>, body: Value| {
        r.handle(
            Input::Inbound(InboundRequest {
                id: 1,
                subject: "beamline.router.v1.admin.dry_run".into(),
                headers,
                payload: body.to_string().into_bytes(),
            }),
            env,
        );
        let Command::Respond { payload, .. } = &env.take()[0] else {
            panic!()
        };
        serde_json::from_slice::<Value>(payload).unwrap()
    };
    let refused = ask(&mut r, &mut env, vec![], json!({"tenant_id":"acme"}));
    assert_eq!(refused["error"]["code"], "unauthorized");
    let wrong = ask(
        &mut r,
        &mut env,
        vec![("Authorization".into(), "Bearer nope".into())],
        json!({"tenant_id":"acme"}),
    );
    assert_eq!(wrong["error"]["message"], "invalid admin token");
    let ok = ask(
        &mut r,
        &mut env,
        vec![("Authorization".into(), "Bearer s3cret-token".into())],
        json!({"tenant_id":"acme"}),
    );
    assert_eq!(ok["ok"], true);
    assert!(["openai", "anthropic"].contains(&ok["decision"]["provider_id"].as_str().unwrap()));
    assert_eq!(r.stats().admin_refused, 2);
    // Without a configured token, admin is closed.
    let mut closed = router_with(WEIGHTED, |_| {});
    let refused = ask(
        &mut closed,
        &mut env,
        vec![("Authorization".into(), "Bearer x".into())],
        json!({}),
    );
    assert_eq!(refused["ok"], false);
}

#[test]
fn streams_number_their_own_messages() {
    // A decide message and a result with the same stream sequence, both in flight.
    let mut r = router_with(WEIGHTED, |_| {});
    let mut env = env();
    r.handle(decide(1, 7, request("r-1")), &mut env);
    let reply = publishes(&env.take());
    let ok = json!({"version":"1","assignment_id":"a-1","status":"success","provider_id":"openai","tenant_id":"acme"});
    r.handle(result_msg(2, 7, ok), &mut env);
    let usage = publishes(&env.take());
    assert_eq!(
        (reply.len(), usage.len()),
        (1, 1),
        "the result is not mistaken for a redelivery"
    );
    assert_eq!(r.in_flight(), 2);
    r.handle(
        Input::PublishDone {
            id: usage[0].id,
            outcome: PublishOutcome::Confirmed,
        },
        &mut env,
    );
    assert_eq!(env.take(), vec![Command::ack(2)]);
    r.handle(
        Input::PublishDone {
            id: reply[0].id,
            outcome: PublishOutcome::Confirmed,
        },
        &mut env,
    );
    assert_eq!(env.take(), vec![Command::ack(1)]);
}

#[test]
fn results_have_their_own_max_deliver() {
    // Decide allows 3 deliveries here; results keep the default 10.
    let mut r = router_with(WEIGHTED, |_| {});
    let mut env = env();
    let ok = json!({"version":"1","assignment_id":"a-1","status":"success","provider_id":"openai","tenant_id":"acme"});
    let Input::Delivery(mut d) = result_msg(1, 1, ok) else {
        unreachable!()
    };
    d.delivered = 5;
    r.handle(Input::Delivery(d), &mut env);
    let usage = publishes(&env.take());
    r.handle(
        Input::PublishDone {
            id: usage[0].id,
            outcome: PublishOutcome::Failed {
                reason: "timeout".into(),
            },
        },
        &mut env,
    );
    assert!(
        matches!(
            env.take()[..],
            [Command::Settle {
                delivery: 1,
                how: Settle::Nak { .. }
            }]
        ),
        "not the last delivery of a result"
    );
}

#[test]
fn a_copy_arriving_while_the_pipeline_runs_waits_for_the_same_answer() {
    let mut r = router_with(WITH_EXTENSIONS, |_| {});
    let mut env = env();
    let mut body = request("r-1");
    body["idempotency_key"] = json!("k-1");
    r.handle(decide(1, 1, body.clone()), &mut env);
    let (id, _, _) = request_of(&env.take());
    // The gateway re-sent the request as a new message while extensions still run.
    r.handle(decide(2, 2, body), &mut env);
    assert!(
        env.take().is_empty(),
        "the copy waits, it is not decided a second time"
    );
    r.handle(
        Input::RequestDone {
            id,
            outcome: RequestOutcome::Reply {
                payload: b"{}".to_vec(),
            },
        },
        &mut env,
    );
    let (id, _, _) = request_of(&env.take());
    r.handle(
        Input::RequestDone {
            id,
            outcome: RequestOutcome::Reply {
                payload: br#"{"valid":true}"#.to_vec(),
            },
        },
        &mut env,
    );
    let (id, _, _) = request_of(&env.take());
    r.handle(
        Input::RequestDone {
            id,
            outcome: RequestOutcome::Timeout,
        },
        &mut env,
    );
    let cmds = env.take();
    let ps = publishes(&cmds);
    assert_eq!(ps.len(), 2, "{cmds:?}");
    assert_eq!(ps[0].payload, ps[1].payload, "byte-identical answers");
    let mut acks = confirm_all(&mut r, &mut env, &cmds);
    acks.sort_by_key(|c| format!("{c:?}"));
    assert_eq!(acks, vec![Command::ack(1), Command::ack(2)]);
    assert_eq!(r.stats().replies_ok, 1);
}

/// Drive the three extensions of `WITH_EXTENSIONS` to the end for the message whose first
/// request is in `cmds`; the commands of the last step.
fn finish_extensions(r: &mut Router, env: &mut Env, cmds: &[Command]) -> Vec<Command> {
    let mut cmds = cmds.to_vec();
    for payload in [&b"{}"[..], br#"{"valid":true}"#, b"{}"] {
        let (id, _, _) = request_of(&cmds);
        r.handle(
            Input::RequestDone {
                id,
                outcome: RequestOutcome::Reply {
                    payload: payload.to_vec(),
                },
            },
            env,
        );
        cmds = env.take();
    }
    cmds
}

#[test]
fn with_a_zero_ttl_the_waiters_get_their_fate_before_the_holders_reply_goes_out() {
    // The answer expires the moment it is recorded: the copies waiting for it have none
    // and are given back (or dead-lettered, on their last delivery) at once, before the
    // holder's own reply is published. Pins the order of the commands (and so of ids).
    let mut r = router_with(WITH_EXTENSIONS, |c| c.idempotency_ttl_ms = 0);
    let mut env = env();
    let mut body = request("r-1");
    body["idempotency_key"] = json!("k-1");
    r.handle(decide(1, 1, body.clone()), &mut env);
    let first = env.take();
    r.handle(decide(2, 2, body.clone()), &mut env);
    let Input::Delivery(mut last) = decide(3, 3, body) else {
        unreachable!()
    };
    last.delivered = 3;
    r.handle(Input::Delivery(last), &mut env);
    assert!(env.take().is_empty(), "both copies wait");
    let cmds = finish_extensions(&mut r, &mut env, &first);
    let shape: Vec<String> = cmds
        .iter()
        .map(|c| match c {
            Command::Publish(p) => format!("publish {} {}", p.id, p.subject),
            Command::Settle { delivery, how } => format!("settle {delivery} {how:?}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            "settle 2 Nak { delay_ms: 1000 }".to_string(),
            "publish 4 beamline.router.v1.decide.dlq".to_string(),
            "publish 5 _INBOX.gw".to_string(),
            "publish 6 _INBOX.gw".to_string(),
        ],
        "{cmds:?}"
    );
}

// --- answers shared between instances (`shared.rs`) ---

fn shared_router() -> Router {
    router_with(WEIGHTED, |c| c.shared_idempotency = true)
}

fn keyed(id: &str, key: &str) -> Value {
    let mut body = request(id);
    body["idempotency_key"] = json!(key);
    body
}

/// The single `KvCreate` among `cmds`: (id, key, value).
fn kv_create_of(cmds: &[Command]) -> (u64, String, Vec<u8>) {
    let creates: Vec<_> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::Kv {
                id,
                op: KvOp::Create { key, value },
            } => Some((*id, key.clone(), value.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(creates.len(), 1, "{cmds:?}");
    creates.into_iter().next().unwrap()
}

fn kv_done(id: u64, outcome: KvOutcome) -> Input {
    Input::KvDone { id, outcome }
}

#[test]
fn a_shared_claim_publishes_nothing_until_the_bucket_answers() {
    let mut r = shared_router();
    let mut env = env();
    r.handle(decide(1, 1, keyed("r-1", "k-1")), &mut env);
    let cmds = env.take();
    assert!(publishes(&cmds).is_empty(), "{cmds:?}");
    let (id, key, value) = kv_create_of(&cmds);
    assert_eq!(key, crate::core::shared::bucket_key("acme", "k-1"));
    let claimed = crate::core::shared::SharedAnswer::decode(&value).expect("readable");
    r.handle(kv_done(id, KvOutcome::Created), &mut env);
    let cmds = env.take();
    let ps = publishes(&cmds);
    assert_eq!(ps.len(), 1);
    assert_eq!(
        ps[0].payload, claimed.reply,
        "the claimed bytes are published"
    );
    assert_eq!(confirm_all(&mut r, &mut env, &cmds), vec![Command::ack(1)]);
    assert_eq!(r.stats().shared_claims, 1);
}

#[test]
fn an_answer_already_in_the_bucket_is_published_instead_of_ours() {
    // Instance A answers first, with an assignment.
    let mut a = shared_router();
    let mut env_a = env();
    let mut body = keyed("r-1", "k-1");
    body["push_assignment"] = json!(true);
    a.handle(decide(1, 1, body.clone()), &mut env_a);
    let (_, key_a, value_a) = kv_create_of(&env_a.take());
    let theirs = crate::core::shared::SharedAnswer::decode(&value_a).unwrap();
    let their_assignment = theirs.assignment.clone().expect("decided with the reply");

    // Instance B gets the gateway's retry, decides (differently: its own entropy), and
    // finds A's entry.
    let mut b = shared_router();
    let mut env_b = RecordingEnv::new(Time(1_000_500), {
        let mut x = 99u64;
        Box::new(move || {
            x = x.wrapping_mul(2862933555777941757).wrapping_add(3037000493);
            x
        }) as Box<dyn FnMut() -> u64>
    });
    b.handle(decide(7, 40, body.clone()), &mut env_b);
    let (id_b, key_b, value_b) = kv_create_of(&env_b.take());
    assert_eq!(key_a, key_b, "same tenant and key, same bucket entry");
    assert_ne!(value_a, value_b, "B's own decision differs");
    b.handle(
        kv_done(
            id_b,
            KvOutcome::Exists {
                value: value_a.clone(),
            },
        ),
        &mut env_b,
    );
    let cmds = env_b.take();
    let ps = publishes(&cmds);
    assert_eq!(ps.len(), 2, "{cmds:?}");
    assert_eq!(ps[0].payload, theirs.reply, "A's reply, byte for byte");
    assert_eq!(
        ps[1].msg_id.as_deref(),
        Some(their_assignment.msg_id.as_str())
    );
    assert_eq!(ps[1].payload, their_assignment.payload);
    assert_eq!(
        confirm_all(&mut b, &mut env_b, &cmds),
        vec![Command::ack(7)]
    );
    assert_eq!(b.stats().shared_adopted, 1);

    // A third copy on B is answered from B's book: no second claim, same bytes.
    b.handle(decide(8, 41, body), &mut env_b);
    let cmds = env_b.take();
    assert!(cmds.iter().all(|c| !matches!(
        c,
        Command::Kv {
            op: KvOp::Create { .. },
            ..
        }
    )));
    assert_eq!(publishes(&cmds)[0].payload, theirs.reply);
}

#[test]
fn a_failed_claim_gives_the_message_back_then_dead_letters_on_the_last_delivery() {
    let mut r = shared_router();
    let mut env = env();
    r.handle(decide(1, 1, keyed("r-1", "k-1")), &mut env);
    let (id, _, _) = kv_create_of(&env.take());
    r.handle(
        kv_done(
            id,
            KvOutcome::Failed {
                reason: "timeout".into(),
            },
        ),
        &mut env,
    );
    let cmds = env.take();
    assert!(publishes(&cmds).is_empty(), "nothing unclaimed goes out");
    assert!(
        matches!(
            cmds.as_slice(),
            [Command::Settle {
                delivery: 1,
                how: Settle::Nak { .. }
            }]
        ),
        "{cmds:?}"
    );
    assert_eq!(r.stats().shared_failures, 1);

    // The last delivery (max_deliver = 3) fails its claim too: a DLQ record, then term.
    let Input::Delivery(mut last) = decide(2, 1, keyed("r-1", "k-1")) else {
        unreachable!()
    };
    last.delivered = 3;
    r.handle(Input::Delivery(last), &mut env);
    let (id, _, _) = kv_create_of(&env.take());
    r.handle(
        kv_done(
            id,
            KvOutcome::Failed {
                reason: "no responders".into(),
            },
        ),
        &mut env,
    );
    let cmds = env.take();
    let ps = publishes(&cmds);
    assert_eq!(ps.len(), 2, "{cmds:?}");
    assert_eq!(ps[0].subject, "beamline.router.v1.decide.dlq");
    // Nothing was ever published for it: the gateway hears that it was given up on.
    assert_eq!(ps[1].subject, "_INBOX.gw");
    assert!(
        String::from_utf8_lossy(&ps[1].payload).contains("delivery_exhausted"),
        "{cmds:?}"
    );
    assert_eq!(confirm_all(&mut r, &mut env, &cmds), vec![Command::term(2)]);
}

#[test]
fn requests_without_a_key_are_not_claimed() {
    let mut r = shared_router();
    let mut env = env();
    r.handle(decide(1, 1, request("r-1")), &mut env);
    let cmds = env.take();
    assert!(cmds.iter().all(|c| !matches!(
        c,
        Command::Kv {
            op: KvOp::Create { .. },
            ..
        }
    )));
    assert_eq!(publishes(&cmds).len(), 1);
}

#[test]
fn a_copy_arriving_during_the_claim_waits_for_its_verdict() {
    let mut r = shared_router();
    let mut env = env();
    r.handle(decide(1, 1, keyed("r-1", "k-1")), &mut env);
    let (id, _, value) = kv_create_of(&env.take());
    r.handle(decide(2, 2, keyed("r-1", "k-1")), &mut env);
    assert!(env.take().is_empty(), "the copy waits for the claim");
    r.handle(kv_done(id, KvOutcome::Created), &mut env);
    let ps = publishes(&env.take());
    let mine = crate::core::shared::SharedAnswer::decode(&value)
        .unwrap()
        .reply;
    assert_eq!(ps.len(), 2);
    assert!(ps.iter().all(|p| p.payload == mine));
}

#[test]
fn a_replay_does_not_publish_an_assignment_already_stored() {
    let mut r = router_with(WEIGHTED, |_| {});
    let mut env = env();
    let mut body = request("r-1");
    body["push_assignment"] = json!(true);
    r.handle(decide(1, 1, body.clone()), &mut env);
    let ps = publishes(&env.take());
    assert_eq!(ps.len(), 2);
    // The reply publish fails, the assignment is stored.
    r.handle(
        Input::PublishDone {
            id: ps[0].id,
            outcome: PublishOutcome::Failed {
                reason: "timeout".into(),
            },
        },
        &mut env,
    );
    r.handle(
        Input::PublishDone {
            id: ps[1].id,
            outcome: PublishOutcome::Confirmed,
        },
        &mut env,
    );
    assert!(matches!(
        env.take().as_slice(),
        [Command::Settle {
            delivery: 1,
            how: Settle::Nak { .. }
        }]
    ));
    // The redelivery (long after: past any duplicate window) replays the reply only.
    let Input::Delivery(mut again) = decide(2, 1, body) else {
        unreachable!()
    };
    again.delivered = 2;
    env.now = Time(env.now.0 + 600_000);
    r.handle(Input::Delivery(again), &mut env);
    let cmds = env.take();
    let replayed = publishes(&cmds);
    assert_eq!(replayed.len(), 1, "{cmds:?}");
    assert_eq!(replayed[0].payload, ps[0].payload);
    assert_eq!(confirm_all(&mut r, &mut env, &cmds), vec![Command::ack(2)]);
}

// --- sticky sessions shared between instances ---

const STICKY_SPLIT: &str = r#"{"providers":[{"name":"openai","weight":1},{"name":"anthropic","weight":99}],
  "sticky":{"enabled":true,"session_key":"user_id","ttl":"10m"}}"#;

fn sticky_router() -> Router {
    router_with(STICKY_SPLIT, |c| c.shared_sticky = true)
}

/// The single `KvGet` among `cmds`: (id, key).
fn kv_get_of(cmds: &[Command]) -> Option<(u64, String)> {
    cmds.iter().find_map(|c| match c {
        Command::Kv {
            id,
            op: KvOp::Get { key },
        } => Some((*id, key.clone())),
        _ => None,
    })
}

fn kv_put_of(cmds: &[Command]) -> Option<(String, crate::core::shared::SharedSession)> {
    cmds.iter().find_map(|c| match c {
        Command::Kv {
            op: KvOp::Put { key, value },
            ..
        } => Some((
            key.clone(),
            crate::core::shared::SharedSession::decode(value).expect("readable session"),
        )),
        _ => None,
    })
}

#[test]
fn a_session_pinned_by_another_instance_is_adopted_before_choosing() {
    let mut r = sticky_router();
    let mut env = env();
    r.handle(decide(1, 1, request("r-1")), &mut env);
    let cmds = env.take();
    assert!(
        publishes(&cmds).is_empty(),
        "no choice before the bucket answers"
    );
    let (id, key) = kv_get_of(&cmds).expect("the session is looked up");
    assert_eq!(key, crate::core::shared::sticky_key("acme", "u-1"));
    let pinned = crate::core::shared::SharedSession {
        provider: "openai".into(),
        expires_at_ms: env.now.0 + 60_000,
    };
    r.handle(
        kv_done(
            id,
            KvOutcome::Found {
                value: pinned.encode().unwrap(),
            },
        ),
        &mut env,
    );
    let cmds = env.take();
    let reply: DecideResponse = serde_json::from_slice(&publishes(&cmds)[0].payload).unwrap();
    assert_eq!(
        reply.decision.provider_id, "openai",
        "the pinned provider, not a draw"
    );
    assert_eq!(r.stats().shared_sessions_adopted, 1);
    let (put_key, written) = kv_put_of(&cmds).expect("the mapping is written back");
    assert_eq!(put_key, key);
    assert_eq!(written.provider, "openai");
    assert_eq!(
        written.expires_at_ms,
        env.now.0 + 600_000,
        "refreshed to the policy TTL"
    );

    // The next request of the session is served from this instance's store.
    confirm_all(&mut r, &mut env, &cmds);
    r.handle(decide(2, 2, request("r-2")), &mut env);
    let cmds = env.take();
    assert!(
        kv_get_of(&cmds).is_none(),
        "a live local mapping needs no lookup"
    );
    let reply: DecideResponse = serde_json::from_slice(&publishes(&cmds)[0].payload).unwrap();
    assert_eq!(reply.decision.provider_id, "openai");
}

#[test]
fn a_missing_or_unreadable_session_is_drawn_and_shared() {
    for outcome in [
        KvOutcome::Missing,
        KvOutcome::Failed {
            reason: "timeout".into(),
        },
        KvOutcome::Found {
            value: br#"{"provider":"openai","expires_at_ms":1}"#.to_vec(),
        },
    ] {
        let mut r = sticky_router();
        let mut env = env();
        r.handle(decide(1, 1, request("r-1")), &mut env);
        let (id, _) = kv_get_of(&env.take()).unwrap();
        r.handle(kv_done(id, outcome.clone()), &mut env);
        let cmds = env.take();
        let ps = publishes(&cmds);
        assert_eq!(ps.len(), 1, "{outcome:?}: {cmds:?}");
        let reply: DecideResponse = serde_json::from_slice(&ps[0].payload).unwrap();
        let (_, written) = kv_put_of(&cmds).expect("the drawn mapping is shared");
        assert_eq!(written.provider, reply.decision.provider_id, "{outcome:?}");
        assert_eq!(r.stats().shared_sessions_adopted, 0, "{outcome:?}");
    }
}

#[test]
fn a_duplicate_result_while_its_carrier_waits_is_acked_only_once_its_usage_is_stored() {
    let mut r = router_with(WEIGHTED, |_| {});
    let mut env = env();
    let result = json!({"version":"1","assignment_id":"a-9","request_id":"r","status":"success","provider_id":"openai","job":{"type":"t"},"latency_ms":90,"cost":0.01,"tenant_id":"acme"});
    r.handle(result_msg(1, 1, result.clone()), &mut env);
    let carrier = publishes(&env.take());
    assert_eq!(carrier.len(), 1);
    // CAF's duplicate arrives while the carrier's usage PubAck is outstanding (the
    // server may have exhausted the carrier meanwhile): the same event is published
    // again under the same message id, and nothing is acked yet.
    r.handle(result_msg(2, 2, result), &mut env);
    let cmds = env.take();
    let copy = publishes(&cmds);
    assert_eq!(copy.len(), 1, "{cmds:?}");
    assert_eq!(copy[0].msg_id.as_deref(), Some("usage-a-9"));
    assert_eq!(copy[0].payload, carrier[0].payload, "byte for byte");
    assert!(
        !cmds.iter().any(|c| matches!(
            c,
            Command::Settle {
                how: Settle::Ack,
                ..
            }
        )),
        "{cmds:?}"
    );
    assert_eq!(confirm_all(&mut r, &mut env, &cmds), vec![Command::ack(2)]);
    assert_eq!(r.stats().results_duplicate, 1);
    assert_eq!(r.stats().usage_emitted, 0, "a copy is not an emitted event");
}
