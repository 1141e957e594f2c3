//! Simulator-driven tests of the router (run with `cargo test --features sim`):
//!
//! - every seed recorded in `seeds/` replays and must now pass;
//! - determinism: a seed run twice in one process gives the same trace, also when other
//!   seeds ran in between (nothing process-global leaks into a world);
//! - a small sweep of fresh seeds must pass;
//! - `SIM_SEED=<n> cargo test --features sim` replays seed n alone (the other tests here
//!   step aside) and prints its verdict line, and the tail of its trace on failure;
//! - the checkers can fail: a deliberately broken host is caught.
//!
//! The cross-process determinism check (the built binary run twice) lives in
//! `sim/tests/cli.rs`, where cargo provides the binary's path.
#![cfg(feature = "sim")]

use std::path::{Path, PathBuf};

use beamline_sim::seedfile::SeedFile;
use beamline_sim::sweep::{sweep, SweepConfig};
use beamline_sim::trace::first_divergence;
use beamline_sim::{run, Bug, RunReport, SimOptions, Verdict};

/// With `SIM_SEED` set, the developer asked for one seed: the other tests step aside.
fn one_seed_requested() -> bool {
    std::env::var_os("SIM_SEED").is_some()
}

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds")
}

/// A failure message a developer can act on: the verdict line, the violation and how to
/// replay the seed.
fn explain(r: &RunReport) -> String {
    format!(
        "{}\nviolation: {:?}\nprofile: {}\nreplay: cargo run -p beamline-sim -- run --seed {} --trace /tmp/trace.txt",
        r.verdict_line(),
        r.violation,
        r.profile_summary,
        r.seed
    )
}

#[test]
fn recorded_seeds_pass() {
    if one_seed_requested() {
        return;
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(seeds_dir())
        .map(|dir| dir.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "seed"));
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let seed = SeedFile::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let report = run(seed.options());
        assert_eq!(
            report.verdict,
            Verdict::Pass,
            "{} (failed once with {}: {})\n{}",
            path.display(),
            seed.invariant,
            seed.message,
            explain(&report)
        );
    }
}

#[test]
fn a_seed_run_twice_gives_the_same_trace() {
    if one_seed_requested() {
        return;
    }
    let opts = SimOptions {
        keep_trace: true,
        ..SimOptions::new(42)
    };
    let first = run(opts.clone());
    // Other worlds in between: a fresh World must not see anything they left behind.
    for seed in [7, 8, 9] {
        run(SimOptions::new(seed));
    }
    let second = run(opts);
    let (a, b) = (
        first.trace.as_deref().unwrap(),
        second.trace.as_deref().unwrap(),
    );
    if let Some((i, x, y)) = first_divergence(a, b) {
        panic!("seed 42 diverged at trace line {i}:\n  first:  {x:?}\n  second: {y:?}");
    }
    assert_eq!(first.trace_hash, second.trace_hash);
    assert_eq!(first.verdict_line(), second.verdict_line());
}

#[test]
fn a_small_sweep_passes() {
    if one_seed_requested() {
        return;
    }
    let config = SweepConfig {
        seeds: (0..50).collect(),
        jobs: 2,
        template: SimOptions::new(0),
        recheck_every: 10,
    };
    let reports = sweep(&config, &|_| {});
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| r.verdict == Verdict::Fail)
        .map(explain)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of 50 seeds failed:\n{}",
        failed.len(),
        failed.join("\n\n")
    );
}

/// `SIM_SEED=<n>` replays one seed; without it this test does nothing.
#[test]
fn sim_seed() {
    let Ok(value) = std::env::var("SIM_SEED") else {
        return;
    };
    let seed: u64 = value
        .trim()
        .parse()
        .expect("SIM_SEED must be an unsigned integer");
    let report = run(SimOptions {
        keep_trace: true,
        ..SimOptions::new(seed)
    });
    println!("{}", report.verdict_line());
    if report.verdict == Verdict::Fail {
        let lines = report.trace.as_deref().unwrap_or_default();
        let tail = &lines[lines.len().saturating_sub(40)..];
        panic!(
            "{}\nlast trace lines:\n{}",
            explain(&report),
            tail.join("\n")
        );
    }
}

#[test]
fn a_broken_host_is_caught() {
    if one_seed_requested() {
        return;
    }
    let report = run(SimOptions {
        bug: Some(Bug::AckOnDelivery),
        ..SimOptions::new(3)
    });
    assert_eq!(report.verdict, Verdict::Fail, "{}", explain(&report));
    assert_eq!(
        report.violation.map(|v| v.invariant),
        Some("ack_before_reply_confirmed")
    );
}
