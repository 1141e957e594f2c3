//! `beamline-sim`: run one seed, sweep many, shrink a failing one, measure speed.
//!
//! ```text
//! beamline-sim run    --seed N | --seed-file FILE  [run flags]
//!                     [--trace FILE] [--timeline FILE.html [--window A..B] [--focus SEQ]]
//!                     [--check-determinism] [--shrink]
//! beamline-sim sweep  --seeds A..B [--jobs J] [--time-budget 10m] [--probes] [--require-probes] [run flags]
//!                     [--seeds-dir DIR] [--recheck-every K]
//! beamline-sim shrink --seed N | --seed-file FILE [run flags] [--max-runs N] [--seeds-dir DIR]
//! beamline-sim bench  [--seeds N] [run flags]
//! beamline-sim hashes --seeds A..B [--jobs J] [run flags]
//! beamline-sim scenarios [--dir DIR]
//! beamline-sim run    --scenario NAME --seed N [--bug NAME] [--log] [--trace FILE] [--timeline FILE.html] [--check-determinism] [--dir DIR]
//! beamline-sim sweep  --scenario NAME --seeds A..B [--jobs J] [--bug NAME] [--dir DIR]
//!
//! run flags: --requests R --no-faults --tail-loss --strict --bug NAME
//!            --chaos-ms MS --drop-faults I,J,.. --rates-off NAME,..
//! ```
//!
//! `run` prints the seed's fault profile first, then counters, and as its last line
//! `seed=N verdict=pass|fail|known trace_hash=<hex> requests=.. replies=.. dlq=.. redeliveries=.. faults=..`;
//! it exits 1 on `fail`. `sweep` writes each failing seed to `<seeds-dir>/<seed>.seed` (with
//! `--bug`, only when `--seeds-dir` is given) and ends with `seeds=N passed=P failed=F`
//! after a `known=K` line (exit 1 if F > 0). Wall time is read
//! here only, never inside a run.

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use beamline_sim::invariants::known;
use beamline_sim::probes::ProbeTally;
use beamline_sim::scenario::{self, Scenario, ScenarioRun};
use beamline_sim::seedfile::{parse_indices, parse_rates, SeedFile};
use beamline_sim::shrink::shrink;
use beamline_sim::sweep::{parse_duration_ms, parse_seed_range, run_caught, sweep, SweepConfig};
use beamline_sim::timeline::{render, TimelineOptions};
use beamline_sim::trace::{first_divergence, hash_hex};
use beamline_sim::world::World;
use beamline_sim::{Bug, RunReport, SimOptions, Verdict};

const USAGE: &str = "usage:
  beamline-sim run    --seed N | --seed-file FILE [run flags] [--trace FILE] [--timeline FILE.html [--window A..B] [--focus SEQ]] [--check-determinism] [--shrink]
  beamline-sim sweep  --seeds A..B [--jobs J] [--time-budget 10m] [run flags] [--seeds-dir DIR] [--recheck-every K]
                      [--probes (the whole coverage-probe table)] [--require-probes (fail if a required probe was never reached)]
  beamline-sim shrink --seed N | --seed-file FILE [run flags] [--max-runs N] [--seeds-dir DIR]
  beamline-sim bench  [--seeds N] [run flags]
  beamline-sim hashes --seeds A..B [--jobs J] [run flags]
  beamline-sim scenarios [--dir DIR]
  beamline-sim run    --scenario NAME --seed N [--bug NAME] [--log] [--trace FILE] [--timeline FILE.html] [--check-determinism] [--dir DIR]
  beamline-sim sweep  --scenario NAME --seeds A..B [--jobs J] [--bug NAME] [--dir DIR]
run flags: --requests R --no-faults --tail-loss --strict --bug NAME --chaos-ms MS --drop-faults I,J --rates-off NAME,NAME
bugs: ack-on-delivery drop-replies skip-dlq double-usage ignore-delivered drop-advisories forget-answers blind-claims skip-drain ignore-leader-moves
timeout-confirms fresh-msg-id-on-retry nak-without-delay; planted in the core: dlq-one-early bucket-never-refills
bucket-refills-fast breaker-never-closes breaker-double-feed sticky-never-expires weighted-skips-last extension-retry-errors";

const RUN_VALUES: [&str; 7] = [
    "--seed",
    "--seed-file",
    "--requests",
    "--bug",
    "--chaos-ms",
    "--drop-faults",
    "--rates-off",
];
const RUN_SWITCHES: [&str; 3] = ["--no-faults", "--tail-loss", "--strict"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or_default();
    let result = match args.first().map(String::as_str) {
        Some("run") => cmd_run(rest),
        Some("sweep") => cmd_sweep(rest),
        Some("shrink") => cmd_shrink(rest),
        Some("bench") => cmd_bench(rest),
        Some("hashes") => cmd_hashes(rest),
        Some("scenarios") => cmd_scenarios(rest),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(true)
        }
        _ => Err(format!("unknown or missing command\n{USAGE}")),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("beamline-sim: {e}");
            ExitCode::from(2)
        }
    }
}

/// Hand-rolled flags: `--name value` pairs and bare `--switch`es.
struct Flags<'a> {
    args: &'a [String],
}

impl<'a> Flags<'a> {
    fn value(&self, name: &str) -> Result<Option<&'a str>, String> {
        match self.args.iter().position(|a| a == name) {
            None => Ok(None),
            Some(i) => self
                .args
                .get(i + 1)
                .map(|v| Some(v.as_str()))
                .ok_or_else(|| format!("{name} needs a value")),
        }
    }

    fn number(&self, name: &str) -> Result<Option<u64>, String> {
        self.value(name)?
            .map(|v| v.parse().map_err(|e| format!("{name} {v}: {e}")))
            .transpose()
    }

    fn switch(&self, name: &str) -> bool {
        self.args.iter().any(|a| a == name)
    }

    fn check_known(&self, with_value: &[&str], switches: &[&str]) -> Result<(), String> {
        let mut i = 0;
        while i < self.args.len() {
            let a = self.args[i].as_str();
            if with_value.contains(&a) || RUN_VALUES.contains(&a) {
                i += 2;
            } else if switches.contains(&a) || RUN_SWITCHES.contains(&a) {
                i += 1;
            } else {
                return Err(format!("unexpected argument {a}\n{USAGE}"));
            }
        }
        Ok(())
    }

    /// The run options the flags describe, over a seed file's or the defaults.
    fn options(&self, need_seed: bool) -> Result<SimOptions, String> {
        let mut o = match (self.value("--seed-file")?, self.number("--seed")?) {
            (Some(path), _) => {
                let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
                SeedFile::parse(&text)
                    .map_err(|e| format!("{path}: {e}"))?
                    .options
            }
            (None, Some(seed)) => SimOptions::new(seed),
            (None, None) if need_seed => {
                return Err(format!("needs --seed N or --seed-file FILE\n{USAGE}"))
            }
            (None, None) => SimOptions::new(0),
        };
        if let Some(r) = self.number("--requests")? {
            o.requests = r;
        }
        if self.switch("--no-faults") {
            o.faults = false;
        }
        o.tail_loss |= self.switch("--tail-loss");
        o.strict |= self.switch("--strict");
        if let Some(name) = self.value("--bug")? {
            o.bug = Some(Bug::parse(name).ok_or_else(|| format!("unknown bug {name}\n{USAGE}"))?);
        }
        if let Some(c) = self.number("--chaos-ms")? {
            o.reductions.chaos_ms = Some(c);
        }
        if let Some(list) = self.value("--drop-faults")? {
            o.reductions.dropped_faults = parse_indices(list)?;
        }
        if let Some(list) = self.value("--rates-off")? {
            o.reductions.rates_off = parse_rates(list)?;
        }
        Ok(o)
    }
}

fn cmd_run(args: &[String]) -> Result<bool, String> {
    let flags = Flags { args };
    if flags.value("--scenario")?.is_some() {
        return cmd_run_scenario(&flags);
    }
    flags.check_known(
        &["--trace", "--timeline", "--window", "--focus"],
        &["--check-determinism", "--twice", "--shrink"],
    )?;
    let mut options = flags.options(true)?;
    let trace_file = flags.value("--trace")?;
    let timeline_file = flags.value("--timeline")?;
    let twice = flags.switch("--check-determinism") || flags.switch("--twice");
    options.keep_trace = trace_file.is_some() || timeline_file.is_some() || twice;

    // The fault profile first, as drawn for this seed.
    let world = World::new(options.clone());
    println!("profile: {}", world.profile().summary());
    println!(
        "schedule: {} faults: {}",
        world.schedule().len(),
        world.schedule().summary()
    );
    if !options.reductions.is_empty() {
        println!("reduced: {}", options.reductions.flags());
    }
    let (report, wall_ms) = timed(|| run_caught(&options));
    print_report(&report, wall_ms);
    if let (Some(path), Some(lines)) = (trace_file, &report.trace) {
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(path, text).map_err(|e| format!("{path}: {e}"))?;
        println!("trace: {} lines written to {path}", lines.len());
    }
    if let (Some(path), Some(lines)) = (timeline_file, &report.trace) {
        let window = match flags.value("--window")? {
            None => None,
            Some(w) => {
                let (a, b) = w.split_once("..").ok_or("--window wants A..B (seconds)")?;
                let s = |x: &str| {
                    x.parse::<f64>()
                        .map(|v| (v * 1000.0) as u64)
                        .map_err(|e| format!("--window: {e}"))
                };
                Some((s(a)?, s(b)?))
            }
        };
        let html = render(
            lines,
            &TimelineOptions {
                window,
                focus_seq: flags.number("--focus")?,
                title: format!(
                    "beamline-sim seed {} ({})",
                    report.seed,
                    report.verdict.as_str()
                ),
            },
        );
        std::fs::write(path, html).map_err(|e| format!("{path}: {e}"))?;
        println!("timeline: written to {path}");
    }
    let mut deterministic = true;
    if twice {
        let again = run_caught(&options);
        let (a, b) = (
            report.trace.as_deref().unwrap_or_default(),
            again.trace.as_deref().unwrap_or_default(),
        );
        match first_divergence(a, b) {
            None => println!(
                "determinism: second run identical ({} lines, hash {})",
                a.len(),
                hash_hex(again.trace_hash)
            ),
            Some((i, x, y)) => {
                deterministic = false;
                println!(
                    "determinism: FIRST DIFFERING EVENT at line {i}\n  run 1: {}\n  run 2: {}",
                    x.unwrap_or("<end>"),
                    y.unwrap_or("<end>")
                );
            }
        }
    }
    if flags.switch("--shrink") && report.verdict != Verdict::Pass {
        shrink_and_print(&options, 300, None)?;
    }
    println!("{}", report.verdict_line());
    Ok(report.verdict != Verdict::Fail && deterministic)
}

fn print_report(report: &RunReport, wall_ms: u128) {
    let c = &report.counters;
    println!(
        "world: planned={} accepted={} answered={} replies={} duplicate_replies={} cross_process_divergence={} dlq={} exhausted={} deliveries={} redeliveries={} usage_events={} lost_in_transit={} lost_to_tail={} faults={} crashes={} broker_restarts={} buggify_fired={} checks={} events={}",
        c.planned, c.accepted, c.answered, c.replies, c.duplicate_replies, c.cross_process_divergence, c.dlq, c.exhausted, c.deliveries, c.redeliveries, c.usage_events, c.lost_in_transit, c.lost_to_tail, c.faults, c.crashes, c.broker_restarts, c.buggify_fired, c.checks, c.events
    );
    if !report.buggify_sites.is_empty() {
        let sites: Vec<String> = report
            .buggify_sites
            .iter()
            .map(|(s, a)| format!("{s}={}", if *a { "active" } else { "inactive" }))
            .collect();
        println!("buggify: {}", sites.join(" "));
    }
    println!(
        "core: {}",
        serde_json::Value::Object(report.core_stats.clone())
    );
    println!(
        "models: {}",
        serde_json::to_value(&report.models).unwrap_or_default()
    );
    let speedup = u128::from(report.sim_time_ms)
        .checked_div(wall_ms)
        .map_or_else(|| "n/a".to_string(), |x| format!("{x}x"));
    println!(
        "time: simulated={}ms (chaos {}ms) wall={}ms speed={} trace_lines={}",
        report.sim_time_ms, report.chaos_ms, wall_ms, speedup, report.trace_len
    );
    if let Some(v) = &report.violation {
        let known = v
            .known
            .map(|k| format!(" [known core issue {k}]"))
            .unwrap_or_default();
        println!(
            "violation: {}{known} at {}ms: {}",
            v.invariant, v.at, v.message
        );
    }
}

fn cmd_sweep(args: &[String]) -> Result<bool, String> {
    let flags = Flags { args };
    if flags.value("--scenario")?.is_some() {
        return cmd_sweep_scenario(&flags);
    }
    flags.check_known(
        &[
            "--seeds",
            "--jobs",
            "--seeds-dir",
            "--recheck-every",
            "--time-budget",
        ],
        &["--probes", "--require-probes"],
    )?;
    let seeds = parse_seed_range(flags.value("--seeds")?.ok_or("sweep needs --seeds A..B")?)?;
    let template = flags.options(false)?;
    let default_jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let config = SweepConfig {
        jobs: flags.number("--jobs")?.map_or(default_jobs, |j| j as usize),
        recheck_every: flags.number("--recheck-every")?.unwrap_or(20),
        seeds,
        template,
    };
    let budget_ms = flags
        .value("--time-budget")?
        .map(parse_duration_ms)
        .transpose()?;
    // A deliberately broken host (`--bug`) fails by design: its seeds are not regressions
    // and stay out of the repository's `seeds/` unless a directory is named.
    let explicit_dir = flags.value("--seeds-dir")?.map(str::to_string);
    let keep_seeds = explicit_dir.is_some() || config.template.bug.is_none();
    let seeds_dir = explicit_dir.unwrap_or_else(|| "seeds".to_string());
    let total = config.seeds.len();
    let done = AtomicUsize::new(0);
    let failed_so_far = AtomicUsize::new(0);
    let step = (total / 20).max(1);
    let clock = WallClock::start();
    let out = Mutex::new(());
    let (reports, wall_ms) = timed(|| {
        sweep(
            &config,
            &|r: &RunReport| {
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                let _guard = out.lock();
                if let (Some(v), Verdict::Fail) = (&r.violation, r.verdict) {
                    failed_so_far.fetch_add(1, Ordering::Relaxed);
                    println!(
                        "FAIL seed={} invariant={} at={}ms: {}",
                        r.seed, v.invariant, v.at, v.message
                    );
                }
                if n.is_multiple_of(step) || n == total {
                    let secs = clock.elapsed_ms() as f64 / 1000.0;
                    eprintln!(
                        "progress: {n}/{total} seeds, {} failed, {:.1}s, {:.0} seeds/s",
                        failed_so_far.load(Ordering::Relaxed),
                        secs,
                        n as f64 / secs.max(0.001)
                    );
                }
            },
            &|| budget_ms.is_some_and(|b| clock.elapsed_ms() >= b),
        )
    });
    let commit = git_head();
    let failed: Vec<&RunReport> = reports
        .iter()
        .filter(|r| r.verdict == Verdict::Fail)
        .collect();
    let known_runs: Vec<&RunReport> = reports
        .iter()
        .filter(|r| r.verdict == Verdict::Known)
        .collect();
    for r in failed.iter().filter(|_| keep_seeds) {
        let template = SimOptions {
            seed: r.seed,
            ..config.template.clone()
        };
        let path = write_seed_file(&seeds_dir, r, &template, commit.clone())?;
        println!("wrote {path}");
    }
    if !keep_seeds && !failed.is_empty() {
        println!("failing seeds of a --bug host not written (name --seeds-dir to keep them)");
    }
    if !known_runs.is_empty() {
        let mut by_issue: Vec<String> = Vec::new();
        for issue in known::ALL {
            let seeds: Vec<String> = known_runs
                .iter()
                .filter(|r| r.violation.as_ref().and_then(|v| v.known) == Some(issue))
                .map(|r| r.seed.to_string())
                .collect();
            if !seeds.is_empty() {
                let shown = seeds.iter().take(8).cloned().collect::<Vec<_>>().join(",");
                by_issue.push(format!("{issue}={} (e.g. seeds {shown})", seeds.len()));
            }
        }
        println!(
            "known open core issues (docs/INVARIANTS.md; fail with --strict): {}",
            by_issue.join("; ")
        );
    }
    let sim_ms: u64 = reports.iter().map(|r| r.sim_time_ms).sum();
    if reports.len() < total {
        println!(
            "time budget reached after {} of {total} seeds",
            reports.len()
        );
    }
    println!(
        "time: simulated={}s wall={}ms jobs={} speed={}x",
        sim_ms / 1000,
        wall_ms,
        config.jobs,
        u128::from(sim_ms).checked_div(wall_ms).unwrap_or(0)
    );
    // Known open core issues are neither passes nor failures: said on their own line so
    // that the last line keeps the contract `seeds=N passed=P failed=F`.
    let probes = ProbeTally::of(&reports);
    if flags.switch("--probes") {
        print!("{}", probes.table());
    }
    println!("{}", probes.summary());
    // A time budget may stop a sweep before its seeds reach everything: then it says so
    // but does not fail on probes.
    let probes_ok = !flags.switch("--require-probes") || reports.len() < total || probes.complete();
    if !probes_ok {
        println!("probes incomplete: a required probe was never reached (or one is not in the catalogue)");
    }
    println!(
        "known={} (instances of known open core issues, not counted as failed)",
        known_runs.len()
    );
    println!(
        "seeds={} passed={} failed={}",
        reports.len(),
        reports.len() - failed.len() - known_runs.len(),
        failed.len(),
    );
    Ok(failed.is_empty() && probes_ok)
}

/// Write `<dir>/<seed>.seed` through a temporary file, so that a killed sweep never
/// leaves half a seed file behind.
fn write_seed_file(
    dir: &str,
    r: &RunReport,
    options: &SimOptions,
    commit: Option<String>,
) -> Result<String, String> {
    let v = r.violation.as_ref();
    let file = SeedFile {
        options: SimOptions {
            keep_trace: false,
            ..options.clone()
        },
        invariant: v.map_or_else(String::new, |v| v.invariant.to_string()),
        known: v.and_then(|v| v.known).map(str::to_string),
        message: v.map_or_else(String::new, |v| v.message.clone()),
        profile: format!("{} | schedule: {}", r.profile_summary, r.schedule_summary),
        commit,
    };
    std::fs::create_dir_all(dir).map_err(|e| format!("{dir}: {e}"))?;
    let name = if options.reductions.is_empty() {
        format!("{}.seed", r.seed)
    } else {
        format!("{}-shrunk.seed", r.seed)
    };
    let path = format!("{dir}/{name}");
    let tmp = format!("{path}.tmp");
    std::fs::write(&tmp, file.render()).map_err(|e| format!("{tmp}: {e}"))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("{path}: {e}"))?;
    Ok(path)
}

fn cmd_shrink(args: &[String]) -> Result<bool, String> {
    let flags = Flags { args };
    flags.check_known(&["--max-runs", "--seeds-dir"], &[])?;
    let options = flags.options(true)?;
    let max_runs = flags.number("--max-runs")?.unwrap_or(300);
    shrink_and_print(&options, max_runs, flags.value("--seeds-dir")?)
}

fn shrink_and_print(
    options: &SimOptions,
    max_runs: u64,
    seeds_dir: Option<&str>,
) -> Result<bool, String> {
    let (shrunk, wall_ms) = timed(|| shrink(options, max_runs, &mut |line| println!("{line}")));
    let Some(s) = shrunk else {
        println!("seed {} passes: nothing to shrink", options.seed);
        return Ok(true);
    };
    let pct = |a: u64, b: u64| (b * 100).checked_div(a).map_or(0, |r| 100 - r.min(100));
    println!(
        "shrunk seed {} ({}) in {} runs, {wall_ms}ms:\n  before: {}\n  after:  {}\n  smaller by: requests {}%, chaos {}%, scheduled faults {}%, rate faults {}%",
        options.seed,
        s.invariant,
        s.runs,
        s.before.describe(),
        s.after.describe(),
        pct(s.before.requests, s.after.requests),
        pct(s.before.chaos_ms, s.after.chaos_ms),
        pct(s.before.scheduled_faults as u64, s.after.scheduled_faults as u64),
        pct(s.before.rate_faults as u64, s.after.rate_faults as u64),
    );
    println!(
        "  replay: beamline-sim run --seed {} --requests {} {}{}",
        s.options.seed,
        s.options.requests,
        s.options.reductions.flags(),
        if s.options.strict { " --strict" } else { "" }
    );
    if let Some(v) = &s.report.violation {
        println!("  still: {} at {}ms: {}", v.invariant, v.at, v.message);
    }
    if let Some(dir) = seeds_dir {
        let path = write_seed_file(dir, &s.report, &s.options, git_head())?;
        println!("wrote {path}");
    }
    Ok(true)
}

/// Simulated decide requests and simulated seconds per wall-clock second, on the
/// default workload with faults on, one core.
fn cmd_bench(args: &[String]) -> Result<bool, String> {
    let flags = Flags { args };
    flags.check_known(&["--seeds"], &[])?;
    let n = flags.number("--seeds")?.unwrap_or(200);
    let template = flags.options(false)?;
    let (reports, wall_ms) = timed(|| {
        (0..n)
            .map(|seed| {
                run_caught(&SimOptions {
                    seed,
                    ..template.clone()
                })
            })
            .collect::<Vec<_>>()
    });
    let wall_s = (wall_ms.max(1)) as f64 / 1000.0;
    let sim_s: f64 = reports.iter().map(|r| r.sim_time_ms as f64 / 1000.0).sum();
    let requests: u64 = reports.iter().map(|r| r.counters.accepted).sum();
    let deliveries: u64 = reports.iter().map(|r| r.counters.deliveries).sum();
    let events: u64 = reports.iter().map(|r| r.counters.events).sum();
    println!(
        "bench: {n} seeds (requests={} per seed, faults {}), one thread",
        template.requests,
        if template.faults { "on" } else { "off" }
    );
    println!("  wall: {wall_s:.2}s, simulated: {sim_s:.0}s, events: {events}");
    println!(
        "  decide requests: {requests} ({:.0} per wall second)",
        requests as f64 / wall_s
    );
    println!(
        "  deliveries: {deliveries} ({:.0} per wall second)",
        deliveries as f64 / wall_s
    );
    println!(
        "  simulated seconds per wall second: {:.0} (real time x{:.0})",
        sim_s / wall_s,
        sim_s / wall_s
    );
    println!("  per seed: {:.1}ms", wall_ms as f64 / n.max(1) as f64);
    Ok(true)
}

/// `seed hash` lines: compare across builds (debug vs release) and job counts.
fn cmd_hashes(args: &[String]) -> Result<bool, String> {
    let flags = Flags { args };
    flags.check_known(&["--seeds", "--jobs"], &[])?;
    let seeds = parse_seed_range(flags.value("--seeds")?.ok_or("hashes needs --seeds A..B")?)?;
    let config = SweepConfig {
        jobs: flags.number("--jobs")?.map_or(1, |j| j as usize),
        recheck_every: 0,
        seeds,
        template: flags.options(false)?,
    };
    for r in sweep(&config, &|_| {}, &|| false) {
        println!(
            "{} {} {}",
            r.seed,
            hash_hex(r.trace_hash),
            r.verdict.as_str()
        );
    }
    Ok(true)
}

/// The commit under test, to pair with a seed (TigerBeetle's seed-plus-commit). Only the
/// CLI shells out to git; the library never looks outside the seed.
fn git_head() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The only wall-clock reads in the simulator: how fast a run or sweep was, and a
/// sweep's time budget. They never reach a world or its trace.
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
struct WallClock(std::time::Instant);

#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
impl WallClock {
    fn start() -> Self {
        WallClock(std::time::Instant::now())
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Run `f` and measure its wall time in ms.
fn timed<R>(f: impl FnOnce() -> R) -> (R, u128) {
    let clock = WallClock::start();
    let r = f();
    (r, u128::from(clock.elapsed_ms()))
}

/// Only these flags (each with a value, or a switch), for the scenario commands.
fn only_flags(flags: &Flags, with_value: &[&str], switches: &[&str]) -> Result<(), String> {
    let mut i = 0;
    while i < flags.args.len() {
        let a = flags.args[i].as_str();
        if with_value.contains(&a) {
            i += 2;
        } else if switches.contains(&a) {
            i += 1;
        } else {
            return Err(format!("unexpected argument {a}\n{USAGE}"));
        }
    }
    Ok(())
}

fn scenario_dir(flags: &Flags) -> Result<std::path::PathBuf, String> {
    Ok(flags
        .value("--dir")?
        .map_or_else(scenario::default_dir, std::path::PathBuf::from))
}

fn load_scenario(flags: &Flags) -> Result<Scenario, String> {
    let name = flags.value("--scenario")?.ok_or("needs --scenario NAME")?;
    scenario::find(&scenario_dir(flags)?, name).map_err(|e| e.to_string())
}

fn bug_flag(flags: &Flags) -> Result<Option<Bug>, String> {
    flags
        .value("--bug")?
        .map(|name| Bug::parse(name).ok_or_else(|| format!("unknown bug {name}\n{USAGE}")))
        .transpose()
}

/// `beamline-sim scenarios`: one line per scenario.
fn cmd_scenarios(args: &[String]) -> Result<bool, String> {
    let flags = Flags { args };
    only_flags(&flags, &["--dir"], &[])?;
    let all = scenario::load_dir(&scenario_dir(&flags)?).map_err(|e| e.to_string())?;
    for s in &all {
        println!(
            "{:<36} {:<18} seeds={:?} covers={}  {}",
            s.name,
            s.family(),
            s.seeds,
            s.covers().len(),
            s.file.title
        );
    }
    let families: std::collections::BTreeSet<&str> = all.iter().map(|s| s.family()).collect();
    println!("scenarios={} families={}", all.len(), families.len());
    Ok(true)
}

fn print_scenario_run(run: &ScenarioRun, wall_ms: u128) {
    print_report(&run.report, wall_ms);
    for c in &run.checks {
        let why = c
            .expectation
            .why
            .as_deref()
            .map(|w| format!("  ({w})"))
            .unwrap_or_default();
        println!("expect: {c}{why}");
    }
}

fn cmd_run_scenario(flags: &Flags) -> Result<bool, String> {
    only_flags(
        flags,
        &[
            "--scenario",
            "--seed",
            "--bug",
            "--dir",
            "--trace",
            "--timeline",
        ],
        &["--log", "--check-determinism"],
    )?;
    let s = load_scenario(flags)?;
    let seed = flags.number("--seed")?.ok_or("needs --seed N")?;
    let bug = bug_flag(flags)?;
    let trace_file = flags.value("--trace")?;
    let timeline_file = flags.value("--timeline")?;
    let twice = flags.switch("--check-determinism");
    let keep = flags.switch("--log") || trace_file.is_some() || timeline_file.is_some() || twice;
    let world = World::with_setup(s.options(seed, bug, false), &s);
    println!("scenario: {} ({}) {}", s.name, s.family(), s.file.title);
    println!(
        "invariants: all checked; this scenario is about: {}",
        if s.file.invariants.is_empty() {
            "-".to_string()
        } else {
            s.file.invariants.join(", ")
        }
    );
    println!("profile: {}", world.profile().summary());
    println!(
        "schedule: {} faults: {}",
        world.schedule().len(),
        world.schedule().summary()
    );
    let (run, wall_ms) = timed(|| s.run(seed, bug, keep));
    if flags.switch("--log") {
        for line in &run.report.observations.log {
            println!("log: {line}");
        }
    }
    print_scenario_run(&run, wall_ms);
    if let (Some(path), Some(lines)) = (trace_file, &run.report.trace) {
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(path, text).map_err(|e| format!("{path}: {e}"))?;
        println!("trace: {} lines written to {path}", lines.len());
    }
    if let (Some(path), Some(lines)) = (timeline_file, &run.report.trace) {
        let html = render(
            lines,
            &TimelineOptions {
                window: None,
                focus_seq: None,
                title: format!(
                    "beamline-sim scenario {} seed {seed} ({})",
                    s.name,
                    if run.passed { "pass" } else { "fail" }
                ),
            },
        );
        std::fs::write(path, html).map_err(|e| format!("{path}: {e}"))?;
        println!("timeline: written to {path}");
    }
    let mut deterministic = true;
    if twice {
        let again = s.run(seed, bug, true);
        let (a, b) = (
            run.report.trace.as_deref().unwrap_or_default(),
            again.report.trace.as_deref().unwrap_or_default(),
        );
        match first_divergence(a, b) {
            None => println!(
                "determinism: second run identical ({} lines, hash {})",
                a.len(),
                hash_hex(again.report.trace_hash)
            ),
            Some((i, x, y)) => {
                deterministic = false;
                println!(
                    "determinism: FIRST DIFFERING EVENT at line {i}\n  run 1: {}\n  run 2: {}",
                    x.unwrap_or("<end>"),
                    y.unwrap_or("<end>")
                );
            }
        }
    }
    println!("{}", run.verdict_line());
    Ok(run.passed && deterministic)
}

fn cmd_sweep_scenario(flags: &Flags) -> Result<bool, String> {
    only_flags(
        flags,
        &["--scenario", "--seeds", "--jobs", "--bug", "--dir"],
        &[],
    )?;
    let s = load_scenario(flags)?;
    let seeds = parse_seed_range(flags.value("--seeds")?.ok_or("sweep needs --seeds A..B")?)?;
    let bug = bug_flag(flags)?;
    let jobs = flags.number("--jobs")?.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |j| j as usize,
    );
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(u64, bool, String)>> = Mutex::new(Vec::new());
    let worker = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(&seed) = seeds.get(i) else {
            break;
        };
        let run = s.run(seed, bug, false);
        if !run.passed {
            println!("FAIL {}", run.verdict_line());
        }
        results.lock().unwrap_or_else(|p| p.into_inner()).push((
            seed,
            run.passed,
            run.verdict_line(),
        ));
    };
    let ((), wall_ms) = timed(|| {
        if jobs <= 1 {
            worker();
        } else {
            // Whole seeds per thread, sharing nothing but the work counter (as `sweep`).
            #[allow(clippy::disallowed_methods)]
            std::thread::scope(|scope| {
                for _ in 0..jobs {
                    scope.spawn(worker);
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    let passed = results.iter().filter(|r| r.1).count();
    println!(
        "scenario={} wall={}ms jobs={}",
        s.name,
        wall_ms,
        jobs.max(1)
    );
    println!(
        "seeds={} passed={} failed={}",
        results.len(),
        passed,
        results.len() - passed
    );
    Ok(passed == results.len())
}
