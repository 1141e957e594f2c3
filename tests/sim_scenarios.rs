//! The named fault scenarios (`scenarios/*.toml`, run with `cargo test --features sim`):
//!
//! - the catalogue: at least 40 scenarios, every Part B family, every one of the 20 cases
//!   the upstream status page lists as failing in the heavy tier mapped by some scenario's
//!   `covers`;
//! - every scenario passes on each of its seeds (a scenario marked `expect_failure` must
//!   still fail: it documents an unfixed bug);
//! - a scenario's expectations can fail: each deliberately broken host it names in
//!   `catches_bugs` makes it fail on at least one of its seeds;
//! - determinism: each scenario's first seed run twice gives the same trace hash.
//!
//! One scenario by hand: `cargo run -p beamline-sim -- run --scenario NAME --seed N`.
#![cfg(feature = "sim")]

use std::collections::BTreeSet;
use std::path::Path;

use beamline_sim::scenario::{self, Scenario, FAMILIES};

/// The 20 failing heavy-tier cases of the upstream status page (docs/BACKGROUND.md,
/// "B.0").
const STATUS_PAGE_CASES: [&str; 20] = [
    "router_cb_load_concurrent_SUITE:test_concurrent_requests_under_load",
    "router_concurrent_faults_combo_SUITE:test_publish_and_ack_failures",
    "router_decide_consumer_heavy_SUITE:test_decide_concurrent_messages_no_global_blocking",
    "router_delivery_count_advanced_SUITE:test_cleanup_after_ack",
    "router_delivery_count_advanced_SUITE:error_in_suite",
    "router_ext_chaos_failure_SUITE:test_extension_flapping",
    "router_ext_chaos_recovery_SUITE:test_mass_degradation",
    "router_gateway_contract_valid_SUITE:error_in_suite",
    "router_headers_propagation_e2e_SUITE:test_headers_propagation_rest_to_router",
    "router_idem_advanced_SUITE:test_telemetry_events",
    "router_intake_chaos_advanced_SUITE:test_randomized_failures",
    "router_intake_error_config_SUITE:test_audit_logging",
    "router_intake_overload_SUITE:test_overload_jetstream_backlog",
    "router_jetstream_e2e_cp2_SUITE:test_redelivery_until_ack_or_maxdeliver",
    "router_jetstream_e2e_cp2_SUITE:test_durable_subscription_survives_restart",
    "router_jetstream_e2e_cp2_SUITE:test_ack_latency_within_target",
    "router_jetstream_e2e_integration_SUITE:test_idempotency_result_processing",
    "router_jetstream_fi_connection_SUITE:test_nats_connection_loss_recovery",
    "router_jetstream_fi_metrics_SUITE:test_redelivery_metric_labels",
    "router_jetstream_maxdeliver_SUITE:test_gradual_accumulation",
];

fn catalogue() -> Vec<Scenario> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    scenario::load_dir(&dir).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_catalogue_covers_every_family_and_every_status_page_case() {
    let all = catalogue();
    assert!(all.len() >= 40, "only {} scenarios", all.len());
    let families: BTreeSet<&str> = all.iter().map(|s| s.family()).collect();
    for f in FAMILIES {
        assert!(families.contains(f), "no scenario in family {f}");
    }
    let covered: BTreeSet<&str> = all
        .iter()
        .flat_map(|s| s.covers().iter().map(String::as_str))
        .collect();
    let missing: Vec<&str> = STATUS_PAGE_CASES
        .iter()
        .copied()
        .filter(|c| !covered.contains(c))
        .collect();
    assert!(
        missing.is_empty(),
        "status-page cases no scenario covers: {missing:?}"
    );
    let names: BTreeSet<&str> = all.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names.len(), all.len(), "duplicate scenario names");
}

#[test]
fn docs_scenarios_names_every_scenario() {
    let page =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/SCENARIOS.md"))
            .expect("docs/SCENARIOS.md");
    let missing: Vec<String> = catalogue()
        .into_iter()
        .map(|s| s.name)
        .filter(|n| !page.contains(&format!("`{n}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/SCENARIOS.md does not name {missing:?}: run scripts/scenarios-doc.py"
    );
}

#[test]
fn every_scenario_passes_on_its_seeds() {
    let mut failures = Vec::new();
    for s in catalogue() {
        for &seed in &s.seeds {
            let run = s.run(seed, None, false);
            if !run.as_expected() {
                failures.push(format!(
                    "{}\n  replay: cargo run -p beamline-sim -- run --scenario {} --seed {seed}",
                    run.verdict_line(),
                    s.name
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "scenarios not as expected:\n{}",
        failures.join("\n")
    );
}

#[test]
fn broken_hosts_fail_the_scenarios_that_name_them() {
    let mut missed = Vec::new();
    let mut checked = 0;
    for s in catalogue() {
        for &bug in &s.catches_bugs {
            checked += 1;
            let caught = s
                .seeds
                .iter()
                .any(|&seed| !s.run(seed, Some(bug), false).passed);
            if !caught {
                missed.push(format!("{} --bug {}", s.name, bug.name()));
            }
        }
    }
    assert!(
        checked >= 10,
        "only {checked} (scenario, bug) pairs declared"
    );
    assert!(missed.is_empty(), "bugs not caught: {missed:?}");
}

#[test]
fn a_scenario_seed_run_twice_gives_the_same_trace_hash() {
    for s in catalogue() {
        let seed = s.seeds[0];
        let (a, b) = (s.run(seed, None, false), s.run(seed, None, false));
        assert_eq!(
            a.report.trace_hash, b.report.trace_hash,
            "{} seed {seed} is not deterministic",
            s.name
        );
        assert_eq!(a.checks, b.checks);
    }
}

#[test]
fn an_impossible_threshold_fails_a_catalogue_scenario() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let path = dir.join("dlq_validation_audit.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let impossible = text.replace(
        "value = 40\nwhy = \"DLQ published once",
        "value = 41\nwhy = \"DLQ published once",
    );
    assert_ne!(text, impossible);
    let s = Scenario::parse("impossible", "impossible.toml", &impossible).unwrap();
    let run = s.run(s.seeds[0], None, false);
    assert!(!run.passed && run.verdict_ok, "{}", run.verdict_line());
    assert!(
        run.verdict_line().contains("dlq=40 ==41 FAIL"),
        "{}",
        run.verdict_line()
    );
}

#[test]
fn the_format_example_in_scenarios_readme_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let example = readme
        .split("```toml")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a ```toml block in scenarios/README.md");
    let s = Scenario::parse("example", "scenarios/README.md", example)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.family(), "connection_loss");
}
