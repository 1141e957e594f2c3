//! The typed client against a real nats-server and the `beamline-router` binary: a
//! decision, a typed error for an unknown policy, byte-identical replays for a repeated
//! idempotency key, retries across a router that is not there yet, and the `decide`
//! command's function.
//!
//! Needs nats-server (`$NATS_SERVER_BIN`, `nats-server` on PATH, or
//! `scripts/install-nats-server.sh`); never skips.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod support;

use std::time::Duration;

use beamline_router::client::{
    cli, ClientError, DecideClient, DecideOptions, DecideReply, DecideRequestBuilder,
};
use beamline_router::contracts::{DecisionReason, ErrorCode};
use serde_json::{json, Map, Value};
use support::{acme_policies, NatsServer, RouterProcess as Router};

fn payload(n: usize) -> Map<String, Value> {
    match json!({"prompt": format!("hello number {n}")}) {
        Value::Object(map) => map,
        _ => unreachable!(),
    }
}

fn opts() -> DecideOptions {
    DecideOptions::default().with_timeout(Duration::from_secs(5))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_errors_and_idempotent_replays() {
    let server = NatsServer::start();
    let policies = acme_policies();
    let router = Router::start(&server.url(), policies.path(), &[]);
    let nats = async_nats::connect(server.url()).await.unwrap();
    let client = DecideClient::connect(nats).await.unwrap();

    // A decision.
    let answer = client
        .decide_raw(
            DecideRequestBuilder::new("acme", "text.generate")
                .request_id("c-1")
                .payload(payload(1)),
            &opts(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}; router log:\n{}", router.log()));
    println!("decision: {}", String::from_utf8_lossy(&answer.raw));
    assert_eq!(answer.attempts, 1);
    match &answer.reply {
        DecideReply::Decision(d) => {
            assert!(d.ok);
            assert!(["openai", "anthropic"].contains(&d.decision.provider_id.as_str()));
            assert_eq!(d.decision.reason, DecisionReason::Weighted);
            assert_eq!(d.context.request_id.as_deref(), Some("c-1"));
        }
        other => panic!("expected a decision, got {other:?}"),
    }

    // An unknown policy: the typed error.
    let reply = client
        .decide(
            DecideRequestBuilder::new("acme", "text.generate")
                .request_id("c-2")
                .policy_id("no-such-policy")
                .payload(payload(2)),
            &opts(),
        )
        .await
        .unwrap();
    println!("unknown policy: {reply:?}");
    match reply {
        DecideReply::Error(e) => {
            assert!(!e.ok);
            assert_eq!(e.error.code, ErrorCode::PolicyNotFound);
            assert_eq!(e.context.request_id.as_deref(), Some("c-2"));
        }
        other => panic!("expected policy_not_found, got {other:?}"),
    }

    // The same idempotency key twice, and again with a different payload: the same
    // bytes each time. Twenty keys, so that a weighted choice that differed would show.
    for n in 0..20 {
        let key = format!("order-{n}");
        let request = || {
            DecideRequestBuilder::new("acme", "text.generate")
                .idempotency_key(key.clone())
                .payload(payload(n))
        };
        let first = client.decide_raw(request(), &opts()).await.unwrap();
        let second = client.decide_raw(request(), &opts()).await.unwrap();
        let third = client
            .decide_raw(request().payload(payload(n + 1000)), &opts())
            .await
            .unwrap();
        assert!(first.reply.is_ok(), "{:?}", first.reply);
        assert_eq!(first.request_id, key, "the key is the request id");
        assert_eq!(first.raw, second.raw, "{key}: replies differ");
        assert_eq!(first.raw, third.raw, "{key}: replies differ");
    }
    println!("client stats: {:?}", client.stats());
    let stats = client.stats();
    assert_eq!(stats.republishes, 0, "{stats:?}");
    assert_eq!(stats.unconfirmed_publishes, 0, "{stats:?}");
    assert_eq!(stats.unmatched_replies, 0, "{stats:?}");
}

/// The client publishes before any router runs: the request waits in the stream, the
/// client re-publishes on its timeouts, and the router, once up, answers every copy
/// with the same bytes (the first from a decision, the others from the answer book).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_reach_a_router_that_starts_late() {
    let server = NatsServer::start();
    let policies = acme_policies();
    // A first router creates the streams and stops; the decide stream keeps what arrives.
    let first = Router::start(&server.url(), policies.path(), &[]);
    drop(first);

    let nats = async_nats::connect(server.url()).await.unwrap();
    let client = DecideClient::connect(nats.clone()).await.unwrap();
    // Watch the client's inbox too, to see every copy of the reply.
    let mut wire = nats.subscribe(client.inbox().to_string()).await.unwrap();
    nats.flush().await.unwrap();

    let options = DecideOptions {
        timeout: Duration::from_millis(700),
        max_attempts: 8,
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_millis(400),
        publish_timeout: Duration::from_secs(2),
    };
    let call = tokio::spawn(async move {
        let answer = client
            .decide_raw(
                DecideRequestBuilder::new("acme", "text.generate")
                    .request_id("late-1")
                    .payload(payload(1)),
                &options,
            )
            .await;
        (answer, client.stats())
    });
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let router = tokio::task::block_in_place(|| Router::start(&server.url(), policies.path(), &[]));
    let (answer, stats) = call.await.unwrap();
    let answer = answer.unwrap_or_else(|e| panic!("{e}; router log:\n{}", router.log()));
    println!(
        "answered after {} attempts; stats {stats:?}",
        answer.attempts
    );
    assert!(
        answer.attempts > 1,
        "the router was down: a retry was needed"
    );
    assert!(answer.reply.is_ok());

    // Every stored copy is answered, all with the first reply's bytes.
    let mut copies = Vec::new();
    while let Ok(Some(m)) =
        tokio::time::timeout(Duration::from_secs(2), futures::StreamExt::next(&mut wire)).await
    {
        copies.push(m.payload);
    }
    println!("{} copies of the reply on the wire", copies.len());
    assert_eq!(
        copies.len() as u64,
        stats.publishes,
        "one reply per stored copy"
    );
    assert!(copies.iter().all(|c| *c == answer.raw), "replies differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_stream_is_a_publish_error_and_no_router_a_timeout() {
    let server = NatsServer::start();
    let nats = async_nats::connect(server.url()).await.unwrap();
    let client = DecideClient::connect(nats).await.unwrap();
    // A PubAck on a busy machine can take a while: a slow one must not turn the
    // "no router" case into a publish error.
    let options = DecideOptions {
        timeout: Duration::from_secs(1),
        max_attempts: 2,
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_millis(50),
        publish_timeout: Duration::from_secs(5),
    };
    let request = || {
        DecideRequestBuilder::new("acme", "text.generate")
            .request_id("x-1")
            .payload(payload(1))
    };
    // No stream captures the subject: JetStream answers "no responders".
    let err = client.decide(request(), &options).await.unwrap_err();
    println!("without a stream: {err}");
    assert!(
        matches!(err, ClientError::Publish { attempts: 2, .. }),
        "{err:?}"
    );

    // The stream exists but no router consumes it.
    let policies = acme_policies();
    drop(tokio::task::block_in_place(|| {
        Router::start(&server.url(), policies.path(), &[])
    }));
    let err = client.decide(request(), &options).await.unwrap_err();
    println!("without a router: {err}");
    assert!(
        matches!(err, ClientError::Timeout { attempts: 2 }),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_decide_command_prints_the_reply() {
    let server = NatsServer::start();
    let policies = acme_policies();
    let _router = Router::start(&server.url(), policies.path(), &[]);
    let code = cli::decide_command(
        &server.url(),
        "acme",
        "text.generate",
        None,
        Some(r#"{"prompt":"from the terminal"}"#),
        Duration::from_secs(6),
    )
    .await
    .unwrap();
    assert_eq!(code, 0);
    let code = cli::decide_command(
        &server.url(),
        "acme",
        "text.generate",
        Some("missing"),
        None,
        Duration::from_secs(6),
    )
    .await
    .unwrap();
    assert_eq!(code, 1, "an error reply exits 1");
}
