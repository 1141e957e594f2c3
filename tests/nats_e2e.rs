//! End to end against a real nats-server: the `beamline-router` binary answers decide
//! requests sent through JetStream, across a SIGKILL and restart of the server, and
//! dead-letters what it cannot accept.
//!
//! Needs nats-server (see `support::nats_server_bin`); never skips.

mod support;

use std::time::Duration;

use async_nats::HeaderMap;
use beamline_router::bench::traffic::{self, LoadPlan};
use beamline_router::contracts::subjects::{DECIDE, DECIDE_DLQ, HEADER_MSG_ID, HEADER_REPLY_TO};
use beamline_sim::actors::gateway::{Invalid, RequestKind};
use beamline_sim::history::{History, SentRequest};
use futures::StreamExt;
use support::{acme_policies, NatsServer, RouterProcess};

const REQUESTS: usize = 200;
/// The server is killed once this many requests have been answered.
const KILL_AFTER_ANSWERS: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_answered_across_a_server_crash() {
    let mut server = NatsServer::start();
    let policies = acme_policies();
    // A short ack_wait so that deliveries whose acks died with the server come back soon.
    let mut router = RouterProcess::start(
        &server.url(),
        policies.path(),
        &["--ack-wait-secs", "3", "--publish-timeout-ms", "2000"],
    );
    let client = async_nats::connect(server.url()).await.unwrap();

    let plan = LoadPlan {
        requests: REQUESTS,
        tenant: "acme".into(),
        concurrency: 8,
        resend_after: Duration::from_secs(4),
        max_attempts: 10,
        deadline: Duration::from_secs(60),
        linger: Duration::from_secs(2),
        run_id: "e2e".into(),
        decide_subject: DECIDE.into(),
    };
    // The fault lands the moment KILL_AFTER_ANSWERS requests are answered.
    let (load, answered_before_kill) =
        support::load_until_answered(&client, &plan, KILL_AFTER_ANSWERS).await;
    println!("killing nats-server (SIGKILL) after {answered_before_kill} answers");
    tokio::task::block_in_place(|| server.kill());
    tokio::time::sleep(Duration::from_secs(1)).await;
    tokio::task::block_in_place(|| server.restart());
    println!("nats-server restarted on the same port and store");

    let report = load.await.unwrap().unwrap();
    println!("{}", traffic::summary(&report));
    println!(
        "answered twice: {}  re-sent by the gateway: {}",
        report.answered_twice(),
        report.resent()
    );
    // Requests sent vs. stored tells whether publishes in flight at the crash were lost
    // (never stored) or stored without their PubAck reaching the gateway.
    let sends: u32 = report.records.iter().map(|r| r.attempts).sum();
    let stored = async_nats::jetstream::new(client.clone())
        .get_stream("BEAMLINE_DECIDE")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages;
    println!("requests sent {sends}, stored in the decide stream {stored}");

    let unanswered = report.unanswered();
    assert!(
        unanswered.is_empty(),
        "{} of {REQUESTS} requests got no reply (killed after {answered_before_kill}): {:?}\nrouter log:\n{}",
        unanswered.len(),
        &unanswered[..unanswered.len().min(10)],
        router.log()
    );
    for record in &report.records {
        for reply in &record.replies {
            let v: serde_json::Value = serde_json::from_slice(reply).unwrap_or_else(|e| {
                panic!(
                    "{}: reply is not JSON ({e}): {}",
                    record.request_id,
                    String::from_utf8_lossy(reply)
                )
            });
            assert_eq!(v["ok"], true, "{}: {v}", record.request_id);
            let provider = v["decision"]["provider_id"].as_str().unwrap_or_default();
            assert!(
                ["openai", "anthropic"].contains(&provider),
                "{}: provider {provider:?}",
                record.request_id
            );
            assert_eq!(v["context"]["request_id"], record.request_id.as_str());
        }
        // A request answered twice (a lost ack, a re-send) must be answered the same way.
        if let Some(first) = record.replies.first() {
            for other in &record.replies[1..] {
                assert_eq!(
                    first, other,
                    "{} (sent {} times) got different replies",
                    record.request_id, record.attempts
                );
            }
        }
    }
    assert!(
        answered_before_kill >= KILL_AFTER_ANSWERS,
        "the crash was meant to happen mid-run, but only {answered_before_kill} answers came before it"
    );
    // The run as its clients saw it, held to the simulator's history rules (one router
    // process, never restarted: every answer to a key is the same bytes).
    let js = async_nats::jetstream::new(client.clone());
    let history = support::history::of_load(&report, "acme", &js).await;
    support::history::judge("server crash", &history, &support::history::rules(5, true));

    let status = tokio::task::block_in_place(|| router.stop(Duration::from_secs(15)));
    assert!(
        status.success(),
        "router exited with {status}; log:\n{}",
        router.log()
    );
    let log = router.log();
    if let Some(stats) = log.lines().rev().find(|l| l.contains("driver stopped")) {
        println!("router: {stats}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_request_gets_an_error_reply_and_a_dlq_record() {
    let server = NatsServer::start();
    let policies = acme_policies();
    let mut router = RouterProcess::start(&server.url(), policies.path(), &[]);
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.unwrap();
    client.flush().await.unwrap();

    // No tenant and no task: intake refuses it.
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_REPLY_TO, inbox.as_str());
    headers.insert(HEADER_MSG_ID, "invalid-1");
    let stored = js
        .publish_with_headers(
            DECIDE,
            headers,
            r#"{"version":"1","request_id":"bad-1"}"#.into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();

    let reply = tokio::time::timeout(Duration::from_secs(10), replies.next())
        .await
        .unwrap_or_else(|_| panic!("no error reply within 10 s; router log:\n{}", router.log()))
        .expect("reply subscription open");
    let v: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    println!("error reply: {v}");
    assert_eq!(v["ok"], false, "{v}");
    assert!(v["error"]["code"].is_string(), "{v}");
    assert_eq!(v["context"]["request_id"], "bad-1", "{v}");

    let mut dlq = js.get_stream("BEAMLINE_DLQ").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while dlq.info().await.unwrap().state.messages == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no DLQ record within 10 s; router log:\n{}",
            router.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (record, r) = support::last_json(&dlq, DECIDE_DLQ).await;
    assert_eq!(r["reason"], "validation_failed", "{r}");
    assert_eq!(r["original_subject"], DECIDE, "{r}");
    assert_eq!(r["stream_seq"], stored.sequence, "{r}");
    assert_eq!(r["request_id"], "bad-1", "{r}");
    assert_eq!(
        record
            .headers
            .get(HEADER_MSG_ID)
            .map(|v| v.as_str().to_string()),
        Some(format!("dlq-{}", stored.sequence))
    );
    assert!(
        !String::from_utf8_lossy(&record.payload).contains("\"version\":\"1\",\"request_id\""),
        "the DLQ record carries a hash, never the payload"
    );
    // The same exchange through the simulator's history rules: the reply and the DLQ
    // record as the simulated world's are judged (reason, header, hash, msg id).
    let history = History {
        requests: vec![SentRequest {
            kind: RequestKind::Invalid(Invalid::MissingTenant),
            tenant: None,
            payload: Some(br#"{"version":"1","request_id":"bad-1"}"#.to_vec()),
            msg_ids: vec!["invalid-1".into()],
            ..SentRequest::valid("bad-1", "acme")
        }],
        replies: vec![("bad-1".into(), reply.payload.to_vec())],
        dlq: support::history::stream_messages(&js, "BEAMLINE_DLQ").await,
        usage: Vec::new(),
    };
    support::history::judge(
        "invalid request",
        &history,
        &support::history::rules(5, true),
    );

    let status = tokio::task::block_in_place(|| router.stop(Duration::from_secs(15)));
    assert!(
        status.success(),
        "router exited with {status}; log:\n{}",
        router.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_creates_streams_and_consumer_and_stops_cleanly_on_sigterm() {
    let server = NatsServer::start();
    let policies = acme_policies();
    let mut router = RouterProcess::start(
        &server.url(),
        policies.path(),
        &["--max-deliver", "4", "--ack-wait-secs", "7"],
    );
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let decide = js.get_stream("BEAMLINE_DECIDE").await.unwrap();
    assert_eq!(
        decide.cached_info().config.subjects,
        vec![DECIDE.to_string()]
    );
    let dlq = js.get_stream("BEAMLINE_DLQ").await.unwrap();
    // The DLQ stream also captures the results' (and, when enabled, acks') dead letters.
    assert!(
        dlq.cached_info()
            .config
            .subjects
            .contains(&DECIDE_DLQ.to_string()),
        "{:?}",
        dlq.cached_info().config.subjects
    );
    let consumer: async_nats::jetstream::consumer::PullConsumer =
        decide.get_consumer("router-decide").await.unwrap();
    let config = &consumer.cached_info().config;
    assert_eq!(config.max_deliver, 4);
    assert_eq!(config.ack_wait, Duration::from_secs(7));
    assert_eq!(
        config.ack_policy,
        async_nats::jetstream::consumer::AckPolicy::Explicit
    );

    let status = tokio::task::block_in_place(|| router.stop(Duration::from_secs(15)));
    assert!(
        status.success(),
        "router exited with {status}; log:\n{}",
        router.log()
    );
    assert!(router.log().contains("router stopped"), "{}", router.log());
}

/// While the DLQ stream is missing, dead-lettering fails ("no responders" on the
/// JetStream publish); the message must be kept (nak'ed, redelivered), not terminated,
/// and its record must land once the DLQ stream is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_dlq_publish_is_retried_until_the_dlq_is_back() {
    let server = NatsServer::start();
    let policies = acme_policies();
    let mut router = RouterProcess::start(&server.url(), policies.path(), &[]);
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let dlq_config = js
        .get_stream("BEAMLINE_DLQ")
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    js.delete_stream("BEAMLINE_DLQ").await.unwrap();

    let mut headers = HeaderMap::new();
    headers.insert(HEADER_MSG_ID, "invalid-2");
    let stored = js
        .publish_with_headers(DECIDE, headers, "not json at all".into())
        .await
        .unwrap()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut decide = js.get_stream("BEAMLINE_DECIDE").await.unwrap();
    let consumer: async_nats::jetstream::consumer::PullConsumer =
        decide.get_consumer("router-decide").await.unwrap();
    let mut consumer = consumer;
    let info = consumer.info().await.unwrap();
    println!(
        "while the DLQ is missing: ack floor {}, ack pending {}, redelivered {}",
        info.ack_floor.stream_sequence, info.num_ack_pending, info.num_redelivered
    );
    assert!(
        info.ack_floor.stream_sequence < stored.sequence,
        "the message was settled although its DLQ record could not be written"
    );
    assert_eq!(decide.info().await.unwrap().state.messages, 1);

    let mut dlq = js.create_stream(dlq_config).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while dlq.info().await.unwrap().state.messages == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no DLQ record within 30 s of the DLQ stream coming back; router log:\n{}",
            router.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, r) = support::last_json(&dlq, DECIDE_DLQ).await;
    assert_eq!(r["reason"], "validation_failed", "{r}");
    assert_eq!(r["stream_seq"], stored.sequence, "{r}");
    assert!(r["delivered"].as_u64().unwrap_or(0) > 1, "{r}");

    let status = tokio::task::block_in_place(|| router.stop(Duration::from_secs(15)));
    assert!(
        status.success(),
        "router exited with {status}; log:\n{}",
        router.log()
    );
    let log = router.log();
    if let Some(stats) = log.lines().rev().find(|l| l.contains("driver stopped")) {
        println!("router: {stats}");
    }
}

/// The backpressure status a gateway polls is a plain NATS request answered by the core.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_status_is_answered() {
    let server = NatsServer::start();
    let policies = acme_policies();
    let mut router = RouterProcess::start(&server.url(), policies.path(), &[]);
    let client = async_nats::connect(server.url()).await.unwrap();
    let reply = client
        .request(
            beamline_router::contracts::subjects::BACKPRESSURE_STATUS,
            format!(r#"{{"subject":"{DECIDE}"}}"#).into(),
        )
        .await
        .unwrap_or_else(|e| panic!("no status reply: {e}; router log:\n{}", router.log()));
    let v: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    println!("backpressure status: {v}");
    assert!(v.is_object(), "{v}");

    let admin = client
        .request(
            "beamline.router.v1.admin.get_circuit_breaker_states",
            "{}".into(),
        )
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&admin.payload).unwrap();
    assert_eq!(v["ok"], false, "no admin token configured: {v}");

    let status = tokio::task::block_in_place(|| router.stop(Duration::from_secs(15)));
    assert!(
        status.success(),
        "router exited with {status}; log:\n{}",
        router.log()
    );
}
