//! The router's own subjects on the wire, against a real nats-server: the backpressure
//! status (its fields and values, idle and past its thresholds) and the admin requests
//! (refused without the token, with a wrong one; answered with it, in the header or the
//! body; addressed to one instance by its node id).
//!
//! Needs nats-server (see `support::nats_server_bin`); never skips.

mod support;

use std::time::Duration;

use async_nats::HeaderMap;
use beamline_router::contracts::subjects::{BACKPRESSURE_STATUS, DECIDE, HEADER_REPLY_TO};
use futures::StreamExt;
use serde_json::{json, Value};
use support::{acme_policies, NatsServer, RouterProcess};
use tokio::time::Instant;

const TOKEN: &str = "test-admin-token-0123456789";

async fn ask(nats: &async_nats::Client, subject: &str, body: Value) -> Value {
    let reply = nats
        .request(subject.to_string(), body.to_string().into())
        .await
        .unwrap_or_else(|e| panic!("{subject}: {e}"));
    serde_json::from_slice(&reply.payload).unwrap()
}

async fn admin(nats: &async_nats::Client, op: &str, token: Option<&str>, body: Value) -> Value {
    let mut headers = HeaderMap::new();
    if let Some(t) = token {
        headers.insert("Authorization", format!("Bearer {t}").as_str());
    }
    let reply = nats
        .request_with_headers(
            format!("beamline.router.v1.admin.{op}"),
            headers,
            body.to_string().into(),
        )
        .await
        .unwrap_or_else(|e| panic!("admin {op}: {e}"));
    serde_json::from_slice(&reply.payload).unwrap()
}

/// Idle: `inactive`, zero figures, the configured thresholds and retry-after echoed.
/// Then a pre-processor that never answers holds every delivery (the in-flight bound is
/// 4) while 40 requests wait: two figures over their thresholds make it `active`, and
/// the figures say why. A bad subject is `unknown` with `invalid_subject`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_reports_its_real_figures_idle_and_past_its_thresholds() {
    let server = NatsServer::start();
    let policies = tempfile::tempdir().unwrap();
    std::fs::create_dir(policies.path().join("acme")).unwrap();
    std::fs::write(
        policies.path().join("acme/default.json"),
        r#"{"providers":[{"name":"openai","weight":1}],
           "pre":[{"id":"stuck","mode":"required"}]}"#,
    )
    .unwrap();
    let registry = tempfile::tempdir().unwrap();
    let registry_file = registry.path().join("extensions.json");
    std::fs::write(
        &registry_file,
        r#"[{"id":"stuck","type":"pre","subject":"test.ext.pre.stuck.v1","timeout_ms":5000}]"#,
    )
    .unwrap();
    let router = RouterProcess::spawn(
        &server.url(),
        policies.path(),
        &["--max-ack-pending", "4"],
        &[
            (
                "BEAMLINE_ROUTER_EXTENSIONS_FILE",
                registry_file.to_str().unwrap(),
            ),
            ("BEAMLINE_BACKPRESSURE_QUEUE_OVERLOAD", "10"),
            ("BEAMLINE_BACKPRESSURE_INFLIGHT_OVERLOAD", "3"),
            ("BEAMLINE_BACKPRESSURE_LATENCY_OVERLOAD_MS", "60000"),
            ("BEAMLINE_BACKPRESSURE_RETRY_AFTER_SECONDS", "7"),
        ],
    );
    router.wait_ready();
    let nats = async_nats::connect(server.url()).await.unwrap();

    let idle = ask(&nats, BACKPRESSURE_STATUS, json!({"subject": DECIDE})).await;
    println!("idle: {idle}");
    assert_eq!(idle["success"], true, "{idle}");
    assert_eq!(idle["node_id"], "router-1", "which instance answered");
    let d = &idle["data"];
    assert_eq!(d["subject"], DECIDE);
    assert_eq!(d["status"], "inactive", "{idle}");
    assert_eq!(
        d["metrics"],
        json!({"pending_messages": 0, "latency_p95_ms": 0, "inflight_messages": 0}),
        "{idle}"
    );
    assert_eq!(
        d["thresholds"],
        json!({"queue_overload": 10, "latency_overload_ms": 60000, "inflight_overload": 3}),
        "{idle}"
    );
    assert_eq!(d["policy"]["retry_after_seconds"], 7);
    assert!(
        d["timestamp"].as_u64().unwrap() > 1_700_000_000_000,
        "wall-clock ms: {idle}"
    );

    let bad = ask(&nats, BACKPRESSURE_STATUS, json!({"subject": ""})).await;
    assert_eq!(bad["success"], false, "{bad}");
    assert_eq!(bad["data"]["status"], "unknown", "{bad}");
    assert_eq!(bad["error"], "invalid_subject", "{bad}");

    // The extension listens and never answers: each decision waits its 5 s time-out.
    let mut stuck = nats.subscribe("test.ext.pre.stuck.v1").await.unwrap();
    nats.flush().await.unwrap();
    let js = async_nats::jetstream::new(nats.clone());
    let inbox = nats.new_inbox();
    for n in 0..40 {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_REPLY_TO, inbox.as_str());
        let id = format!("bp-{n}");
        let payload = beamline_router::bench::traffic::decide_request(&id, "acme", n);
        js.publish_with_headers(DECIDE, headers, payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    assert!(
        tokio::time::timeout(Duration::from_secs(5), stuck.next())
            .await
            .is_ok(),
        "the extension was called"
    );

    // The pending count is read every second: wait for the status to turn.
    let deadline = Instant::now() + Duration::from_secs(15);
    let busy = loop {
        let s = ask(&nats, BACKPRESSURE_STATUS, json!({"subject": DECIDE})).await;
        if s["data"]["status"] == "active" {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "never active: {s}; router log:\n{}",
            router.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("busy: {busy}");
    let m = &busy["data"]["metrics"];
    let pending = m["pending_messages"].as_u64().unwrap();
    let inflight = m["inflight_messages"].as_u64().unwrap();
    assert!(pending > 10 && pending <= 40, "pending {pending}: {busy}");
    assert!(
        (4..=5).contains(&inflight),
        "in flight {inflight} (bound 4): {busy}"
    );
    assert!(m["latency_p95_ms"].as_u64().unwrap() < 60_000, "{busy}");
    assert_eq!(busy["data"]["policy"]["retry_after_seconds"], 7);
}

/// Admin requests: refused without a token and with a wrong one (`unauthorized`,
/// counted), answered with the token in the `Authorization` header or in the body;
/// `dry_run` names a provider of the policy; `get_stats` counts what happened; the
/// node-addressed subject reaches this instance and no other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_requests_need_the_token_and_answer_with_it() {
    let server = NatsServer::start();
    let policies = acme_policies();
    let router = RouterProcess::start(
        &server.url(),
        policies.path(),
        &["--admin-token", TOKEN, "--node-id", "router-7"],
    );
    let nats = async_nats::connect(server.url()).await.unwrap();

    let none = admin(&nats, "get_stats", None, json!({})).await;
    assert_eq!(
        none,
        json!({"ok": false, "error": {"code": "unauthorized", "message": "missing admin token"},
            "node_id": "router-7"}),
        "{none}"
    );
    let wrong = admin(&nats, "get_stats", Some("not-the-token-at-all"), json!({})).await;
    assert_eq!(wrong["ok"], false, "{wrong}");
    assert_eq!(wrong["error"]["code"], "unauthorized", "{wrong}");
    assert!(
        !wrong.to_string().contains(TOKEN),
        "the token is never echoed"
    );

    let breakers = admin(&nats, "get_circuit_breaker_states", Some(TOKEN), json!({})).await;
    assert_eq!(breakers["ok"], true, "{breakers}");
    assert!(breakers["breakers"].is_array(), "{breakers}");

    let dry = admin(
        &nats,
        "dry_run",
        None,
        json!({"token": TOKEN, "tenant_id": "acme"}),
    )
    .await;
    println!("dry_run: {dry}");
    assert_eq!(dry["ok"], true, "the token in the body: {dry}");
    let provider = dry.pointer("/decision/provider_id").and_then(Value::as_str);
    assert!(
        matches!(provider, Some("openai" | "anthropic")),
        "a provider of acme's policy: {dry}"
    );
    let unknown = admin(
        &nats,
        "dry_run",
        Some(TOKEN),
        json!({"tenant_id": "globex"}),
    )
    .await;
    assert_eq!(unknown["error"]["code"], "policy_not_found", "{unknown}");

    let stats = admin(&nats, "get_stats", Some(TOKEN), json!({})).await;
    assert_eq!(stats["ok"], true, "{stats}");
    assert_eq!(stats["stats"]["admin_refused"], 2, "two refusals: {stats}");
    assert!(
        stats["stats"]["inbound_requests"].as_u64().unwrap() >= 6,
        "{stats}"
    );

    // By node id: this instance answers; a node that does not exist has no responder.
    let mine = nats
        .request_with_headers(
            "beamline.router.v1.admin.node.router-7.get_stats",
            {
                let mut h = HeaderMap::new();
                h.insert("Authorization", format!("Bearer {TOKEN}").as_str());
                h
            },
            "{}".into(),
        )
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&mine.payload).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    let other = nats
        .request(
            "beamline.router.v1.admin.node.router-8.get_stats",
            "{}".into(),
        )
        .await;
    assert!(
        matches!(&other, Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders),
        "{other:?}"
    );
    drop(router);
}
