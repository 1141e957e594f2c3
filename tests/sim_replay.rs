//! Simulator-driven tests of the router (run with `cargo test --features sim`):
//!
//! - every seed recorded in `seeds/` replays and must not fail (a seed of a known open
//!   core issue may end `known` until the core fix is in; then it must pass);
//! - determinism: a seed run twice in one process gives the same trace, also when other
//!   seeds ran in between; a sweep gives the same hashes with one job and with two;
//! - a small sweep of fresh seeds must not fail;
//! - `SIM_SEED=<n> cargo test --features sim` replays seed n alone (the other tests here
//!   step aside) and prints its verdict line, and the tail of its trace on failure;
//! - the checkers can fail: a deliberately broken host is caught.
//!
//! The cross-process and debug-versus-release determinism checks live in
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
        "{}\nviolation: {:?}\nprofile: {}\nreplay: cargo run -p beamline-sim -- run --seed {} --trace /tmp/trace.jsonl --timeline /tmp/seed.html",
        r.verdict_line(),
        r.violation,
        r.profile_summary,
        r.seed
    )
}

#[test]
fn recorded_seeds_do_not_fail() {
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
        let report = run(seed.options.clone());
        assert_ne!(
            report.verdict,
            Verdict::Fail,
            "{} (failed once with {}: {})\n{}",
            path.display(),
            seed.invariant,
            seed.message,
            explain(&report)
        );
        if report.verdict == Verdict::Known {
            eprintln!(
                "note: {} still hits known core issue {:?}",
                path.display(),
                report.violation.as_ref().and_then(|v| v.known)
            );
        }
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
fn one_job_and_two_jobs_give_the_same_hashes() {
    if one_seed_requested() {
        return;
    }
    let hashes = |jobs| {
        let config = SweepConfig {
            seeds: (100..112).collect(),
            jobs,
            template: SimOptions::new(0),
            recheck_every: 0,
        };
        sweep(&config, &|_| {}, &|| false)
            .iter()
            .map(|r| (r.seed, r.trace_hash, r.verdict))
            .collect::<Vec<_>>()
    };
    assert_eq!(hashes(1), hashes(2));
}

#[test]
fn a_small_sweep_does_not_fail() {
    if one_seed_requested() {
        return;
    }
    let config = SweepConfig {
        seeds: (0..40).collect(),
        jobs: 2,
        template: SimOptions::new(0),
        recheck_every: 10,
    };
    let reports = sweep(&config, &|_| {}, &|| false);
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| r.verdict == Verdict::Fail)
        .map(explain)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of 40 seeds failed:\n{}",
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
    println!("profile: {}", report.profile_summary);
    println!("{}", report.verdict_line());
    if report.verdict != Verdict::Pass {
        let lines = report.trace.as_deref().unwrap_or_default();
        let tail = &lines[lines.len().saturating_sub(40)..];
        let text = format!(
            "{}\nlast trace lines:\n{}",
            explain(&report),
            tail.join("\n")
        );
        if report.verdict == Verdict::Fail {
            panic!("{text}");
        }
        println!("{text}");
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
    assert_eq!(report.invariant(), Some("ack_before_reply_confirmed"));
}
