//! Named fault scenarios: `scenarios/<name>.toml`, one per upstream fault scenario (Part B
//! of docs/BACKGROUND.md, the upstream catalogue). A scenario pins what matters for its
//! case (workload, settings, fault menu, timed faults) on top of what a seed draws
//! (`setup.rs` says what stays drawn), runs the ordinary world with every invariant on,
//! and then checks its expectations, thresholds the upstream suites asserted, against the
//! run's report (`expect.rs`). docs/SCENARIOS.md maps upstream cases to scenarios.
//!
//! - `spec.rs`: the file format (serde, unknown keys refused);
//! - `setup.rs`: the scenario applied to a world (`world::WorldSetup`);
//! - `expect.rs`: metrics, operators, checking.

pub mod expect;
pub mod setup;
pub mod spec;

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use crate::faults::ExtBehaviour;
use crate::invariants::known;
use crate::options::{Bug, SimOptions};
use crate::report::{RunReport, Verdict};
use crate::trace::hash_hex;
use crate::wire::Cons;
use crate::world::World;

use expect::{Checked, Expectation, Op};
use setup::TimedFault;
use spec::{AtSpec, ScenarioFile};

/// The fourteen scenario families of Part B, the JetStream cluster, and the routing
/// semantics the reference models judge.
pub const FAMILIES: [&str; 16] = [
    "connection_loss",
    "publish_failures",
    "dlq",
    "backpressure",
    "circuit_breaker",
    "extensions",
    "idempotency",
    "max_deliver",
    "concurrent_faults",
    "network_partitions",
    "soak",
    "chaos",
    "recovery",
    "headers",
    "cluster",
    "routing",
];

/// Invariant names a scenario may name in `invariants` (docs/INVARIANTS.md; the checkers
/// in `invariants/`, the world and `sweep.rs` raise them).
pub const INVARIANTS: [&str; 46] = [
    "ack_before_reply_confirmed",
    "ack_before_assignment_confirmed",
    "ack_before_usage_confirmed",
    "term_before_dlq_confirmed",
    "nak_at_last_delivery",
    "backpressure_side_effect",
    "max_deliver_exceeded",
    "delivered_after_final",
    "replies_differ",
    "replies_differ_across_processes",
    "second_assignment",
    "assignment_duplicate",
    "assignment_wrong",
    "usage_duplicate",
    "usage_wrong",
    "reply_wrong",
    "reply_misrouted",
    "dlq_record_malformed",
    "duplicate_dlq_record",
    "msg_id_unstable",
    "status_inconsistent",
    "admin_auth",
    "failure_after_heal",
    "stuck",
    "unanswered",
    "invalid_not_dead_lettered",
    "exhausted_not_dead_lettered",
    "eternal_in_flight",
    "result_without_usage",
    "event_storm",
    "panic",
    "nondeterminism",
    // The reference models (`models/`).
    "nak_delay_wrong",
    "nak_delay_lost",
    "dlq_before_last_delivery",
    "rate_limit_exceeded",
    "rate_limited_early",
    "decision_to_open_breaker",
    "no_provider_while_breaker_allows",
    "breaker_state_differs",
    "breaker_record_count",
    "sticky_after_ttl",
    "sticky_wrong_provider",
    "sticky_session_moved",
    "weights_skewed",
    "extension_retry_without_timeout",
];

/// The seeds a scenario is tested on when its file names none.
pub const DEFAULT_SEEDS: [u64; 3] = [1, 2, 3];

/// The scenario directory of this checkout (`scenarios/` at the repository root).
pub fn default_dir() -> PathBuf {
    let sim = Path::new(env!("CARGO_MANIFEST_DIR"));
    sim.parent().unwrap_or(sim).join("scenarios")
}

/// A scenario that cannot be used, naming the file and, where there is one, the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScenarioError {
    Io {
        file: String,
        message: String,
    },
    /// TOML syntax, a wrong type or an unknown key (the message names it).
    Parse {
        file: String,
        message: String,
    },
    /// A value the simulator cannot use.
    Invalid {
        file: String,
        key: String,
        message: String,
    },
    NotFound {
        name: String,
        dir: String,
    },
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScenarioError::Io { file, message } => write!(f, "{file}: {message}"),
            ScenarioError::Parse { file, message } => write!(f, "{file}: {message}"),
            ScenarioError::Invalid { file, key, message } => {
                write!(f, "{file}: key `{key}`: {message}")
            }
            ScenarioError::NotFound { name, dir } => {
                write!(
                    f,
                    "no scenario {name:?} in {dir} (see `beamline-sim scenarios`)"
                )
            }
        }
    }
}

impl std::error::Error for ScenarioError {}

/// What a scenario's runs are expected to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Every expectation holds and no invariant breaks.
    Pass,
    /// May end with verdict `known` for this open core issue (`invariants::known`).
    Known(&'static str),
    /// Exposes an unfixed bug: its expectations fail (CI checks that they still do).
    ExpectFailure,
}

/// A checked scenario.
#[derive(Debug)]
pub struct Scenario {
    /// The file stem.
    pub name: String,
    pub file: ScenarioFile,
    pub status: Status,
    pub seeds: Vec<u64>,
    pub expectations: Vec<Expectation>,
    pub catches_bugs: Vec<Bug>,
    extensions: Option<[ExtBehaviour; 3]>,
    timed: Vec<(u64, TimedFault)>,
}

impl Scenario {
    pub fn family(&self) -> &str {
        &self.file.family
    }

    pub fn covers(&self) -> &[String] {
        &self.file.covers
    }

    pub fn requests(&self) -> u64 {
        self.file
            .workload
            .requests
            .unwrap_or(SimOptions::DEFAULT_REQUESTS)
    }

    /// Parse and check the text of `scenarios/<name>.toml`; `file` names it in errors.
    pub fn parse(name: &str, file: &str, text: &str) -> Result<Scenario, ScenarioError> {
        let parsed: ScenarioFile = toml::from_str(text).map_err(|e| ScenarioError::Parse {
            file: file.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let invalid = |key: &str, message: String| ScenarioError::Invalid {
            file: file.to_string(),
            key: key.to_string(),
            message,
        };
        if !FAMILIES.contains(&parsed.family.as_str()) {
            return Err(invalid(
                "family",
                format!("{:?} is not one of {FAMILIES:?}", parsed.family),
            ));
        }
        for (i, c) in parsed.covers.iter().enumerate() {
            if !c.contains(':') {
                return Err(invalid(
                    &format!("covers[{i}]"),
                    format!("{c:?} is not `suite:case`"),
                ));
            }
        }
        let status = match (parsed.status.as_deref(), parsed.known_issue.as_deref()) {
            (None | Some("pass"), None) => Status::Pass,
            (Some("known"), Some(issue)) => match known::ALL.iter().find(|k| **k == issue) {
                Some(k) => Status::Known(k),
                None => {
                    return Err(invalid(
                        "known_issue",
                        format!("{issue:?} is not a known issue ({:?})", known::ALL),
                    ))
                }
            },
            (Some("known"), None) => {
                return Err(invalid("known_issue", "status = \"known\" needs it".into()))
            }
            (Some("expect_failure"), None) => Status::ExpectFailure,
            (Some(s), None) => {
                return Err(invalid(
                    "status",
                    format!("{s:?} is not pass, known or expect_failure"),
                ))
            }
            (_, Some(_)) => {
                return Err(invalid(
                    "known_issue",
                    "only with status = \"known\"".into(),
                ))
            }
        };
        for (i, name) in parsed.invariants.iter().enumerate() {
            if !INVARIANTS.contains(&name.as_str()) {
                return Err(invalid(
                    &format!("invariants[{i}]"),
                    format!("{name:?} is not an invariant (docs/INVARIANTS.md)"),
                ));
            }
        }
        let seeds = parsed.seeds.clone().unwrap_or(DEFAULT_SEEDS.to_vec());
        if seeds.is_empty() {
            return Err(invalid("seeds", "empty".into()));
        }
        let mut catches_bugs = Vec::new();
        for (i, b) in parsed.catches_bugs.iter().enumerate() {
            catches_bugs.push(Bug::parse(b).ok_or_else(|| {
                invalid(
                    &format!("catches_bugs[{i}]"),
                    format!("{b:?} is not a --bug name"),
                )
            })?);
        }
        let mut expectations = Vec::new();
        for (i, e) in parsed.expect.iter().enumerate() {
            if let Some(why) = expect::check_metric(&e.metric) {
                return Err(invalid(&format!("expect[{i}].metric"), why));
            }
            let op = Op::parse(&e.op).ok_or_else(|| {
                invalid(
                    &format!("expect[{i}].op"),
                    format!("{:?} is not one of < <= == != >= >", e.op),
                )
            })?;
            expectations.push(Expectation {
                metric: e.metric.clone(),
                op,
                value: e.value,
                why: e.why.clone(),
            });
        }
        let w = &parsed.workload;
        for (key, v) in [
            ("workload.requests", w.requests),
            ("workload.duration_ms", w.duration_ms),
        ] {
            if v == Some(0) {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        let kinds = [w.valid, w.ext, w.limited, w.no_policy, w.invalid];
        if kinds.iter().any(Option::is_some)
            && kinds.iter().map(|k| k.unwrap_or(0)).sum::<u64>() == 0
        {
            return Err(invalid(
                "workload.valid",
                "the request kinds weigh 0 in all".into(),
            ));
        }
        for (key, v) in [
            ("workload.idempotency_permille", w.idempotency_permille),
            ("workload.assignment_permille", w.assignment_permille),
            ("workload.pii_permille", w.pii_permille),
            ("workload.trace_header_permille", w.trace_header_permille),
        ] {
            if v.is_some_and(|v| v > 1000) {
                return Err(invalid(key, "a permille is at most 1000".into()));
            }
        }
        let s = &parsed.settings;
        if let (Some(md), Some(b)) = (s.max_deliver, &s.backoff_ms) {
            if md <= b.len() as u64 {
                return Err(invalid(
                    "settings.backoff_ms",
                    format!(
                        "nats-server requires max_deliver ({md}) > len(backoff) ({})",
                        b.len()
                    ),
                ));
            }
        }
        if s.max_deliver == Some(0) {
            return Err(invalid("settings.max_deliver", "must be at least 1".into()));
        }
        let extensions = match &parsed.faults.extensions {
            None => None,
            Some(names) => {
                let mut out = [ExtBehaviour::Healthy; 3];
                for (i, n) in names.iter().enumerate() {
                    out[i] = setup::ext_behaviour(n).ok_or_else(|| {
                        invalid(
                            &format!("faults.extensions[{i}]"),
                            format!("{n:?} is not healthy, slow, flapping or dead"),
                        )
                    })?;
                }
                Some(out)
            }
        };
        // Timed faults must fall in the chaos phase, which ends at chaos_ms (or at the end
        // of the workload, or no earlier than 60 s when drawn). The chaos phase may end
        // before the workload does: the rest of the traffic then meets a healed world.
        let chaos_floor = w.chaos_ms.or(w.duration_ms).unwrap_or(60_000);
        let mut timed = Vec::new();
        for (i, a) in parsed.faults.at.iter().enumerate() {
            let key = format!("faults.at[{i}]");
            let fault =
                timed_fault(a, &parsed).map_err(|(k, m)| invalid(&format!("{key}.{k}"), m))?;
            let repeat = a.repeat.unwrap_or(1).max(1);
            let every = a.every_ms.unwrap_or(0);
            if repeat > 1 && every == 0 {
                return Err(invalid(
                    &format!("{key}.every_ms"),
                    "needed with repeat".into(),
                ));
            }
            for r in 0..repeat {
                let at = a.at_ms + r * every;
                if at >= chaos_floor {
                    return Err(invalid(
                        &format!("{key}.at_ms"),
                        format!("{at} is not before the end of the chaos phase ({chaos_floor})"),
                    ));
                }
                timed.push((at, fault.clone()));
            }
        }
        Ok(Scenario {
            name: name.to_string(),
            status,
            seeds,
            expectations,
            catches_bugs,
            extensions,
            timed,
            file: parsed,
        })
    }

    /// Read `path` (`<dir>/<name>.toml`).
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError::Io {
            file: file.clone(),
            message: e.to_string(),
        })?;
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        Scenario::parse(&name, &file, &text)
    }

    /// The options of one run of this scenario.
    pub fn options(&self, seed: u64, bug: Option<Bug>, keep_trace: bool) -> SimOptions {
        let mut o = SimOptions::new(seed);
        o.requests = self.requests();
        o.faults = self.file.faults.swarm;
        o.bug = bug;
        o.keep_trace = keep_trace;
        o
    }

    /// Run one seed and check the expectations.
    pub fn run(&self, seed: u64, bug: Option<Bug>, keep_trace: bool) -> ScenarioRun {
        let options = self.options(seed, bug, keep_trace);
        let report = match catch_unwind(AssertUnwindSafe(|| {
            World::with_setup(options.clone(), self).run()
        })) {
            Ok(r) => r,
            Err(payload) => {
                let message = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".to_string());
                crate::sweep::failed_report(&options, "panic", message)
            }
        };
        let checks: Vec<Checked> = self
            .expectations
            .iter()
            .map(|e| expect::check(e, &report))
            .collect();
        let verdict_ok = match (&self.status, report.verdict) {
            (_, Verdict::Pass) => true,
            (Status::Known(issue), Verdict::Known) => {
                report.violation.as_ref().and_then(|v| v.known) == Some(*issue)
            }
            _ => false,
        };
        let passed = verdict_ok && checks.iter().all(|c| c.ok);
        ScenarioRun {
            scenario: self.name.clone(),
            seed,
            report,
            verdict_ok,
            checks,
            passed,
            expect_failure: self.status == Status::ExpectFailure,
        }
    }
}

/// A fault of a `[[faults.at]]` entry; errors as (key, message).
fn timed_fault(a: &AtSpec, file: &ScenarioFile) -> Result<TimedFault, (String, String)> {
    let need = |key: &str, v: Option<u64>| {
        v.ok_or_else(|| (key.to_string(), format!("needed by kind {:?}", a.kind)))
    };
    let w = &file.workload;
    let node = |key: &str, v: &Option<String>| -> Result<String, (String, String)> {
        let name = v
            .clone()
            .ok_or_else(|| (key.to_string(), format!("needed by kind {:?}", a.kind)))?;
        check_node(&name, w).map_err(|m| (key.to_string(), m))?;
        Ok(name)
    };
    let index =
        |key: &str, v: Option<usize>, pinned: Option<usize>| -> Result<usize, (String, String)> {
            let i = v.unwrap_or(1);
            if i == 0 || (i > 1 && pinned.is_none_or(|p| i > p)) {
                return Err((
                    key.to_string(),
                    format!("{i}: 1-based, and above 1 only up to the count pinned in [workload]"),
                ));
            }
            Ok(i)
        };
    Ok(match a.kind.as_str() {
        "link_drop" => TimedFault::LinkDrop {
            node: node("node", &a.node)?,
            down_ms: need("down_ms", a.down_ms)?,
            detect_ms: a.detect_ms.unwrap_or(0),
            server_notices: a.server_notices.unwrap_or(true),
        },
        "partition" => {
            let (x, y) = (node("a", &a.a)?, node("b", &a.b)?);
            if x == y {
                return Err(("b".into(), "a partition needs two different nodes".into()));
            }
            TimedFault::Partition {
                a: x,
                b: y,
                ms: need("ms", a.ms)?,
            }
        }
        "spike" => TimedFault::Spike {
            node: match a.node.as_deref() {
                None | Some("all") => None,
                Some(_) => Some(node("node", &a.node)?),
            },
            ms: need("ms", a.ms)?,
            extra_ms: need("extra_ms", a.extra_ms)?,
        },
        "storm" => TimedFault::Storm {
            cons: match a.consumer.as_deref() {
                Some("decide") | None => Cons::Decide,
                Some("results") => Cons::Results,
                Some("assign") => Cons::Assign,
                Some(c) => return Err(("consumer".into(), format!("{c:?} is not decide, results or assign"))),
            },
        },
        "burst" => TimedFault::Burst {
            gateway: index("gateway", a.gateway, w.gateways)?,
            count: need("count", a.count)?,
        },
        "crash" => TimedFault::Crash {
            router: index("router", a.router, w.routers)?,
            down_ms: need("down_ms", a.down_ms)?,
            server_notices: a.server_notices.unwrap_or(true),
        },
        "stop" => TimedFault::Stop {
            router: index("router", a.router, w.routers)?,
            grace_ms: need("grace_ms", a.grace_ms)?,
            down_ms: need("down_ms", a.down_ms)?,
        },
        "broker_restart" => TimedFault::BrokerRestart {
            down_ms: need("down_ms", a.down_ms)?,
        },
        "skew_jump" => TimedFault::SkewJump {
            router: index("router", a.router, w.routers)?,
            delta_ms: a
                .delta_ms
                .ok_or_else(|| ("delta_ms".to_string(), "needed by kind \"skew_jump\"".to_string()))?,
        },
        "leader_move" => TimedFault::LeaderMove {
            cons: match a.consumer.as_deref() {
                Some("decide") | None => Cons::Decide,
                Some("results") => Cons::Results,
                Some(c) => return Err(("consumer".into(), format!("{c:?} is not decide or results (the routers' consumers)"))),
            },
            advisory: a.advisory.unwrap_or(true),
            elect_ms: need("ms", a.ms)?,
        },
        "node_crash" => TimedFault::NodeCrash {
            target: match (&a.leader_of, a.cluster_node) {
                (Some(group), None) => crate::faults::NodeTarget::LeaderOf(group.clone()),
                (None, Some(n)) if n >= 1 && n <= file.settings.cluster_nodes.unwrap_or(1) => {
                    crate::faults::NodeTarget::Node(n - 1)
                }
                (None, Some(n)) => return Err(("cluster_node".into(), format!("{n}: 1-based, at most settings.cluster_nodes"))),
                _ => return Err(("leader_of".into(), "exactly one of leader_of and cluster_node".into())),
            },
            down_ms: need("down_ms", a.down_ms)?,
            elect_ms: need("ms", a.ms)?,
        },
        k => {
            return Err((
                "kind".into(),
                format!("{k:?} is not link_drop, partition, spike, storm, burst, crash, stop, broker_restart, skew_jump, leader_move or node_crash"),
            ))
        }
    })
}

/// A node name exists in every topology the scenario can get: index 1 always, higher
/// indices only up to a count the scenario pins.
fn check_node(name: &str, w: &spec::WorkloadSpec) -> Result<(), String> {
    let numbered = |prefix: &str, pinned: Option<usize>| -> Option<Result<(), String>> {
        let i: usize = name.strip_prefix(prefix)?.parse().ok()?;
        Some(if i == 1 || (i > 1 && pinned.is_some_and(|p| i <= p)) {
            Ok(())
        } else {
            Err(format!(
                "{name}: not in every topology this scenario can get (pin the count in [workload])"
            ))
        })
    };
    if let Some(r) = numbered("router-", w.routers)
        .or_else(|| numbered("gw-", w.gateways))
        .or_else(|| numbered("caf-", w.caf_workers))
    {
        return r;
    }
    let ext = name
        .strip_prefix("ext-")
        .is_some_and(|e| crate::topology::EXTENSIONS.contains(&e));
    if ext || name == "usage" || name == "ops" {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a node (router-N, gw-N, caf-N, ext-<extension>, usage, ops)"
        ))
    }
}

/// One scenario run: the world's report and every expectation checked.
#[derive(Debug)]
pub struct ScenarioRun {
    pub scenario: String,
    pub seed: u64,
    pub report: RunReport,
    /// The invariants held (or broke only with the scenario's known issue).
    pub verdict_ok: bool,
    pub checks: Vec<Checked>,
    /// `verdict_ok` and every check holds.
    pub passed: bool,
    /// The scenario is marked `expect_failure`.
    pub expect_failure: bool,
}

impl ScenarioRun {
    /// What CI wants: a pass, or a failure of a scenario marked `expect_failure`.
    pub fn as_expected(&self) -> bool {
        self.passed != self.expect_failure
    }

    /// The one-line verdict `beamline-sim run --scenario` ends with.
    pub fn verdict_line(&self) -> String {
        let r = &self.report;
        let mut line = format!(
            "scenario={} seed={} outcome={} verdict={}{} trace_hash={}",
            self.scenario,
            self.seed,
            if self.passed { "pass" } else { "fail" },
            r.verdict.as_str(),
            r.violation
                .as_ref()
                .map(|v| format!(
                    "({}{})",
                    v.invariant,
                    v.known.map(|k| format!(" known:{k}")).unwrap_or_default()
                ))
                .unwrap_or_default(),
            hash_hex(r.trace_hash),
        );
        for c in &self.checks {
            let e = &c.expectation;
            line.push_str(&format!(
                " | {}={} {}{} {}",
                e.metric,
                c.measured.map_or("none".to_string(), expect::num),
                e.op.as_str(),
                expect::num(e.value),
                if c.ok { "ok" } else { "FAIL" }
            ));
        }
        line
    }
}

/// Every scenario in `dir`, by name. The first bad file is an error.
pub fn load_dir(dir: &Path) -> Result<Vec<Scenario>, ScenarioError> {
    let io = |e: std::io::Error| ScenarioError::Io {
        file: dir.display().to_string(),
        message: e.to_string(),
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    paths.iter().map(|p| Scenario::load(p)).collect()
}

/// The scenario `name` (a file stem) in `dir`.
pub fn find(dir: &Path, name: &str) -> Result<Scenario, ScenarioError> {
    let path = dir.join(format!("{name}.toml"));
    if !path.is_file() {
        return Err(ScenarioError::NotFound {
            name: name.to_string(),
            dir: dir.display().to_string(),
        });
    }
    Scenario::load(&path)
}

#[cfg(test)]
mod tests;
