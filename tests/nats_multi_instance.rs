//! Many router instances on one durable consumer, against a real nats-server: two
//! `beamline-router serve` processes share the decide stream's durable pull consumer, so
//! the server splits the work between them; one is killed with SIGKILL mid-load, and every
//! request is still answered, exactly once from the caller's point of view.
//!
//! What "exactly once" rests on, and where it ends (docs/OPERATIONS.md, "Scaling out"):
//! - every `decide` call returns one reply, the first that arrives;
//! - a message the killed instance held unacked is redelivered to the survivor after
//!   `ack_wait`. If the killed instance had already replied, the survivor decides it
//!   again (answer books are per instance) and the caller's inbox sees a second reply,
//!   which may name another provider. The client drops it (nobody waits any more); this
//!   test watches the inbox too, counts those duplicates and checks that a *different*
//!   second reply only ever comes from such a cross-instance redelivery.
//!
//! Needs nats-server; never skips.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use beamline_router::client::{DecideClient, DecideOptions, DecideRequestBuilder};
use beamline_sim::history::{History, SentRequest};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};
use support::{acme_policies, NatsServer, RouterProcess as Router};
use tokio::time::Instant;

const REQUESTS: usize = 600;
const CONCURRENCY: usize = 16;
/// Instance A is killed once this many requests have been answered.
const KILL_AFTER_ANSWERS: usize = 150;
const ACK_WAIT_SECS: u64 = 3;

/// Per instance: each stream sequence it was handed, with the highest delivery count.
fn deliveries(log: &str) -> BTreeMap<u64, u64> {
    let field = |line: &str, name: &str| -> Option<u64> {
        let rest = &line[line.find(name)? + name.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    let mut seen = BTreeMap::new();
    for line in log.lines().filter(|l| l.contains(" delivery ")) {
        if let (Some(seq), Some(delivered)) =
            (field(line, "stream_seq="), field(line, "delivered="))
        {
            let d = seen.entry(seq).or_insert(0);
            *d = (*d).max(delivered);
        }
    }
    seen
}

struct WireReply {
    at: Instant,
    bytes: Bytes,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_work_and_survive_a_sigkill() {
    two_instances(Answers::PerInstance).await;
}

/// With `state.backend = "kv"` the instances claim keyed answers in a shared NATS KV
/// bucket: the survivor's re-decision of a message router-a had already answered finds
/// router-a's entry and publishes those bytes, so every duplicate on the wire is
/// byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_shared_answers_every_duplicate_is_byte_identical() {
    two_instances(Answers::Shared).await;
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Answers {
    PerInstance,
    Shared,
}

async fn two_instances(answers_mode: Answers) {
    let server = NatsServer::start();
    let policies = acme_policies();
    let ack_wait = ACK_WAIT_SECS.to_string();
    let args = |node: &'static str| {
        vec![
            "--ack-wait-secs".to_string(),
            ack_wait.clone(),
            "--publish-timeout-ms".to_string(),
            "2000".to_string(),
            "--node-id".to_string(),
            node.to_string(),
        ]
    };
    let args_a = args("router-a");
    let args_b = args("router-b");
    let (argv_a, argv_b): (Vec<&str>, Vec<&str>) = (
        args_a.iter().map(String::as_str).collect(),
        args_b.iter().map(String::as_str).collect(),
    );
    // A creates the streams and the consumer; B finds them and joins the same consumer.
    // The driver's debug lines name each delivery: they tell which instance took what.
    let backend = match answers_mode {
        Answers::PerInstance => "memory",
        Answers::Shared => "kv",
    };
    let debug = [
        (
            "RUST_LOG",
            "info,async_nats=warn,beamline_router::shell::driver=debug",
        ),
        ("BEAMLINE_STATE_BACKEND", backend),
        // Under half of the short ack_wait, as the config requires.
        ("BEAMLINE_STATE_KV_TIMEOUT_MS", "1000"),
    ];
    let mut a = Router::spawn(&server.url(), policies.path(), &argv_a, &debug);
    let mut b = Router::spawn(&server.url(), policies.path(), &argv_b, &debug);
    a.wait_ready();
    b.wait_ready();

    let nats = async_nats::connect(server.url()).await.unwrap();
    let client = Arc::new(DecideClient::connect(nats.clone()).await.unwrap());
    // Every reply that reaches the client's inbox, as it arrives.
    let wire: Arc<Mutex<BTreeMap<String, Vec<WireReply>>>> = Arc::default();
    let mut inbox = nats.subscribe(client.inbox().to_string()).await.unwrap();
    nats.flush().await.unwrap();
    let watcher = tokio::spawn({
        let wire = wire.clone();
        async move {
            while let Some(m) = inbox.next().await {
                let id = beamline_router::client::request_id_of(&m.payload).unwrap_or_default();
                wire.lock().unwrap().entry(id).or_default().push(WireReply {
                    at: Instant::now(),
                    bytes: m.payload,
                });
            }
        }
    });

    let options = DecideOptions {
        timeout: Duration::from_secs(2),
        max_attempts: 10,
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
        publish_timeout: Duration::from_secs(2),
    };
    let answered = Arc::new(AtomicUsize::new(0));
    let threshold = Arc::new(tokio::sync::Notify::new());
    let started = Instant::now();
    let load = tokio::spawn({
        let (client, answered, threshold) = (client.clone(), answered.clone(), threshold.clone());
        async move {
            futures::stream::iter(0..REQUESTS)
                .map(|n| {
                    let (client, options) = (client.clone(), options.clone());
                    let (answered, threshold) = (answered.clone(), threshold.clone());
                    async move {
                        let request = DecideRequestBuilder::new("acme", "text.generate")
                            .request_id(format!("mi-{n}"))
                            .metadata("user_id", format!("u-{}", n % 50))
                            .payload(match json!({"prompt": format!("hello number {n}")}) {
                                Value::Object(m) => m,
                                _ => unreachable!(),
                            });
                        let result = client.decide_raw(request, &options).await;
                        if answered.fetch_add(1, Ordering::Relaxed) + 1 == KILL_AFTER_ANSWERS {
                            threshold.notify_one();
                        }
                        (n, result)
                    }
                })
                .buffer_unordered(CONCURRENCY)
                .collect::<Vec<_>>()
                .await
        }
    });

    let _ = tokio::time::timeout(Duration::from_secs(30), threshold.notified()).await;
    let answered_at_kill = answered.load(Ordering::Relaxed);
    tokio::task::block_in_place(|| a.kill());
    let killed_at = Instant::now();
    // Read after the kill: the log file outlives the process, and holds every delivery
    // router-a was handed.
    let log_a = a.log();
    println!(
        "SIGKILL router-a after {answered_at_kill} answers, {:.2} s into the run",
        started.elapsed().as_secs_f64()
    );

    let results = load.await.unwrap();
    let elapsed = started.elapsed();
    // Messages router-a held unacked come back to router-b after ack_wait; their second
    // replies arrive after every call has returned. Wait for them.
    tokio::time::sleep(Duration::from_secs(ACK_WAIT_SECS + 3)).await;
    watcher.abort();
    let status = tokio::task::block_in_place(|| b.stop(Duration::from_secs(15)));
    let log_b = b.log();
    assert!(status.success(), "router-b exited with {status}:\n{log_b}");

    // Every call got a decision.
    let mut failed = Vec::new();
    let mut answers = BTreeMap::new();
    let mut attempts_over_one = 0;
    for (n, result) in results {
        match result {
            Ok(answer) if answer.reply.is_ok() => {
                if answer.attempts > 1 {
                    attempts_over_one += 1;
                }
                answers.insert(format!("mi-{n}"), answer);
            }
            Ok(answer) => failed.push(format!("mi-{n}: {:?}", answer.reply)),
            Err(e) => failed.push(format!("mi-{n}: {e}")),
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {REQUESTS} calls failed: {:?}\nrouter-b log tail:\n{}",
        failed.len(),
        &failed[..failed.len().min(10)],
        log_b.lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );

    // Who handled what.
    let handled_a = deliveries(&log_a);
    let handled_b = deliveries(&log_b);
    let a_set: BTreeSet<u64> = handled_a.keys().copied().collect();
    let taken_over: Vec<u64> = handled_b
        .iter()
        .filter(|(seq, delivered)| **delivered > 1 && a_set.contains(seq))
        .map(|(seq, _)| *seq)
        .collect();
    let redelivered_to_b = handled_b.values().filter(|d| **d > 1).count();

    // The requests router-a was handed, read back from the stream by sequence.
    let mut decide_stream = async_nats::jetstream::new(nats.clone())
        .get_stream("BEAMLINE_DECIDE")
        .await
        .unwrap();
    let mut handed_to_a = BTreeSet::new();
    for seq in handled_a.keys() {
        let message = decide_stream.get_raw_message(*seq).await.unwrap();
        let v: Value = serde_json::from_slice(&message.payload).unwrap();
        handed_to_a.insert(v["request_id"].as_str().unwrap_or_default().to_string());
    }

    let stats = client.stats();
    let stored = decide_stream.info().await.unwrap().state.messages;

    let bucket_entries = match async_nats::jetstream::new(nats.clone())
        .get_key_value("beamline-router-answers")
        .await
    {
        Ok(bucket) => Some(bucket.status().await.unwrap().values()),
        Err(_) => None,
    };

    let js = async_nats::jetstream::new(nats.clone());
    let dlq = support::history::stream_messages(&js, "BEAMLINE_DLQ").await;
    let usage = support::history::stream_messages(&js, "BEAMLINE_USAGE").await;
    // What the caller's inbox saw.
    let wire = wire.lock().unwrap();
    // The run as its clients saw it, held to the simulator's history rules: with shared
    // answers every answer to a key is the same bytes across instances; per instance, a
    // request router-b decided again may be answered differently (checked below).
    let history = History {
        requests: (0..REQUESTS)
            .map(|n| SentRequest::valid(&format!("mi-{n}"), "acme"))
            .collect(),
        replies: wire
            .iter()
            .flat_map(|(id, replies)| replies.iter().map(|r| (id.clone(), r.bytes.to_vec())))
            .collect(),
        dlq,
        usage,
    };
    support::history::judge(
        "two instances",
        &history,
        &support::history::rules(5, answers_mode == Answers::Shared),
    );
    let mut duplicates = 0;
    let mut identical_duplicates = 0;
    let mut duplicates_after_kill = 0;
    let mut divergent = Vec::new();
    let mut divergent_not_explained = Vec::new();
    for (id, answer) in &answers {
        let replies = wire.get(id).map(Vec::as_slice).unwrap_or_default();
        assert!(
            replies.iter().any(|r| r.bytes == answer.raw),
            "{id}: the caller's answer never crossed the wire"
        );
        let first = &replies[0];
        for later in &replies[1..] {
            duplicates += 1;
            if later.at > killed_at {
                duplicates_after_kill += 1;
            }
            if later.bytes == first.bytes {
                identical_duplicates += 1;
            } else {
                divergent.push(id.clone());
                // Allowed only when router-a was handed a copy of this request (and
                // replied before it died) and router-b decided it again.
                if !handed_to_a.contains(id.as_str()) {
                    divergent_not_explained.push(id.clone());
                }
            }
        }
    }

    println!(
        "{REQUESTS} requests in {:.2} s, concurrency {CONCURRENCY}; all answered",
        elapsed.as_secs_f64()
    );
    println!(
        "router-a handled {} messages before the SIGKILL; router-b handled {}",
        handled_a.len(),
        handled_b.len()
    );
    println!(
        "redelivered to router-b: {redelivered_to_b} (of which {} had been handed to router-a); \
         requests router-a was handed: {}",
        taken_over.len(),
        handed_to_a.len()
    );
    println!(
        "client: {stats:?}; calls needing more than one attempt: {attempts_over_one}; \
         stored copies {stored}"
    );
    println!(
        "duplicate replies on the wire: {duplicates}, {duplicates_after_kill} after the kill \
         ({identical_duplicates} byte-identical, {} different: a cross-instance re-decision) \
         for requests {:?}",
        divergent.len(),
        &divergent[..divergent.len().min(10)]
    );
    if let Some(line) = log_b.lines().rev().find(|l| l.contains("driver stopped")) {
        println!("router-b: {line}");
    }

    assert!(
        !handled_a.is_empty() && !handled_b.is_empty(),
        "both instances must have handled work: a {} b {}",
        handled_a.len(),
        handled_b.len()
    );
    assert!(
        (KILL_AFTER_ANSWERS..REQUESTS).contains(&answered_at_kill),
        "the kill was meant to land mid-load ({answered_at_kill} answered)"
    );
    assert!(
        divergent_not_explained.is_empty(),
        "different replies for one request outside a cross-instance redelivery: {divergent_not_explained:?}"
    );
    if answers_mode == Answers::Shared {
        assert!(
            divergent.is_empty(),
            "answers are shared, yet requests {divergent:?} got different replies"
        );
        let entries = bucket_entries.expect("the routers created the answer bucket");
        println!("answer bucket: {entries} entries");
        assert!(
            entries >= REQUESTS as u64,
            "every keyed answer is claimed in the bucket: {entries} < {REQUESTS}"
        );
        let adopted = metric_total(&log_b, "shared_adopted");
        println!("router-b adopted {adopted:?} answers from the bucket");
    }
}

/// A core counter from the final stats line a router logs when it stops, if present.
fn metric_total(log: &str, name: &str) -> Option<u64> {
    let line = log.lines().rev().find(|l| l.contains("driver stopped"))?;
    let rest = &line[line.find(name)? + name.len()..];
    rest.trim_start_matches(|c: char| !c.is_ascii_digit())
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// A gateway's retry that lands on another instance, deterministically: router-a answers
/// a keyed request and stops; router-b, a fresh process with an empty memory, gets the
/// same request (same request id and idempotency key) as a new message. router-b's
/// policy would choose another provider (the file changed in between), so only a shared
/// answer makes it publish router-a's bytes.
/// A router with answers shared through the KV bucket, named `node`, once it is ready.
fn kv_router(server: &NatsServer, policies: &std::path::Path, node: &str) -> Router {
    let router = Router::spawn(
        &server.url(),
        policies,
        &["--node-id", node],
        &[("BEAMLINE_STATE_BACKEND", "kv")],
    );
    router.wait_ready();
    router
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_on_another_instance_gets_the_first_answer() {
    let server = NatsServer::start();
    let (policies, policy) = acme_policy(r#"{"providers":[{"name":"openai","weight":100}]}"#);
    let (client, options) = client_of(&server).await;
    let request = || request_of("retry-1", "u-1").idempotency_key("order-17");

    let mut a = kv_router(&server, policies.path(), "router-a");
    let first = client.decide_raw(request(), &options).await.unwrap();
    assert!(first.reply.is_ok(), "{:?}", first.reply);
    let status = tokio::task::block_in_place(|| a.stop(Duration::from_secs(15)));
    assert!(status.success());
    assert!(String::from_utf8_lossy(&first.raw).contains("openai"));
    std::fs::write(
        &policy,
        r#"{"providers":[{"name":"anthropic","weight":100}]}"#,
    )
    .unwrap();

    let mut b = kv_router(&server, policies.path(), "router-b");
    let again = client.decide_raw(request(), &options).await.unwrap();
    let status = tokio::task::block_in_place(|| b.stop(Duration::from_secs(15)));
    let log_b = b.log();
    assert!(status.success(), "{log_b}");
    assert_eq!(
        again.raw, first.raw,
        "router-b must publish router-a's answer byte for byte"
    );
    assert_eq!(
        metric_total(&log_b, "shared_adopted"),
        Some(1),
        "router-b adopted the answer from the bucket:\n{log_b}"
    );
}

/// A sticky session pinned by router-a holds on router-b: router-a pins user u-7 to
/// openai and stops; router-b starts with a policy that would draw anthropic 99 times in
/// 100, and a new request of the same session is still routed to openai, as sticky.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sticky_session_follows_its_user_to_another_instance() {
    let server = NatsServer::start();
    let sticky = r#""sticky":{"enabled":true,"session_key":"user_id","ttl":"10m"}"#;
    let (policies, policy) = acme_policy(&format!(
        r#"{{"providers":[{{"name":"openai","weight":100}}],{sticky}}}"#
    ));
    let (client, options) = client_of(&server).await;
    let request = |id: &str| request_of(id, "u-7");
    let provider = |raw: &Bytes| -> String {
        let v: Value = serde_json::from_slice(raw).unwrap();
        format!(
            "{} ({})",
            v["decision"]["provider_id"].as_str().unwrap_or("?"),
            v["decision"]["reason"].as_str().unwrap_or("?")
        )
    };

    let mut a = kv_router(&server, policies.path(), "router-a");
    let first = client.decide_raw(request("s-1"), &options).await.unwrap();
    assert_eq!(provider(&first.raw), "openai (weighted)");
    let status = tokio::task::block_in_place(|| a.stop(Duration::from_secs(15)));
    assert!(status.success());
    std::fs::write(
        &policy,
        format!(
            r#"{{"providers":[{{"name":"openai","weight":1}},{{"name":"anthropic","weight":99}}],{sticky}}}"#
        ),
    )
    .unwrap();

    let mut b = kv_router(&server, policies.path(), "router-b");
    let second = client.decide_raw(request("s-2"), &options).await.unwrap();
    let status = tokio::task::block_in_place(|| b.stop(Duration::from_secs(15)));
    let log_b = b.log();
    assert!(status.success(), "{log_b}");
    assert_eq!(provider(&second.raw), "openai (sticky)", "{log_b}");
    assert_eq!(
        metric_total(&log_b, "shared_sessions_adopted"),
        Some(1),
        "{log_b}"
    );
}

/// A policy directory holding `acme/default.json` = `doc`, and that file's path (tests
/// rewrite it between instances).
fn acme_policy(doc: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("acme")).unwrap();
    let file = dir.path().join("acme/default.json");
    std::fs::write(&file, doc).unwrap();
    (dir, file)
}

async fn client_of(server: &NatsServer) -> (DecideClient, DecideOptions) {
    let nats = async_nats::connect(server.url()).await.unwrap();
    let options = DecideOptions {
        timeout: Duration::from_secs(5),
        max_attempts: 3,
        ..DecideOptions::default()
    };
    (DecideClient::connect(nats).await.unwrap(), options)
}

/// A decide request of user `user` (the sticky session key of these tests).
fn request_of(id: &str, user: &str) -> DecideRequestBuilder {
    DecideRequestBuilder::new("acme", "text.generate")
        .request_id(id)
        .metadata("user_id", user)
        .payload(match json!({"prompt": "hello there"}) {
            Value::Object(m) => m,
            _ => unreachable!(),
        })
}
