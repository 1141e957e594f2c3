//! Assignments and their acks on the wire, against a real nats-server: a worker pulls
//! `ExecAssignment`s from their stream as a CAF worker would and checks each message's
//! headers and body against the decision the gateway got; the router consumes the
//! workers' acks of assignments, and dead-letters one it cannot read.
//!
//! Needs nats-server (see `support::nats_server_bin`); never skips.

mod support;

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use beamline_router::client::{DecideClient, DecideOptions, DecideReply, DecideRequestBuilder};
use beamline_router::contracts::subjects::{ASSIGNMENT, ASSIGNMENT_ACK, RESULT};
use beamline_sim::history::{History, SentRequest};
use futures::StreamExt;
use serde_json::{json, Value};
use support::{acme_policies, free_port, http_get, metric, NatsServer, RouterProcess};

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

fn request(id: &str) -> DecideRequestBuilder {
    let payload = match json!({"text": "Hello World"}) {
        Value::Object(m) => m,
        _ => unreachable!(),
    };
    DecideRequestBuilder::new("acme", "text.generate")
        .request_id(id)
        .trace_id(TRACE)
        .payload(payload)
        .push_assignment(true)
}

fn header(m: &async_nats::jetstream::Message, name: &str) -> Option<String> {
    m.headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.as_str().to_string())
}

/// Every decision that asked for an assignment yields exactly one, with `Nats-Msg-Id`
/// the assignment id, the tenant and version headers, a `traceparent` of the request's
/// trace, and a body that matches the gateway's decision; a re-sent request (same key)
/// gets the same reply and no second assignment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_pulls_one_assignment_per_decision_with_its_id_and_trace() {
    let server = NatsServer::start();
    let policies = acme_policies();
    let router = RouterProcess::start(&server.url(), policies.path(), &[]);
    let nats = async_nats::connect(server.url()).await.unwrap();
    let client = DecideClient::connect(nats.clone()).await.unwrap();
    let opts = DecideOptions::default().with_timeout(Duration::from_secs(10));

    let mut decisions = Vec::new();
    for n in 0..5 {
        let answer = client
            .decide_raw(request(&format!("as-{n}")), &opts)
            .await
            .unwrap_or_else(|e| panic!("{e}; router log:\n{}", router.log()));
        let DecideReply::Decision(d) = &answer.reply else {
            panic!("{:?}", answer.reply);
        };
        decisions.push((
            answer.request_id.clone(),
            serde_json::to_value(d).unwrap(),
            answer.raw,
        ));
    }
    // The gateway sends as-0 again with the same key: the same bytes, no new assignment.
    let again = client.decide_raw(request("as-0"), &opts).await.unwrap();
    assert_eq!(
        again.raw, decisions[0].2,
        "a re-sent request gets the first reply's bytes"
    );

    // A worker: a durable pull consumer of its own on the assignment stream.
    let js = jetstream::new(nats.clone());
    let stream = js.get_stream("BEAMLINE_ASSIGNMENTS").await.unwrap();
    let worker = stream
        .create_consumer(pull::Config {
            durable_name: Some("test-worker".into()),
            filter_subject: ASSIGNMENT.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut batch = worker
        .fetch()
        .max_messages(20)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .unwrap();
    let mut seen = Vec::new();
    while let Some(m) = batch.next().await {
        let m = m.unwrap();
        let body: Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(m.subject.as_str(), ASSIGNMENT);
        let id = body["assignment_id"].as_str().unwrap().to_string();
        assert_eq!(
            header(&m, "Nats-Msg-Id").as_deref(),
            Some(id.as_str()),
            "dedupe by assignment id"
        );
        assert_eq!(header(&m, "tenant_id").as_deref(), Some("acme"));
        assert_eq!(header(&m, "version").as_deref(), Some("1"));
        assert_eq!(header(&m, "trace_id").as_deref(), Some(TRACE));
        let parent = header(&m, "traceparent").expect("traceparent");
        let span = header(&m, "span_id").expect("span_id");
        assert_eq!(parent, format!("00-{TRACE}-{span}-01"));
        assert_eq!(
            m.info().unwrap().delivered,
            1,
            "first delivery to the worker"
        );
        m.ack().await.unwrap();
        // The worker ran the job: its result goes back to the router.
        let result = json!({"version": "1", "assignment_id": id, "request_id": body["request_id"],
            "status": "success", "provider_id": body["executor"]["provider_id"],
            "job": {"type": "text.generate"}, "latency_ms": 42, "cost": 0.002,
            "tenant_id": "acme", "trace_id": TRACE});
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("result-{id}").as_str());
        js.publish_with_headers(RESULT, headers, result.to_string().into())
            .await
            .unwrap()
            .await
            .unwrap();
        seen.push(body);
    }
    assert_eq!(
        seen.len(),
        5,
        "one assignment per decision, none for the re-send: {seen:#?}"
    );
    for (request_id, decision, _) in &decisions {
        let a = seen
            .iter()
            .find(|a| a["request_id"] == request_id.as_str())
            .unwrap_or_else(|| panic!("no assignment for {request_id}"));
        assert_eq!(a["tenant_id"], "acme");
        assert_eq!(
            a["executor"]["provider_id"], decision["decision"]["provider_id"],
            "{a}"
        );
        assert_eq!(a["executor"]["channel"], "nats");
        assert_eq!(a["job"]["type"], "text.generate");
        assert_eq!(a["job"]["payload"]["text"], "Hello World");
        assert_eq!(a["correlation"]["trace_id"], TRACE);
        let deadline = a["options"]["deadline_ms"].as_u64().unwrap();
        assert!(
            (5_000..=60_000).contains(&deadline),
            "deadline_ms {deadline}"
        );
        // uuid v4: 8-4-4-4-12 hex, version nibble 4.
        let id = a["assignment_id"].as_str().unwrap();
        assert_eq!(id.len(), 36, "{id}");
        assert_eq!(&id[14..15], "4", "{id}");
    }

    // A usage consumer: one event per assignment, keyed by it, for the request's tenant.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let usage = loop {
        let usage = support::history::stream_messages(&js, "BEAMLINE_USAGE").await;
        if usage.len() >= 5 || tokio::time::Instant::now() > deadline {
            break usage;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        usage.len(),
        5,
        "one usage event per assignment; router log:\n{}",
        router.log()
    );
    for m in &usage {
        let u: Value = serde_json::from_slice(&m.payload).unwrap();
        let a = seen
            .iter()
            .find(|a| a["assignment_id"] == u["assignment_id"])
            .unwrap_or_else(|| panic!("usage for an unknown assignment: {u}"));
        assert_eq!(
            u["usage_id"],
            format!("usage-{}", a["assignment_id"].as_str().unwrap())
        );
        assert_eq!(u["request_id"], a["request_id"]);
        assert_eq!(u["tenant_id"], "acme");
        assert_eq!(u["provider_id"], a["executor"]["provider_id"]);
    }
    // The whole exchange, held to the simulator's history rules.
    let history = History {
        requests: decisions
            .iter()
            .map(|(id, _, _)| SentRequest::valid(id, "acme"))
            .collect(),
        replies: decisions
            .iter()
            .map(|(id, _, raw)| (id.clone(), raw.to_vec()))
            .chain([("as-0".to_string(), again.raw.to_vec())])
            .collect(),
        dlq: support::history::stream_messages(&js, "BEAMLINE_DLQ").await,
        usage,
    };
    support::history::judge("assignments", &history, &support::history::rules(5, true));
}

/// Workers' acks of assignments: the router's ack consumer counts a valid one and
/// dead-letters one it cannot read (with the ack subject as its original), acking
/// neither twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_acks_are_consumed_and_a_bad_one_is_dead_lettered() {
    let server = NatsServer::start();
    let policies = acme_policies();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    // The ack consumer is opt-in (acks are informational).
    let router = RouterProcess::spawn(
        &server.url(),
        policies.path(),
        &["--metrics-listen", &listen],
        &[("BEAMLINE_ACKS_ENABLED", "true")],
    );
    router.wait_ready();
    let nats = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(nats.clone());

    let mut headers = async_nats::HeaderMap::new();
    headers.insert("tenant_id", "acme");
    let ack = json!({"version": "1", "assignment_id": "11111111-2222-4333-8444-555555555555",
        "request_id": "as-ack-1", "status": "accepted", "tenant_id": "acme"});
    js.publish_with_headers(ASSIGNMENT_ACK, headers.clone(), ack.to_string().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let bad = json!({"version": "1", "assignment_id": "11111111-2222-4333-8444-666666666666",
        "status": "maybe", "tenant_id": "acme"});
    let stored = js
        .publish_with_headers(ASSIGNMENT_ACK, headers, bad.to_string().into())
        .await
        .unwrap()
        .await
        .unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let text = loop {
        let (_, text) = tokio::task::block_in_place(|| http_get(port, "/metrics"));
        let acks = metric(&text, "router_assignment_acks_total").unwrap_or(0);
        let dead = metric(&text, "router_dlq_total").unwrap_or(0);
        if acks >= 1 && dead >= 1 {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "acks {acks}, DLQ records {dead} after 15 s; router log:\n{}",
            router.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        metric(&text, "router_assignment_acks_total"),
        Some(1),
        "only the valid ack counts"
    );

    let records = support::history::stream_messages(&js, "BEAMLINE_DLQ").await;
    assert_eq!(records.len(), 1, "one DLQ record, for the bad ack");
    let record: Value = serde_json::from_slice(&records[0].payload).unwrap();
    println!("ack DLQ record: {record}");
    assert_eq!(record["reason"], "validation_failed", "{record}");
    assert_eq!(record["original_subject"], ASSIGNMENT_ACK, "{record}");
    assert_eq!(record["stream_seq"], stored.sequence, "{record}");
    assert_eq!(record["tenant_id"], "acme", "{record}");

    // Both acks are settled on the router's ack consumer: nothing pending, nothing redelivered.
    let acks_stream = js.stream_by_subject(ASSIGNMENT_ACK).await.unwrap();
    println!("acks are kept by stream {acks_stream}");
    let mut consumer: jetstream::consumer::Consumer<pull::Config> = js
        .get_stream(&acks_stream)
        .await
        .unwrap()
        .get_consumer("router-assign-acks")
        .await
        .unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!(info.num_ack_pending, 0, "{info:?}");
    assert_eq!(info.num_pending, 0, "{info:?}");
    assert_eq!(info.delivered.stream_sequence, 2, "{info:?}");
}
