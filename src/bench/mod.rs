//! `beamline-router bench`: what the router costs end to end, through a real nats-server,
//! against what JetStream itself can do on the same machine in the same run.
//!
//! Two paths, the same stream kind (file storage, limits retention, the router's duplicate
//! window), the same request bytes and headers (`Reply-To`, `Nats-Msg-Id`):
//!
//! - **raw**: the bench publishes with JetStream (PubAck awaited off the loop, as a
//!   gateway does), pull-consumes the message from a durable consumer with the router's
//!   batch and `max_ack_pending`, acks it, and counts it as done on receipt. No routing.
//!   This is the ceiling: a router can only be slower.
//! - **router**: the same publish to `beamline.router.v1.decide`; the router (a child
//!   process running `serve`, or the server a `--nats-url` points at) pulls, decides,
//!   publishes the reply to the `Reply-To` inbox and acks; done when the reply arrives.
//!
//! Measured, in order: saturation throughput of each path (closed loop, `--outstanding`
//! requests in flight), their ratio, then latency at fixed offered loads (open loop,
//! paced publishing, each latency taken from the request's *intended* send time so that a
//! stalled generator cannot hide a stall of the system: no coordinated omission). CPU per
//! request comes from `/proc/<pid>/stat` (utime + stime) of the router child, the
//! nats-server child and the bench itself over each measured window; peak RSS is the
//! router's `VmHWM`.
//!
//! A saturation phase in which nothing completes for 2 s is reported as stalled; the raw
//! phase is then pulled afresh and measured again, at most three times. The raw pull used
//! to stop for ~30 s on a multi-thread runtime (async-nats's count of owed messages
//! drifting: docs/PERFORMANCE.md, "A stall of the pull"); the bench now runs on one
//! thread, as `serve` does by default, and the guard stays for whatever else stalls.

// Wall-clock timing is what a benchmark is for: like the production shell, this module
// opts out of the determinism lints that bind the core and the simulator.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::io::Read as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::contracts::subjects::{DECIDE, HEADER_MSG_ID, HEADER_REPLY_TO};
use crate::shell::traffic::{decide_request, spawn_counted_publish};

/// The router's decide stream, as `serve` creates it by default.
const ROUTER_STREAM: &str = "BEAMLINE_DECIDE";
/// `decide.consumer` by default.
const ROUTER_CONSUMER: &str = "router-decide";
const RAW_STREAM: &str = "BENCH_RAW";
const RAW_SUBJECT: &str = "bench.raw.decide";
const RAW_CONSUMER: &str = "bench-raw";
const TENANT: &str = "acme";
/// The router's defaults (`router.pull_batch`, `decide.max_ack_pending`,
/// `streams.duplicate_window_ms`), copied to the raw consumer.
const PULL_BATCH: usize = 64;
const MAX_ACK_PENDING: i64 = 256;
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Requests still unanswered this long after a phase stopped sending count as lost.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// A saturation phase in which nothing completes for this long has stalled.
const STALL_AFTER: Duration = Duration::from_secs(2);
/// Attempts at the raw saturation phase (a stalled attempt is pulled afresh and repeated).
const RAW_ATTEMPTS: u32 = 3;

/// What to run; see `beamline-router bench --help`.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Use this server (and a router already serving on it, unless `router_bin` is set)
    /// instead of starting a nats-server.
    pub nats_url: Option<String>,
    /// The nats-server binary to start when no URL is given.
    pub nats_server_bin: PathBuf,
    /// The `beamline-router` binary to run as `serve`; `None` with a URL: the router is
    /// already running there.
    pub router_bin: Option<PathBuf>,
    /// Requests in flight during the saturation phases.
    pub outstanding: usize,
    pub warmup: Duration,
    pub saturation: Duration,
    /// Length of each fixed-load phase.
    pub level: Duration,
    /// Offered loads, as fractions of the router's saturation throughput.
    pub levels: Vec<f64>,
    /// Also measure raw latency at the same offered loads.
    pub raw_levels: bool,
    /// Extra environment of the router child (`RUST_LOG`, `TOKIO_WORKER_THREADS`, ...).
    pub router_env: Vec<(String, String)>,
}

impl BenchOptions {
    pub fn full(nats_server_bin: PathBuf, router_bin: Option<PathBuf>) -> Self {
        BenchOptions {
            nats_url: None,
            nats_server_bin,
            router_bin,
            outstanding: 256,
            warmup: Duration::from_secs(1),
            saturation: Duration::from_secs(5),
            level: Duration::from_secs(5),
            levels: vec![0.25, 0.5, 0.8],
            raw_levels: true,
            router_env: Vec::new(),
        }
    }

    /// A few seconds in all: the two saturation phases only.
    pub fn quick(nats_server_bin: PathBuf, router_bin: Option<PathBuf>) -> Self {
        BenchOptions {
            warmup: Duration::from_millis(500),
            saturation: Duration::from_secs(2),
            levels: Vec::new(),
            raw_levels: false,
            ..BenchOptions::full(nats_server_bin, router_bin)
        }
    }
}

/// CPU seconds (user + system) of a process, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it are plain.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// `sysconf(_SC_CLK_TCK)`: 100 on every Linux this runs on (USER_HZ); `getconf` says so.
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A `Vm*` line of `/proc/<pid>/status`, in bytes.
fn vm_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A scratch directory removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("beamline-bench-{}-{nanos:08x}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(ScratchDir(path))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed on drop.
struct ChildGuard {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl ChildGuard {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        tracing::debug!(name = self.name, "child stopped");
    }
}

fn start_nats_server(bin: &Path, dir: &Path) -> anyhow::Result<(ChildGuard, String)> {
    let port = free_port()?;
    let log = dir.join("nats-server.log");
    let file = std::fs::File::create(&log)?;
    let child = Command::new(bin)
        .args(["-js", "-a", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .arg("-sd")
        .arg(dir.join("store"))
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let mut guard = ChildGuard {
        name: "nats-server",
        child,
        log,
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if guard.exited() || std::time::Instant::now() > deadline {
            anyhow::bail!(
                "nats-server did not listen on {port}:\n{}",
                guard.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((guard, format!("nats://127.0.0.1:{port}")))
}

async fn pulling(js: &jetstream::Context) -> bool {
    let Ok(stream) = js.get_stream(ROUTER_STREAM).await else {
        return false;
    };
    stream
        .consumer_info(ROUTER_CONSUMER)
        .await
        .is_ok_and(|info| info.num_waiting > 0)
}

async fn start_router(
    js: &jetstream::Context,
    bin: &Path,
    url: &str,
    dir: &Path,
    env: &[(String, String)],
) -> anyhow::Result<ChildGuard> {
    let policies = dir.join("policies");
    std::fs::create_dir_all(policies.join(TENANT))?;
    std::fs::write(
        policies.join(TENANT).join("default.json"),
        r#"{"version":"1.0","providers":[{"name":"openai","weight":70},{"name":"anthropic","weight":30}]}"#,
    )?;
    let log = dir.join("router.log");
    let file = std::fs::File::create(&log)?;
    // The production defaults (log level included), but no metrics port to collide on.
    let child = Command::new(bin)
        .arg("serve")
        .args(["--nats-url", url, "--node-id", "bench", "--metrics-listen="])
        .arg("--policies")
        .arg(&policies)
        .env("NO_COLOR", "1")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let mut guard = ChildGuard {
        name: "router",
        child,
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    // Ready once it logs so, or (with `RUST_LOG` quieter than info) once its decide
    // consumer has a pull request waiting.
    while !guard.log_text().contains("router ready") && !pulling(js).await {
        if guard.exited() || Instant::now() > deadline {
            anyhow::bail!("router did not become ready:\n{}", guard.log_text());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(guard)
}

/// CPU seconds of the router, the nats-server and the bench, when known.
#[derive(Clone, Copy, Debug, Default)]
struct CpuSample {
    router: Option<f64>,
    nats: Option<f64>,
    bench: Option<f64>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Pids {
    router: Option<u32>,
    nats: Option<u32>,
}

impl Pids {
    fn sample(&self) -> CpuSample {
        CpuSample {
            router: self.router.and_then(cpu_seconds),
            nats: self.nats.and_then(cpu_seconds),
            bench: cpu_seconds(std::process::id()),
        }
    }
}

/// CPU microseconds per request of each process between two samples.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
struct CpuPerRequest {
    router_us: Option<f64>,
    nats_us: Option<f64>,
    bench_us: Option<f64>,
}

fn cpu_per_request(before: CpuSample, after: CpuSample, requests: u64) -> CpuPerRequest {
    let per = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if requests > 0 => Some((b - a) * 1e6 / requests as f64),
        _ => None,
    };
    CpuPerRequest {
        router_us: per(before.router, after.router),
        nats_us: per(before.nats, after.nats),
        bench_us: per(before.bench, after.bench),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path_ {
    Raw,
    Router,
}

impl Path_ {
    fn name(self) -> &'static str {
        match self {
            Path_::Raw => "raw",
            Path_::Router => "router",
        }
    }
}

/// Publishes requests of one path and reports each completion as (sequence, instant).
struct Target {
    path: Path_,
    js: jetstream::Context,
    subject: &'static str,
    inbox: String,
    /// Prefix of every request id of this run: `<run>-<seq>`.
    run: String,
    done: mpsc::UnboundedReceiver<(u64, Instant)>,
    unconfirmed: Arc<AtomicU64>,
    error_replies: Arc<AtomicU64>,
    worker: tokio::task::JoinHandle<()>,
    /// Raw only: drop the pull and pull afresh.
    repull: Option<mpsc::UnboundedSender<()>>,
    /// Raw only: the consumer, to show its state when the pull stalls.
    consumer: Option<consumer::PullConsumer>,
}

/// The raw path's pull: the router's settings (`driver::pull_stream`).
async fn raw_pull(consumer: &consumer::PullConsumer) -> anyhow::Result<consumer::pull::Stream> {
    Ok(consumer
        .stream()
        .max_messages_per_batch(PULL_BATCH)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await?)
}

/// The `<seq>` of the first `<run>-<seq>` in `payload`.
fn seq_of(payload: &[u8], marker: &[u8]) -> Option<u64> {
    let at = payload.windows(marker.len()).position(|w| w == marker)? + marker.len();
    let digits = payload[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&payload[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

impl Target {
    async fn raw(client: &async_nats::Client, run: &str) -> anyhow::Result<Target> {
        let js = jetstream::new(client.clone());
        let _ = js.delete_stream(RAW_STREAM).await;
        let stream = js
            .create_stream(stream::Config {
                name: RAW_STREAM.to_string(),
                subjects: vec![RAW_SUBJECT.to_string()],
                storage: stream::StorageType::File,
                retention: stream::RetentionPolicy::Limits,
                max_age: Duration::from_secs(3600),
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            })
            .await
            .context("cannot create the raw stream")?;
        let consumer: consumer::PullConsumer = stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(RAW_CONSUMER.to_string()),
                filter_subject: RAW_SUBJECT.to_string(),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_deliver: 5,
                max_ack_pending: MAX_ACK_PENDING,
                ..Default::default()
            })
            .await
            .context("cannot create the raw consumer")?;
        let (tx, rx) = mpsc::unbounded_channel();
        let marker = format!("{run}-").into_bytes();
        let mut messages = raw_pull(&consumer).await?;
        let consumer_for_info = consumer.clone();
        let (repull, mut repull_rx) = mpsc::unbounded_channel::<()>();
        let worker = tokio::spawn(async move {
            loop {
                loop {
                    let item = tokio::select! {
                        item = messages.next() => item,
                        Some(()) = repull_rx.recv() => break,
                    };
                    let Some(item) = item else { break };
                    let message = match item {
                        Ok(message) => message,
                        // Neither messages nor heartbeats: async-nats holds no pull at
                        // the server and would wait for its 30 s expiry (the router's
                        // driver does the same, `restart_stalled_pull`). Pull afresh.
                        Err(err)
                            if err.kind()
                                == consumer::pull::MessagesErrorKind::MissingHeartbeat =>
                        {
                            eprintln!("bench: raw pull: {err}; pulling afresh");
                            break;
                        }
                        Err(err) => {
                            eprintln!("bench: raw pull error: {err}");
                            continue;
                        }
                    };
                    let seq = seq_of(&message.payload, &marker);
                    let at = Instant::now();
                    if let Err(err) = message.ack().await {
                        tracing::warn!(%err, "raw ack failed");
                    }
                    if let Some(seq) = seq {
                        let _ = tx.send((seq, at));
                    }
                }
                match raw_pull(&consumer).await {
                    Ok(fresh) => messages = fresh,
                    Err(err) => {
                        eprintln!("bench: raw pull cannot restart: {err}");
                        return;
                    }
                }
            }
        });
        Ok(Target {
            path: Path_::Raw,
            js,
            subject: RAW_SUBJECT,
            inbox: client.new_inbox(),
            run: run.to_string(),
            done: rx,
            unconfirmed: Arc::default(),
            error_replies: Arc::default(),
            worker,
            repull: Some(repull),
            consumer: Some(consumer_for_info),
        })
    }

    async fn router(client: &async_nats::Client, run: &str) -> anyhow::Result<Target> {
        let js = jetstream::new(client.clone());
        let inbox = client.new_inbox();
        let mut replies = client.subscribe(inbox.clone()).await?;
        client.flush().await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let marker = format!("{run}-").into_bytes();
        let error_replies = Arc::new(AtomicU64::new(0));
        let errors = error_replies.clone();
        let worker = tokio::spawn(async move {
            while let Some(reply) = replies.next().await {
                let at = Instant::now();
                if !reply.payload.starts_with(b"{\"ok\":true") {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(seq) = seq_of(&reply.payload, &marker) {
                    let _ = tx.send((seq, at));
                }
            }
        });
        Ok(Target {
            path: Path_::Router,
            js,
            subject: DECIDE,
            inbox,
            run: run.to_string(),
            done: rx,
            unconfirmed: Arc::default(),
            error_replies,
            worker,
            repull: None,
            consumer: None,
        })
    }

    /// Publish request `seq`; the PubAck is awaited in a task of its own, as a gateway does.
    fn send(&self, seq: u64) {
        let request_id = format!("{}-{seq}", self.run);
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_REPLY_TO, self.inbox.as_str());
        headers.insert(HEADER_MSG_ID, request_id.as_str());
        let payload = Bytes::from(decide_request(&request_id, TENANT, seq as usize));
        spawn_counted_publish(
            self.js.clone(),
            self.subject.to_string(),
            headers,
            payload,
            Duration::from_secs(10),
            self.unconfirmed.clone(),
        );
    }
}

fn new_histogram() -> Histogram<u64> {
    // Microseconds, 1 µs to 100 s, 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}

/// Latency quantiles in milliseconds.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
struct Quantiles {
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
}

fn quantiles(h: &Histogram<u64>) -> Quantiles {
    let ms = |us: u64| us as f64 / 1000.0;
    Quantiles {
        p50_ms: ms(h.value_at_quantile(0.50)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
    }
}

#[derive(Clone, Debug, serde::Serialize)]
struct SaturationResult {
    path: &'static str,
    outstanding: usize,
    completed: u64,
    secs: f64,
    throughput: f64,
    /// Closed-loop latency: queueing behind `outstanding` requests, not a service level.
    latency: Quantiles,
    cpu: CpuPerRequest,
    lost: u64,
    /// Nothing completed for `STALL_AFTER` with requests in flight: the phase was cut short.
    stalled: bool,
}

#[derive(Clone, Debug, serde::Serialize)]
struct LevelResult {
    path: &'static str,
    fraction: f64,
    offered: f64,
    achieved: f64,
    measured: u64,
    latency: Quantiles,
    /// How late the generator itself sent (included in `latency`).
    send_lateness_p99_ms: f64,
    cpu: CpuPerRequest,
    lost: u64,
}

/// Next global sequence number: phases never reuse one, so a late completion of an
/// earlier phase is recognised (below the phase's first sequence) and ignored.
struct Sequencer(u64);

impl Sequencer {
    fn take(&mut self) -> u64 {
        let seq = self.0;
        self.0 += 1;
        seq
    }
}

async fn saturation(
    target: &mut Target,
    seqs: &mut Sequencer,
    pids: Pids,
    outstanding: usize,
    warmup: Duration,
    duration: Duration,
) -> SaturationResult {
    let first = seqs.0;
    let mut sent_at: Vec<Option<Instant>> = Vec::new();
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut in_flight = 0usize;
    let mut completed = 0u64;
    let mut hist = new_histogram();
    let mut before: Option<CpuSample> = None;
    let mut after = CpuSample::default();
    let mut send = |target: &Target, sent_at: &mut Vec<Option<Instant>>| {
        let seq = seqs.take();
        sent_at.push(Some(Instant::now()));
        target.send(seq);
    };
    for _ in 0..outstanding {
        send(target, &mut sent_at);
        in_flight += 1;
    }
    let warm_sleep = tokio::time::sleep_until(measure_from);
    let end_sleep = tokio::time::sleep_until(end);
    tokio::pin!(warm_sleep, end_sleep);
    let mut sending = true;
    let mut stalled = false;
    loop {
        tokio::select! {
            biased;
            () = &mut warm_sleep, if before.is_none() => before = Some(pids.sample()),
            () = &mut end_sleep, if sending => {
                after = pids.sample();
                sending = false;
                if in_flight == 0 { break; }
            }
            done = target.done.recv() => {
                let Some((seq, at)) = done else { break };
                let Some(slot) = seq.checked_sub(first).and_then(|i| sent_at.get_mut(i as usize)) else {
                    continue;
                };
                let Some(sent) = slot.take() else { continue };
                in_flight -= 1;
                if sending && before.is_some() {
                    completed += 1;
                    let _ = hist.record((at - sent).as_micros().max(1) as u64);
                }
                if sending {
                    send(target, &mut sent_at);
                    in_flight += 1;
                } else if in_flight == 0 {
                    break;
                }
            }
            () = tokio::time::sleep(DRAIN_TIMEOUT), if !sending => break,
            () = tokio::time::sleep(STALL_AFTER), if sending => {
                stalled = true;
                break;
            }
        }
    }
    let secs = duration.as_secs_f64();
    SaturationResult {
        path: target.path.name(),
        outstanding,
        completed,
        secs,
        throughput: completed as f64 / secs,
        latency: quantiles(&hist),
        cpu: cpu_per_request(before.unwrap_or_default(), after, completed),
        lost: in_flight as u64,
        stalled,
    }
}

async fn fixed_load(
    target: &mut Target,
    seqs: &mut Sequencer,
    pids: Pids,
    fraction: f64,
    rate: f64,
    warmup: Duration,
    duration: Duration,
) -> LevelResult {
    let first = seqs.0;
    let total = ((warmup + duration).as_secs_f64() * rate).round().max(1.0) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now() + Duration::from_millis(5);
    let intended = |i: u64| start + interval.mul_f64(i as f64);
    let measure_from = start + warmup;
    let mut sent = vec![false; total as usize];
    let mut answered = vec![false; total as usize];
    let mut next = 0u64;
    let mut measured = 0u64;
    let mut hist = new_histogram();
    let mut lateness = new_histogram();
    let mut before: Option<CpuSample> = None;
    let mut last_answer = start;
    let mut outstanding = 0u64;
    let mut drain_deadline: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if before.is_none() && now >= measure_from {
            before = Some(pids.sample());
        }
        while next < total && intended(next) <= now {
            let seq = seqs.take();
            debug_assert_eq!(seq, first + next);
            target.send(seq);
            sent[next as usize] = true;
            if intended(next) >= measure_from {
                let _ = lateness.record((now - intended(next)).as_micros().max(1) as u64);
            }
            next += 1;
            outstanding += 1;
        }
        if next == total && drain_deadline.is_none() {
            drain_deadline = Some(Instant::now() + DRAIN_TIMEOUT);
        }
        if next == total && outstanding == 0 {
            break;
        }
        let wake = if next < total {
            intended(next)
        } else {
            drain_deadline.unwrap_or(now)
        };
        tokio::select! {
            biased;
            done = target.done.recv() => {
                let Some((seq, at)) = done else { break };
                let Some(i) = seq.checked_sub(first).filter(|i| *i < total) else { continue };
                if !sent[i as usize] || answered[i as usize] {
                    continue;
                }
                answered[i as usize] = true;
                outstanding -= 1;
                last_answer = at;
                let planned = intended(i);
                if planned >= measure_from {
                    measured += 1;
                    let _ = hist.record((at - planned).as_micros().max(1) as u64);
                }
            }
            () = tokio::time::sleep_until(wake) => {
                if next == total && Instant::now() >= wake {
                    break;
                }
            }
        }
    }
    let after = pids.sample();
    let window = (last_answer.max(measure_from) - measure_from)
        .as_secs_f64()
        .max(1e-3);
    LevelResult {
        path: target.path.name(),
        fraction,
        offered: rate,
        achieved: measured as f64 / window,
        measured,
        latency: quantiles(&hist),
        send_lateness_p99_ms: lateness.value_at_quantile(0.99) as f64 / 1000.0,
        cpu: cpu_per_request(before.unwrap_or_default(), after, measured),
        lost: outstanding,
    }
}

#[derive(Clone, Debug, serde::Serialize)]
struct Report {
    nproc: usize,
    cpu_model: String,
    load_before: String,
    load_after: String,
    nats_server: String,
    quick: bool,
    raw: SaturationResult,
    router: SaturationResult,
    ratio: f64,
    levels: Vec<LevelResult>,
    router_peak_rss_bytes: Option<u64>,
    nats_peak_rss_bytes: Option<u64>,
    unconfirmed_publishes: u64,
    error_replies: u64,
    /// Raw saturation attempts that stalled and were repeated.
    raw_stalls: u32,
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default()
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into())
}

fn mib(v: Option<u64>) -> String {
    v.map(|b| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)))
        .unwrap_or_else(|| "-".into())
}

fn print_report(r: &Report) {
    println!(
        "machine: nproc {} ({}); load average {} (before) / {} (after); nats-server {}",
        r.nproc, r.cpu_model, r.load_before, r.load_after, r.nats_server
    );
    println!(
        "\nsaturation (closed loop, {} requests in flight, {:.1} s measured after warm-up)",
        r.raw.outstanding, r.raw.secs
    );
    println!(
        "{:<8} {:>10} {:>9} {:>9} {:>9} {:>14} {:>12} {:>13} {:>5}",
        "path",
        "req/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "router µs/req",
        "nats µs/req",
        "bench µs/req",
        "lost"
    );
    for s in [&r.raw, &r.router] {
        println!(
            "{:<8} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>14} {:>12} {:>13} {:>5}",
            s.path,
            s.throughput,
            s.latency.p50_ms,
            s.latency.p99_ms,
            s.latency.p999_ms,
            fmt_opt(s.cpu.router_us),
            fmt_opt(s.cpu.nats_us),
            fmt_opt(s.cpu.bench_us),
            s.lost
        );
    }
    for s in [&r.raw, &r.router] {
        if s.stalled {
            println!("WARNING: the {} phase stalled (nothing completed for {STALL_AFTER:?}); its figures are not valid", s.path);
        }
    }
    if r.raw_stalls > 0 {
        println!(
            "(the raw phase stalled {} time(s) and was measured again)",
            r.raw_stalls
        );
    }
    println!("ratio router/raw: {:.3}", r.ratio);
    if !r.levels.is_empty() {
        println!("\nfixed offered load (open loop; latency from the intended send time)");
        println!(
            "{:<8} {:>5} {:>9} {:>9} {:>8} {:>8} {:>9} {:>8} {:>10} {:>14} {:>12} {:>5}",
            "path",
            "load",
            "offered",
            "achieved",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "late p99",
            "router µs/req",
            "nats µs/req",
            "lost"
        );
        for l in &r.levels {
            println!(
                "{:<8} {:>4.0}% {:>9.0} {:>9.0} {:>8.2} {:>8.2} {:>9.2} {:>8.2} {:>10.2} {:>14} {:>12} {:>5}",
                l.path,
                l.fraction * 100.0,
                l.offered,
                l.achieved,
                l.latency.p50_ms,
                l.latency.p99_ms,
                l.latency.p999_ms,
                l.latency.max_ms,
                l.send_lateness_p99_ms,
                fmt_opt(l.cpu.router_us),
                fmt_opt(l.cpu.nats_us),
                l.lost
            );
        }
    }
    println!(
        "\npeak RSS (VmHWM): router {}, nats-server {}; unconfirmed publishes {}, error replies {}",
        mib(r.router_peak_rss_bytes),
        mib(r.nats_peak_rss_bytes),
        r.unconfirmed_publishes,
        r.error_replies
    );
}

/// Run the bench, print the table and one `BENCH_JSON {...}` line, and return the ratio.
pub async fn run(opts: &BenchOptions) -> anyhow::Result<f64> {
    let load_before = load_average();
    let scratch = ScratchDir::new()?;
    let mut pids = Pids::default();
    let mut nats_child = None;
    let url = match &opts.nats_url {
        Some(url) => url.clone(),
        None => {
            let (child, url) = start_nats_server(&opts.nats_server_bin, &scratch.0)?;
            pids.nats = Some(child.pid());
            nats_child = Some(child);
            url
        }
    };
    let client = async_nats::ConnectOptions::new()
        .name("beamline-bench")
        .event_callback(|event| async move {
            if !matches!(event, async_nats::Event::Connected) {
                eprintln!("bench: nats event: {event}");
            }
        })
        .connect(&url)
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    let nats_server = client.server_info().version;
    let js = jetstream::new(client.clone());
    let mut router_child = None;
    if let Some(bin) = &opts.router_bin {
        // Leftovers of an earlier run on a reused server would be decided first.
        if let Ok(mut stream) = js.get_stream(ROUTER_STREAM).await {
            let _ = stream.purge().await;
            let _ = stream.info().await;
        }
        let child = start_router(&js, bin, &url, &scratch.0, &opts.router_env).await?;
        pids.router = Some(child.pid());
        router_child = Some(child);
    } else {
        crate::shell::traffic::wait_for_stream(&js, ROUTER_STREAM, Duration::from_secs(10))
            .await
            .context("no router serving on this server (the decide stream is missing)")?;
    }

    let run = format!("bench{}", &client.new_inbox()[7..15]);
    let mut seqs = Sequencer(0);
    let mut raw = Target::raw(&client, &run).await?;
    let mut router = Target::router(&client, &run).await?;
    let mut raw_stalls = 0;
    let raw_sat = loop {
        eprintln!("bench: raw saturation");
        let result = saturation(
            &mut raw,
            &mut seqs,
            pids,
            opts.outstanding,
            opts.warmup,
            opts.saturation,
        )
        .await;
        if !result.stalled || raw_stalls + 1 >= RAW_ATTEMPTS {
            break result;
        }
        raw_stalls += 1;
        if let Some(consumer) = &mut raw.consumer {
            if let Ok(info) = consumer.info().await {
                eprintln!(
                    "bench: raw consumer at the stall: ack pending {}, pending {}, waiting pulls {}, \
                     delivered stream seq {}, ack floor stream seq {}, redelivered {}",
                    info.num_ack_pending,
                    info.num_pending,
                    info.num_waiting,
                    info.delivered.stream_sequence,
                    info.ack_floor.stream_sequence,
                    info.num_redelivered
                );
            }
        }
        eprintln!("bench: the raw pull stalled; pulling afresh and measuring again");
        if let Some(repull) = &raw.repull {
            let _ = repull.send(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!("bench: router saturation");
    let router_sat = saturation(
        &mut router,
        &mut seqs,
        pids,
        opts.outstanding,
        opts.warmup,
        opts.saturation,
    )
    .await;
    let ratio = if raw_sat.throughput > 0.0 {
        router_sat.throughput / raw_sat.throughput
    } else {
        0.0
    };
    let mut levels = Vec::new();
    for &fraction in &opts.levels {
        let rate = (router_sat.throughput * fraction).max(1.0);
        eprintln!(
            "bench: router at {:.0}% ({rate:.0} req/s)",
            fraction * 100.0
        );
        // The router, then raw at the same rate for comparison.
        let raw_too = opts.raw_levels.then_some(&mut raw);
        for (i, target) in std::iter::once(&mut router).chain(raw_too).enumerate() {
            if i > 0 {
                eprintln!("bench: raw at {rate:.0} req/s");
            }
            let level = fixed_load(
                target,
                &mut seqs,
                pids,
                fraction,
                rate,
                opts.warmup,
                opts.level,
            );
            levels.push(level.await);
        }
    }
    let router_peak_rss_bytes = pids.router.and_then(|p| vm_bytes(p, "VmHWM:"));
    let nats_peak_rss_bytes = pids.nats.and_then(|p| vm_bytes(p, "VmHWM:"));
    if let Some(child) = &mut router_child {
        if child.exited() {
            anyhow::bail!("the router exited during the bench:\n{}", child.log_text());
        }
    }
    let report = Report {
        nproc: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        cpu_model: cpu_model(),
        load_before,
        load_after: load_average(),
        nats_server,
        quick: opts.levels.is_empty(),
        unconfirmed_publishes: raw.unconfirmed.load(Ordering::Relaxed)
            + router.unconfirmed.load(Ordering::Relaxed),
        error_replies: router.error_replies.load(Ordering::Relaxed),
        raw_stalls,
        raw: raw_sat,
        router: router_sat,
        ratio,
        levels,
        router_peak_rss_bytes,
        nats_peak_rss_bytes,
    };
    print_report(&report);
    println!("BENCH_JSON {}", json!(report));
    raw.worker.abort();
    router.worker.abort();
    let _ = js.delete_stream(RAW_STREAM).await;
    drop((raw, router, js));
    let _ = client.drain().await;
    drop(router_child);
    drop(nats_child);
    Ok(ratio)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_is_found_after_the_run_marker() {
        let reply = br#"{"ok":true,"context":{"request_id":"benchab12-4711"},"x":"benchab12-9"}"#;
        assert_eq!(seq_of(reply, b"benchab12-"), Some(4711));
        assert_eq!(seq_of(reply, b"other-"), None);
    }

    #[test]
    fn cpu_of_this_process_is_readable() {
        assert!(cpu_seconds(std::process::id()).is_some());
        assert!(vm_bytes(std::process::id(), "VmHWM:").is_some());
    }
}
