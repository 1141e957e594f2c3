use super::*;
use crate::contracts::{DecideResponse, DlqRecord, ErrorResponse};
use crate::core::env::{RecordingEnv, Time};
use crate::core::io::{Publish, PublishKind};
use crate::policy::parse_policy;

type Env = RecordingEnv<Box<dyn FnMut() -> u64>>;

fn counter_entropy(start: u64) -> Box<dyn FnMut() -> u64> {
    let mut x = start;
    Box::new(move || {
        // splitmix64: a fixed, well-mixed sequence for tests.
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

fn env() -> Env {
    RecordingEnv::new(Time(1_000), counter_entropy(7))
}

fn router() -> Router {
    let mut store = PolicyStore::new();
    store.insert(
        "acme",
        parse_policy(
            "default",
            r#"{"providers":[{"name":"openai","weight":70},{"name":"anthropic","weight":30}]}"#,
        )
        .unwrap(),
    );
    Router::new(
        RouterConfig {
            max_deliver: 3,
            max_in_flight: 4,
            ..RouterConfig::default()
        },
        store,
    )
}

fn request(id: &str, extra: &str) -> Vec<u8> {
    format!(
        r#"{{"version":"1","request_id":"{id}","tenant_id":"acme","task":{{"type":"t","payload":{{"text":"hello world"}}}}{extra}}}"#
    )
    .into_bytes()
}

fn delivery(id: DeliveryId, seq: u64, delivered: u64, payload: Vec<u8>) -> Input {
    Input::Delivery(Delivery {
        id,
        source: Source::Decide,
        subject: "beamline.router.v1.decide".into(),
        headers: vec![
            ("Reply-To".into(), "_INBOX.gw.1".into()),
            ("Nats-Msg-Id".into(), format!("m-{seq}")),
        ],
        digest: PayloadDigest::of(&payload),
        payload,
        stream_seq: seq,
        delivered,
    })
}

fn publishes(cmds: &[Command]) -> Vec<&Publish> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Publish(p) => Some(p),
            _ => None,
        })
        .collect()
}

fn done(id: PublishId, ok: bool) -> Input {
    Input::PublishDone {
        id,
        outcome: if ok {
            PublishOutcome::Confirmed
        } else {
            PublishOutcome::Failed {
                reason: "timeout".into(),
            }
        },
    }
}

#[test]
fn acks_only_after_the_reply_is_confirmed() {
    let (mut r, mut env) = (router(), env());
    r.handle(delivery(1, 1, 1, request("r-1", "")), &mut env);
    let cmds = env.take();
    assert_eq!(cmds.len(), 1, "only the reply publish: {cmds:?}");
    let reply = publishes(&cmds)[0].clone();
    assert_eq!(reply.subject, "_INBOX.gw.1");
    assert_eq!(reply.kind, PublishKind::Core);
    let resp: DecideResponse = serde_json::from_slice(&reply.payload).unwrap();
    assert!(resp.ok);
    assert!(["openai", "anthropic"].contains(&resp.decision.provider_id.as_str()));
    assert_eq!(resp.decision.priority, 50);
    assert_eq!(resp.context.request_id.as_deref(), Some("r-1"));

    r.handle(done(reply.id, true), &mut env);
    assert_eq!(env.take(), vec![Command::ack(1)]);
    assert_eq!(r.in_flight(), 0);
}

#[test]
fn reply_goes_to_the_default_subject_without_reply_to() {
    let (mut r, mut env) = (router(), env());
    let Input::Delivery(mut d) = delivery(1, 1, 1, request("r-1", "")) else {
        unreachable!()
    };
    d.headers.clear();
    r.handle(Input::Delivery(d), &mut env);
    assert_eq!(
        publishes(&env.take())[0].subject,
        "beamline.router.v1.decide.reply"
    );
}

#[test]
fn failed_reply_naks_then_dead_letters_on_the_last_delivery() {
    let (mut r, mut env) = (router(), env());
    r.handle(delivery(1, 9, 1, request("r-1", "")), &mut env);
    let first = publishes(&env.take())[0].clone();
    r.handle(done(first.id, false), &mut env);
    assert_eq!(env.take(), vec![Command::nak(1, 1_000)]);

    // Second delivery: same bytes, not a new decision.
    r.handle(delivery(2, 9, 2, request("r-1", "")), &mut env);
    let second = publishes(&env.take())[0].clone();
    assert_eq!(second.payload, first.payload);
    r.handle(done(second.id, false), &mut env);
    assert_eq!(env.take(), vec![Command::nak(2, 5_000)]);

    // Third (= max_deliver): the failure dead-letters, and only then terms.
    r.handle(delivery(3, 9, 3, request("r-1", "")), &mut env);
    let third = publishes(&env.take())[0].clone();
    r.handle(done(third.id, false), &mut env);
    let cmds = env.take();
    let dlq = publishes(&cmds)[0].clone();
    assert_eq!(
        cmds.len(),
        2,
        "the DLQ record and the gateway's error reply: {cmds:?}"
    );
    let told = publishes(&cmds)[1].clone();
    assert_eq!(told.subject, "_INBOX.gw.1");
    let v: serde_json::Value = serde_json::from_slice(&told.payload).unwrap();
    assert_eq!(v["error"]["code"], "delivery_exhausted", "{v}");
    assert_eq!(v["context"]["request_id"], "r-1", "{v}");
    r.handle(done(told.id, true), &mut env);
    assert_eq!(dlq.subject, "beamline.router.v1.decide.dlq");
    assert_eq!(dlq.kind, PublishKind::JetStream);
    assert_eq!(dlq.msg_id.as_deref(), Some("dlq-9"));
    let record: DlqRecord = serde_json::from_slice(&dlq.payload).unwrap();
    assert_eq!(record.error.code, "MAXDELIVER_EXHAUSTED");
    assert_eq!(record.delivered, 3);
    assert_eq!(record.request_id.as_deref(), Some("r-1"));
    r.handle(done(dlq.id, true), &mut env);
    assert_eq!(env.take(), vec![Command::term(3)]);
}

#[test]
fn invalid_input_gets_error_reply_dlq_and_term() {
    let (mut r, mut env) = (router(), env());
    r.handle(delivery(1, 4, 1, b"{broken".to_vec()), &mut env);
    let cmds = env.take();
    let ps = publishes(&cmds);
    assert_eq!(ps.len(), 2);
    let err: ErrorResponse = serde_json::from_slice(&ps[0].payload).unwrap();
    assert!(!err.ok);
    assert_eq!(err.error.code.as_str(), "invalid_request");
    assert_eq!(
        err.error.intake_error_code.map(|c| c.as_str()),
        Some("SCHEMA_VALIDATION_FAILED")
    );
    let record: DlqRecord = serde_json::from_slice(&ps[1].payload).unwrap();
    assert_eq!(record.error.code, "SCHEMA_VALIDATION_FAILED");
    assert_eq!(record.msg_id.as_deref(), Some("m-4"));
    assert_eq!(record.original_payload_hash.len(), 64);
    assert!(
        !String::from_utf8_lossy(&ps[1].payload).contains("broken"),
        "the payload itself never reaches the DLQ"
    );
    let (reply_id, dlq_id) = (ps[0].id, ps[1].id);
    r.handle(done(dlq_id, true), &mut env);
    assert!(env.take().is_empty(), "no fate before the reply resolves");
    r.handle(done(reply_id, true), &mut env);
    assert_eq!(env.take(), vec![Command::term(1)]);
}

#[test]
fn failed_dlq_on_the_last_delivery_is_retried_with_the_same_msg_id() {
    let (mut r, mut env) = (router(), env());
    r.handle(delivery(1, 4, 3, b"[]".to_vec()), &mut env);
    let cmds = env.take();
    let ps = publishes(&cmds);
    let (reply, dlq) = (ps[0].clone(), ps[1].clone());
    r.handle(done(reply.id, true), &mut env);
    r.handle(done(dlq.id, false), &mut env);
    let cmds = env.take();
    assert!(
        cmds.is_empty(),
        "the retry waits for the core's timer: {cmds:?}"
    );
    assert_eq!(r.poll_timeout(), Some(Time(1_000 + 2_000)));
    // Not yet due: nothing happens.
    env.now = Time(2_999);
    r.handle(Input::Timeout, &mut env);
    assert!(env.take().is_empty());
    env.now = Time(3_000);
    r.handle(Input::Timeout, &mut env);
    assert_eq!(r.poll_timeout(), None);
    let retry = publishes(&env.take())[0].clone();
    assert_eq!(retry.msg_id, dlq.msg_id);
    assert_eq!(retry.payload, dlq.payload);
    r.handle(done(retry.id, true), &mut env);
    assert_eq!(env.take(), vec![Command::term(1)]);
}

#[test]
fn redelivery_after_a_lost_ack_is_acked_without_a_second_reply() {
    let (mut r, mut env) = (router(), env());
    r.handle(delivery(1, 5, 1, request("r-1", "")), &mut env);
    let p = publishes(&env.take())[0].clone();
    r.handle(done(p.id, true), &mut env);
    env.take();
    r.handle(delivery(2, 5, 2, request("r-1", "")), &mut env);
    assert_eq!(env.take(), vec![Command::ack(2)]);
    assert_eq!(r.stats().redelivered_after_settle, 1);
}

#[test]
fn redelivery_while_in_flight_joins_the_message() {
    let (mut r, mut env) = (router(), env());
    r.handle(delivery(1, 5, 1, request("r-1", "")), &mut env);
    let p = publishes(&env.take())[0].clone();
    r.handle(delivery(2, 5, 2, request("r-1", "")), &mut env);
    assert!(env.take().is_empty(), "no second decision");
    r.handle(done(p.id, true), &mut env);
    assert_eq!(env.take(), vec![Command::ack(1), Command::ack(2)]);
}

#[test]
fn idempotency_key_replays_the_same_bytes() {
    let (mut r, mut env) = (router(), env());
    let body = request("r-1", r#","idempotency_key":"k-1""#);
    r.handle(delivery(1, 1, 1, body.clone()), &mut env);
    let first = publishes(&env.take())[0].clone();
    // A copy while the first is still in flight gets the same bytes too.
    r.handle(delivery(2, 2, 1, body.clone()), &mut env);
    let copy = publishes(&env.take())[0].clone();
    assert_eq!(copy.payload, first.payload);
    r.handle(done(first.id, true), &mut env);
    r.handle(done(copy.id, true), &mut env);
    assert_eq!(env.take(), vec![Command::ack(1), Command::ack(2)]);
    // Many re-sends: every one byte-identical, no new draw.
    for i in 0..20 {
        r.handle(delivery(10 + i, 10 + i, 1, body.clone()), &mut env);
        let again = publishes(&env.take())[0].clone();
        assert_eq!(again.payload, first.payload);
        r.handle(done(again.id, true), &mut env);
        env.take();
    }
    assert_eq!(r.stats().idempotent_replays, 21);
}

#[test]
fn unknown_policy_is_an_error_reply_and_an_ack() {
    let (mut r, mut env) = (router(), env());
    r.handle(
        delivery(1, 1, 1, request("r-1", r#","policy_id":"gold""#)),
        &mut env,
    );
    let p = publishes(&env.take())[0].clone();
    let err: ErrorResponse = serde_json::from_slice(&p.payload).unwrap();
    assert_eq!(err.error.code.as_str(), "policy_not_found");
    assert_eq!(err.error.details.unwrap()["policy_id"], "gold");
    r.handle(done(p.id, true), &mut env);
    assert_eq!(env.take(), vec![Command::ack(1)]);
}

#[test]
fn in_flight_is_bounded() {
    let (mut r, mut env) = (router(), env());
    for seq in 1..=5 {
        r.handle(
            delivery(seq, seq, 1, request(&format!("r-{seq}"), "")),
            &mut env,
        );
    }
    let cmds = env.take();
    assert_eq!(publishes(&cmds).len(), 4);
    assert!(matches!(
        cmds.last(),
        Some(Command::Settle {
            delivery: 5,
            how: Settle::Nak { .. }
        })
    ));
    assert_eq!(r.stats().overload_naks, 1);
}

/// Overloaded at the last delivery the server allows: a nak would exhaust the message
/// and leave its fate to the MAX_DELIVERIES advisory (lost when the advisory stream is
/// electing a leader), so it is dead-lettered at once, replied to, then termed.
#[test]
fn the_last_delivery_is_dead_lettered_not_nakd_when_overloaded() {
    let (mut r, mut env) = (router(), env());
    for seq in 1..=4 {
        r.handle(
            delivery(seq, seq, 1, request(&format!("r-{seq}"), "")),
            &mut env,
        );
    }
    env.take();
    // max_deliver is 3: the fifth message's third delivery finds the router full.
    r.handle(delivery(5, 5, 3, request("r-5", "")), &mut env);
    let cmds = env.take();
    assert!(
        !cmds
            .iter()
            .any(|c| matches!(c, Command::Settle { delivery: 5, .. })),
        "no nak, no term before the record is stored: {cmds:?}"
    );
    let (dlq, told) = (publishes(&cmds)[0].clone(), publishes(&cmds)[1].clone());
    assert_eq!(dlq.subject, "beamline.router.v1.decide.dlq");
    let record: DlqRecord = serde_json::from_slice(&dlq.payload).unwrap();
    assert_eq!(record.error.code, "MAXDELIVER_EXHAUSTED");
    assert_eq!(record.delivered, 3);
    let v: serde_json::Value = serde_json::from_slice(&told.payload).unwrap();
    assert_eq!(v["error"]["code"], "delivery_exhausted", "{v}");
    assert_eq!(r.stats().overload_dead_letters, 1);
    assert_eq!(r.stats().overload_naks, 0);
    r.handle(done(told.id, true), &mut env);
    r.handle(done(dlq.id, true), &mut env);
    assert_eq!(env.take(), vec![Command::term(5)]);
}

#[test]
fn weighted_draw_follows_the_weights() {
    let (mut r, mut env) = (router(), env());
    let mut openai = 0;
    let n = 4_000u64;
    for seq in 1..=n {
        r.handle(
            delivery(seq, seq, 1, request(&format!("r-{seq}"), "")),
            &mut env,
        );
        let p = publishes(&env.take())[0].clone();
        let resp: DecideResponse = serde_json::from_slice(&p.payload).unwrap();
        if resp.decision.provider_id == "openai" {
            openai += 1;
        }
        r.handle(done(p.id, true), &mut env);
        env.take();
    }
    // Binomial(4000, 0.7): sd ~ 29; allow 5 sd.
    assert!(
        (2_655..=2_945).contains(&openai),
        "openai chosen {openai} times"
    );
}

#[test]
fn same_inputs_and_entropy_give_the_same_commands() {
    let run = || {
        let (mut r, mut env) = (router(), env());
        let mut all = Vec::new();
        for seq in 1..=50 {
            r.handle(
                delivery(seq, seq, 1, request(&format!("r-{seq}"), "")),
                &mut env,
            );
            let cmds = env.take();
            let id = publishes(&cmds)[0].id;
            all.extend(cmds);
            r.handle(done(id, seq % 3 != 0), &mut env);
            all.extend(env.take());
        }
        all
    };
    assert_eq!(run(), run());
}

fn exhausted(seq: u64, payload: Vec<u8>) -> Input {
    Input::Exhausted(crate::core::io::Exhausted {
        source: Source::Decide,
        subject: "beamline.router.v1.decide".into(),
        headers: vec![],
        payload,
        stream_seq: seq,
        deliveries: 3,
    })
}

#[test]
fn exhausted_message_never_seen_is_dead_lettered() {
    let (mut r, mut env) = (router(), env());
    r.handle(exhausted(7, request("r-7", "")), &mut env);
    let cmds = env.take();
    let dlq = publishes(&cmds)[0].clone();
    assert_eq!(
        cmds.len(),
        2,
        "the DLQ record and the gateway's error reply: {cmds:?}"
    );
    assert_eq!(dlq.msg_id.as_deref(), Some("dlq-7"));
    let record: DlqRecord = serde_json::from_slice(&dlq.payload).unwrap();
    assert_eq!(record.error.code, "MAXDELIVER_EXHAUSTED");
    assert_eq!(record.request_id.as_deref(), Some("r-7"));
    // No Reply-To header: the default reply subject hears it.
    let told = publishes(&cmds)[1].clone();
    assert_eq!(told.subject, "beamline.router.v1.decide.reply");
    let v: serde_json::Value = serde_json::from_slice(&told.payload).unwrap();
    assert_eq!(v["error"]["code"], "delivery_exhausted", "{v}");
    assert_eq!(v["context"]["request_id"], "r-7", "{v}");
    r.handle(done(told.id, false), &mut env);
    // A failed record is retried by timer: no delivery is left to nak.
    r.handle(done(dlq.id, false), &mut env);
    assert!(env.take().is_empty());
    assert!(r.poll_timeout().is_some(), "the record's retry is timed");
    assert_eq!(r.stats().exhausted_unseen, 1);
}

#[test]
fn exhausted_message_already_settled_is_left_alone() {
    let (mut r, mut env) = (router(), env());
    r.handle(delivery(1, 7, 1, request("r-7", "")), &mut env);
    let p = publishes(&env.take())[0].clone();
    r.handle(done(p.id, true), &mut env);
    env.take();
    r.handle(exhausted(7, request("r-7", "")), &mut env);
    assert!(env.take().is_empty());
}

#[test]
fn exhausted_while_in_flight_turns_a_failure_into_a_dead_letter() {
    let (mut r, mut env) = (router(), env());
    r.handle(delivery(1, 7, 1, request("r-7", "")), &mut env);
    let p = publishes(&env.take())[0].clone();
    r.handle(exhausted(7, request("r-7", "")), &mut env);
    r.handle(done(p.id, false), &mut env);
    let cmds = env.take();
    assert_eq!(
        publishes(&cmds)[0].subject,
        "beamline.router.v1.decide.dlq",
        "{cmds:?}"
    );
}
