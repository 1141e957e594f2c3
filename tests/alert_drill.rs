//! The alert drill, end to end with real parts: nats-server, the router, a real
//! Prometheus scraping the router's /metrics every second and evaluating the shipped
//! rules, a real Alertmanager, and a webhook receiver here. The drill kills nats-server:
//! `BeamlineRouterNatsDisconnected` must reach the webhook as firing, with its labels and
//! annotations; nats-server comes back on the same port and store: the resolved
//! notification must follow. The rule is the shipped one with its `for` shortened from
//! 1 m to 2 s, so that the drill takes seconds.
//!
//! Needs nats-server, prometheus and prometheus-alertmanager (`scripts/test.sh` installs
//! them); never skips.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{acme_policies, alerting, free_port, NatsServer, RouterProcess};
use tokio::time::Instant;

const ALERT: &str = "BeamlineRouterNatsDisconnected";

/// The first notification for `ALERT` with `status`, within `within`.
async fn notification(hook: &alerting::Webhook, status: &str, within: Duration) -> Option<Value> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let found = {
            let received = hook.received.lock().unwrap();
            received
                .iter()
                .find(|n| {
                    n["status"] == status
                        && n["alerts"]
                            .as_array()
                            .is_some_and(|a| a.iter().any(|a| a["labels"]["alertname"] == ALERT))
                })
                .cloned()
        };
        if let Some(n) = found {
            return Some(n);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_pages_and_its_end_resolves_the_page() {
    let mut server = NatsServer::start();
    let policies = acme_policies();
    let metrics_port = free_port();
    let listen = format!("127.0.0.1:{metrics_port}");
    let router = RouterProcess::start(
        &server.url(),
        policies.path(),
        &["--metrics-listen", &listen],
    );

    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/router-rules.yml"),
    )
    .unwrap();
    // The shipped rule, waiting 2 s instead of 1 m.
    let marker = "      - alert: BeamlineRouterNatsDisconnected\n        expr: router_nats_connected == 0\n        for: 1m\n";
    assert!(shipped.contains(marker), "the drill's rule changed shape");
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        shipped.replace(marker, &marker.replace("for: 1m", "for: 2s")),
    )
    .unwrap();

    let hook = alerting::webhook();
    let am = alerting::alertmanager(dir.path(), &hook.url);
    let prom = alerting::prometheus(dir.path(), &listen, &rules, am.port);
    // Healthy first: scraped, nothing firing for this alert.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        notification(&hook, "firing", Duration::from_millis(10))
            .await
            .is_none(),
        "fired while NATS was up"
    );

    let outage = Instant::now();
    tokio::task::block_in_place(|| server.kill());
    let firing = notification(&hook, "firing", Duration::from_secs(45)).await;
    let Some(firing) = firing else {
        panic!(
            "no firing notification within 45 s\nprometheus:\n{}\nalertmanager:\n{}\nrouter:\n{}",
            prom.log_text(),
            am.log_text(),
            router.log()
        );
    };
    let paged_after = outage.elapsed();
    println!("firing after {paged_after:?}: {firing}");
    let alert = firing["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["labels"]["alertname"] == ALERT)
        .unwrap();
    assert_eq!(alert["labels"]["severity"], "critical", "{alert}");
    assert_eq!(alert["labels"]["job"], "beamline-router", "{alert}");
    assert_eq!(alert["labels"]["instance"], listen.as_str(), "{alert}");
    assert_eq!(
        alert["annotations"]["summary"],
        format!("router {listen} lost NATS"),
        "{alert}"
    );

    let back = Instant::now();
    tokio::task::block_in_place(|| server.restart());
    let resolved = notification(&hook, "resolved", Duration::from_secs(45)).await;
    let Some(resolved) = resolved else {
        panic!(
            "no resolved notification within 45 s\nprometheus:\n{}\nalertmanager:\n{}\nrouter:\n{}",
            prom.log_text(),
            am.log_text(),
            router.log()
        );
    };
    println!(
        "resolved {:?} after the server came back: {resolved}",
        back.elapsed()
    );
    let alert = resolved["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["labels"]["alertname"] == ALERT)
        .unwrap();
    assert_eq!(alert["status"], "resolved", "{alert}");
    assert!(
        paged_after < Duration::from_secs(30),
        "paged {paged_after:?} after the outage"
    );
}
