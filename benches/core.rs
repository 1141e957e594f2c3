//! Core benchmarks: the cost of one decision through `Router::handle`, per policy fixture,
//! and of its parts (intake validation, the weighted draw).
//!
//! One "decision" is the whole message life the core sees, with the shell stubbed at the
//! interface: `Delivery` in -> (`Request` out -> canned `RequestDone` in, once per extension
//! call) -> reply `Publish` out -> `PublishDone { Confirmed }` in -> `Ack` out. Inputs are
//! built outside the timed region (`iter_batched`); the clock advances 10 ms per decision
//! (100 decisions per virtual second, below every fixture's rate limit); entropy is a
//! fixed-seed splitmix64 closure, so every run makes the same draws.
//!
//! Run: `CARGO_TARGET_DIR=/work/target-bench cargo bench --no-default-features --bench core`
//! Results and the machine they were measured on: `docs/PERFORMANCE.md`.

mod common;
use common::{canned_reply, policies, registry};

use std::hint::black_box;
use std::time::Duration;

use beamline_router::core::breaker::Breakers;
use beamline_router::core::decider::{self, Stores};
use beamline_router::core::sticky::StickyStore;
use beamline_router::core::{
    Command, Delivery, Entropy, Input, PayloadDigest, PublishOutcome, RecordingEnv, RequestOutcome,
    Router, RouterConfig, Settle, Source, Time,
};
use beamline_router::intake::{validate_decide, IntakeRules};
use beamline_router::policy::PolicyStore;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use serde_json::{Map, Value};

/// `load_dir` reads `<dir>/<tenant>/<policy>.json`: the fixtures are tenant `fixtures`.
const TENANT: &str = "fixtures";
const SUBJECT: &str = "beamline.router.v1.decide";
const STEP_MS: u64 = 10;
/// Sticky users cycle over this many ids, so that after the first round every sticky
/// decision is a hit (the common case of a session that keeps coming back).
const STICKY_USERS: u64 = 1_024;

const FIXTURES: &[&str] = &[
    "default",
    "sticky_weights",
    "complex_fallbacks",
    "circuit_breaker_basic",
    "circuit_breaker_disabled",
    "circuit_breaker_error_rate",
    "extensions_minimal",
    "extensions_pre_only",
    "extensions_validators_only",
    "extensions_post_only",
    "extensions_full",
    "legacy_format",
    "mixed_format",
];

fn splitmix64(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed;
    move || {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// No fault points and no planted bugs in a benchmark.
impl beamline_router::core::Buggify for SplitMix {}

struct SplitMix(u64);

impl Entropy for SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// A typical decide request, about 300 bytes: correlation ids, an idempotency key, a
/// small task payload, a sticky user in the metadata and one constraint.
fn request(n: u64, policy: &str, user: u64, idempotency: bool) -> Vec<u8> {
    let key = if idempotency {
        format!(r#","idempotency_key":"idem-{n:012}""#)
    } else {
        String::new()
    };
    format!(
        r#"{{"version":"1","request_id":"req-{n:012}","tenant_id":"{TENANT}","policy_id":"{policy}","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"{key},"task":{{"type":"chat","payload":{{"text":"Summarise the quarterly report in three bullet points."}}}},"metadata":{{"user_id":"user-{user:06}","session_id":"user-{user:06}"}},"constraints":{{"max_latency_ms":2000}}}}"#
    )
    .into_bytes()
}

fn delivery(n: u64, payload: Vec<u8>) -> Input {
    Input::Delivery(Delivery {
        id: n,
        source: Source::Decide,
        subject: SUBJECT.into(),
        headers: vec![
            ("Reply-To".into(), format!("_INBOX.gw.{n}")),
            ("Nats-Msg-Id".into(), format!("m-{n}")),
        ],
        digest: PayloadDigest::of(&payload),
        payload,
        stream_seq: n,
        delivered: 1,
    })
}

/// A router and a recording env, driven one whole decision at a time.
struct Harness<E: FnMut() -> u64> {
    router: Router,
    env: RecordingEnv<E>,
    /// Reused command buffer: the harness's own allocations stay out of the measurement.
    scratch: Vec<Command>,
    now: u64,
    acks: u64,
}

impl<E: FnMut() -> u64> Harness<E> {
    fn new(config: RouterConfig, policies: PolicyStore, entropy: E) -> Self {
        Harness {
            router: Router::new(config, policies),
            env: RecordingEnv::new(Time(1_000_000), entropy),
            scratch: Vec::with_capacity(8),
            now: 1_000_000,
            acks: 0,
        }
    }

    /// Deliver one message and answer every command until the core has nothing left to
    /// say: publishes confirmed, extension requests answered with their canned reply.
    fn decide(&mut self, input: Input) {
        self.now += STEP_MS;
        self.env.now = Time(self.now);
        let Harness {
            router,
            env,
            scratch,
            acks,
            ..
        } = self;
        router.handle(input, env);
        loop {
            std::mem::swap(&mut env.commands, scratch);
            if scratch.is_empty() {
                break;
            }
            for command in scratch.drain(..) {
                match command {
                    Command::Publish(p) => router.handle(
                        Input::PublishDone {
                            id: p.id,
                            outcome: PublishOutcome::Confirmed,
                        },
                        env,
                    ),
                    Command::Request { id, subject, .. } => router.handle(
                        Input::RequestDone {
                            id,
                            outcome: RequestOutcome::Reply {
                                payload: canned_reply(&subject),
                            },
                        },
                        env,
                    ),
                    Command::Settle {
                        how: Settle::Ack, ..
                    } => *acks += 1,
                    Command::Settle {
                        how: Settle::Progress,
                        ..
                    } => {}
                    other => panic!("unexpected command in the happy path: {other:?}"),
                }
            }
        }
    }
}

fn harness(policies: &PolicyStore) -> Harness<impl FnMut() -> u64> {
    let config = RouterConfig {
        extensions: registry(),
        ..RouterConfig::default()
    };
    Harness::new(config, policies.clone(), splitmix64(0x5EED))
}

/// Before measuring: every decision of the fixture must end in a success reply and an
/// ack, with no extension failure, so that the benchmark measures the path it names.
fn check_happy_path(policies: &PolicyStore, fixture: &str) -> f64 {
    let mut h = harness(policies);
    let n = 200;
    for i in 1..=n {
        h.decide(delivery(i, request(i, fixture, i % STICKY_USERS, true)));
    }
    let s = h.router.stats();
    assert_eq!(h.acks, n, "{fixture}: every decision acked");
    assert_eq!(s.replies_ok, n, "{fixture}: every reply a success: {s:?}");
    assert_eq!(s.extension_failures, 0, "{fixture}: {s:?}");
    assert_eq!(h.router.in_flight(), 0);
    s.extension_calls as f64 / n as f64
}

fn bench_decisions(c: &mut Criterion) {
    let policies = policies();
    let mut group = c.benchmark_group("decision");
    for &fixture in FIXTURES {
        let calls = check_happy_path(&policies, fixture);
        eprintln!("decision/{fixture}: {calls} extension calls per decision");
        let mut h = harness(&policies);
        let mut n = 0u64;
        group.bench_function(fixture, |b| {
            b.iter_batched(
                || {
                    n += 1;
                    delivery(n, request(n, fixture, n % STICKY_USERS, true))
                },
                |input| h.decide(input),
                BatchSize::SmallInput,
            )
        });
        assert_eq!(h.acks, n, "{fixture}: every measured decision acked");
    }
    // Sticky misses: every request a new user, so each decision draws and writes a
    // mapping; once the store is full (100 000) each write also evicts one.
    {
        let mut h = harness(&policies);
        let mut n = 0u64;
        group.bench_function("sticky_weights_miss", |b| {
            b.iter_batched(
                || {
                    n += 1;
                    delivery(n, request(n, "sticky_weights", n, true))
                },
                |input| h.decide(input),
                BatchSize::SmallInput,
            )
        });
        assert_eq!(h.acks, n);
    }
    // The same fixture without an idempotency key: what the answer book's key table costs.
    {
        let mut h = harness(&policies);
        let mut n = 0u64;
        group.bench_function("default_no_idempotency_key", |b| {
            b.iter_batched(
                || {
                    n += 1;
                    delivery(n, request(n, "default", n % STICKY_USERS, false))
                },
                |input| h.decide(input),
                BatchSize::SmallInput,
            )
        });
        assert_eq!(h.acks, n);
    }
    group.finish();
}

fn bench_intake(c: &mut Criterion) {
    let headers = vec![
        ("Reply-To".to_string(), "_INBOX.gw.1".to_string()),
        ("Nats-Msg-Id".to_string(), "m-1".to_string()),
    ];
    let rules = IntakeRules {
        max_payload_bytes: 1_048_576,
        min_payload_bytes: 10,
        tenant_allowlist: None,
    };
    let valid = request(1, "default", 1, true);
    assert!(validate_decide(SUBJECT, &headers, &valid, &rules).is_ok());
    // The same request with its tenant removed: parsed in full, refused at rule 5.
    let invalid = String::from_utf8(valid.clone())
        .unwrap()
        .replace(&format!(r#""tenant_id":"{TENANT}","#), "")
        .into_bytes();
    let rejection = validate_decide(SUBJECT, &headers, &invalid, &rules).unwrap_err();
    assert_eq!(rejection.reason, "missing_tenant_id");
    // Not JSON at all: refused at rule 3.
    let garbage = b"{\"version\":\"1\",\"request_id\":\"req-1\",\"tenant_id\":".to_vec();
    assert!(validate_decide(SUBJECT, &headers, &garbage, &rules).is_err());
    eprintln!(
        "intake: valid request {} bytes, invalid {} bytes",
        valid.len(),
        invalid.len()
    );

    let mut group = c.benchmark_group("intake");
    group.bench_function("validate_decide_valid", |b| {
        b.iter(|| validate_decide(SUBJECT, &headers, black_box(&valid), &rules))
    });
    group.bench_function("validate_decide_missing_tenant", |b| {
        b.iter(|| validate_decide(SUBJECT, &headers, black_box(&invalid), &rules))
    });
    group.bench_function("validate_decide_truncated_json", |b| {
        b.iter(|| validate_decide(SUBJECT, &headers, black_box(&garbage), &rules))
    });
    group.finish();
}

fn bench_draw(c: &mut Criterion) {
    let policies = policies();
    let policy = policies.get(TENANT, "default").expect("default fixture");
    let mut group = c.benchmark_group("weighted_draw");
    // The draw itself: one Lemire draw over the total weight and a cumulative scan.
    let total = policy.total_weight();
    let mut entropy = SplitMix(0x5EED);
    group.bench_function("below_and_provider_at", |b| {
        b.iter(|| {
            black_box(policy)
                .provider_at(entropy.below(total))
                .map(|p| p.name.len())
        })
    });
    // The decider's whole choice on the weighted path (no session in the context, no
    // breaker config): filters, draw, the step string, the `Choice`.
    let context = Map::<String, Value>::new();
    let mut breakers = Breakers::new(10_000);
    let mut sticky = StickyStore::new(100_000);
    let mut entropy = SplitMix(0x5EED);
    group.bench_function("decider_choose_weighted", |b| {
        b.iter(|| {
            decider::choose(
                black_box(policy),
                TENANT,
                &context,
                Time(1_000),
                Stores {
                    breakers: &mut breakers,
                    sticky: &mut sticky,
                },
                &mut entropy,
            )
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .nresamples(10_000);
    targets = bench_decisions, bench_intake, bench_draw
}
criterion_main!(benches);
