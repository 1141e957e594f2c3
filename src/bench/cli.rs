//! The flags of `beamline-router bench` and `beamline-router demo-traffic`, and what each
//! subcommand does with them. Kept here rather than in `main.rs`, so that the binary's
//! `serve` path and these clients share nothing but the entry point.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::traffic::{self, LoadPlan};
use super::BenchOptions;
use crate::contracts::subjects;

/// Starts a nats-server (temp store, free port) and a `serve` child unless told otherwise.
#[derive(Args)]
pub struct BenchArgs {
    /// Use this (scratch) server instead of starting one; the bench takes its decide stream over.
    #[arg(long)]
    nats_url: Option<String>,
    /// The nats-server binary to start (see scripts/install-nats-server.sh).
    #[arg(long, env = "NATS_SERVER_BIN", default_value = "nats-server")]
    nats_server: PathBuf,
    /// The router binary to run as `serve`; default: this executable.
    #[arg(long)]
    router_bin: Option<PathBuf>,
    /// With --nats-url: a router is already serving there; start none.
    #[arg(long)]
    external_router: bool,
    /// A few seconds: the two saturation phases only, for CI.
    #[arg(long)]
    quick: bool,
    /// Exit 1 when router/raw throughput is below this.
    #[arg(long)]
    min_ratio: Option<f64>,
    /// Requests in flight during the saturation phases.
    #[arg(long)]
    outstanding: Option<usize>,
    /// Seconds measured per saturation phase.
    #[arg(long)]
    secs: Option<f64>,
    /// Seconds measured per fixed-load phase.
    #[arg(long)]
    level_secs: Option<f64>,
    /// Offered loads as percentages of the router's saturation, comma-separated.
    #[arg(long, value_delimiter = ',')]
    levels: Option<Vec<f64>>,
    /// KEY=VALUE for the router child's environment (repeatable), e.g. RUST_LOG=warn.
    #[arg(long)]
    router_env: Vec<String>,
}

/// Run the bench; false when `--min-ratio` is not met.
pub async fn bench_command(a: BenchArgs) -> anyhow::Result<bool> {
    let router_bin = if a.external_router {
        None
    } else {
        Some(match a.router_bin {
            Some(bin) => bin,
            None => std::env::current_exe()?,
        })
    };
    let mut opts = if a.quick {
        BenchOptions::quick(a.nats_server, router_bin)
    } else {
        BenchOptions::full(a.nats_server, router_bin)
    };
    opts.nats_url = a.nats_url;
    if let Some(n) = a.outstanding {
        opts.outstanding = n.max(1);
    }
    if let Some(s) = a.secs {
        opts.saturation = Duration::from_secs_f64(s.max(0.1));
    }
    if let Some(s) = a.level_secs {
        opts.level = Duration::from_secs_f64(s.max(0.1));
    }
    if let Some(levels) = a.levels {
        opts.levels = levels
            .iter()
            .map(|p| p / 100.0)
            .filter(|f| *f > 0.0)
            .collect();
    }
    for kv in &a.router_env {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--router-env {kv:?}: expected KEY=VALUE"))?;
        opts.router_env.push((k.to_string(), v.to_string()));
    }
    let ratio = super::run(&opts).await?;
    Ok(match a.min_ratio {
        Some(floor) if ratio < floor => {
            println!("FAIL: router/raw {ratio:.3} is below the floor {floor}");
            false
        }
        Some(floor) => {
            println!("ok: router/raw {ratio:.3} >= {floor}");
            true
        }
        None => true,
    })
}

#[derive(Args)]
pub struct TrafficArgs {
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Connect as `serve --config FILE` would (its URLs, authentication and TLS)
    /// instead of `--nats-url`.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, default_value_t = 500)]
    requests: usize,
    #[arg(long, default_value = "acme")]
    tenant: String,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Re-send a request (new Nats-Msg-Id, same request) whose reply is this late.
    #[arg(long, default_value_t = 5_000)]
    resend_after_ms: u64,
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,
    /// Give up after this long.
    #[arg(long, default_value_t = 60)]
    timeout_secs: u64,
    /// Wait for this stream to exist before sending.
    #[arg(long, default_value = "BEAMLINE_DECIDE")]
    stream: String,
    /// Then send this many requests through the `pipeline` policy, answered by a demo
    /// pre-processor, every 4th asking for an assignment that a demo worker consumes.
    #[arg(long, default_value_t = 0)]
    pipeline_requests: usize,
}

/// Send the requests and print what came back; true when every request was answered.
pub async fn demo_traffic_command(args: TrafficArgs) -> anyhow::Result<bool> {
    let client = crate::shell::nats::connect_tool(args.config.as_deref(), &args.nats_url).await?;
    let js = async_nats::jetstream::new(client.clone());
    traffic::wait_for_stream(&js, &args.stream, Duration::from_secs(30)).await?;
    let run_id = format!("demo-{}", &client.new_inbox()[7..15]);
    let plan = LoadPlan {
        requests: args.requests,
        tenant: args.tenant,
        concurrency: args.concurrency.max(1),
        resend_after: Duration::from_millis(args.resend_after_ms),
        max_attempts: args.max_attempts.max(1),
        deadline: Duration::from_secs(args.timeout_secs),
        linger: Duration::from_millis(300),
        run_id,
        decide_subject: subjects::DECIDE.to_string(),
    };
    println!(
        "sending {} decide requests for tenant {} ({} at a time)",
        plan.requests, plan.tenant, plan.concurrency
    );
    let step = (plan.requests / 10).max(1);
    let mut last_shown = 0;
    let report = traffic::run_load(&client, &plan, |p| {
        if p.answered / step > last_shown / step || p.answered == plan.requests {
            println!(
                "  answered {:>5}/{}  (re-sent {})",
                p.answered, plan.requests, p.resent
            );
            last_shown = p.answered;
        }
    })
    .await?;
    print!("{}", traffic::summary(&report));
    let mut complete = report.answered() == plan.requests;
    if !complete {
        println!(
            "{} requests got no reply within {} s",
            plan.requests - report.answered(),
            args.timeout_secs
        );
    }
    if args.pipeline_requests > 0 {
        let n = args.pipeline_requests;
        println!(
            "sending {n} requests through policy {} (a demo extension answers {}; a demo worker acks the assignments)",
            super::demo::PIPELINE_POLICY,
            super::demo::EXTENSION_SUBJECT
        );
        let c = super::demo::run_pipeline(&client, &plan.tenant, n).await?;
        println!(
            "pipeline: {} of {n} decided with the extension, {} errors; extension calls answered {}; assignments asked {}, pulled and acked by the worker {}",
            c.decided_with_extension, c.errors, c.extension_calls, c.assignments_asked, c.assignments_acked
        );
        complete &= c.decided_with_extension == n as u64
            && c.errors == 0
            && c.assignments_acked == c.assignments_asked;
    }
    Ok(complete)
}
