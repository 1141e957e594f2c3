//! `beamline-router`: run the router against NATS (`serve`), check a configuration, or
//! drive the router as a client: one request (`decide`), gateway-like traffic
//! (`demo-traffic`), or the end-to-end benchmark (`bench`; both in `bench::cli`).

/// malloc/free were 15 % of the router's CPU under load (docs/PERFORMANCE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use beamline_router::bench::cli::{bench_command, demo_traffic_command, BenchArgs, TrafficArgs};
use beamline_router::shell::config::Flags;
use beamline_router::shell::{serve, ConfigError, Settings};
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
    /// Consume decide requests, results and acks from JetStream until SIGINT/SIGTERM.
    Serve(Box<ServeArgs>),
    /// Validate a configuration file (with the environment overrides applied) and exit.
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
    /// Validate a policy directory (`<tenant>/<policy_id>.json`) offline, with the rules
    /// `serve` and its reload apply: exit 0 when every file loads, 2 naming the first
    /// file, field and rule that does not (for CI pipelines that hold policies).
    CheckPolicies {
        /// The policy directory.
        dir: PathBuf,
    },
    /// Send decide requests as a gateway would, and print what came back.
    DemoTraffic(TrafficArgs),
    /// Send one decide request as a gateway would and print the reply JSON (like `nats req`).
    Decide(DecideArgs),
    /// Measure the router end to end against raw JetStream on this machine (docs/PERFORMANCE.md).
    Bench(BenchArgs),
    /// Check a running deployment from outside: a decide round trip, the status subject,
    /// /readyz (with --metrics); exit 0 when all pass, 1 otherwise.
    Smoke(SmokeArgs),
}

#[derive(Args)]
struct SmokeArgs {
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Connect as `serve --config FILE` would, instead of `--nats-url`.
    #[arg(long)]
    config: Option<PathBuf>,
    /// A tenant whose policy is deployed.
    #[arg(long, default_value = "acme")]
    tenant: String,
    #[arg(long)]
    policy: Option<String>,
    /// `host:port` of the router's metrics listener, to check /readyz.
    #[arg(long)]
    metrics: Option<String>,
    #[arg(long, default_value_t = 5_000)]
    timeout_ms: u64,
}

#[derive(Args)]
struct DecideArgs {
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Connect as `serve --config FILE` would (its `[nats]` URLs, authentication and
    /// `[tls]`, with the same environment overrides) instead of `--nats-url`.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    tenant: String,
    #[arg(long)]
    task_type: String,
    #[arg(long)]
    policy: Option<String>,
    /// The task payload, a JSON object.
    #[arg(long)]
    payload: Option<String>,
    /// For the whole command, retries included.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

/// Flags win over the environment (`BEAMLINE_<SECTION>_<KEY>`), which wins over the file.
#[derive(Args)]
struct ServeArgs {
    /// TOML configuration file (see docs/CONFIG.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// One flag per key that declares one (`shell::config::settings`).
    #[command(flatten)]
    flags: Flags,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match load_settings(Some(&file), &Flags::default()) {
            Ok(s) => {
                println!(
                    "{}: valid ({} NATS URL(s), {} consumer(s), metrics {})",
                    file.display(),
                    s.nats.urls.len(),
                    if s.acks.enabled { 3 } else { 2 },
                    if s.metrics.listen.is_empty() {
                        "off".to_string()
                    } else {
                        s.metrics.listen.clone()
                    }
                );
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("{}: {err}", file.display());
                ExitCode::from(2)
            }
        },
        Command::CheckPolicies { dir } => match beamline_router::policy::load_dir(&dir) {
            Ok(store) => {
                println!("{}: valid ({} policies)", dir.display(), store.len());
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("{err}");
                ExitCode::from(2)
            }
        },
        Command::Serve(args) => {
            let settings = match load_settings(args.config.as_deref(), &args.flags) {
                Ok(s) => s,
                Err(err) => {
                    eprintln!("beamline-router: refusing to start: {err}");
                    return ExitCode::from(2);
                }
            };
            init_logging(&settings.log.format, &settings.log.level);
            let threads = usize::try_from(settings.router.worker_threads).unwrap_or(1);
            run_on(threads, serve(settings).map_ok_true())
        }
        Command::DemoTraffic(args) => {
            init_logging("pretty", "info,async_nats=warn");
            run(demo_traffic_command(args))
        }
        // Exit 0 for a decision, 1 for an error reply, 1 with a message for no reply.
        Command::Decide(a) => run(async move {
            let client =
                beamline_router::shell::nats::connect_tool(a.config.as_deref(), &a.nats_url)
                    .await?;
            beamline_router::client::cli::decide_with(
                client,
                &a.tenant,
                &a.task_type,
                a.policy.as_deref(),
                a.payload.as_deref(),
                std::time::Duration::from_millis(a.timeout_ms),
            )
            .await
            .map(|code| code == 0)
        }),
        Command::Smoke(a) => run(async move {
            let client =
                beamline_router::shell::nats::connect_tool(a.config.as_deref(), &a.nats_url)
                    .await?;
            let smoke = beamline_router::client::smoke::Smoke {
                tenant: a.tenant,
                policy: a.policy,
                metrics: a.metrics,
                timeout: std::time::Duration::from_millis(a.timeout_ms),
            };
            Ok(beamline_router::client::smoke::run(client, &smoke).await)
        }),
        Command::Bench(a) => {
            init_logging("pretty", "warn");
            // One worker, as the router's default: the raw path's pull stream is then
            // free of the async-nats stall the router avoids the same way.
            run_on(1, bench_command(a))
        }
    }
}

trait MapOkTrue: std::future::Future<Output = anyhow::Result<()>> + Sized {
    fn map_ok_true(self) -> impl std::future::Future<Output = anyhow::Result<bool>> {
        async move { self.await.map(|()| true) }
    }
}
impl<F: std::future::Future<Output = anyhow::Result<()>>> MapOkTrue for F {}

fn run(future: impl std::future::Future<Output = anyhow::Result<bool>>) -> ExitCode {
    run_on(0, future)
}

/// On a runtime of `threads` workers (0: tokio's default, one per core). One is a
/// current-thread runtime: the future given and every task it spawns run on this thread,
/// with no wake-ups across threads (a multi-thread runtime of one worker would still run
/// `future` itself on this thread and the spawned tasks on the worker).
fn run_on(
    threads: usize,
    future: impl std::future::Future<Output = anyhow::Result<bool>>,
) -> ExitCode {
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if threads > 1 {
        builder.worker_threads(threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("cannot start the tokio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(future) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            // The client commands set up no log subscriber: say it on stderr then.
            if tracing::dispatcher::has_been_set() {
                tracing::error!("{err:#}");
            } else {
                eprintln!("beamline-router: {err:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// `RUST_LOG`, when set, wins over `log.level`.
fn init_logging(format: &str, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| "info".into());
    // Colours only for a terminal: a log file or a journal would keep the escape codes
    // (and formatting them was 3 % of the router's CPU under load).
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        builder.init();
    }
}

/// File, then environment, then `flags`, then validation.
fn load_settings(file: Option<&Path>, flags: &Flags) -> Result<Settings, ConfigError> {
    let settings = Settings::load(file, |name| std::env::var(name).ok(), flags)?;
    settings.validate()?;
    Ok(settings)
}
