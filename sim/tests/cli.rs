//! The CLI as a user runs it, across processes: the same seed in two processes gives the
//! same last line (and so the same trace hash), equal to an in-process run's.

use std::process::Command;

use beamline_sim::{run, SimOptions};

fn sim(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_beamline-sim"))
        .args(args)
        .output()
        .expect("run beamline-sim");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn last_line(s: &str) -> &str {
    s.lines().last().unwrap_or_default()
}

#[test]
fn the_same_seed_in_two_processes_gives_the_same_hash() {
    let (ok1, out1) = sim(&["run", "--seed", "5"]);
    let (ok2, out2) = sim(&["run", "--seed", "5"]);
    assert!(ok1 && ok2, "{out1}\n{out2}");
    assert_eq!(last_line(&out1), last_line(&out2));
    assert_eq!(last_line(&out1), run(SimOptions::new(5)).verdict_line());
    assert!(last_line(&out1).starts_with("seed=5 verdict=pass trace_hash="));
}

#[test]
fn run_twice_compares_traces_and_a_failing_run_exits_non_zero() {
    let (ok, out) = sim(&["run", "--seed", "2", "--twice"]);
    assert!(ok, "{out}");
    assert!(out.contains("determinism: second run identical"), "{out}");
    let (ok, out) = sim(&["run", "--seed", "2", "--bug", "ack-on-delivery"]);
    assert!(!ok);
    assert!(last_line(&out).contains("verdict=fail"), "{out}");
}

#[test]
fn sweep_writes_failing_seeds_and_replays_them() {
    let dir = std::env::temp_dir().join(format!("beamline-sim-cli-{}", std::process::id()));
    let dir_s = dir.to_str().unwrap();
    let (ok, out) = sim(&[
        "sweep",
        "--seeds",
        "0..4",
        "--jobs",
        "2",
        "--seeds-dir",
        dir_s,
    ]);
    assert!(ok, "{out}");
    assert_eq!(last_line(&out), "seeds=4 passed=4 failed=0");
    // --strict-exhaustion over seeds known to hit the gap writes seed files we can replay.
    let (ok, out) = sim(&[
        "sweep",
        "--seeds",
        "0..60",
        "--strict-exhaustion",
        "--seeds-dir",
        dir_s,
    ]);
    assert!(!ok, "{out}");
    let written: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(!written.is_empty());
    let first = written[0].to_str().unwrap();
    let text = std::fs::read_to_string(first).unwrap();
    assert!(text.contains("invariant = \"exhausted_unseen\""), "{text}");
    let (ok, out) = sim(&["run", "--seed-file", first]);
    assert!(!ok, "a recorded failing seed must fail again: {out}");
    let _ = std::fs::remove_dir_all(&dir);
}
