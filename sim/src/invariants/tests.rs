//! The checkers fed by hand: each rule without a `--bug` switch is shown to fail on a
//! step that breaks it (docs/INVARIANTS.md, "shown by").

use beamline_router::contracts::subjects;
use beamline_router::core::{Command, Publish, PublishKind, Settle, Stats};

use super::decide::StepInput;
use super::{Checker, Finality, Proc};
use crate::actors::gateway::{GatewayConfig, RequestKind, Workload};
use crate::host::DeliveryRef;
use crate::jetstream::MessageState;
use crate::rng::SimRng;
use crate::wire::Cons;

const P: Proc = Proc {
    router: 0,
    incarnation: 0,
};

fn workload() -> Workload {
    Workload::plan(
        &mut SimRng::stream(9, "gateway"),
        SimRng::stream(9, "burst"),
        40,
        1_000,
        1,
        GatewayConfig {
            reply_timeout_ms: 1,
            max_attempts: 1,
            publish_timeout_ms: 1,
            status_poll_ms: 1,
            mix: Default::default(),
        },
    )
}

fn request_of(w: &Workload, kind: RequestKind) -> usize {
    w.requests().iter().position(|r| r.kind == kind).unwrap()
}

/// A checker with request `request`'s first attempt stored as decide seq 1.
fn checker_with(request: usize) -> Checker {
    let mut c = Checker::new(3, false, 1_000_000);
    c.on_decide_stored(0, 1, request, 1);
    c
}

fn publish(
    id: u64,
    subject: &str,
    kind: PublishKind,
    msg_id: Option<&str>,
    payload: &str,
) -> Command {
    Command::Publish(Publish {
        id,
        subject: subject.to_string(),
        headers: Vec::new(),
        payload: payload.as_bytes().to_vec(),
        kind,
        msg_id: msg_id.map(str::to_string),
    })
}

fn step(
    c: &mut Checker,
    w: &Workload,
    commands: &[Command],
    delivered: u64,
    before: &Stats,
    after: &Stats,
) {
    let delivery = |_| {
        Some(DeliveryRef {
            cons: Cons::Decide,
            stream_seq: 1,
            delivered,
        })
    };
    c.on_core_step(
        10,
        P,
        StepInput {
            message: Some((Cons::Decide, 1)),
        },
        commands,
        delivery,
        |_, _| None,
        &|_, _| false,
        w,
        before,
        after,
    );
}

#[test]
fn an_ack_without_a_reply_at_the_server_fails() {
    let w = workload();
    let mut c = checker_with(request_of(&w, RequestKind::Valid));
    let s = Stats::default();
    step(
        &mut c,
        &w,
        &[Command::Settle {
            delivery: 1,
            how: Settle::Ack,
        }],
        1,
        &s,
        &s,
    );
    assert_eq!(
        c.violation().unwrap().invariant,
        "ack_before_reply_confirmed"
    );
}

#[test]
fn a_publish_in_a_backpressure_nak_step_fails() {
    let w = workload();
    let mut c = checker_with(request_of(&w, RequestKind::Valid));
    let before = Stats::default();
    let after = Stats {
        backpressure_naks: 1,
        ..Stats::default()
    };
    let reply = publish(7, "_INBOX.gw.0.1", PublishKind::Core, None, "{}");
    step(
        &mut c,
        &w,
        &[
            Command::Settle {
                delivery: 1,
                how: Settle::Nak { delay_ms: 5 },
            },
            reply,
        ],
        1,
        &before,
        &after,
    );
    assert_eq!(c.violation().unwrap().invariant, "backpressure_side_effect");
}

#[test]
fn a_nak_at_the_last_delivery_fails_even_an_overload_nak() {
    let w = workload();
    let nak = [Command::Settle {
        delivery: 1,
        how: Settle::Nak { delay_ms: 5 },
    }];
    let s = Stats::default();
    let mut c = checker_with(request_of(&w, RequestKind::Valid));
    step(&mut c, &w, &nak, 2, &s, &s);
    assert!(c.violation().is_none(), "below max_deliver a nak is fine");
    step(&mut c, &w, &nak, 3, &s, &s);
    assert_eq!(c.violation().unwrap().invariant, "nak_at_last_delivery");
    let mut c = checker_with(request_of(&w, RequestKind::Valid));
    let overload = Stats {
        overload_naks: 1,
        ..Stats::default()
    };
    step(&mut c, &w, &nak, 3, &s, &overload);
    assert_eq!(
        c.violation().map(|v| v.invariant),
        Some("nak_at_last_delivery"),
        "overloaded at the last delivery, the core dead-letters"
    );
}

#[test]
fn a_dlq_record_with_another_msg_id_fails() {
    let w = workload();
    let mut c = checker_with(request_of(&w, RequestKind::Valid));
    let record = r#"{"reason":"maxdeliver_exhausted","original_subject":"beamline.router.v1.decide","original_payload_hash":"x","stream_seq":1,"delivered":3,"error":{"code":"C","message":"m","severity":"error"},"received_at":0,"router_node_id":"router-1"}"#;
    let dlq = publish(
        3,
        subjects::DECIDE_DLQ,
        PublishKind::JetStream,
        Some("dlq-99"),
        record,
    );
    let s = Stats::default();
    step(&mut c, &w, &[dlq], 3, &s, &s);
    assert_eq!(c.violation().unwrap().invariant, "msg_id_unstable");
}

#[test]
fn an_assignment_for_a_request_that_did_not_ask_fails() {
    let w = workload();
    let r = w
        .requests()
        .iter()
        .position(|r| r.kind == RequestKind::Valid && !r.push_assignment)
        .unwrap();
    let mut c = checker_with(r);
    let id = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
    let assignment = format!(
        r#"{{"version":"1","assignment_id":"{id}","request_id":"r-{r}","tenant_id":"acme","executor":{{"provider_id":"openai","channel":"nats"}},"job":{{}},"options":{{"priority":50,"deadline_ms":5000,"retry":{{"max_attempts":2,"backoff_ms":200}}}},"correlation":{{}},"decision":{{"provider_id":"openai","priority":50,"expected_latency_ms":500,"expected_cost":0.01,"reason":"weighted"}},"metadata":{{}}}}"#
    );
    let p = publish(
        4,
        subjects::ASSIGNMENT,
        PublishKind::JetStream,
        Some(id),
        &assignment,
    );
    let s = Stats::default();
    step(&mut c, &w, &[p], 1, &s, &s);
    assert_eq!(c.violation().unwrap().invariant, "assignment_wrong");
}

#[test]
fn a_usage_event_for_an_unknown_assignment_fails() {
    let w = workload();
    let mut c = Checker::new(3, false, 0);
    let usage = r#"{"version":"1","usage_id":"usage-a1","tenant_id":"acme","provider_id":"openai","event_type":"t","latency_ms":1,"cost":0.0,"status":"success","timestamp":0,"assignment_id":"a1","request_id":"r-0"}"#;
    c.on_usage_consumed(5, 1, usage.as_bytes(), &w);
    assert_eq!(c.violation().unwrap().invariant, "usage_wrong");
}

#[test]
fn liveness_names_what_is_missing() {
    let w = workload();
    let valid = checker_with(request_of(&w, RequestKind::Valid));
    let open = |c: &Checker, state| match c.finality(Cons::Decide, 1, state, &w) {
        Finality::Open(invariant, _) => invariant,
        Finality::Final => "final",
    };
    assert_eq!(
        open(&valid, MessageState::Pending { delivered: 1 }),
        "stuck"
    );
    assert_eq!(
        open(&valid, MessageState::Exhausted),
        "exhausted_not_dead_lettered"
    );
    assert_eq!(open(&valid, MessageState::Acked), "unanswered");
    let invalid = w
        .requests()
        .iter()
        .position(|r| matches!(r.kind, RequestKind::Invalid(_)))
        .unwrap();
    let mut c = checker_with(invalid);
    c.on_reply_at_server(
        3,
        P,
        1,
        br#"{"ok":false,"error":{"code":"invalid_request"},"context":{}}"#,
        &w,
    );
    assert_eq!(open(&c, MessageState::Acked), "invalid_not_dead_lettered");
    c.on_dlq_stored(4, Cons::Decide, 1, false);
    assert_eq!(open(&c, MessageState::Terminated), "final");
}
