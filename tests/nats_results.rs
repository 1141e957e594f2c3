//! Results, usage and the HTTP endpoints against a real nats-server: a result published
//! twice yields exactly one usage event; `/metrics`, `/healthz` and `/readyz` answer.

mod support;

use std::time::Duration;

use async_nats::HeaderMap;
use beamline_router::contracts::subjects::{HEADER_MSG_ID, RESULT, USAGE};
use support::{acme_policies, free_port, http_get, metric, NatsServer, RouterProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_published_twice_emits_one_usage_event() {
    let server = NatsServer::start();
    let policies = acme_policies();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut router = RouterProcess::start(
        &server.url(),
        policies.path(),
        &["--metrics-listen", &listen],
    );
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());

    // Every stream the router needs exists, with the subjects it publishes to.
    for (stream, subject) in [
        ("BEAMLINE_RESULTS", RESULT),
        ("BEAMLINE_USAGE", USAGE),
        ("BEAMLINE_ASSIGNMENTS", "caf.exec.assign.v1"),
    ] {
        let s = js.get_stream(stream).await.unwrap();
        assert_eq!(s.cached_info().config.subjects, vec![subject.to_string()]);
    }
    let dlq = js.get_stream("BEAMLINE_DLQ").await.unwrap();
    println!(
        "DLQ stream subjects: {:?}",
        dlq.cached_info().config.subjects
    );
    assert!(dlq
        .cached_info()
        .config
        .subjects
        .contains(&"caf.exec.result.v1.dlq".to_string()));
    assert!(
        js.get_stream("BEAMLINE_ASSIGN_ACKS").await.is_err(),
        "the ack stream exists only with acks.enabled"
    );

    let result = serde_json::json!({
        "version": "1", "assignment_id": "asg-1", "request_id": "req-1",
        "status": "success", "provider_id": "openai", "job": {"type": "text.generate"},
        "latency_ms": 120, "cost": 0.01, "tenant_id": "acme", "trace_id": "trace-1"
    });
    // Two publishes with different message ids: both are stored and both delivered.
    for msg_id in ["result-1a", "result-1b"] {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_MSG_ID, msg_id);
        js.publish_with_headers(RESULT, headers, result.to_string().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    let mut usage = js.get_stream("BEAMLINE_USAGE").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while usage.info().await.unwrap().state.messages == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no usage event within 10 s; router log:\n{}",
            router.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Both results settled (acked), and still only one usage event.
    let mut results = js.get_stream("BEAMLINE_RESULTS").await.unwrap();
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        results.get_consumer("router-results").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info = consumer.info().await.unwrap();
        if info.ack_floor.stream_sequence == 2 && info.num_ack_pending == 0 {
            println!(
                "results consumer: max_deliver {}, ack floor 2",
                info.config.max_deliver
            );
            assert_eq!(info.config.max_deliver, 10);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "results not both acked: {info:?}; router log:\n{}",
            router.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(results.info().await.unwrap().state.messages, 2);
    assert_eq!(usage.info().await.unwrap().state.messages, 1);
    let (event, v) = support::last_json(&usage, USAGE).await;
    assert_eq!(v["usage_id"], "usage-asg-1");
    assert_eq!(v["tenant_id"], "acme");
    assert_eq!(v["provider_id"], "openai");
    assert_eq!(
        event
            .headers
            .get(HEADER_MSG_ID)
            .map(|h| h.as_str().to_string()),
        Some("usage-asg-1".to_string())
    );

    // Metrics and health, once the snapshot (1 s) has caught up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, text) = tokio::task::block_in_place(|| http_get(port, "/metrics"));
    assert_eq!(status, 200);
    for line in text.lines().filter(|l| {
        l.starts_with("router_usage")
            || l.starts_with("router_results")
            || l.starts_with("router_nats")
            || l.starts_with("router_ready")
            || l.starts_with("router_consumer_deliveries")
            || l.starts_with("router_jetstream_acks")
    }) {
        println!("metric: {line}");
    }
    assert_eq!(
        metric(&text, "router_usage_emitted_total"),
        Some(1),
        "{text}"
    );
    assert_eq!(
        metric(&text, "router_results_duplicate_total"),
        Some(1),
        "{text}"
    );
    assert_eq!(metric(&text, "router_nats_connected"), Some(1), "{text}");
    assert!(
        text.contains("router_table_entries{table=\"results\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("router_consumer_deliveries_total{consumer=\"results\"} 2"),
        "{text}"
    );
    // Both deliveries were timed, and neither waited anywhere near two minutes.
    assert!(
        text.contains("router_delivery_age_seconds_count{consumer=\"results\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("router_delivery_age_seconds_bucket{consumer=\"results\",le=\"120\"} 2"),
        "{text}"
    );
    // Heartbeats came: no pull stream was taken for stalled and re-created.
    assert!(
        text.contains("router_pull_restarts_total{consumer=\"results\"} 0"),
        "{text}"
    );
    assert_eq!(
        tokio::task::block_in_place(|| http_get(port, "/healthz")).0,
        200
    );
    assert_eq!(
        tokio::task::block_in_place(|| http_get(port, "/readyz")).0,
        200
    );

    let status = tokio::task::block_in_place(|| router.stop(Duration::from_secs(15)));
    assert!(
        status.success(),
        "router exited with {status}; log:\n{}",
        router.log()
    );
}

/// `/readyz` says no while NATS is down and yes again after the reconnect, which is
/// counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_nats_connection() {
    let mut server = NatsServer::start();
    let policies = acme_policies();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut router = RouterProcess::start(
        &server.url(),
        policies.path(),
        &["--metrics-listen", &listen],
    );
    let get = |path: &str| tokio::task::block_in_place(|| http_get(port, path));
    assert_eq!(get("/readyz").0, 200);
    tokio::task::block_in_place(|| server.kill());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while get("/readyz").0 != 503 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still ready without NATS"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get("/healthz").0, 200, "alive while disconnected");
    tokio::task::block_in_place(|| server.restart());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while get("/readyz").0 != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not ready after the server came back; log:\n{}",
            router.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = get("/metrics").1;
    println!(
        "after reconnect: reconnects_total = {:?}",
        metric(&text, "router_nats_reconnects_total")
    );
    assert_eq!(
        metric(&text, "router_nats_reconnects_total"),
        Some(1),
        "{text}"
    );
    assert!(router.log().contains("nats connected"), "{}", router.log());
    let status = tokio::task::block_in_place(|| router.stop(Duration::from_secs(15)));
    assert!(
        status.success(),
        "router exited with {status}; log:\n{}",
        router.log()
    );
}

/// The real `/metrics` page, after decisions, a refusal and a result, passes Prometheus'
/// own lint (`promtool check metrics`: names, types, HELP, units, label syntax).
/// `scripts/test.sh` installs promtool (`scripts/install-prometheus.sh`); never skips.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_page_passes_promtool_check_metrics() {
    let promtool = std::env::var("PROMTOOL_BIN").unwrap_or_else(|_| "promtool".to_string());
    let server = NatsServer::start();
    let policies = acme_policies();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let router = RouterProcess::start(
        &server.url(),
        policies.path(),
        &["--metrics-listen", &listen],
    );
    let client = async_nats::connect(server.url()).await.unwrap();
    let decide = beamline_router::client::DecideClient::connect(client.clone())
        .await
        .unwrap();
    support::decided(&decide, "lint-1", &router).await;
    let js = async_nats::jetstream::new(client.clone());
    js.publish(
        beamline_router::contracts::subjects::DECIDE,
        "not json".into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await; // one metrics tick
    let (status, text) = tokio::task::block_in_place(|| http_get(port, "/metrics"));
    assert_eq!(status, 200);
    assert!(text.contains("router_decisions_total"), "{text}");
    assert!(
        metric(&text, "router_decide_duration_seconds_count").unwrap_or(0) >= 1,
        "the decision was timed: {text}"
    );
    let mut child = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {promtool} (scripts/install-prometheus.sh): {e}"));
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}"
    );
}
