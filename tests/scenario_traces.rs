//! Decision traces of a few pinned scenario seeds, kept as insta snapshots in `snapshots/`
//! (`scenario_<name>_seed<N>.snap`): one line per first reply a gateway got (time, gateway,
//! request, tenant, provider and reason or error code, attempt, latency) and per scheduled
//! fault, then the scenario's expectations with their measured values. A change in routing
//! or fault handling shows up as a reviewable diff. Under CI (`CI=true`) insta does not
//! write snapshots; locally `INSTA_UPDATE=always` or `cargo insta accept` records them.
#![cfg(feature = "sim")]

use std::path::Path;

use beamline_sim::scenario;

fn trace(name: &str, seed: u64) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let s = scenario::find(&dir, name).unwrap_or_else(|e| panic!("{e}"));
    let run = s.run(seed, None, true);
    let mut out = format!(
        "scenario {name} seed {seed}: {}\nverdict {} outcome {}\n",
        s.file.title,
        run.report.verdict.as_str(),
        if run.passed { "pass" } else { "fail" }
    );
    for line in &run.report.observations.log {
        out.push_str(line);
        out.push('\n');
    }
    for c in &run.checks {
        out.push_str(&format!("expect {c}\n"));
    }
    out
}

macro_rules! pinned {
    ($test:ident, $name:literal, $seed:literal) => {
        #[test]
        fn $test() {
            let mut settings = insta::Settings::clone_current();
            settings.set_snapshot_path(Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots"));
            settings.set_prepend_module_to_snapshot(false);
            let snap = concat!("scenario_", $name, "_seed", $seed);
            settings.bind(|| insta::assert_snapshot!(snap, trace($name, $seed)));
        }
    };
}

pinned!(dlq_validation_audit, "dlq_validation_audit", 1);
pinned!(conn_loss_recovery, "conn_loss_recovery", 1);
pinned!(chaos_broker_kill, "chaos_broker_kill", 2);
pinned!(cb_opens_on_failures, "cb_opens_on_failures", 1);
pinned!(ext_recovery_after_failure, "ext_recovery_after_failure", 3);
