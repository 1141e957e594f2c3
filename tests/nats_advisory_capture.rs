//! A message the server gives up on while the router is disconnected still reaches the
//! DLQ, and its gateway still hears about it, once the router is back.
//!
//! The server announces the end of a message's deliveries once, in a MAX_DELIVERIES
//! advisory. The router captures those advisories in a stream of its own and pulls them
//! with a durable consumer, so one published while it is away waits for it. Here the
//! router's connection is cut (a proxy between it and the server refuses it) while the
//! test itself pulls from the router's decide consumer and never acks, until the server
//! gives up; then the proxy lets the router back in.
//!
//! Needs nats-server (see `support::nats_server_bin`); never skips.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod support;

use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use async_nats::HeaderMap;
use beamline_router::contracts::subjects::{DECIDE, DECIDE_DLQ, HEADER_MSG_ID, HEADER_REPLY_TO};
use futures::StreamExt;
use support::{acme_policies, CutProxy, NatsServer, RouterProcess};
use tokio::time::{sleep, timeout, Instant};

const DECIDE_STREAM: &str = "BEAMLINE_DECIDE";
const ADVISORY_STREAM: &str = "BEAMLINE_ADVISORIES";
const DLQ_STREAM: &str = "BEAMLINE_DLQ";
const DECIDE_CONSUMER: &str = "router-decide";

async fn messages(js: &async_nats::jetstream::Context, stream: &str) -> u64 {
    js.get_stream(stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_exhausted_while_the_router_is_away_is_dead_lettered_on_its_return() {
    let server = NatsServer::start();
    let proxy = CutProxy::start(server.port);
    let policies = acme_policies();
    let router = RouterProcess::spawn(
        &proxy.url(),
        policies.path(),
        &[],
        &[
            ("BEAMLINE_DECIDE_MAX_DELIVER", "2"),
            ("BEAMLINE_DECIDE_ACK_WAIT_MS", "1000"),
        ],
    );
    router.wait_ready();
    let nats = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(nats.clone());
    let inbox = nats.new_inbox();
    let mut replies = nats.subscribe(inbox.clone()).await.unwrap();
    nats.flush().await.unwrap();

    proxy.cut();
    // The router's pull requests die with its connection; wait until the server agrees.
    let decide = js.get_stream(DECIDE_STREAM).await.unwrap();
    let mut consumer = decide
        .get_consumer::<pull::Config>(DECIDE_CONSUMER)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while consumer.info().await.unwrap().num_waiting > 0 {
        assert!(
            Instant::now() < deadline,
            "the router's pulls outlived its connection"
        );
        sleep(Duration::from_millis(50)).await;
    }

    let mut headers = HeaderMap::new();
    headers.insert(HEADER_REPLY_TO, inbox.as_str());
    headers.insert(HEADER_MSG_ID, "exhausted-1");
    let body = r#"{"version":"1","request_id":"away-1","tenant_id":"acme","task":{"type":"text.generate","payload":{"prompt":"hi"}}}"#;
    let stored = js
        .publish_with_headers(DECIDE, headers, body.into())
        .await
        .unwrap()
        .await
        .unwrap();

    // Take the router's place on its consumer, and fail every delivery (never ack) until
    // the server gives up and announces it.
    let mut deliveries = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while messages(&js, ADVISORY_STREAM).await == 0 {
        assert!(
            Instant::now() < deadline,
            "no MAX_DELIVERIES advisory captured after {deliveries} deliveries"
        );
        let mut batch = consumer
            .fetch()
            .max_messages(1)
            .expires(Duration::from_millis(1_500))
            .messages()
            .await
            .unwrap();
        while let Some(Ok(m)) = batch.next().await {
            assert_eq!(m.info().unwrap().stream_sequence, stored.sequence);
            deliveries += 1;
        }
    }
    assert_eq!(deliveries, 2, "max_deliver is 2");
    assert_eq!(
        messages(&js, DLQ_STREAM).await,
        0,
        "nobody dead-lettered it while the router was away"
    );

    proxy.restore();
    let reply = timeout(Duration::from_secs(30), replies.next())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no error reply within 30 s of the router's return; router log:\n{}",
                router.log()
            )
        })
        .expect("reply subscription open");
    let v: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    println!("error reply: {v}");
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["error"]["code"], "delivery_exhausted", "{v}");
    assert_eq!(v["context"]["request_id"], "away-1", "{v}");

    let deadline = Instant::now() + Duration::from_secs(10);
    while messages(&js, DLQ_STREAM).await == 0 {
        assert!(
            Instant::now() < deadline,
            "no DLQ record; router log:\n{}",
            router.log()
        );
        sleep(Duration::from_millis(50)).await;
    }
    let (_, r) = support::last_json(&js.get_stream(DLQ_STREAM).await.unwrap(), DECIDE_DLQ).await;
    assert_eq!(r["reason"], "maxdeliver_exhausted", "{r}");
    assert_eq!(r["stream_seq"], stored.sequence, "{r}");
    assert_eq!(r["request_id"], "away-1", "{r}");
    assert_eq!(r["delivered"], 2, "{r}");

    // The advisory is released once the record is stored: nothing waits, nothing pends.
    let mut advisories = js
        .get_stream(ADVISORY_STREAM)
        .await
        .unwrap()
        .get_consumer::<pull::Config>(&format!("{DECIDE_CONSUMER}-advisories"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = advisories.info().await.unwrap().clone();
        if info.num_ack_pending == 0 && info.num_pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "advisory not acked: {info:?}; router log:\n{}",
            router.log()
        );
        sleep(Duration::from_millis(100)).await;
    }
}
