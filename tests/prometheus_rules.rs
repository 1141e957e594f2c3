//! The Prometheus rules in `deploy/prometheus/` are valid (`promtool check rules`) and
//! their unit tests pass (`promtool test rules`: every alert fires when it should and
//! stays silent when it should). `scripts/test.sh` installs promtool
//! (`scripts/install-prometheus.sh`); never skips.

use std::path::Path;
use std::process::Command;

fn promtool(args: &[&str]) -> (bool, String) {
    let bin = std::env::var("PROMTOOL_BIN").unwrap_or_else(|_| "promtool".to_string());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus");
    let out = Command::new(&bin)
        .args(args)
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {bin} (scripts/install-prometheus.sh): {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_rules_are_valid() {
    let (ok, text) = promtool(&["check", "rules", "router-rules.yml"]);
    println!("{text}");
    assert!(ok, "{text}");
    assert!(text.contains("SUCCESS: 22 rules found"), "{text}");
}

#[test]
fn every_alert_fires_and_stays_silent_as_its_unit_tests_say() {
    let (ok, text) = promtool(&["test", "rules", "tests/router-rules.test.yml"]);
    println!("{text}");
    assert!(ok, "{text}");
}

/// Every alert of the rules file has a unit test: an alert nobody tests is an alert
/// nobody knows fires.
#[test]
fn every_alert_has_a_unit_test() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus");
    let rules = std::fs::read_to_string(dir.join("router-rules.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("tests/router-rules.test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 9, "{alerts:?}");
    for alert in alerts {
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "{alert} has no test in tests/router-rules.test.yml"
        );
    }
}
