//! `beamline-sim`: run one seed, or sweep many.
//!
//! ```text
//! beamline-sim run   --seed N [--requests R] [--trace FILE] [--no-faults] [--twice]
//!                    [--strict-exhaustion] [--bug ack-on-delivery|drop-replies]
//! beamline-sim run   --seed-file seeds/N.seed [--trace FILE]
//! beamline-sim sweep --seeds A..B [--jobs J] [--requests R] [--no-faults]
//!                    [--strict-exhaustion] [--seeds-dir DIR] [--recheck-every K]
//! ```
//!
//! `run` prints the profile and counters, then as its last line
//! `seed=N verdict=pass|fail trace_hash=<hex> requests=.. replies=.. dlq=.. redeliveries=.. faults=..`
//! and exits 1 on fail. `sweep` writes each failing seed to `<seeds-dir>/<seed>.seed`, prints
//! `seeds=N passed=P failed=F` last and exits 1 if any failed. Wall time is measured here
//! only, never inside a run.

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};

use beamline_sim::seedfile::SeedFile;
use beamline_sim::sweep::{sweep, SweepConfig};
use beamline_sim::trace::first_divergence;
use beamline_sim::{run, Bug, RunReport, SimOptions, Verdict};

const USAGE: &str = "usage:
  beamline-sim run   --seed N [--requests R] [--trace FILE] [--no-faults] [--strict-exhaustion] [--twice] [--bug ack-on-delivery|drop-replies]
  beamline-sim run   --seed-file FILE [--trace FILE]
  beamline-sim sweep --seeds A..B [--jobs J] [--requests R] [--no-faults] [--strict-exhaustion] [--seeds-dir DIR] [--recheck-every K]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("run") => cmd_run(&args[1..]),
        Some("sweep") => cmd_sweep(&args[1..]),
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
}

fn cmd_run(args: &[String]) -> Result<bool, String> {
    let flags = Flags { args };
    flags.check_known(
        &["--seed", "--seed-file", "--requests", "--trace", "--bug"],
        &["--no-faults", "--twice", "--strict-exhaustion"],
    )?;
    let mut options = match (flags.value("--seed-file")?, flags.number("--seed")?) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
            SeedFile::parse(&text)
                .map_err(|e| format!("{path}: {e}"))?
                .options()
        }
        (None, Some(seed)) => SimOptions::new(seed),
        (None, None) => return Err(format!("run needs --seed N or --seed-file FILE\n{USAGE}")),
    };
    if let Some(r) = flags.number("--requests")? {
        options.requests = r;
    }
    if flags.switch("--no-faults") {
        options.faults = false;
    }
    if flags.switch("--strict-exhaustion") {
        options.strict_exhaustion = true;
    }
    options.bug = match flags.value("--bug")? {
        None => None,
        Some("ack-on-delivery") => Some(Bug::AckOnDelivery),
        Some("drop-replies") => Some(Bug::DropReplies),
        Some(other) => return Err(format!("unknown bug {other}")),
    };
    let trace_file = flags.value("--trace")?;
    let twice = flags.switch("--twice");
    options.keep_trace = trace_file.is_some() || twice;

    let (report, wall_ms) = timed(|| run(options.clone()));
    print_report(&report, wall_ms);
    if let (Some(path), Some(lines)) = (trace_file, &report.trace) {
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(path, text).map_err(|e| format!("{path}: {e}"))?;
        println!("trace: {} lines written to {path}", lines.len());
    }
    let mut deterministic = true;
    if twice {
        let again = run(options.clone());
        let (a, b) = (
            report.trace.as_deref().unwrap_or_default(),
            again.trace.as_deref().unwrap_or_default(),
        );
        match first_divergence(a, b) {
            None => println!("determinism: second run identical ({} lines)", a.len()),
            Some((i, x, y)) => {
                deterministic = false;
                println!(
                    "determinism: FIRST DIVERGENCE at line {i}\n  run 1: {x:?}\n  run 2: {y:?}"
                );
            }
        }
    }
    println!("{}", report.verdict_line());
    Ok(report.verdict == Verdict::Pass && deterministic)
}

fn print_report(report: &RunReport, wall_ms: u128) {
    let c = &report.counters;
    println!("profile: {}", report.profile_summary);
    println!(
        "world: planned={} accepted={} answered={} replies={} duplicate_replies={} dlq={} deliveries={} redeliveries={} lost_in_transit={} exhausted_unseen={} faults={} buggify_fired={} events={}",
        c.planned, c.accepted, c.answered, c.replies, c.duplicate_replies, c.dlq, c.deliveries, c.redeliveries, c.lost_in_transit, c.exhausted_unseen, c.faults, c.buggify_fired, c.events
    );
    // Printed through serde so that new core counters show up without a change here.
    let stats = serde_json::to_string(&report.core_stats).unwrap_or_default();
    println!("core: {stats}");
    let speedup = u128::from(report.sim_time_ms)
        .checked_div(wall_ms)
        .map_or_else(|| "n/a".to_string(), |x| format!("{x}x"));
    println!(
        "time: simulated={}ms wall={}ms speed={} trace_lines={}",
        report.sim_time_ms, wall_ms, speedup, report.trace_len
    );
    if let Some(v) = &report.violation {
        println!("violation: {} at {}ms: {}", v.invariant, v.at, v.message);
    }
}

fn parse_seed_range(s: &str) -> Result<Vec<u64>, String> {
    let bad = || format!("--seeds wants A..B (B excluded) or A..=B, got {s}");
    if let Some((a, b)) = s.split_once("..=") {
        let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
        return Ok((a..=b).collect());
    }
    let (a, b) = s.split_once("..").ok_or_else(bad)?;
    let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    Ok((a..b).collect())
}

fn cmd_sweep(args: &[String]) -> Result<bool, String> {
    let flags = Flags { args };
    flags.check_known(
        &[
            "--seeds",
            "--jobs",
            "--requests",
            "--seeds-dir",
            "--recheck-every",
        ],
        &["--no-faults", "--strict-exhaustion"],
    )?;
    let seeds = parse_seed_range(flags.value("--seeds")?.ok_or("sweep needs --seeds A..B")?)?;
    let mut template = SimOptions::new(0);
    if let Some(r) = flags.number("--requests")? {
        template.requests = r;
    }
    template.faults = !flags.switch("--no-faults");
    template.strict_exhaustion = flags.switch("--strict-exhaustion");
    let default_jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let config = SweepConfig {
        jobs: flags.number("--jobs")?.map_or(default_jobs, |j| j as usize),
        recheck_every: flags.number("--recheck-every")?.unwrap_or(20),
        seeds,
        template,
    };
    let seeds_dir = flags.value("--seeds-dir")?.unwrap_or("seeds").to_string();
    let total = config.seeds.len();
    let done = AtomicUsize::new(0);
    let step = (total / 10).max(1);
    let (reports, wall_ms) = timed(|| {
        sweep(&config, &|r: &RunReport| {
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            if let Some(v) = &r.violation {
                println!(
                    "FAIL seed={} invariant={} at={}ms: {}",
                    r.seed, v.invariant, v.at, v.message
                );
            }
            if n.is_multiple_of(step) || n == total {
                eprintln!("progress: {n}/{total}");
            }
        })
    });
    let commit = git_head();
    let failed: Vec<&RunReport> = reports
        .iter()
        .filter(|r| r.verdict == Verdict::Fail)
        .collect();
    for r in &failed {
        let path = write_seed_file(&seeds_dir, r, &config.template, commit.clone())?;
        println!("wrote {path}");
    }
    let sim_ms: u64 = reports.iter().map(|r| r.sim_time_ms).sum();
    println!(
        "time: simulated={}s wall={}ms jobs={}",
        sim_ms / 1000,
        wall_ms,
        config.jobs
    );
    println!(
        "seeds={} passed={} failed={}",
        reports.len(),
        reports.len() - failed.len(),
        failed.len()
    );
    Ok(failed.is_empty())
}

/// Write `<dir>/<seed>.seed` through a temporary file, so that a killed sweep never
/// leaves half a seed file behind.
fn write_seed_file(
    dir: &str,
    r: &RunReport,
    template: &SimOptions,
    commit: Option<String>,
) -> Result<String, String> {
    let v = r.violation.as_ref();
    let file = SeedFile {
        seed: r.seed,
        requests: template.requests,
        faults: template.faults,
        strict_exhaustion: template.strict_exhaustion,
        invariant: v.map_or_else(String::new, |v| v.invariant.to_string()),
        message: v.map_or_else(String::new, |v| v.message.clone()),
        commit,
    };
    std::fs::create_dir_all(dir).map_err(|e| format!("{dir}: {e}"))?;
    let path = format!("{dir}/{}.seed", r.seed);
    let tmp = format!("{path}.tmp");
    std::fs::write(&tmp, file.render()).map_err(|e| format!("{tmp}: {e}"))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("{path}: {e}"))?;
    Ok(path)
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

/// Run `f` and measure its wall time in ms.
// The only wall-clock read in the simulator: it reports how fast a run was for a human
// and never reaches the world or its trace, so it cannot affect determinism.
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
fn timed<R>(f: impl FnOnce() -> R) -> (R, u128) {
    let start = std::time::Instant::now();
    let r = f();
    (r, start.elapsed().as_millis())
}
