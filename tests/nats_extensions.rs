//! Extension calls on the wire, against a real nats-server: the router's pre-processor,
//! validator and post-processor requests, answered by extension services this test runs
//! (a healthy one, a slow one, a refusing one, a chatty one) or by nobody (a dead one).
//! Each test asserts what crossed the wire: subjects, the context headers, the request
//! body, how many calls a time-out retry made, and the typed answer the gateway got.
//!
//! Needs nats-server (see `support::nats_server_bin`); never skips.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use beamline_router::client::{DecideClient, DecideOptions, DecideReply, DecideRequestBuilder};
use futures::StreamExt;
use serde_json::{json, Value};
use support::{NatsServer, RouterProcess};

const PRE: &str = "beamline.ext.pre.normalize_text.v1";
const VALIDATOR: &str = "beamline.ext.validate.pii_guard.v1";
const POST: &str = "beamline.ext.post.mask_pii.v1";
const DEAD: &str = "test.ext.post.dead.v1";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// The registry the router loads: one retry for the pre-processor's time-outs.
const REGISTRY: &str = r#"[
  {"id":"normalize_text","type":"pre","subject":"beamline.ext.pre.normalize_text.v1","timeout_ms":300,"retry":1},
  {"id":"pii_guard","type":"validator","subject":"beamline.ext.validate.pii_guard.v1","timeout_ms":300},
  {"id":"mask_pii","type":"post","subject":"beamline.ext.post.mask_pii.v1","timeout_ms":300},
  {"id":"dead_post","type":"post","subject":"test.ext.post.dead.v1","timeout_ms":300}
]"#;

const PIPELINE: &str = r#"{"providers":[{"name":"openai","weight":70},{"name":"anthropic","weight":30}],
  "pre":[{"id":"normalize_text","mode":"required","config":{"lowercase":true}}],
  "validators":[{"id":"pii_guard","on_fail":"block"}],
  "post":[{"id":"mask_pii","mode":"optional","config":{"mask_email":true}}]}"#;

const DEAD_POLICY: &str = r#"{"providers":[{"name":"openai","weight":1}],
  "post":[{"id":"dead_post","mode":"required"}]}"#;

/// One call an extension service received.
#[derive(Clone, Debug)]
struct Call {
    at: Instant,
    headers: BTreeMap<String, String>,
    body: Value,
}

type Calls = Arc<Mutex<Vec<Call>>>;

/// How a test's extension service answers call number `n` (0-based) of a request.
type Behaviour = Arc<dyn Fn(usize, &Value) -> Option<(Duration, Vec<u8>)> + Send + Sync>;

/// An extension service on `subject`: records every call, answers as `behaviour` says
/// (after its delay; `None`: never answers).
async fn service(nats: &async_nats::Client, subject: &str, behaviour: Behaviour) -> Calls {
    let calls: Calls = Arc::default();
    let mut sub = nats.subscribe(subject.to_string()).await.unwrap();
    nats.flush().await.unwrap();
    let (nats, recorded) = (nats.clone(), calls.clone());
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            let headers = m
                .headers
                .iter()
                .flat_map(|h| h.iter())
                .map(|(k, v)| (k.to_string(), v[0].as_str().to_string()))
                .collect();
            let body: Value = serde_json::from_slice(&m.payload).unwrap_or(Value::Null);
            let n = {
                let mut calls = recorded.lock().unwrap();
                calls.push(Call {
                    at: Instant::now(),
                    headers,
                    body: body.clone(),
                });
                calls.len() - 1
            };
            let (Some(reply), Some((delay, bytes))) = (m.reply, behaviour(n, &body)) else {
                continue;
            };
            let nats = nats.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = nats.publish(reply, bytes.into()).await;
            });
        }
    });
    calls
}

fn answer(v: Value) -> Option<(Duration, Vec<u8>)> {
    Some((Duration::ZERO, v.to_string().into_bytes()))
}

struct World {
    _server: NatsServer,
    _policies: tempfile::TempDir,
    _registry: tempfile::TempDir,
    router: RouterProcess,
    metrics_port: u16,
    nats: async_nats::Client,
    client: DecideClient,
}

async fn world() -> World {
    let server = NatsServer::start();
    let policies = tempfile::tempdir().unwrap();
    std::fs::create_dir(policies.path().join("acme")).unwrap();
    std::fs::write(policies.path().join("acme/pipeline.json"), PIPELINE).unwrap();
    std::fs::write(policies.path().join("acme/dead.json"), DEAD_POLICY).unwrap();
    let registry_dir = tempfile::tempdir().unwrap();
    let registry = registry_dir.path().join("extensions.json");
    std::fs::write(&registry, REGISTRY).unwrap();
    let metrics_port = support::free_port();
    let listen = format!("127.0.0.1:{metrics_port}");
    let router = RouterProcess::spawn(
        &server.url(),
        policies.path(),
        &["--metrics-listen", &listen],
        &[(
            "BEAMLINE_ROUTER_EXTENSIONS_FILE",
            registry.to_str().unwrap(),
        )],
    );
    router.wait_ready();
    let nats = async_nats::connect(server.url()).await.unwrap();
    let client = DecideClient::connect(nats.clone()).await.unwrap();
    World {
        _server: server,
        _policies: policies,
        _registry: registry_dir,
        router,
        metrics_port,
        nats,
        client,
    }
}

fn request(id: &str, policy: &str) -> DecideRequestBuilder {
    let payload = match json!({"text": "Hello World"}) {
        Value::Object(m) => m,
        _ => unreachable!(),
    };
    DecideRequestBuilder::new("acme", "text.generate")
        .request_id(id)
        .policy_id(policy)
        .trace_id(TRACE)
        .metadata("user_id", "u-1")
        .payload(payload)
}

async fn decide(w: &World, req: DecideRequestBuilder) -> DecideReply {
    // One attempt: a re-send would call the extensions again and blur the counts.
    let opts = DecideOptions::default()
        .with_timeout(Duration::from_secs(10))
        .with_max_attempts(1);
    w.client
        .decide(req, &opts)
        .await
        .unwrap_or_else(|e| panic!("{e}; router log:\n{}", w.router.log()))
}

fn error_of(reply: &DecideReply) -> (String, Value) {
    match reply {
        DecideReply::Error(e) => {
            let v = serde_json::to_value(e).unwrap();
            (v["error"]["code"].as_str().unwrap_or("").to_string(), v)
        }
        other => panic!("expected an error reply, got {other:?}"),
    }
}

/// The healthy pipeline: every call carries the request's context in its headers and
/// the documented body, each stage sees what the one before it made, and the decision
/// records all three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stage_is_called_with_the_request_context_and_shapes_the_decision() {
    let w = world().await;
    let pre = service(
        &w.nats,
        PRE,
        Arc::new(|_, _| {
            answer(json!({"payload": {"text": "hello world"}, "metadata": {"normalized": true}}))
        }),
    )
    .await;
    let validator = service(
        &w.nats,
        VALIDATOR,
        Arc::new(|_, _| answer(json!({"valid": true}))),
    )
    .await;
    let post = service(
        &w.nats,
        POST,
        Arc::new(|_, _| answer(json!({"metadata": {"masked": true}}))),
    )
    .await;

    let reply = decide(&w, request("ext-ok-1", "pipeline")).await;
    let DecideReply::Decision(decision) = &reply else {
        panic!("{reply:?}; router log:\n{}", w.router.log());
    };
    let d = serde_json::to_value(decision).unwrap();
    println!("decision: {d}");

    for (name, calls) in [("pre", &pre), ("validator", &validator), ("post", &post)] {
        let calls = calls.lock().unwrap();
        assert_eq!(calls.len(), 1, "{name}: one call, got {}", calls.len());
        let c = &calls[0];
        assert_eq!(
            c.headers.get("tenant_id").map(String::as_str),
            Some("acme"),
            "{name}: {:?}",
            c.headers
        );
        assert_eq!(
            c.headers.get("request_id").map(String::as_str),
            Some("ext-ok-1"),
            "{name}"
        );
        assert_eq!(
            c.headers.get("trace_id").map(String::as_str),
            Some(TRACE),
            "{name}"
        );
        let parent = c.headers.get("traceparent").expect("a traceparent header");
        let span = c.headers.get("span_id").expect("a span_id header");
        assert_eq!(parent, &format!("00-{TRACE}-{span}-01"), "{name}");
        assert_eq!(c.body["tenant_id"], "acme", "{name}: {}", c.body);
        assert_eq!(c.body["trace_id"], TRACE, "{name}");
        assert_eq!(
            c.body["metadata"]["user_id"], "u-1",
            "{name}: the request context"
        );
    }
    let (pre, validator, post) = (
        pre.lock().unwrap(),
        validator.lock().unwrap(),
        post.lock().unwrap(),
    );
    assert_eq!(
        pre[0].body["config"],
        json!({"lowercase": true}),
        "the item's config"
    );
    assert_eq!(pre[0].body["payload"]["text"], "Hello World");
    // The validator sees the pre-processor's payload and metadata.
    assert_eq!(validator[0].body["payload"]["text"], "hello world");
    assert_eq!(validator[0].body["metadata"]["normalized"], true);
    // The post-processor sees the decision.
    assert_eq!(post[0].body["config"], json!({"mask_email": true}));
    assert_eq!(
        post[0].body["payload"]["provider_id"],
        d["decision"]["provider_id"]
    );
    // Every call is its own span of the caller's trace.
    assert_ne!(pre[0].headers["span_id"], post[0].headers["span_id"]);

    let executed = &d["decision"]["metadata"]["executed_extensions"];
    assert_eq!(
        executed,
        &json!([
            {"type": "pre", "id": "normalize_text", "status": "ok"},
            {"type": "validator", "id": "pii_guard", "status": "ok"},
            {"type": "post", "id": "mask_pii", "status": "ok"}
        ]),
        "{d}"
    );
    assert_eq!(
        d["decision"]["metadata"]["masked"], true,
        "post metadata merged: {d}"
    );
}

/// A pre-processor that misses its 300 ms time-out once is called again (one retry,
/// after 100 ms) and its second answer is used; one that never answers fails the
/// request with `extension_timeout` after exactly two calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_call_is_retried_once_then_the_request_fails_typed() {
    let w = world().await;
    let pre = service(
        &w.nats,
        PRE,
        Arc::new(|n, body| {
            let text = body["payload"]["text"].as_str().unwrap_or("");
            if text.contains("never") {
                return None;
            }
            // Call 0 answers too late; the retry (call 1) at once.
            let delay = if n == 0 {
                Duration::from_millis(900)
            } else {
                Duration::ZERO
            };
            Some((
                delay,
                json!({"payload": {"text": "slow but fine"}})
                    .to_string()
                    .into_bytes(),
            ))
        }),
    )
    .await;
    let _validator = service(
        &w.nats,
        VALIDATOR,
        Arc::new(|_, _| answer(json!({"valid": true}))),
    )
    .await;
    let _post = service(&w.nats, POST, Arc::new(|_, _| answer(json!({})))).await;

    let reply = decide(&w, request("ext-slow-1", "pipeline")).await;
    assert!(reply.is_ok(), "{reply:?}");
    {
        let calls = pre.lock().unwrap();
        assert_eq!(calls.len(), 2, "the first call and one retry");
        let gap = calls[1].at - calls[0].at;
        assert!(
            gap >= Duration::from_millis(350),
            "retried {gap:?} after the first call: time-out 300 ms + delay 100 ms"
        );
        assert_eq!(
            calls[0].headers["request_id"],
            calls[1].headers["request_id"]
        );
        assert_eq!(calls[0].body, calls[1].body, "a retry sends the same body");
    }

    let payload = match json!({"text": "never answered"}) {
        Value::Object(m) => m,
        _ => unreachable!(),
    };
    let reply = decide(&w, request("ext-slow-2", "pipeline").payload(payload)).await;
    let (code, v) = error_of(&reply);
    assert_eq!(code, "extension_timeout", "{v}");
    assert_eq!(
        v["error"]["details"]["extension_id"], "normalize_text",
        "{v}"
    );
    let calls: Vec<_> = pre
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.headers["request_id"] == "ext-slow-2")
        .cloned()
        .collect();
    assert_eq!(calls.len(), 2, "retry 1: two calls in all, never a third");
}

/// A validator that refuses blocks the request with `validator_blocked` and its reason,
/// and no provider is chosen; a reply over the metadata bound fails the item typed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_validator_blocks_and_an_oversized_reply_is_refused() {
    let w = world().await;
    let big = "x".repeat(70_000);
    let _pre = service(
        &w.nats,
        PRE,
        Arc::new(move |_, body| {
            if body["payload"]["text"] == "chatty" {
                answer(json!({"metadata": {"blob": big}}))
            } else {
                answer(json!({}))
            }
        }),
    )
    .await;
    let _validator = service(
        &w.nats,
        VALIDATOR,
        Arc::new(|_, _| answer(json!({"status": "reject", "reason": "pii found"}))),
    )
    .await;
    let post = service(&w.nats, POST, Arc::new(|_, _| answer(json!({})))).await;

    let reply = decide(&w, request("ext-block-1", "pipeline")).await;
    let (code, v) = error_of(&reply);
    assert_eq!(code, "validator_blocked", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("pii found"),
        "{v}"
    );
    assert!(
        post.lock().unwrap().is_empty(),
        "blocked: no decision, so no post-processor call"
    );

    let payload = match json!({"text": "chatty"}) {
        Value::Object(m) => m,
        _ => unreachable!(),
    };
    let reply = decide(&w, request("ext-big-1", "pipeline").payload(payload)).await;
    let (code, v) = error_of(&reply);
    assert_eq!(code, "extension_error", "{v}");
    assert_eq!(
        v["error"]["details"]["error_type"], "extension_metadata_too_large",
        "{v}"
    );
}

/// Nobody serves a required post-processor: each call fails at once ("no responders",
/// `post_processor_failed`); after the breaker's five failures the router stops calling
/// and answers `extension_unavailable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_extension_fails_fast_then_its_breaker_opens() {
    let w = world().await;
    // Really dead: the server knows no responder for its subject.
    let probe = w.nats.request(DEAD, "{}".into()).await;
    assert!(
        matches!(&probe, Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders),
        "{probe:?}"
    );
    let mut codes = Vec::new();
    for n in 0..7 {
        let reply = decide(&w, request(&format!("ext-dead-{n}"), "dead")).await;
        codes.push(error_of(&reply).0);
    }
    println!("codes: {codes:?}");
    assert_eq!(&codes[..5], &["post_processor_failed"; 5], "{codes:?}");
    assert_eq!(&codes[5..], &["extension_unavailable"; 2], "{codes:?}");
    // The open breaker spared the wire: five calls went out, not seven (the counters
    // reach /metrics on the router's next stats tick).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, metrics) =
            tokio::task::block_in_place(|| support::http_get(w.metrics_port, "/metrics"));
        let calls = support::metric(&metrics, "router_extension_calls_total");
        if calls == Some(5) || Instant::now() > deadline {
            assert_eq!(calls, Some(5), "extension calls on the wire");
            break;
        }
        assert!(
            calls.unwrap_or(0) <= 5,
            "{calls:?} calls: the breaker did not hold"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
