//! Many seeds at once. Seeds are independent worlds, so a sweep parallelises across them
//! with no shared state but the work counter and the result list. Every
//! `recheck_every`-th seed is run a second time and its trace hash compared: a mismatch
//! means something outside the seed leaked in (FoundationDB reruns 5% of its seeds).
//!
//! A panic inside a run (the core's or the simulator's) is caught and reported as the
//! violation `panic` (Part C INV-27: no fault combination kills the service).
//!
//! The sweep never reads a clock: a time budget is the caller's `stop` callback.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::invariants::Violation;
use crate::report::{Counters, RunReport, Verdict};
use crate::trace::hash_hex;
use crate::{run, SimOptions};

#[derive(Clone, Debug)]
pub struct SweepConfig {
    pub seeds: Vec<u64>,
    pub jobs: usize,
    /// Options for every seed (the seed field is replaced).
    pub template: SimOptions,
    /// Rerun seeds divisible by this to check determinism; 0 turns it off.
    pub recheck_every: u64,
}

/// Run one seed, catching a panic as a violation.
pub fn run_caught(options: &SimOptions) -> RunReport {
    match catch_unwind(AssertUnwindSafe(|| run(options.clone()))) {
        Ok(report) => report,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic with a non-string payload".to_string());
            failed_report(options, "panic", message)
        }
    }
}

/// A report for a run that could not finish.
pub fn failed_report(options: &SimOptions, invariant: &'static str, message: String) -> RunReport {
    RunReport {
        seed: options.seed,
        verdict: Verdict::Fail,
        violation: Some(Violation {
            invariant,
            message,
            at: 0,
            seq: None,
            known: None,
        }),
        trace_hash: 0,
        trace_len: 0,
        trace: None,
        counters: Counters::default(),
        core_stats: Default::default(),
        sim_time_ms: 0,
        chaos_ms: 0,
        requests: options.requests,
        profile_summary: String::new(),
        schedule_summary: String::new(),
        schedule_len: 0,
        buggify_sites: Vec::new(),
        probes: Vec::new(),
        models: Default::default(),
        observations: Default::default(),
    }
}

/// Run one seed, and if asked run it again and compare trace hashes.
pub fn run_checked(options: &SimOptions, recheck: bool) -> RunReport {
    let mut report = run_caught(options);
    if recheck && report.invariant() != Some("panic") {
        let again = run_caught(options);
        if again.trace_hash != report.trace_hash {
            report.verdict = Verdict::Fail;
            report.violation = Some(Violation {
                invariant: "nondeterminism",
                message: format!(
                    "two runs of seed {} gave trace hashes {} and {}",
                    options.seed,
                    hash_hex(report.trace_hash),
                    hash_hex(again.trace_hash)
                ),
                at: 0,
                seq: None,
                known: None,
            });
        }
    }
    report
}

/// Run every seed (until `stop` says so); `on_done` sees each report as it finishes
/// (from a worker thread). Returns the reports of the seeds run, in seed order.
pub fn sweep(
    config: &SweepConfig,
    on_done: &(dyn Fn(&RunReport) + Sync),
    stop: &(dyn Fn() -> bool + Sync),
) -> Vec<RunReport> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<RunReport>> = Mutex::new(Vec::with_capacity(config.seeds.len()));
    let worker = || loop {
        if stop() {
            break;
        }
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(&seed) = config.seeds.get(i) else {
            break;
        };
        let options = SimOptions {
            seed,
            ..config.template.clone()
        };
        let recheck = config.recheck_every > 0 && seed % config.recheck_every == 0;
        let report = run_checked(&options, recheck);
        on_done(&report);
        results
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(report);
    };
    let jobs = config.jobs.max(1);
    if jobs == 1 {
        worker();
    } else {
        // The one place the simulator uses threads: whole seeds, each a world of its own
        // that shares nothing with the others, so the parallelism cannot reach a trace.
        #[allow(clippy::disallowed_methods)]
        std::thread::scope(|scope| {
            for _ in 0..jobs {
                scope.spawn(worker);
            }
        });
    }
    let mut reports = results
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    reports.sort_by_key(|r| r.seed);
    reports
}

/// `A..B` (B excluded) or `A..=B`.
pub fn parse_seed_range(s: &str) -> Result<Vec<u64>, String> {
    let bad = || format!("--seeds wants A..B (B excluded) or A..=B, got {s}");
    if let Some((a, b)) = s.split_once("..=") {
        let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
        return Ok((a..=b).collect());
    }
    let (a, b) = s.split_once("..").ok_or_else(bad)?;
    let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    Ok((a..b).collect())
}

/// `90s`, `10m`, `2h` or plain seconds, in milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| format!("bad duration {s}"))?;
    let per = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("bad duration unit in {s} (ms, s, m, h)")),
    };
    Ok(n * per)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_durations_parse() {
        assert_eq!(parse_seed_range("3..6"), Ok(vec![3, 4, 5]));
        assert_eq!(parse_seed_range("3..=4"), Ok(vec![3, 4]));
        assert!(parse_seed_range("3-4").is_err());
        assert_eq!(parse_duration_ms("90s"), Ok(90_000));
        assert_eq!(parse_duration_ms("10m"), Ok(600_000));
        assert_eq!(parse_duration_ms("5"), Ok(5_000));
        assert!(parse_duration_ms("5y").is_err());
    }
}
