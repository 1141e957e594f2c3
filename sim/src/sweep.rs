//! Many seeds at once. Seeds are independent worlds, so a sweep parallelises across them
//! with no shared state but the work counter and the result list. Every
//! `recheck_every`-th seed is run a second time and its trace hash compared: a mismatch
//! means something outside the seed leaked in (FoundationDB reruns 5% of its seeds).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::invariants::Violation;
use crate::report::{RunReport, Verdict};
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

/// Run one seed, and if asked run it again and compare trace hashes.
pub fn run_checked(options: &SimOptions, recheck: bool) -> RunReport {
    let mut report = run(options.clone());
    if recheck {
        let again = run(options.clone());
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
            });
        }
    }
    report
}

/// Run every seed; `on_done` sees each report as it finishes (from a worker thread).
/// Returns the reports in seed order.
pub fn sweep(config: &SweepConfig, on_done: &(dyn Fn(&RunReport) + Sync)) -> Vec<RunReport> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<RunReport>> = Mutex::new(Vec::with_capacity(config.seeds.len()));
    let worker = || loop {
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
