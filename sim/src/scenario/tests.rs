//! The scenario format refuses what it cannot use, naming the file and key; expectations
//! can fail (an impossible threshold, a deliberately broken host).

use super::*;

const SMALL: &str = r#"
family = "dlq"
title = "every refused request is dead-lettered once"
covers = ["router_intake_error_config_SUITE:test_audit_logging"]
[workload]
requests = 12
duration_ms = 5000
routers = 1
invalid = 100
[[expect]]
metric = "dlq"
op = "=="
value = 12
"#;

fn parse(text: &str) -> Result<Scenario, ScenarioError> {
    Scenario::parse("t", "scenarios/t.toml", text)
}

#[test]
fn a_small_scenario_passes_and_measures_what_it_asserts() {
    let s = parse(SMALL).unwrap();
    let run = s.run(1, None, false);
    assert!(run.passed, "{}", run.verdict_line());
    assert_eq!(run.checks[0].measured, Some(12.0));
    assert!(run.verdict_line().contains("dlq=12 ==12 ok"));
}

#[test]
fn an_impossible_threshold_fails() {
    let text = SMALL.replace("value = 12", "value = 13");
    let run = parse(&text).unwrap().run(1, None, false);
    assert!(!run.passed);
    assert!(run.verdict_ok, "the invariants still hold");
    assert!(
        run.verdict_line().contains("dlq=12 ==13 FAIL"),
        "{}",
        run.verdict_line()
    );
}

#[test]
fn a_broken_host_fails_the_scenario() {
    let run = parse(SMALL).unwrap().run(1, Some(Bug::SkipDlq), false);
    assert!(!run.passed, "{}", run.verdict_line());
    assert!(!run.verdict_ok);
}

#[test]
fn expect_failure_inverts_what_ci_wants() {
    let text = format!(
        "status = \"expect_failure\"\n{}",
        SMALL.replace("value = 12", "value = 0")
    );
    let run = parse(&text).unwrap().run(1, None, false);
    assert!(!run.passed && run.as_expected());
}

#[test]
fn errors_name_the_file_and_the_key() {
    let e = parse(&SMALL.replace("requests = 12", "requests = 12\nrequets = 3")).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("scenarios/t.toml") && msg.contains("requets"),
        "{msg}"
    );

    let e = parse(&SMALL.replace("metric = \"dlq\"", "metric = \"dlqs\"")).unwrap_err();
    assert!(
        matches!(&e, ScenarioError::Invalid { key, .. } if key == "expect[0].metric"),
        "{e}"
    );

    let e = parse(&SMALL.replace("op = \"==\"", "op = \"=\"")).unwrap_err();
    assert!(
        matches!(&e, ScenarioError::Invalid { key, .. } if key == "expect[0].op"),
        "{e}"
    );

    let e = parse(&SMALL.replace("family = \"dlq\"", "family = \"dlqs\"")).unwrap_err();
    assert!(
        matches!(&e, ScenarioError::Invalid { key, .. } if key == "family"),
        "{e}"
    );

    let text = format!("{SMALL}\n[[faults.at]]\nat_ms = 1000\nkind = \"link_drop\"\nnode = \"router-2\"\ndown_ms = 5\n");
    let e = parse(&text).unwrap_err();
    assert!(
        matches!(&e, ScenarioError::Invalid { key, .. } if key == "faults.at[0].node"),
        "{e}"
    );

    let text =
        format!("{SMALL}\n[[faults.at]]\nat_ms = 9000\nkind = \"broker_restart\"\ndown_ms = 5\n");
    let e = parse(&text).unwrap_err();
    assert!(
        matches!(&e, ScenarioError::Invalid { key, .. } if key == "faults.at[0].at_ms"),
        "{e}"
    );

    let text = format!("{SMALL}\n[[faults.at]]\nat_ms = 100\nkind = \"crash\"\n");
    let e = parse(&text).unwrap_err();
    assert!(
        matches!(&e, ScenarioError::Invalid { key, .. } if key == "faults.at[0].down_ms"),
        "{e}"
    );

    let e = parse(&format!(
        "status = \"known\"\nknown_issue = \"nope\"\n{SMALL}"
    ))
    .unwrap_err();
    assert!(
        matches!(&e, ScenarioError::Invalid { key, .. } if key == "known_issue"),
        "{e}"
    );
}

#[test]
fn timed_faults_land_in_the_schedule_and_the_log() {
    let text = SMALL.replace("duration_ms = 5000", "duration_ms = 5000\nchaos_ms = 20000")
        + "\n[[faults.at]]\nat_ms = 3000\nkind = \"broker_restart\"\ndown_ms = 1500\n";
    let s = parse(&text).unwrap();
    let run = s.run(2, None, true);
    assert!(run.passed, "{}", run.verdict_line());
    assert_eq!(run.report.counters.broker_restarts, 1);
    let log = &run.report.observations.log;
    assert!(
        log.iter()
            .any(|l| l == "3.000s FAULT broker restart, down 1500ms"),
        "{log:?}"
    );
    assert!(
        log.iter().any(|l| l.contains("-> error invalid_request")),
        "{log:?}"
    );
}

#[test]
fn named_invariants_are_real_checker_names() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut sources = String::new();
    for dir in ["invariants", "world", "models"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            sources.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
        }
    }
    sources.push_str(&std::fs::read_to_string(root.join("sweep.rs")).unwrap());
    for name in INVARIANTS {
        assert!(
            sources.contains(&format!("\"{name}\"")),
            "no checker raises {name}"
        );
    }
    let e = parse(&format!("invariants = [\"stuck\", \"stuk\"]\n{SMALL}")).unwrap_err();
    assert!(
        matches!(&e, ScenarioError::Invalid { key, .. } if key == "invariants[1]"),
        "{e}"
    );
}

/// A link drop that lands while the broker is down (so the link is down already) must
/// still end: the gateway reconnects when the drop is over, not at the next restart.
/// Before the fix the drop's end was never scheduled, and every request after it was
/// lost (`soak_link_faults_hours`, seed 7013: a gateway silent for 40 minutes).
#[test]
fn a_link_drop_during_a_broker_restart_ends() {
    let text = r#"
family = "soak"
title = "a gateway's link drop lands while the broker is down"
covers = ["t:t"]
[workload]
requests = 60
duration_ms = 30000
chaos_ms = 120000
routers = 1
gateways = 1
valid = 100
idempotency_permille = 1000
max_attempts = 1
[[faults.at]]
at_ms = 5000
kind = "broker_restart"
down_ms = 5000
[[faults.at]]
at_ms = 6000
kind = "link_drop"
node = "gw-1"
down_ms = 6000
[[expect]]
metric = "answered_permille"
op = ">="
value = 700
"#;
    let s = parse(text).unwrap();
    for seed in 1..=3 {
        let run = s.run(seed, None, false);
        assert!(run.passed, "seed {seed}: {}", run.verdict_line());
    }
}
