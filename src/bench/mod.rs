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

//! - [`supervise`]: the nats-server and router child processes;
//! - [`paths`]: the raw and router request paths;
//! - [`phases`]: the saturation and fixed-load phases;
//! - [`resources`]: CPU, memory and load from `/proc`;
//! - [`report`]: the table and the `BENCH_JSON` line;
//! - [`traffic`]: a gateway-like load generator (`demo-traffic`, integration tests);
//! - [`demo`]: the demo's extension, worker and extension-policy batch;
//! - [`cli`]: the `bench` and `demo-traffic` subcommands' flags.

// Wall-clock timing is what a benchmark is for: like the production shell, this module
// opts out of the determinism lints that bind the core and the simulator.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use serde_json::json;

use paths::Target;
use phases::{fixed_load, raw_saturation, saturation, Sequencer};
use report::{print_report, Report};
use resources::{cpu_model, load_average, vm_bytes, Pids};
use supervise::{start_nats_server, start_router, ScratchDir};

pub mod cli;
pub mod demo;
mod paths;
mod phases;
mod report;
mod resources;
mod supervise;
pub mod traffic;

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
        .connect(
            url.split(',')
                .map(|u| u.trim().parse::<async_nats::ServerAddr>())
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("bad --nats-url {url}"))?,
        )
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
        traffic::wait_for_stream(&js, ROUTER_STREAM, Duration::from_secs(10))
            .await
            .context("no router serving on this server (the decide stream is missing)")?;
    }

    let run = format!("bench{}", &client.new_inbox()[7..15]);
    let mut seqs = Sequencer(0);
    let mut raw = Target::raw(&client, &run).await?;
    let mut router = Target::router(&client, &run).await?;
    let (raw_sat, raw_stalls) = raw_saturation(&mut raw, &mut seqs, pids, opts).await;
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
