//! The pull watchdog against a real nats-server: when a consumer's pull stream hears
//! neither a message nor an idle heartbeat for two heartbeat intervals, the router drops
//! it and pulls afresh instead of waiting out the pull request's expiry (35 s).
//!
//! The silence is made by pausing the server (SIGSTOP) until the router notices: the
//! connection stays open, nothing arrives. Once the server resumes, the router must
//! answer at once, whether the server hands the next request to the fresh pull request
//! or to the old one (the old stream is retired, still served, not dropped).
//!
//! Needs nats-server (`$NATS_SERVER_BIN`, `nats-server` on PATH, or
//! `scripts/install-nats-server.sh`); never skips.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod support;

use std::time::{Duration, Instant};

use beamline_router::client::DecideClient;
use support::{acme_policies, decided, NatsServer, RouterProcess};

/// How long the server stays paused at most: well past two heartbeat intervals (2 x 1 s,
/// `router.pull_heartbeat_ms`), well short of the pull request's expiry (30 s + 5 s).
const PATIENCE: Duration = Duration::from_secs(25);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_pull_stream_is_re_created() {
    let server = NatsServer::start();
    let policies = acme_policies();
    let router = RouterProcess::start(&server.url(), policies.path(), &[]);
    let nats = async_nats::connect(server.url()).await.unwrap();
    let client = DecideClient::connect(nats).await.unwrap();
    decided(&client, "before", &router).await;

    server.pause();
    let paused = Instant::now();
    let restarted =
        |log: &str| log.contains("pull stream silent") && log.contains("consumer=\"decide\"");
    while !restarted(&router.log()) && paused.elapsed() < PATIENCE {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let silent_for = paused.elapsed();
    server.resume();
    let log = router.log();
    assert!(
        restarted(&log),
        "no pull restart logged after {silent_for:?} of silence; router log:\n{log}"
    );
    // Two heartbeat intervals, not the pull request's expiry.
    assert!(silent_for < Duration::from_secs(20), "{silent_for:?}");
    // At once: the server may hand the request to the old pull request (frozen along
    // with it) before it reads the fresh one; the retired stream still serves that.
    let started = Instant::now();
    decided(&client, "after", &router).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "{took:?}; router log:\n{}",
        router.log()
    );
}
