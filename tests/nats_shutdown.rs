//! Graceful shutdown under load: SIGTERM a router mid-load, start a second one, and
//! check that every request ends with exactly one reply (or byte-identical duplicates).

mod support;

use std::time::Duration;

use beamline_router::bench::traffic::{self, LoadPlan};
use beamline_router::contracts::subjects::DECIDE;
use support::{acme_policies, NatsServer, RouterProcess};

const REQUESTS: usize = 300;
const SIGNAL_AFTER_ANSWERS: usize = 80;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_load_loses_nothing() {
    let server = NatsServer::start();
    let policies = acme_policies();
    let args = ["--ack-wait-secs", "3", "--shutdown-grace-ms", "5000"];
    let mut first = RouterProcess::start(&server.url(), policies.path(), &args);
    let client = async_nats::connect(server.url()).await.unwrap();

    let plan = LoadPlan {
        requests: REQUESTS,
        tenant: "acme".into(),
        concurrency: 16,
        resend_after: Duration::from_secs(10),
        max_attempts: 3,
        deadline: Duration::from_secs(60),
        linger: Duration::from_secs(2),
        run_id: "shutdown".into(),
        decide_subject: DECIDE.into(),
    };
    // The fault lands the moment SIGNAL_AFTER_ANSWERS requests are answered.
    let (load, at_signal) =
        support::load_until_answered(&client, &plan, SIGNAL_AFTER_ANSWERS).await;
    println!("SIGTERM to the first router after {at_signal} answers; starting a second");
    first.terminate();
    let mut second =
        tokio::task::block_in_place(|| RouterProcess::start(&server.url(), policies.path(), &args));
    let status = tokio::task::block_in_place(|| first.wait_exit(Duration::from_secs(15)));
    assert!(
        status.success(),
        "first router exited with {status}; log:\n{}",
        first.log()
    );
    let log = first.log();
    for line in log.lines().filter(|l| {
        l.contains("shutdown") || l.contains("driver stopped") || l.contains("router stopped")
    }) {
        println!("first router: {line}");
    }
    assert!(log.contains("router stopped"), "{log}");

    let report = load.await.unwrap().unwrap();
    println!("{}", traffic::summary(&report));
    println!(
        "answered twice: {}  re-sent: {}",
        report.answered_twice(),
        report.resent()
    );
    let unanswered = report.unanswered();
    assert!(
        unanswered.is_empty(),
        "{} of {REQUESTS} requests got no reply: {:?}\nfirst log:\n{}\nsecond log:\n{}",
        unanswered.len(),
        &unanswered[..unanswered.len().min(10)],
        first.log(),
        second.log()
    );
    for record in &report.records {
        let first_reply = &record.replies[0];
        for other in &record.replies[1..] {
            assert_eq!(
                first_reply, other,
                "{}: different replies",
                record.request_id
            );
        }
        let v: serde_json::Value = serde_json::from_slice(first_reply).unwrap();
        assert_eq!(v["ok"], true, "{}: {v}", record.request_id);
    }
    assert!(
        (SIGNAL_AFTER_ANSWERS..REQUESTS).contains(&at_signal),
        "signal was not mid-load"
    );
    let status = tokio::task::block_in_place(|| second.stop(Duration::from_secs(15)));
    assert!(
        status.success(),
        "second router exited with {status}; log:\n{}",
        second.log()
    );
}

/// A SIGTERM that lands while the router is still setting up (after it connected, before
/// the driver's first turn) must stop it cleanly: the handlers are installed at start,
/// not when the shutdown future is first polled. Found by CI: a router stopped right
/// after "router ready" died of the default SIGTERM action (exit by signal).
#[test]
fn sigterm_during_start_up_stops_cleanly() {
    let server = NatsServer::start();
    let policies = acme_policies();
    for round in 0..5 {
        let mut router = RouterProcess::spawn(&server.url(), policies.path(), &[], &[]);
        // Poll tightly: setup after "nats connected" takes tens of milliseconds.
        router.wait_log("nats connected", Duration::from_millis(1));
        let status = router.stop(Duration::from_secs(15));
        let log = router.log();
        assert!(status.success(), "round {round}: {status:?}\n{log}");
        assert!(log.contains("SIGTERM"), "round {round}: {log}");
    }
}
