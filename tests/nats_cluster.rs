//! The router on a 3-node JetStream cluster on loopback (three nats-servers routed to
//! each other, the router given all three URLs): the streams it creates are replicated,
//! an existing single-replica stream is reported with its fix, and it rides out the
//! SIGKILL of the decide stream's leader and of the decide consumer's leader under load:
//! every request answered, duplicates byte-identical, nothing dead-lettered, the router
//! never exits. The time from a kill to the first request published after it being
//! answered is measured and printed.
//!
//! Needs nats-server (`$NATS_SERVER_BIN`, `nats-server` on PATH, or
//! `scripts/install-nats-server.sh`); never skips.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod support;

use std::time::{Duration, Instant};

use async_nats::jetstream;
use beamline_router::bench::traffic::{LoadPlan, LoadReport};
use beamline_router::client::DecideClient;
use beamline_router::contracts::subjects::DECIDE;
use serde_json::Value;
use support::cluster::{
    consumer_leader, stream_leader, stream_replicas, time_to_first_answer, wait_replicas_current,
    LeaderWatch, NatsCluster,
};
use support::{acme_policies, decided, free_port, http_get, metric, RouterProcess};

const DECIDE_STREAM: &str = "BEAMLINE_DECIDE";
const DECIDE_CONSUMER: &str = "router-decide";
const STREAMS: [&str; 6] = [
    "BEAMLINE_DECIDE",
    "BEAMLINE_RESULTS",
    "BEAMLINE_USAGE",
    "BEAMLINE_ASSIGNMENTS",
    "BEAMLINE_DLQ",
    "BEAMLINE_ADVISORIES",
];
/// A kill must be recovered from within this (the failure bound); the goal,
/// printed beside it, is 5 s.
const RECOVERY_BOUND: Duration = Duration::from_secs(10);

/// From the last leader election the kill made necessary to the first answer.
const ROUTERS_PART_BOUND: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_cluster_gets_replicated_streams_and_serves() {
    let cluster = NatsCluster::start(3).await;
    let policies = acme_policies();
    let router = RouterProcess::start(&cluster.urls(), policies.path(), &[]);
    let log = router.log();
    assert!(
        log.contains("stream replicas") && log.contains("replicas=3"),
        "the chosen replicas are logged; router log:\n{log}"
    );
    let client = cluster.client().await;
    let js = jetstream::new(client.clone());
    for stream in STREAMS {
        assert_eq!(stream_replicas(&js, stream).await, 3, "{stream}");
    }
    let decide = DecideClient::connect(client).await.unwrap();
    decided(&decide, "on-the-cluster", &router).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_single_replica_stream_is_reported_with_its_fix() {
    let cluster = NatsCluster::start(3).await;
    let client = cluster.client().await;
    let js = jetstream::new(client.clone());
    js.create_stream(jetstream::stream::Config {
        name: DECIDE_STREAM.into(),
        subjects: vec![DECIDE.into()],
        num_replicas: 1,
        ..Default::default()
    })
    .await
    .expect("an R1 decide stream, as an earlier version made it");
    let policies = acme_policies();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let router = RouterProcess::start(
        &cluster.urls(),
        policies.path(),
        &["--metrics-listen", &listen],
    );
    let log = router.log();
    assert!(
        log.contains("stream holds fewer replicas than the cluster can give")
            && log.contains("nats stream edit BEAMLINE_DECIDE --replicas 3"),
        "router log:\n{log}"
    );
    // Never changed silently; the streams it creates are R3 all the same.
    assert_eq!(stream_replicas(&js, DECIDE_STREAM).await, 1);
    assert_eq!(stream_replicas(&js, "BEAMLINE_DLQ").await, 3);
    let (status, body) = tokio::task::block_in_place(|| http_get(port, "/readyz"));
    assert_eq!(status, 200, "it serves, at a risk: {body}");
    assert!(
        body.contains("warning: stream BEAMLINE_DECIDE has 1 replica(s)")
            && body.contains("fix: nats stream edit BEAMLINE_DECIDE --replicas 3"),
        "{body}"
    );
    let (_, text) = tokio::task::block_in_place(|| http_get(port, "/metrics"));
    assert_eq!(metric(&text, "router_streams_under_replicated"), Some(1));
    assert!(text.contains("router_stream_replicas{stream=\"BEAMLINE_DECIDE\"} 1"));
    let decide = DecideClient::connect(client).await.unwrap();
    decided(&decide, "still-serves", &router).await;
}

fn plan(run_id: &str, requests: usize) -> LoadPlan {
    LoadPlan {
        requests,
        tenant: "acme".into(),
        concurrency: 16,
        // A gateway whose reply was lost (core NATS) sends again, same key.
        resend_after: Duration::from_secs(3),
        max_attempts: 30,
        deadline: Duration::from_secs(120),
        linger: Duration::from_secs(2),
        run_id: run_id.into(),
        decide_subject: DECIDE.into(),
    }
}

/// Wait for the load to end, print its summary, and hold the run to `assert_whole` with
/// the router still running.
async fn finish_load(
    load: tokio::task::JoinHandle<anyhow::Result<LoadReport>>,
    label: &str,
    js: &jetstream::Context,
    router: &mut RouterProcess,
) {
    let report = load.await.expect("load task").expect("load");
    println!(
        "{label}: {}",
        beamline_router::bench::traffic::summary(&report)
    );
    assert!(
        router.is_running(),
        "the router exited; log:\n{}",
        router.log()
    );
    assert_whole(&report, js, router).await;
}

/// Every request answered, every duplicate byte-identical, the DLQ empty.
async fn assert_whole(report: &LoadReport, js: &jetstream::Context, router: &RouterProcess) {
    let unanswered = report.unanswered();
    assert!(
        unanswered.is_empty(),
        "{} unanswered (first {:?}); router log:\n{}",
        unanswered.len(),
        &unanswered[..unanswered.len().min(5)],
        router.log()
    );
    for r in &report.records {
        assert!(
            r.replies.iter().all(|b| b == &r.replies[0]),
            "{}: answered twice with different bytes",
            r.request_id
        );
    }
    let outcomes = report.outcomes();
    assert!(
        outcomes.keys().all(|k| !k.starts_with("error:")),
        "error replies: {outcomes:?}"
    );
    let mut dlq = js.get_stream("BEAMLINE_DLQ").await.expect("dlq stream");
    let dead = dlq.info().await.expect("dlq info").state.messages;
    assert_eq!(dead, 0, "nothing should be dead-lettered");
    // The same run, held to the simulator's history rules: one router process that
    // never restarted, so every answer to a key is the same bytes.
    let history = support::history::of_load(report, "acme", js).await;
    support::history::judge("cluster", &history, &support::history::rules(5, true));
}

/// SIGKILL node `name`, then probe (every 100 ms, for 30 s at most) until a request
/// published after the kill is answered: when it died, and how long that took.
async fn kill_and_time(
    cluster: &mut NatsCluster,
    name: &str,
    client: &async_nats::Client,
    label: &str,
) -> (Instant, Option<Duration>) {
    let killed_at = Instant::now();
    cluster.node(name).kill();
    let recovery = time_to_first_answer(
        client,
        killed_at,
        Duration::from_millis(100),
        Duration::from_secs(30),
        label,
    )
    .await;
    (killed_at, recovery)
}

enum Victim {
    StreamLeader,
    ConsumerLeader,
}

async fn kill_leader_under_load(victim: Victim, label: &str) {
    let mut cluster = NatsCluster::start(3).await;
    let policies = acme_policies();
    let mut router = RouterProcess::start(&cluster.urls(), policies.path(), &[]);
    let client = cluster.client().await;
    let js = jetstream::new(client.clone());
    let load_plan = plan(label, 600);
    let watch = LeaderWatch::start(&client, DECIDE_STREAM, DECIDE_CONSUMER).await;
    let (load, answered) = support::load_until_answered(&client, &load_plan, 150).await;
    let stream_lead = stream_leader(&js, DECIDE_STREAM, Duration::from_secs(10)).await;
    let consumer_lead =
        consumer_leader(&js, DECIDE_STREAM, DECIDE_CONSUMER, Duration::from_secs(10)).await;
    let name = match victim {
        Victim::StreamLeader => stream_lead.clone(),
        Victim::ConsumerLeader => consumer_lead.clone(),
    };
    println!(
        "{label}: after {answered} answers, SIGKILL {name} (stream leader {stream_lead}, consumer leader {consumer_lead})"
    );
    let (killed_at, recovery) = kill_and_time(&mut cluster, &name, &client, label).await;
    let new_stream = stream_leader(&js, DECIDE_STREAM, Duration::from_secs(30)).await;
    let new_consumer =
        consumer_leader(&js, DECIDE_STREAM, DECIDE_CONSUMER, Duration::from_secs(30)).await;
    // The elections are the server's (raft: 4 to 9 s without a leader's heartbeat);
    // what follows the last one the kill made necessary is the router's part.
    let (stream_elected, consumer_elected) = watch.elections(killed_at);
    let needed = match victim {
        Victim::StreamLeader => stream_elected,
        Victim::ConsumerLeader => consumer_elected,
    };
    let last_election = [
        needed,
        (new_stream != stream_lead)
            .then_some(stream_elected)
            .flatten(),
        (new_consumer != consumer_lead)
            .then_some(consumer_elected)
            .flatten(),
    ]
    .into_iter()
    .flatten()
    .max();
    let routers_part = recovery
        .zip(last_election)
        .map(|(r, e)| r.saturating_sub(e));
    println!(
        "{label}: recovery {recovery:?} (goal 5 s, bound {RECOVERY_BOUND:?}); stream leader elected after {stream_elected:?}, consumer leader after {consumer_elected:?}; the router's part {routers_part:?}; new stream leader {new_stream}, consumer leader {new_consumer}"
    );
    for line in router
        .log()
        .lines()
        .filter(|l| l.contains("leader elected") || l.contains("pull") || l.contains("nats "))
    {
        println!("{label}: router: {line}");
    }
    cluster.node(&name).start_again();
    finish_load(load, label, &js, &mut router).await;
    let recovery = recovery.unwrap_or_else(|| {
        panic!(
            "no request answered within 30 s of the kill; router log:\n{}",
            router.log()
        )
    });
    // The part the router controls: pulling from the new consumer leader at once (its
    // LEADER_ELECTED advisory), not after missed heartbeats or a watchdog.
    if let Some(part) = routers_part {
        assert!(
            part < ROUTERS_PART_BOUND,
            "{label}: {part:?} from the last election to the first answer; router log:\n{}",
            router.log()
        );
    }
    assert!(
        recovery < RECOVERY_BOUND,
        "{label}: recovery took {recovery:?}; router log:\n{}",
        router.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_decide_stream_leader_killed_under_load() {
    kill_leader_under_load(Victim::StreamLeader, "stream-leader").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_decide_consumer_leader_killed_under_load() {
    kill_leader_under_load(Victim::ConsumerLeader, "consumer-leader").await;
}

/// Every node restarted in turn (SIGTERM, start again, wait until the decide stream's
/// replicas are current) while requests flow: nothing lost, nothing answered twice
/// with different bytes, nothing dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_node_under_load() {
    let mut cluster = NatsCluster::start(3).await;
    let policies = acme_policies();
    let mut router = RouterProcess::start(&cluster.urls(), policies.path(), &[]);
    let client = cluster.client().await;
    let js = jetstream::new(client.clone());
    let (load, answered) = support::load_until_answered(&client, &plan("rolling", 4000), 100).await;
    println!("rolling: restarting every node after {answered} answers");
    for name in cluster.names().to_vec() {
        let started = Instant::now();
        cluster.node(&name).terminate();
        cluster.node(&name).start_again();
        wait_replicas_current(&js, DECIDE_STREAM, Duration::from_secs(60)).await;
        println!(
            "rolling: {name} back and caught up after {:?}",
            started.elapsed()
        );
    }
    finish_load(load, "rolling", &js, &mut router).await;
}

/// A node lost for good: SIGKILL the decide stream's leader, delete its store, start a
/// fresh node under the same name. Requests the stream had acknowledged (PubAck) before
/// the loss, while no router ran, are all answered once a router starts: with R3 the
/// two other copies hold them, and no gateway re-sends anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_lost_for_good_loses_no_acknowledged_request() {
    use beamline_router::contracts::subjects::HEADER_REPLY_TO;
    use futures::StreamExt as _;
    const STORED: usize = 200;
    let mut cluster = NatsCluster::start(3).await;
    let policies = acme_policies();
    // Let a router create the R3 streams and consumers, then stop it.
    let mut router = RouterProcess::start(&cluster.urls(), policies.path(), &[]);
    router.stop(Duration::from_secs(20));
    let client = cluster.client().await;
    let js = jetstream::new(client.clone());
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.unwrap();
    for n in 0..STORED {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(HEADER_REPLY_TO, inbox.as_str());
        let id = format!("stored-{n}");
        let payload = beamline_router::bench::traffic::decide_request(&id, "acme", n);
        js.publish_with_headers(DECIDE, headers, payload.into())
            .await
            .expect("publish")
            .await
            .expect("PubAck: the stream acknowledged it");
    }
    wait_replicas_current(&js, DECIDE_STREAM, Duration::from_secs(30)).await;
    let leader = stream_leader(&js, DECIDE_STREAM, Duration::from_secs(10)).await;
    println!("lost node: {STORED} requests acknowledged; wiping {leader}");
    cluster.node(&leader).kill_and_wipe();
    cluster.node(&leader).start_again();
    let router = RouterProcess::start(&cluster.urls(), policies.path(), &[]);
    let mut answered = std::collections::BTreeSet::new();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while answered.len() < STORED {
        let Ok(Some(reply)) = tokio::time::timeout_at(deadline, replies.next()).await else {
            break;
        };
        let value: Value = serde_json::from_slice(&reply.payload).unwrap_or_default();
        assert_eq!(value["ok"], Value::Bool(true), "{value}");
        if let Some(id) = value["context"]["request_id"].as_str() {
            answered.insert(id.to_string());
            seen.push((id.to_string(), reply.payload.to_vec()));
        }
    }
    assert_eq!(
        answered.len(),
        STORED,
        "acknowledged requests lost with the node; router log:\n{}",
        router.log()
    );
    wait_replicas_current(&js, DECIDE_STREAM, Duration::from_secs(60)).await;
    // Held to the simulator's history rules: the payloads are known, so a DLQ record
    // would be checked against its original too.
    let history = beamline_sim::history::History {
        requests: (0..STORED)
            .map(|n| {
                let id = format!("stored-{n}");
                beamline_sim::history::SentRequest {
                    payload: Some(beamline_router::bench::traffic::decide_request(
                        &id, "acme", n,
                    )),
                    ..beamline_sim::history::SentRequest::valid(&id, "acme")
                }
            })
            .collect(),
        replies: seen,
        dlq: support::history::stream_messages(&js, "BEAMLINE_DLQ").await,
        usage: Vec::new(),
    };
    support::history::judge("node lost", &history, &support::history::rules(5, true));
}

/// `state.backend = "kv"`: the KV bucket's leader SIGKILLed under load. Claims time out
/// during the election and their messages come back; every request is answered, every
/// duplicate with the same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kv_bucket_leader_killed_under_load() {
    let mut cluster = NatsCluster::start(3).await;
    let policies = acme_policies();
    let mut router = RouterProcess::spawn(
        &cluster.urls(),
        policies.path(),
        &[],
        &[("BEAMLINE_STATE_BACKEND", "kv")],
    );
    router.wait_ready();
    let client = cluster.client().await;
    let js = jetstream::new(client.clone());
    let bucket_stream = "KV_beamline-router-answers";
    assert_eq!(stream_replicas(&js, bucket_stream).await, 3);
    let (load, answered) = support::load_until_answered(&client, &plan("kv", 600), 150).await;
    let leader = stream_leader(&js, bucket_stream, Duration::from_secs(10)).await;
    println!("kv: after {answered} answers, SIGKILL {leader} (the bucket's leader)");
    let (_, recovery) = kill_and_time(&mut cluster, &leader, &client, "kv").await;
    println!("kv: first answer after the kill {recovery:?}");
    stream_leader(&js, bucket_stream, Duration::from_secs(30)).await;
    cluster.node(&leader).start_again();
    finish_load(load, "kv", &js, &mut router).await;
}
