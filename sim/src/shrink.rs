//! Making a failing run smaller while it keeps failing with the same invariant: fewer
//! requests, a shorter chaos phase, fewer rate faults, fewer scheduled faults. Greedy,
//! in that order, then delta debugging (ddmin-style chunk removal) on the fault schedule,
//! within a budget of runs. Every candidate is a full deterministic run, so the result
//! is a seed plus `Reductions` that reproduces exactly.
//!
//! Shrinking rests on the world's draw order: the gateway plans request `i` the same way
//! whatever the count, the schedule is drawn once and filtered by index, and each actor
//! draws from its own RNG stream. A smaller run still diverges from the original after
//! its first change, so a shrunk run may fail the same invariant in another place.

use crate::faults::RateFault;
use crate::report::{RunReport, Verdict};
use crate::sweep::run_caught;
use crate::world::World;
use crate::SimOptions;

/// The size of a run, as the shrinker counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    pub requests: u64,
    pub chaos_ms: u64,
    pub scheduled_faults: usize,
    pub rate_faults: usize,
}

impl Size {
    pub fn of(options: &SimOptions) -> Size {
        let world = World::new(options.clone());
        Size {
            requests: options.requests,
            chaos_ms: world.profile().chaos_ms,
            scheduled_faults: world.schedule().len(),
            rate_faults: world.profile().faults.enabled_rates().len(),
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "requests={} chaos={}ms scheduled_faults={} rate_faults={}",
            self.requests, self.chaos_ms, self.scheduled_faults, self.rate_faults
        )
    }
}

pub struct Shrunk {
    pub invariant: &'static str,
    pub before: Size,
    pub after: Size,
    pub options: SimOptions,
    pub report: RunReport,
    /// Runs spent.
    pub runs: u64,
}

struct Shrinker<'a> {
    invariant: &'static str,
    runs: u64,
    max_runs: u64,
    best: SimOptions,
    best_report: RunReport,
    log: &'a mut dyn FnMut(&str),
}

impl Shrinker<'_> {
    /// Try `candidate`: keep it if it still fails with the same invariant.
    fn try_keep(&mut self, candidate: SimOptions, what: &str) -> bool {
        if self.runs >= self.max_runs {
            return false;
        }
        self.runs += 1;
        let report = run_caught(&candidate);
        let same = report.verdict != Verdict::Pass && report.invariant() == Some(self.invariant);
        if same {
            (self.log)(&format!(
                "  kept: {what} ({})",
                Size::of(&candidate).describe()
            ));
            self.best = candidate;
            self.best_report = report;
        }
        same
    }
}

/// Shrink a failing run. `None` if it does not fail.
pub fn shrink(options: &SimOptions, max_runs: u64, log: &mut dyn FnMut(&str)) -> Option<Shrunk> {
    let first = run_caught(options);
    let invariant = first.invariant()?;
    let before = Size::of(options);
    log(&format!(
        "shrinking seed {} ({invariant}): {}",
        options.seed,
        before.describe()
    ));
    let mut s = Shrinker {
        invariant,
        runs: 1,
        max_runs,
        best: options.clone(),
        best_report: first,
        log,
    };
    // Passes over every kind of reduction until one changes nothing (a shorter chaos
    // phase can make fewer requests enough, and the other way round).
    loop {
        let runs_before = s.runs;
        let best_before = s.best.clone();
        // Fewer requests: halve while it still fails, then a few smaller steps.
        loop {
            let n = s.best.requests;
            if n <= 1 {
                break;
            }
            let kept = [n / 2, n * 3 / 4, n - 1]
                .into_iter()
                .filter(|&m| m >= 1 && m < n)
                .any(|m| {
                    let candidate = SimOptions {
                        requests: m,
                        ..s.best.clone()
                    };
                    s.try_keep(candidate, &format!("requests {n} -> {m}"))
                });
            if !kept {
                break;
            }
        }
        // A shorter chaos phase (the workload window stays).
        loop {
            let chaos = Size::of(&s.best).chaos_ms;
            if chaos <= 1_000 {
                break;
            }
            let kept = [chaos / 2, chaos * 3 / 4].into_iter().any(|c| {
                let mut candidate = s.best.clone();
                candidate.reductions.chaos_ms = Some(c.max(1_000));
                s.try_keep(candidate, &format!("chaos {chaos}ms -> {c}ms"))
            });
            if !kept {
                break;
            }
        }
        // Rate faults off, one kind at a time.
        let rates = World::new(s.best.clone()).profile().faults.enabled_rates();
        for kind in rates {
            let mut candidate = s.best.clone();
            candidate.reductions.rates_off.push(kind);
            candidate.reductions.rates_off.sort();
            s.try_keep(candidate, &format!("{} off", RateFault::name(kind)));
        }
        // Scheduled faults: remove chunks, halving the chunk size down to single entries.
        let alive = |o: &SimOptions| -> Vec<usize> {
            let full = World::new(SimOptions {
                reductions: Default::default(),
                ..o.clone()
            });
            let chaos = World::new(o.clone()).profile().chaos_ms;
            full.schedule()
                .entries
                .iter()
                .enumerate()
                .filter(|(i, e)| !o.reductions.dropped_faults.contains(i) && e.at < chaos)
                .map(|(i, _)| i)
                .collect()
        };
        let mut chunk = alive(&s.best).len().div_ceil(2).max(1);
        loop {
            let current = alive(&s.best);
            if current.is_empty() {
                break;
            }
            let mut progressed = false;
            for part in current.chunks(chunk) {
                let mut candidate = s.best.clone();
                candidate.reductions.dropped_faults.extend_from_slice(part);
                candidate.reductions.dropped_faults.sort_unstable();
                candidate.reductions.dropped_faults.dedup();
                if s.try_keep(
                    candidate,
                    &format!("{} scheduled faults removed", part.len()),
                ) {
                    progressed = true;
                }
            }
            if s.runs >= s.max_runs || (!progressed && chunk == 1) {
                break;
            }
            if !progressed {
                chunk = chunk.div_ceil(2);
            }
        }
        if s.best == best_before || s.runs >= s.max_runs || s.runs == runs_before {
            break;
        }
    }
    let after = Size::of(&s.best);
    Some(Shrunk {
        invariant,
        before,
        after,
        options: s.best,
        report: s.best_report,
        runs: s.runs,
    })
}
