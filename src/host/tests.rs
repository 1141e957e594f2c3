use super::*;
use crate::core::{PayloadDigest, Probe, Publish, PublishKind, RouterConfig};
use crate::policy::{parse_policy, PolicyStore};

/// A fixed entropy stream and no fault points.
struct TestEnv(u64);

impl Entropy for TestEnv {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.0
    }
}

impl Buggify for TestEnv {}
impl Probe for TestEnv {}

/// The test entropy, with one BUGGIFY site that fires every time it is asked.
struct Buggified(TestEnv, &'static str);

impl Entropy for Buggified {
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
}

impl Buggify for Buggified {
    fn buggify(&mut self, site: &'static str) -> bool {
        site == self.1
    }
}
impl Probe for Buggified {}

type TestHost = Host<&'static str, &'static str>;

const DECIDE: &str = "beamline.router.v1.decide";

fn consumers() -> Vec<ConsumerRef> {
    let c = |role, stream: &str, durable: &str| ConsumerRef {
        role,
        stream: stream.into(),
        durable: durable.into(),
    };
    vec![
        c(Role::Decide, "DECIDE", "router"),
        c(Role::Results, "RESULTS", "router-results"),
        c(Role::Advisories, "ROUTER_ADVISORIES", "router-advisories"),
    ]
}

fn host_with(tweak: impl FnOnce(&mut HostConfig)) -> TestHost {
    let mut store = PolicyStore::new();
    store.insert(
        "acme",
        parse_policy("default", r#"{"providers":[{"name":"openai","weight":1}]}"#).unwrap(),
    );
    let router = Router::new(
        RouterConfig {
            max_deliver: 3,
            ..RouterConfig::default()
        },
        store,
    );
    let mut config = HostConfig::new(consumers(), 100);
    tweak(&mut config);
    let mut host = Host::new(router, config);
    host.start(Time(0));
    drain(&mut host);
    host
}

fn host() -> TestHost {
    host_with(|_| {})
}

fn drain(host: &mut TestHost) -> Vec<Action<&'static str, &'static str>> {
    std::iter::from_fn(|| host.poll_action()).collect()
}

fn request(id: &str) -> Vec<u8> {
    format!(r#"{{"version":"1","request_id":"{id}","tenant_id":"acme","task":{{"type":"t","payload":{{"text":"hello world"}}}}}}"#)
        .into_bytes()
}

fn arrival(
    consumer: usize,
    ack: &'static str,
    seq: u64,
    delivered: u64,
    payload: Vec<u8>,
) -> Event<&'static str, &'static str> {
    Event::Delivery(Arrival {
        consumer,
        ack,
        subject: DECIDE.into(),
        headers: vec![("Reply-To".into(), "_INBOX.gw.1".into())],
        digest: PayloadDigest::of(&payload),
        payload,
        stream_seq: seq,
        delivered,
        pending: None,
    })
}

fn publishes(actions: &[Action<&'static str, &'static str>]) -> Vec<Publish> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Io {
                command: Command::Publish(p),
                ..
            } => Some(p.clone()),
            _ => None,
        })
        .collect()
}

fn settles(actions: &[Action<&'static str, &'static str>]) -> Vec<(&'static str, Settle)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Settle { ack, how } => Some((*ack, *how)),
            _ => None,
        })
        .collect()
}

#[test]
fn start_pulls_every_consumer_and_reads_pending() {
    let mut store = PolicyStore::new();
    store.insert(
        "acme",
        parse_policy("default", r#"{"providers":[{"name":"a","weight":1}]}"#).unwrap(),
    );
    let mut host: TestHost = Host::new(
        Router::new(RouterConfig::default(), store),
        HostConfig::new(consumers(), 10),
    );
    host.start(Time(5));
    let actions = drain(&mut host);
    assert_eq!(
        actions,
        vec![
            Action::Pull { consumer: 0 },
            Action::Pull { consumer: 1 },
            Action::Pull { consumer: 2 },
            Action::ReadPending
        ]
    );
    assert_eq!(
        host.poll_timeout(),
        Some(Time(1_005)),
        "the next pending read"
    );
}

#[test]
fn a_delivery_is_acked_through_its_handle_once_its_reply_is_confirmed() {
    let mut host = host();
    let mut env = TestEnv(1);
    host.handle(
        Time(10),
        arrival(0, "ack-1", 1, 1, request("r-1")),
        &mut env,
    );
    let actions = drain(&mut host);
    let replies = publishes(&actions);
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].kind, PublishKind::Core);
    assert!(
        settles(&actions).is_empty(),
        "nothing settled before the reply is out"
    );
    host.handle(
        Time(11),
        Event::PublishDone {
            id: replies[0].id,
            outcome: PublishOutcome::Confirmed,
        },
        &mut env,
    );
    assert_eq!(settles(&drain(&mut host)), vec![("ack-1", Settle::Ack)]);
    assert_eq!(host.counters().deliveries_held, 0);
    assert!(host.is_idle());
}

#[test]
fn buggify_a_delivery_handed_over_twice_is_decided_once_and_settled_through_both_handles() {
    let mut host = host();
    let mut env = Buggified(TestEnv(1), "host.delivery_twice");
    host.handle(Time(0), arrival(0, "ack-1", 1, 1, request("r-1")), &mut env);
    let actions = drain(&mut host);
    let replies = publishes(&actions);
    assert_eq!(replies.len(), 1, "the second delivery joins the first");
    assert_eq!(host.counters().deliveries_held, 2);
    let mut env = TestEnv(2);
    host.handle(
        Time(1),
        Event::PublishDone {
            id: replies[0].id,
            outcome: PublishOutcome::Confirmed,
        },
        &mut env,
    );
    assert_eq!(
        settles(&drain(&mut host)),
        vec![("ack-1", Settle::Ack), ("ack-1", Settle::Ack)]
    );
    assert_eq!(host.counters().deliveries_held, 0);
}

#[test]
fn buggify_a_publish_confirmed_late_is_failed_at_its_deadline() {
    let mut host = host_with(|c| c.publish_timeout_ms = 500);
    let mut env = Buggified(TestEnv(1), "host.publish_outcome_late");
    host.handle(Time(0), arrival(0, "ack-1", 1, 1, request("r-1")), &mut env);
    let reply = publishes(&drain(&mut host))[0].clone();
    host.handle(
        Time(10),
        Event::PublishDone {
            id: reply.id,
            outcome: PublishOutcome::Confirmed,
        },
        &mut env,
    );
    assert!(drain(&mut host).is_empty(), "the confirmation is held up");
    host.handle_timeout(Time(500), &mut env);
    assert_eq!(
        settles(&drain(&mut host)),
        vec![("ack-1", Settle::Nak { delay_ms: 1_000 })],
        "at the deadline the reply counts as failed"
    );
}

#[test]
fn the_host_times_a_publish_out_and_drops_its_late_outcome() {
    let mut host = host_with(|c| c.publish_timeout_ms = 500);
    let mut env = TestEnv(1);
    host.handle(Time(0), arrival(0, "ack-1", 1, 1, request("r-1")), &mut env);
    let reply = publishes(&drain(&mut host))[0].clone();
    assert_eq!(host.poll_timeout(), Some(Time(500)));
    host.handle_timeout(Time(499), &mut env);
    assert!(settles(&drain(&mut host)).is_empty(), "not due yet");
    host.handle_timeout(Time(500), &mut env);
    let actions = drain(&mut host);
    assert_eq!(
        settles(&actions),
        vec![("ack-1", Settle::Nak { delay_ms: 1_000 })],
        "the failed reply gives the message back"
    );
    host.handle(
        Time(600),
        Event::PublishDone {
            id: reply.id,
            outcome: PublishOutcome::Confirmed,
        },
        &mut env,
    );
    assert!(
        drain(&mut host).is_empty(),
        "a late confirmation changes nothing"
    );
    let c = host.counters();
    assert_eq!((c.io_timeouts, c.late_outcomes), (1, 1));
}

fn advisory(seq: u64) -> Vec<u8> {
    format!(r#"{{"type":"io.nats.jetstream.advisory.v1.max_deliver","stream":"DECIDE","consumer":"router","stream_seq":{seq},"deliveries":3}}"#).into_bytes()
}

#[test]
fn an_advisory_is_acked_only_once_the_dlq_record_is_stored() {
    let mut host = host();
    let mut env = TestEnv(1);
    host.handle(Time(0), arrival(2, "adv-1", 1, 1, advisory(7)), &mut env);
    let actions = drain(&mut host);
    assert_eq!(
        actions,
        vec![Action::Fetch {
            id: 1,
            stream: "DECIDE".into(),
            seq: 7
        }]
    );
    host.handle(
        Time(1),
        Event::Fetched {
            id: 1,
            message: Fetched::Found {
                subject: DECIDE.into(),
                headers: vec![],
                payload: request("r-7"),
            },
        },
        &mut env,
    );
    let actions = drain(&mut host);
    let records = publishes(&actions);
    assert!(
        settles(&actions).is_empty(),
        "the advisory waits for the record"
    );
    let record = records
        .iter()
        .find(|p| p.kind == PublishKind::JetStream)
        .expect("a DLQ record");
    // The record fails once: still waiting (the core retries it by timer).
    host.handle(
        Time(2),
        Event::PublishDone {
            id: record.id,
            outcome: PublishOutcome::Failed { reason: "x".into() },
        },
        &mut env,
    );
    assert!(settles(&drain(&mut host)).is_empty());
    // The core retries the record by timer (`dlq_retry_ms`); pending reads come between.
    let (mut retried, mut retry_at) = (Vec::new(), Time(0));
    while retried.is_empty() {
        retry_at = host.poll_timeout().unwrap();
        assert!(retry_at.millis() < 60_000, "no retry of the DLQ record");
        host.handle_timeout(retry_at, &mut env);
        retried = publishes(&drain(&mut host));
    }
    let retry = retried
        .iter()
        .find(|p| p.msg_id == record.msg_id)
        .expect("the record again");
    host.handle(
        retry_at,
        Event::PublishDone {
            id: retry.id,
            outcome: PublishOutcome::Confirmed,
        },
        &mut env,
    );
    assert_eq!(settles(&drain(&mut host)), vec![("adv-1", Settle::Ack)]);
    assert_eq!(host.counters().advisories_held, 0);
}

#[test]
fn advisories_not_ours_are_acked_unreadable_ones_terminated_failed_fetches_naked() {
    let mut host = host();
    let mut env = TestEnv(1);
    let foreign = br#"{"stream":"OTHER","consumer":"x","stream_seq":1,"deliveries":3}"#.to_vec();
    host.handle(Time(0), arrival(2, "adv-1", 1, 1, foreign), &mut env);
    host.handle(
        Time(0),
        arrival(2, "adv-2", 2, 1, b"not json".to_vec()),
        &mut env,
    );
    host.handle(Time(0), arrival(2, "adv-3", 3, 1, advisory(9)), &mut env);
    host.handle(
        Time(0),
        Event::Fetched {
            id: 1,
            message: Fetched::Failed,
        },
        &mut env,
    );
    // A fetch that is never answered fails at the host's deadline, like a failed one.
    host.handle(Time(0), arrival(2, "adv-4", 4, 1, advisory(10)), &mut env);
    host.handle_timeout(Time(2_000), &mut env);
    assert_eq!(
        settles(&drain(&mut host)),
        vec![
            ("adv-1", Settle::Ack),
            ("adv-2", Settle::Term),
            ("adv-3", Settle::Nak { delay_ms: 1_000 }),
            ("adv-4", Settle::Nak { delay_ms: 1_000 })
        ]
    );
    let c = host.counters();
    assert_eq!((c.advisories_ignored, c.advisories_unreadable), (1, 1));
}

#[test]
fn an_advisory_for_a_message_settled_before_is_acked_at_once() {
    let mut host = host();
    let mut env = TestEnv(1);
    host.handle(Time(0), arrival(0, "ack-1", 7, 3, request("r-7")), &mut env);
    let reply = publishes(&drain(&mut host))[0].id;
    host.handle(
        Time(1),
        Event::PublishDone {
            id: reply,
            outcome: PublishOutcome::Confirmed,
        },
        &mut env,
    );
    drain(&mut host);
    host.handle(Time(2), arrival(2, "adv-1", 1, 1, advisory(7)), &mut env);
    drain(&mut host);
    host.handle(
        Time(3),
        Event::Fetched {
            id: 1,
            message: Fetched::Found {
                subject: DECIDE.into(),
                headers: vec![],
                payload: request("r-7"),
            },
        },
        &mut env,
    );
    let actions = drain(&mut host);
    assert!(
        publishes(&actions).is_empty(),
        "no record for a settled message"
    );
    assert_eq!(settles(&actions), vec![("adv-1", Settle::Ack)]);
}

#[test]
fn settles_beyond_the_outbox_bound_are_dropped_while_disconnected() {
    let mut host = host_with(|c| c.outbox_bound = 2);
    let mut env = TestEnv(1);
    host.handle(Time(0), Event::Connection(ConnectionEvent::Down), &mut env);
    for (i, ack) in ["a", "b", "c"].into_iter().enumerate() {
        host.handle(
            Time(1),
            Event::Inbound {
                reply: ack,
                subject: "beamline.router.v1.backpressure.status".into(),
                headers: vec![],
                payload: vec![],
            },
            &mut env,
        );
        let _ = i;
    }
    let answered = drain(&mut host)
        .iter()
        .filter(|a| matches!(a, Action::Respond { .. }))
        .count();
    assert_eq!(answered, 2);
    assert_eq!(host.counters().outbox_dropped, 1);
    host.handle(Time(2), Event::Connection(ConnectionEvent::Up), &mut env);
    host.handle(
        Time(3),
        Event::Inbound {
            reply: "d",
            subject: "beamline.router.v1.backpressure.status".into(),
            headers: vec![],
            payload: vec![],
        },
        &mut env,
    );
    assert!(
        matches!(drain(&mut host)[..], [Action::Respond { reply: "d", .. }]),
        "connected again: no bound"
    );
}

#[test]
fn pending_counts_reach_the_core_only_when_they_change() {
    let mut host = host_with(|c| c.record_steps = true);
    let mut env = TestEnv(1);
    host.take_steps();
    for pending in [5, 5, 6] {
        host.handle(Time(1), Event::Pending { pending }, &mut env);
    }
    let fed: Vec<Input> = host.take_steps().into_iter().map(|s| s.input).collect();
    assert_eq!(
        fed,
        vec![
            Input::ConsumerPending { pending: 5 },
            Input::ConsumerPending { pending: 6 }
        ]
    );
    // Reads are asked for every `pending_every_ms` while connected.
    host.handle_timeout(Time(1_000), &mut env);
    assert_eq!(drain(&mut host), vec![Action::ReadPending]);
    host.handle(
        Time(1_001),
        Event::Connection(ConnectionEvent::Down),
        &mut env,
    );
    host.handle_timeout(Time(2_000), &mut env);
    assert!(drain(&mut host).is_empty(), "no reads while disconnected");
}

#[test]
fn a_stalled_pull_is_restarted_at_once_an_ended_one_after_a_second() {
    let mut host = host();
    let mut env = TestEnv(1);
    host.handle(
        Time(10),
        Event::Pull {
            consumer: 0,
            event: PullEvent::Stalled,
        },
        &mut env,
    );
    assert_eq!(drain(&mut host), vec![Action::Pull { consumer: 0 }]);
    host.handle(
        Time(10),
        Event::Pull {
            consumer: 1,
            event: PullEvent::Ended,
        },
        &mut env,
    );
    assert!(drain(&mut host).is_empty());
    host.handle_timeout(Time(1_010), &mut env);
    assert!(drain(&mut host).contains(&Action::Pull { consumer: 1 }));
    assert_eq!(host.counters().pull_restarts, vec![1, 0, 0]);
}

#[test]
fn shutdown_stops_intake_and_exits_once_drained_or_at_the_grace_end() {
    let mut host = host();
    let mut env = TestEnv(1);
    host.handle(Time(0), arrival(0, "ack-1", 1, 1, request("r-1")), &mut env);
    let reply = publishes(&drain(&mut host))[0].id;
    host.handle(Time(1), Event::Shutdown { grace_ms: 100 }, &mut env);
    assert_eq!(drain(&mut host), vec![Action::StopIntake]);
    host.handle(
        Time(2),
        Event::Inbound {
            reply: "r",
            subject: "x".into(),
            headers: vec![],
            payload: vec![],
        },
        &mut env,
    );
    assert!(drain(&mut host).is_empty(), "not listening while draining");
    // A delivery the pull still hands over is given back at once, never started.
    host.handle(Time(2), arrival(0, "ack-2", 2, 1, request("r-2")), &mut env);
    assert_eq!(
        drain(&mut host),
        vec![Action::Settle {
            ack: "ack-2",
            how: Settle::Nak { delay_ms: 0 }
        }]
    );
    assert_eq!(host.router().stats().deliveries, 1);
    assert_eq!(host.counters().handed_back, 1);
    host.handle(
        Time(3),
        Event::PublishDone {
            id: reply,
            outcome: PublishOutcome::Confirmed,
        },
        &mut env,
    );
    assert_eq!(
        drain(&mut host),
        vec![
            Action::Settle {
                ack: "ack-1",
                how: Settle::Ack
            },
            Action::Exit { drained: true }
        ]
    );
    assert_eq!(host.poll_timeout(), None);

    let mut host = host_with(|c| c.publish_timeout_ms = 10_000);
    host.handle(Time(0), arrival(0, "ack-1", 1, 1, request("r-1")), &mut env);
    drain(&mut host);
    host.handle(Time(1), Event::Shutdown { grace_ms: 100 }, &mut env);
    drain(&mut host);
    assert_eq!(host.poll_timeout(), Some(Time(101)));
    host.handle_timeout(Time(101), &mut env);
    assert_eq!(drain(&mut host), vec![Action::Exit { drained: false }]);
}

#[test]
fn the_delivery_table_is_bounded() {
    let mut host = host_with(|c| c.delivery_bound = 1);
    let mut env = TestEnv(1);
    host.handle(Time(0), arrival(0, "ack-1", 1, 1, request("r-1")), &mut env);
    host.handle(Time(0), arrival(0, "ack-2", 2, 1, request("r-2")), &mut env);
    let ids: Vec<u64> = publishes(&drain(&mut host)).iter().map(|p| p.id).collect();
    for id in ids {
        host.handle(
            Time(1),
            Event::PublishDone {
                id,
                outcome: PublishOutcome::Confirmed,
            },
            &mut env,
        );
    }
    assert_eq!(
        settles(&drain(&mut host)),
        vec![("ack-2", Settle::Ack)],
        "the first handle was evicted"
    );
    let c = host.counters();
    assert_eq!((c.deliveries_evicted, c.unknown_handles), (1, 1));
}

#[test]
fn the_last_delivery_is_started_not_handed_back_while_draining() {
    // A nak of the last delivery the server allows leaves the message to the
    // MAX_DELIVERIES advisory, which is lost while the advisory stream has no leader:
    // the draining host decides it itself and waits for it (max_deliver is 3 here).
    let mut host = host();
    let mut env = TestEnv(1);
    host.handle(Time(0), arrival(0, "ack-1", 1, 1, request("r-1")), &mut env);
    let first = publishes(&drain(&mut host))[0].id;
    host.handle(Time(1), Event::Shutdown { grace_ms: 100 }, &mut env);
    assert_eq!(drain(&mut host), vec![Action::StopIntake]);
    host.handle(Time(2), arrival(0, "ack-3", 3, 3, request("r-3")), &mut env);
    let last = publishes(&drain(&mut host))[0].id;
    assert_eq!(host.counters().handed_back, 0);
    assert_eq!(host.router().stats().deliveries, 2);
    for (at, id) in [(3, first), (4, last)] {
        host.handle(
            Time(at),
            Event::PublishDone {
                id,
                outcome: PublishOutcome::Confirmed,
            },
            &mut env,
        );
    }
    assert_eq!(
        drain(&mut host),
        vec![
            Action::Settle {
                ack: "ack-1",
                how: Settle::Ack
            },
            Action::Settle {
                ack: "ack-3",
                how: Settle::Ack
            },
            Action::Exit { drained: true }
        ]
    );
}

#[test]
fn a_reload_is_put_in_force_whole_or_refused_whole() {
    let mut host = host();
    let mut env = TestEnv(1);
    assert!(host
        .reload(
            Err("acme/broken.json: weight must be >= 0".into()),
            &mut env
        )
        .is_err());
    assert!(
        host.router().policies().get("acme", "default").is_some(),
        "a refused set leaves the running one in force"
    );
    let mut store = PolicyStore::new();
    store.insert(
        "initech",
        parse_policy(
            "default",
            r#"{"providers":[{"name":"anthropic","weight":1}]}"#,
        )
        .unwrap(),
    );
    let reload = Reload {
        policies: store,
        extensions: None,
    };
    assert_eq!(host.reload(Ok(reload), &mut env), Ok(1));
    assert!(host.router().policies().get("acme", "default").is_none());
    assert!(host.router().policies().get("initech", "default").is_some());
    assert_eq!(
        host.router().config().extensions.len(),
        3,
        "no registry given: kept"
    );
    let c = host.counters();
    assert_eq!((c.policy_reloads, c.policy_reloads_refused), (1, 1));
}

#[test]
fn a_decide_message_is_timed_from_hand_over_to_ack() {
    let mut host = host();
    let mut env = TestEnv(1);
    host.handle(
        Time(100),
        arrival(0, "ack-1", 1, 1, request("r-1")),
        &mut env,
    );
    let reply = publishes(&drain(&mut host))[0].id;
    assert_eq!(host.counters().decide_durations.count(), 0, "not acked yet");
    host.handle(
        Time(107),
        Event::PublishDone {
            id: reply,
            outcome: PublishOutcome::Confirmed,
        },
        &mut env,
    );
    drain(&mut host);
    let d = host.counters().decide_durations;
    assert_eq!((d.count(), d.sum_ms), (1, 7));
    assert_eq!(d.counts[3], 1, "7 ms is in the <= 10 ms bucket");
}
