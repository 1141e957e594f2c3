//! `beamline-router`: run the router against NATS (`serve`), or drive it with
//! gateway-like traffic (`demo-traffic`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use beamline_router::contracts::subjects;
use beamline_router::shell::nats::Topology;
use beamline_router::shell::traffic::{self, LoadPlan};
use beamline_router::shell::{serve, ServeConfig};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "beamline-router",
    version,
    about = "Beamline Router: routing decisions over NATS JetStream"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume decide requests from JetStream and answer them until SIGINT/SIGTERM.
    Serve(ServeArgs),
    /// Send decide requests as a gateway would, and print what came back.
    DemoTraffic(TrafficArgs),
}

#[derive(Args)]
struct ServeArgs {
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Directory of `<tenant>/<policy_id>.json` files.
    #[arg(long)]
    policies: PathBuf,
    #[arg(long, default_value = "BEAMLINE_DECIDE")]
    stream: String,
    /// Durable pull consumer on the decide stream.
    #[arg(long, default_value = "router-decide")]
    consumer: String,
    #[arg(long, default_value = "BEAMLINE_DLQ")]
    dlq_stream: String,
    /// Deliveries per message before it is dead-lettered (used when creating the consumer).
    #[arg(long, default_value_t = 5)]
    max_deliver: u64,
    #[arg(long, default_value_t = 30)]
    ack_wait_secs: u64,
    /// Unsettled messages the consumer hands out at once; also the core's in-flight bound.
    #[arg(long, default_value_t = 256)]
    max_ack_pending: usize,
    /// Written into DLQ records and the NATS connection name.
    #[arg(long, default_value = "router-1")]
    node_id: String,
    /// Token admin requests must carry (`authorization: Bearer ..`); unset disables admin.
    #[arg(long, env = "BEAMLINE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// How long a reply or DLQ publish may wait for its flush or PubAck.
    #[arg(long, default_value_t = 5_000)]
    publish_timeout_ms: u64,
    /// How long shutdown waits for in-flight work.
    #[arg(long, default_value_t = 5_000)]
    shutdown_grace_ms: u64,
}

#[derive(Args)]
struct TrafficArgs {
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
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
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,async_nats=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("cannot start the tokio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => runtime.block_on(serve(serve_config(args))).map(|()| true),
        Command::DemoTraffic(args) => runtime.block_on(demo_traffic(args)),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve_config(args: ServeArgs) -> ServeConfig {
    ServeConfig {
        nats_url: args.nats_url,
        policies_dir: args.policies,
        topology: Topology {
            decide_stream: args.stream,
            decide_subject: subjects::DECIDE.to_string(),
            dlq_stream: args.dlq_stream,
            dlq_subject: subjects::DECIDE_DLQ.to_string(),
            consumer: args.consumer,
            ack_wait: Duration::from_secs(args.ack_wait_secs),
            max_deliver: args.max_deliver,
            max_ack_pending: args.max_ack_pending,
        },
        node_id: args.node_id,
        admin_token: args.admin_token,
        publish_timeout: Duration::from_millis(args.publish_timeout_ms),
        shutdown_grace: Duration::from_millis(args.shutdown_grace_ms),
        pull_batch: 64,
    }
}

/// Returns whether every request was answered.
async fn demo_traffic(args: TrafficArgs) -> anyhow::Result<bool> {
    let client = async_nats::connect(&args.nats_url).await?;
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
    let complete = report.answered() == plan.requests;
    if !complete {
        println!(
            "{} requests got no reply within {} s",
            plan.requests - report.answered(),
            args.timeout_secs
        );
    }
    Ok(complete)
}
