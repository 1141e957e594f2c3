//! Whole-world tests of the simulator: healthy runs pass, determinism holds, every
//! deliberately broken host is caught by the invariant it breaks (docs/INVARIANTS.md),
//! and the known-issue verdict is strict when asked.

use beamline_sim::invariants::known;
use beamline_sim::sweep::{sweep, SweepConfig};
use beamline_sim::trace::first_divergence;
use beamline_sim::{run, Bug, RunReport, SimOptions, Verdict};

fn traced(seed: u64) -> SimOptions {
    SimOptions {
        keep_trace: true,
        ..SimOptions::new(seed)
    }
}

/// Run seeds until one fails with a violation (not a known issue), up to `limit`.
fn first_failure(template: SimOptions, limit: u64) -> Option<RunReport> {
    (0..limit)
        .map(|seed| {
            run(SimOptions {
                seed,
                ..template.clone()
            })
        })
        .find(|r| r.verdict == Verdict::Fail)
}

#[test]
fn a_healthy_world_answers_every_request_once() {
    for seed in 0..8 {
        let report = run(SimOptions {
            faults: false,
            ..SimOptions::new(seed)
        });
        assert_eq!(
            report.verdict,
            Verdict::Pass,
            "seed {seed}: {:?}",
            report.violation
        );
        let c = &report.counters;
        assert_eq!(
            c.accepted, c.planned,
            "seed {seed}: every request stored once"
        );
        assert_eq!(
            c.answered, c.accepted,
            "seed {seed}: every request answered"
        );
        assert_eq!(
            c.duplicate_replies, 0,
            "seed {seed}: no fault, no second reply"
        );
        assert_eq!((c.faults, c.lost_in_transit), (0, 0), "seed {seed}");
        assert!(
            c.usage_events > 0,
            "seed {seed}: assignments ran and were metered"
        );
    }
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let a = run(traced(11));
    let b = run(traced(11));
    let (la, lb) = (a.trace.unwrap(), b.trace.unwrap());
    assert_eq!(first_divergence(&la, &lb), None);
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_ne!(run(SimOptions::new(12)).trace_hash, a.trace_hash);
}

#[test]
fn the_trace_is_json_lines_and_records_the_profile_and_buggify() {
    // Find a seed with BUGGIFY on: its activated sites are in the trace.
    let report = (0..20)
        .map(|s| run(traced(s)))
        .find(|r| !r.buggify_sites.is_empty())
        .expect("BUGGIFY is on in most seeds");
    let lines = report.trace.unwrap();
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).expect(line);
        assert!(
            v["t"].is_u64() && v["k"].is_string() && v["n"].is_string(),
            "{line}"
        );
    }
    assert!(lines[0].contains("world.profile"));
    assert!(lines.iter().any(|l| l.contains("\"k\":\"buggify.site\"")));
}

#[test]
fn every_deliberate_bug_is_caught_by_its_invariant() {
    let cases = [
        (Bug::AckOnDelivery, "ack_before_reply_confirmed"),
        (Bug::DropReplies, "ack_before_reply_confirmed"),
        (Bug::SkipDlq, "term_before_dlq_confirmed"),
        (Bug::DoubleUsage, "usage_duplicate"),
        (Bug::IgnoreDelivered, "nak_at_last_delivery|nak_delay_wrong"),
        (Bug::DropAdvisories, "exhausted_not_dead_lettered"),
        (Bug::ForgetAnswers, "second_assignment|replies_differ"),
        (Bug::BlindClaims, "replies_differ_across_processes"),
    ];
    for (bug, invariants) in cases {
        let report = first_failure(
            SimOptions {
                bug: Some(bug),
                ..SimOptions::new(0)
            },
            60,
        )
        .unwrap_or_else(|| panic!("{bug:?} never caught in 60 seeds"));
        let got = report.invariant().unwrap();
        assert!(
            invariants.split('|').any(|i| i == got),
            "{bug:?}: seed {} failed with {got}, expected {invariants}",
            report.seed
        );
    }
}

#[test]
fn strict_mode_fails_known_core_issues() {
    let config = |strict| SweepConfig {
        seeds: (0..40).collect(),
        jobs: 2,
        template: SimOptions {
            strict,
            ..SimOptions::new(0)
        },
        recheck_every: 0,
    };
    let relaxed = sweep(&config(false), &|_| {}, &|| false);
    let known_seeds: Vec<u64> = relaxed
        .iter()
        .filter(|r| r.verdict == Verdict::Known)
        .map(|r| r.seed)
        .collect();
    for r in &relaxed {
        if let Some(v) = &r.violation {
            if r.verdict == Verdict::Known {
                assert!(known::ALL.contains(&v.known.unwrap()));
            }
        }
    }
    let strict = sweep(&config(true), &|_| {}, &|| false);
    for r in strict.iter().filter(|r| known_seeds.contains(&r.seed)) {
        assert_eq!(
            r.verdict,
            Verdict::Fail,
            "seed {} must fail in strict mode",
            r.seed
        );
    }
}

#[test]
fn the_lost_tail_mode_runs_and_counts_what_it_lost() {
    // Opt-in: JetStream losing acknowledged writes. Whatever it breaks is classified as
    // `tail_loss`, never an unexplained failure.
    let reports: Vec<RunReport> = (0..30)
        .map(|seed| {
            run(SimOptions {
                tail_loss: true,
                ..SimOptions::new(seed)
            })
        })
        .collect();
    assert!(
        reports.iter().any(|r| r.counters.lost_to_tail > 0),
        "some seed lost a tail"
    );
    for r in &reports {
        assert_ne!(
            r.verdict,
            Verdict::Fail,
            "seed {}: {:?}",
            r.seed,
            r.violation
        );
    }
}
