//! Memory benchmark: resident bytes per idempotency key and per sticky session, measured
//! through the real structures (a `Router` fed decide requests, every publish confirmed).
//!
//! Each measurement runs in its own child process (this binary re-executed with
//! `--phase`), so that memory freed by one phase cannot be reused by another and every
//! phase starts from the same heap. A phase builds its router, warms it up with 1 000
//! decisions, reads `VmRSS`, drives `N` more decisions, and reads `VmRSS` / `VmHWM`
//! again: bytes per entry = (rss_after - rss_before) / N. Then, in the same process, it
//! builds the baseline (the payload alone, allocated as tightly as it can be) and reads
//! `VmRSS` once more: baseline bytes per entry = (rss_baseline - rss_after) / N.
//!
//! Phases (the two long ones run side by side, one per core):
//! - `seq_only`: `completed_capacity` > N, requests without `idempotency_key`: only the
//!   answer book's by-sequence table grows (reply bytes + settled fate per message).
//! - `idempotency`: the same with a distinct `idempotency_key` each: by-sequence table +
//!   by-key table + expiry index, i.e. what a live idempotency key costs with
//!   `completed_capacity` >= the number of keys. Baseline: a `Vec<Vec<u8>>` of N
//!   exact-size copies of the reply bytes (every reply has the same length).
//! - `sticky`: `completed_capacity` 1 (the answer book stays empty), 100 000 new users on
//!   the `sticky_weights` fixture: only the sticky store grows. Baseline: a `Vec` of N
//!   (session id, provider) `String` pairs.
//!
//! After the table: heap allocations per decision for every fixture (a global allocator
//! that counts; skip with `--no-allocs`).
//!
//! Run: `CARGO_TARGET_DIR=/work/target-bench cargo bench --no-default-features --bench memory`
//! Options: `--keys N` (default 1 000 000), `--sessions N` (default 100 000),
//! `--profile N [--fixture NAME]` (no measurement: N decisions on one fixture in this
//! process, for `valgrind --tool=callgrind`). Results: `docs/PERFORMANCE.md`.

// A benchmark reads the wall clock to report how long a phase took; the determinism rules
// of `clippy.toml` are for the core and the simulator.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;
use common::{canned_reply, policies, registry};

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::process::{Command as Process, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use beamline_router::core::{
    Command, Delivery, Input, PayloadDigest, PublishOutcome, RecordingEnv, RequestOutcome, Router,
    RouterConfig, Settle, Source, Time,
};

/// Counts heap allocations, so that churn per decision can be reported beside what stays
/// resident. Two relaxed atomic adds per allocation; the resident figures are unaffected.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc`/`realloc` above, i.e. from `System`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: as for `dealloc`; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

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

const TENANT: &str = "fixtures";
const WARMUP: u64 = 1_000;

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

/// The core bench's typical request (about 300 bytes); `user` puts a sticky session id
/// in the metadata.
fn request(n: u64, policy: &str, user: Option<u64>, idempotency: bool) -> Vec<u8> {
    let key = if idempotency {
        format!(r#","idempotency_key":"idem-{n:012}""#)
    } else {
        String::new()
    };
    let metadata = match user {
        Some(u) => format!(r#","metadata":{{"user_id":"user-{u:06}","session_id":"user-{u:06}"}}"#),
        None => String::new(),
    };
    format!(
        r#"{{"version":"1","request_id":"req-{n:012}","tenant_id":"{TENANT}","policy_id":"{policy}","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"{key},"task":{{"type":"chat","payload":{{"text":"Summarise the quarterly report in three bullet points."}}}}{metadata},"constraints":{{"max_latency_ms":2000}}}}"#
    )
    .into_bytes()
}

fn delivery(n: u64, payload: Vec<u8>) -> Input {
    Input::Delivery(Delivery {
        id: n,
        source: Source::Decide,
        subject: "beamline.router.v1.decide".into(),
        headers: vec![
            ("Reply-To".into(), "_INBOX.gw.reply".into()),
            ("Nats-Msg-Id".into(), format!("m-{n}")),
        ],
        digest: PayloadDigest::of(&payload),
        payload,
        stream_seq: n,
        delivered: 1,
    })
}

struct Harness<E: FnMut() -> u64> {
    router: Router,
    env: RecordingEnv<E>,
    scratch: Vec<Command>,
    acks: u64,
    /// Virtual time per decision.
    step_ms: u64,
    /// The last reply's bytes, for the baseline.
    last_reply: Vec<u8>,
}

impl<E: FnMut() -> u64> Harness<E> {
    fn decide(&mut self, input: Input) {
        self.env.now = self.env.now.after(self.step_ms);
        let Harness {
            router,
            env,
            scratch,
            acks,
            last_reply,
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
                    Command::Publish(p) => {
                        router.handle(
                            Input::PublishDone {
                                id: p.id,
                                outcome: PublishOutcome::Confirmed,
                            },
                            env,
                        );
                        *last_reply = p.payload;
                    }
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
                    other => panic!("unexpected command: {other:?}"),
                }
            }
        }
    }
}

fn harness(completed_capacity: usize, max_sticky_sessions: usize) -> Harness<impl FnMut() -> u64> {
    let config = RouterConfig {
        completed_capacity,
        max_sticky_sessions,
        extensions: registry(),
        ..RouterConfig::default()
    };
    Harness {
        router: Router::new(config, policies()),
        env: RecordingEnv::new(Time(1_000_000), splitmix64(0x5EED)),
        scratch: Vec::with_capacity(8),
        acks: 0,
        // One virtual millisecond per decision: no idempotency key (1 h) or sticky
        // mapping (15 min) expires within a memory phase. Profiling and allocation
        // counts use the core bench's 10 ms, below every fixture's rate limit.
        step_ms: 1,
        last_reply: Vec::new(),
    }
}

/// (VmRSS, VmHWM) in bytes.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or_else(|| panic!("{name} in /proc/self/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct PhaseResult {
    name: String,
    entries: u64,
    rss_before: u64,
    rss_after: u64,
    hwm_after: u64,
    /// RSS after the baseline was built on top (0 if the phase has none).
    rss_baseline: u64,
    answers_by_seq: usize,
    answers_by_key: usize,
    sticky_sessions: usize,
    reply_bytes: u64,
    seconds: f64,
}

impl PhaseResult {
    fn line(&self) -> String {
        format!(
            "RESULT {} {} {} {} {} {} {} {} {} {} {:.3}",
            self.name,
            self.entries,
            self.rss_before,
            self.rss_after,
            self.hwm_after,
            self.rss_baseline,
            self.answers_by_seq,
            self.answers_by_key,
            self.sticky_sessions,
            self.reply_bytes,
            self.seconds
        )
    }

    fn parse(line: &str) -> Option<PhaseResult> {
        let f: Vec<&str> = line.strip_prefix("RESULT ")?.split(' ').collect();
        Some(PhaseResult {
            name: f.first()?.to_string(),
            entries: f.get(1)?.parse().ok()?,
            rss_before: f.get(2)?.parse().ok()?,
            rss_after: f.get(3)?.parse().ok()?,
            hwm_after: f.get(4)?.parse().ok()?,
            rss_baseline: f.get(5)?.parse().ok()?,
            answers_by_seq: f.get(6)?.parse().ok()?,
            answers_by_key: f.get(7)?.parse().ok()?,
            sticky_sessions: f.get(8)?.parse().ok()?,
            reply_bytes: f.get(9)?.parse().ok()?,
            seconds: f.get(10)?.parse().ok()?,
        })
    }

    fn per_entry(&self) -> f64 {
        self.rss_after.saturating_sub(self.rss_before) as f64 / self.entries as f64
    }

    fn baseline_per_entry(&self) -> f64 {
        self.rss_baseline.saturating_sub(self.rss_after) as f64 / self.entries as f64
    }
}

/// Run one phase in this process.
fn run_phase(name: &str, keys: u64, sessions: u64) -> PhaseResult {
    let (capacity, sticky_max, entries, policy, users, idempotency) = match name {
        "seq_only" => (
            (keys + WARMUP + 1) as usize,
            1,
            keys,
            "default",
            false,
            false,
        ),
        "idempotency" => (
            (keys + WARMUP + 1) as usize,
            1,
            keys,
            "default",
            false,
            true,
        ),
        "sticky" => (
            1,
            (sessions + WARMUP + 1) as usize,
            sessions,
            "sticky_weights",
            true,
            false,
        ),
        other => panic!("unknown phase {other}"),
    };
    let mut h = harness(capacity, sticky_max);
    let input = |n: u64| delivery(n, request(n, policy, users.then_some(n), idempotency));
    for n in 1..=WARMUP {
        h.decide(input(n));
    }
    let (rss_before, _) = rss();
    let started = Instant::now();
    for n in WARMUP + 1..=WARMUP + entries {
        h.decide(input(n));
    }
    let seconds = started.elapsed().as_secs_f64();
    let (rss_after, hwm_after) = rss();
    assert_eq!(h.acks, WARMUP + entries, "{name}: every decision acked");
    assert_eq!(h.router.stats().replies_ok, WARMUP + entries, "{name}");
    let sizes = h.router.table_sizes();

    // The payload alone, on top of what the router holds (nothing is freed in between).
    let reply_bytes = h.last_reply.len() as u64;
    let rss_baseline = match name {
        "idempotency" => {
            let replies: Vec<Vec<u8>> = (0..entries).map(|_| h.last_reply.to_vec()).collect();
            let (rss, _) = rss();
            black_box(&replies);
            rss
        }
        "sticky" => {
            let pairs: Vec<(String, String)> = (WARMUP + 1..=WARMUP + entries)
                .map(|n| (format!("user-{n:06}"), "anthropic".to_string()))
                .collect();
            let (rss, _) = rss();
            black_box(&pairs);
            rss
        }
        _ => 0,
    };
    PhaseResult {
        name: name.to_string(),
        entries,
        rss_before,
        rss_after,
        hwm_after,
        rss_baseline,
        answers_by_seq: sizes.answers_by_seq,
        answers_by_key: sizes.answers_by_key,
        sticky_sessions: sizes.sticky_sessions,
        reply_bytes,
        seconds,
    }
}

/// `--profile N [--fixture NAME]`: N decisions with idempotency keys and sticky users
/// cycling over 1 024 ids (the core bench's workload), default config, nothing measured.
/// A small driver for callgrind: `--toggle-collect='*Harness*decide*'` counts exactly
/// the decisions (inputs are built outside `decide`).
fn profile(n: u64, fixture: &str) {
    let mut h = harness(RouterConfig::default().completed_capacity, 100_000);
    h.step_ms = 10;
    for i in 1..=n {
        h.decide(delivery(i, request(i, fixture, Some(i % 1_024), true)));
    }
    assert_eq!(h.acks, n);
    assert_eq!(
        h.router.stats().replies_ok,
        n,
        "{fixture}: {:?}",
        h.router.stats()
    );
    println!(
        "profile {fixture}: {n} decisions, stats {:?}",
        h.router.stats()
    );
}

/// Heap allocations (and bytes requested) per decision, per fixture: the core bench's
/// workload, after a warm-up in which every sticky user has been seen once.
fn allocations(n: u64) -> Vec<(String, f64, f64)> {
    let warmup = 2_000;
    FIXTURES
        .iter()
        .map(|&fixture| {
            let mut h = harness(RouterConfig::default().completed_capacity, 100_000);
            h.step_ms = 10;
            let input = |i: u64| delivery(i, request(i, fixture, Some(i % 1_024), true));
            for i in 1..=warmup {
                h.decide(input(i));
            }
            let (mut allocs, mut bytes) = (0, 0);
            for i in warmup + 1..=warmup + n {
                let input = input(i);
                let (a0, b0) = (
                    ALLOCS.load(Ordering::Relaxed),
                    ALLOC_BYTES.load(Ordering::Relaxed),
                );
                h.decide(input);
                allocs += ALLOCS.load(Ordering::Relaxed) - a0;
                bytes += ALLOC_BYTES.load(Ordering::Relaxed) - b0;
            }
            assert_eq!(h.router.stats().replies_ok, warmup + n, "{fixture}");
            (
                fixture.to_string(),
                allocs as f64 / n as f64,
                bytes as f64 / n as f64,
            )
        })
        .collect()
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1)?.parse().ok()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() {
    // `cargo bench` passes `--bench`; anything unknown is ignored.
    let args: Vec<String> = std::env::args().collect();
    let keys: u64 = arg(&args, "--keys").unwrap_or(1_000_000);
    let sessions: u64 = arg(&args, "--sessions").unwrap_or(100_000);
    if let Some(n) = arg::<u64>(&args, "--profile") {
        let fixture: String = arg(&args, "--fixture").unwrap_or_else(|| "default".into());
        profile(n, &fixture);
        return;
    }
    if let Some(name) = arg::<String>(&args, "--phase") {
        println!("{}", run_phase(&name, keys, sessions).line());
        return;
    }

    let exe = std::env::current_exe().expect("current_exe");
    let started = Instant::now();
    let spawn = |phase: &str| {
        Process::new(&exe)
            .args(["--phase", phase, "--keys", &keys.to_string()])
            .args(["--sessions", &sessions.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn phase")
    };
    let collect = |phase: &str, child: std::process::Child| {
        let out = child.wait_with_output().expect("wait for phase");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "phase {phase} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
            .lines()
            .find_map(PhaseResult::parse)
            .unwrap_or_else(|| panic!("phase {phase}: no RESULT line in {stdout}"))
    };
    // The two long phases side by side (two cores); the short one after them.
    let (seq_child, idem_child) = (spawn("seq_only"), spawn("idempotency"));
    let seq_only = collect("seq_only", seq_child);
    let idem = collect("idempotency", idem_child);
    let sticky = collect("sticky", spawn("sticky"));

    println!(
        "memory: {keys} idempotency keys, {sessions} sticky sessions, warm-up {WARMUP} decisions per phase"
    );
    println!(
        "{:<12} {:>9} {:>12} {:>12} {:>12} {:>12} {:>12} {:>9} {:>9} {:>8} {:>7}",
        "phase",
        "entries",
        "rss_before",
        "rss_after",
        "hwm_after",
        "delta",
        "bytes/entry",
        "by_seq",
        "by_key",
        "sticky",
        "secs"
    );
    for r in [&seq_only, &idem, &sticky] {
        println!(
            "{:<12} {:>9} {:>8.1} MiB {:>8.1} MiB {:>8.1} MiB {:>8.1} MiB {:>12.1} {:>9} {:>9} {:>8} {:>7.2}",
            r.name,
            r.entries,
            mib(r.rss_before),
            mib(r.rss_after),
            mib(r.hwm_after),
            mib(r.rss_after.saturating_sub(r.rss_before)),
            r.per_entry(),
            r.answers_by_seq,
            r.answers_by_key,
            r.sticky_sessions,
            r.seconds
        );
    }
    println!();
    println!(
        "idempotency key entry: {:.1} B (by-seq record {:.1} B + by-key and expiry {:.1} B); \
         baseline, the {}-byte reply in a Vec<Vec<u8>>: {:.1} B; ratio {:.2}x",
        idem.per_entry(),
        seq_only.per_entry(),
        idem.per_entry() - seq_only.per_entry(),
        idem.reply_bytes,
        idem.baseline_per_entry(),
        idem.per_entry() / idem.baseline_per_entry()
    );
    println!(
        "sticky entry: {:.1} B; baseline, (session, provider) Strings in a Vec: {:.1} B; ratio {:.2}x",
        sticky.per_entry(),
        sticky.baseline_per_entry(),
        sticky.per_entry() / sticky.baseline_per_entry()
    );
    if !args.iter().any(|a| a == "--no-allocs") {
        println!();
        println!("heap allocations per decision (the core bench's workload):");
        println!("{:<28} {:>12} {:>14}", "fixture", "allocs", "bytes alloc'd");
        for (fixture, allocs, bytes) in allocations(2_000) {
            println!("{fixture:<28} {allocs:>12.1} {bytes:>14.0}");
        }
    }
    println!("total wall time {:.1} s", started.elapsed().as_secs_f64());
}
