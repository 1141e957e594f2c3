//! The router's metrics in the Prometheus text format, served with `/healthz` and
//! `/readyz` by [`http`].
//!
//! The driver owns the core, so it publishes a snapshot of the core's counters and table
//! sizes once a second (and at shutdown); the connection state is set by the NATS event
//! callback directly. Every metric name is written out, here or in [`core_counters`]
//! (the core's counters): none is derived from a Rust field name.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::core::{BreakerViews, Stats, TableSizes};

use core_counters::{CORE_COUNTERS, CORE_TABLES, TABLE_ENTRIES, TABLE_ENTRIES_HELP};

mod core_counters;
mod http;

pub use http::spawn_server;

/// Upper bounds, in microseconds, of the buckets of `AgeHistogram` (Prometheus `le`).
const AGE_BUCKETS_US: [u64; 14] = [
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    5_000_000,
    30_000_000,
    120_000_000,
];

/// Ages of deliveries (the server's store time to the moment the core takes them): a
/// fixed-bucket histogram, kept by the driver and copied into the snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgeHistogram {
    /// Counts per bucket of `AGE_BUCKETS_US`, not cumulative; the last is `+Inf`.
    counts: [u64; AGE_BUCKETS_US.len() + 1],
    sum_us: u64,
}

impl AgeHistogram {
    pub fn observe(&mut self, age_us: u64) {
        let bucket = AGE_BUCKETS_US
            .iter()
            .position(|&le| age_us <= le)
            .unwrap_or(AGE_BUCKETS_US.len());
        self.counts[bucket] += 1;
        self.sum_us = self.sum_us.saturating_add(age_us);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `<name>_bucket{consumer,le}` (cumulative), `_sum` (seconds) and `_count`.
    fn render(&self, out: &mut String, name: &str, consumer: &str) {
        let les: Vec<f64> = AGE_BUCKETS_US.iter().map(|us| *us as f64 / 1e6).collect();
        let label = format!("consumer=\"{consumer}\"");
        render_histogram(
            out,
            name,
            &label,
            &les,
            &self.counts,
            self.sum_us as f64 / 1e6,
        );
    }
}

/// A fixed-bucket histogram in Prometheus' shape: `<name>_bucket{<label>,le}`
/// (cumulative; `counts` has one more entry than `les`, the `+Inf` bucket), `_sum` and
/// `_count`. `label` is `k="v"` pairs, or empty.
fn render_histogram(
    out: &mut String,
    name: &str,
    label: &str,
    les: &[f64],
    counts: &[u64],
    sum: f64,
) {
    let sep = if label.is_empty() { "" } else { "," };
    let braces = |s: String| {
        if s.is_empty() {
            String::new()
        } else {
            format!("{{{s}}}")
        }
    };
    let mut cumulative = 0;
    for (i, n) in counts.iter().enumerate() {
        cumulative += n;
        let le = les.get(i).map_or("+Inf".to_string(), |v| format!("{v}"));
        let _ = writeln!(out, "{name}_bucket{{{label}{sep}le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_sum{} {sum}", braces(label.to_string()));
    let _ = writeln!(
        out,
        "{name}_count{} {cumulative}",
        braces(label.to_string())
    );
}

/// What the driver counts for one JetStream consumer.
#[derive(Clone, Debug, Default)]
pub struct ConsumerCounters {
    /// `decide`, `results` or `acks`: the `consumer` label.
    pub role: &'static str,
    /// Deliveries fed to the core.
    pub deliveries: u64,
    /// Pull streams re-created after missed idle heartbeats.
    pub pull_restarts: u64,
    /// Pull streams re-created because the consumer's leader changed.
    pub pull_leader_moves: u64,
    /// How old each delivery was when the core got it.
    pub ages: AgeHistogram,
}

impl ConsumerCounters {
    pub fn new(role: &'static str) -> Self {
        ConsumerCounters {
            role,
            ..ConsumerCounters::default()
        }
    }
}

/// What the driver knows and the core does not: its own queues.
#[derive(Clone, Debug, Default)]
pub struct ShellCounters {
    pub io_in_flight: u64,
    pub deliveries_held: u64,
    pub deliveries_evicted: u64,
    pub inbound_evicted: u64,
    pub outbox_dropped: u64,
    pub timers: u64,
    /// Decide messages from hand-over to the core to their ack (the host's histogram).
    pub decide_durations: crate::host::durations::DurationHistogram,
    /// Policy reloads put in force, and refused whole (the running set stayed).
    pub policy_reloads: u64,
    pub policy_reloads_refused: u64,
    /// One entry per JetStream consumer.
    pub consumers: Vec<ConsumerCounters>,
    /// Messages waiting in each bounded queue of the shell, with its bound.
    pub queues: Vec<(&'static str, u64, u64)>,
}

#[derive(Clone, Debug, Default)]
struct Snapshot {
    stats: Stats,
    tables: TableSizes,
    shell: ShellCounters,
    breakers: BreakerViews,
}

#[derive(Default)]
struct Inner {
    connected: AtomicBool,
    ever_connected: AtomicBool,
    reconnects: AtomicU64,
    disconnects: AtomicU64,
    streams_ready: AtomicBool,
    shutting_down: AtomicBool,
    snapshot: Mutex<Snapshot>,
    /// Set once at start: each stream's replicas, and those holding fewer than the
    /// cluster can give.
    streams: Mutex<Vec<StreamReplicas>>,
}

/// A stream (or the KV bucket's stream) as start-up found it.
#[derive(Clone, Debug)]
struct StreamReplicas {
    name: String,
    replicas: u64,
    /// `nats stream edit ...` when under-replicated.
    fix: Option<String>,
}

/// Shared between the driver, the NATS event callback and the HTTP server.
#[derive(Clone, Default)]
pub struct Metrics(Arc<Inner>);

impl Metrics {
    /// Record the connection state; returns whether an up was a reconnect.
    pub fn set_connected(&self, up: bool) -> bool {
        let was = self.0.connected.swap(up, Ordering::SeqCst);
        if up {
            let reconnect = self.0.ever_connected.swap(true, Ordering::SeqCst) && !was;
            if reconnect {
                self.0.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            reconnect
        } else {
            if was {
                self.0.disconnects.fetch_add(1, Ordering::Relaxed);
            }
            false
        }
    }

    pub fn set_streams_ready(&self, ready: bool) {
        self.0.streams_ready.store(ready, Ordering::SeqCst);
    }

    /// The streams as start-up found them (`nats::ensure_streams`).
    pub fn set_streams(&self, states: &[crate::shell::nats::StreamState]) {
        if let Ok(mut streams) = self.0.streams.lock() {
            *streams = states
                .iter()
                .map(|s| StreamReplicas {
                    name: s.name.clone(),
                    replicas: s.replicas,
                    fix: s.under.as_ref().map(|u| u.fix()),
                })
                .collect();
        }
    }

    /// What `/readyz` adds to its status line: one warning per under-replicated stream,
    /// with its fix. Not a reason to be unready: the router serves, at a risk.
    pub fn readiness_detail(&self) -> String {
        let streams = self.0.streams.lock().map(|s| s.clone()).unwrap_or_default();
        let mut out = String::new();
        for s in streams {
            if let Some(fix) = &s.fix {
                let _ = writeln!(
                    out,
                    "warning: stream {} has {} replica(s), fewer than the cluster can hold; fix: {fix}",
                    s.name, s.replicas
                );
            }
        }
        out
    }

    pub fn set_shutting_down(&self) {
        self.0.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn ready(&self) -> bool {
        self.0.connected.load(Ordering::SeqCst)
            && self.0.streams_ready.load(Ordering::SeqCst)
            && !self.0.shutting_down.load(Ordering::SeqCst)
    }

    pub fn publish(&self, stats: &Stats, tables: TableSizes, shell: ShellCounters) {
        if let Ok(mut s) = self.0.snapshot.lock() {
            s.stats = stats.clone();
            s.tables = tables;
            s.shell = shell;
        }
    }

    pub fn publish_breakers(&self, breakers: BreakerViews) {
        if let Ok(mut s) = self.0.snapshot.lock() {
            s.breakers = breakers;
        }
    }

    /// The Prometheus text exposition of everything known.
    pub fn render(&self) -> String {
        let snap = self
            .0
            .snapshot
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        let mut out = String::new();
        let i = &self.0;
        gauge(
            &mut out,
            "router_nats_connected",
            "1 while the NATS client is connected, else 0.",
            b(i.connected.load(Ordering::SeqCst)),
        );
        gauge(
            &mut out,
            "router_ready",
            "1 while /readyz answers 200: connected, streams and consumers set up, not shutting down; else 0.",
            b(self.ready()),
        );
        counter(
            &mut out,
            "router_nats_reconnects_total",
            "Reconnections to NATS after a disconnect (the first connect is not counted).",
            i.reconnects.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "router_nats_disconnects_total",
            "Disconnections from NATS seen by the client's event callback.",
            i.disconnects.load(Ordering::Relaxed),
        );

        let streams = i.streams.lock().map(|s| s.clone()).unwrap_or_default();
        header(
            &mut out,
            "router_stream_replicas",
            "gauge",
            "Replicas of each stream the router uses (and the KV bucket's), as the server reported them at start.",
        );
        for s in &streams {
            let _ = writeln!(
                out,
                "router_stream_replicas{{stream=\"{}\"}} {}",
                label(&s.name),
                s.replicas
            );
        }
        gauge(
            &mut out,
            "router_streams_under_replicated",
            "Streams holding fewer replicas than the cluster can give (/readyz names each with its fix).",
            streams.iter().filter(|s| s.fix.is_some()).count() as u64,
        );

        render_core(&mut out, &snap.stats, &snap.tables);
        gauge(
            &mut out,
            "router_in_flight",
            "Messages (stream sequences) the core holds between delivery and fate.",
            snap.tables.in_flight as u64,
        );
        let sh = &snap.shell;
        gauge(
            &mut out,
            "router_io_in_flight",
            "Publishes, extension requests and KV operations sent and awaiting their outcome or time-out.",
            sh.io_in_flight,
        );
        gauge(
            &mut out,
            "router_deliveries_held",
            "Ack subjects held by the host for deliveries not yet settled.",
            sh.deliveries_held,
        );
        gauge(
            &mut out,
            "router_timers",
            "Timers the core has armed and that have not fired yet.",
            sh.timers,
        );
        header(
            &mut out,
            "router_queue_depth",
            "gauge",
            "Messages waiting in each bounded queue of the shell, by queue.",
        );
        for (queue, depth, _) in &sh.queues {
            let _ = writeln!(out, "router_queue_depth{{queue=\"{queue}\"}} {depth}");
        }
        header(
            &mut out,
            "router_queue_capacity",
            "gauge",
            "The bound (messages) of each queue of the shell, by queue.",
        );
        for (queue, _, bound) in &sh.queues {
            let _ = writeln!(out, "router_queue_capacity{{queue=\"{queue}\"}} {bound}");
        }
        counter(
            &mut out,
            "router_deliveries_evicted_total",
            "Unsettled deliveries whose ack subject was evicted from the bounded handle table (the server redelivers them).",
            sh.deliveries_evicted,
        );
        counter(
            &mut out,
            "router_inbound_evicted_total",
            "Inbound requests whose reply subject was evicted from the bounded handle table (left unanswered).",
            sh.inbound_evicted,
        );
        counter(
            &mut out,
            "router_outbox_dropped_total",
            "Settles or responses dropped because the outbox was full.",
            sh.outbox_dropped,
        );
        counter(
            &mut out,
            "router_policy_reloads_total",
            "Policy sets (and extension registries) reloaded and put in force (SIGHUP).",
            sh.policy_reloads,
        );
        counter(
            &mut out,
            "router_policy_reloads_refused_total",
            "Policy reloads refused whole because a file did not load; the running set stayed.",
            sh.policy_reloads_refused,
        );
        per_consumer(
            &mut out,
            "router_consumer_deliveries_total",
            "JetStream deliveries fed to the core, by consumer.",
            &sh.consumers,
            |c| c.deliveries,
        );
        per_consumer(
            &mut out,
            "router_pull_restarts_total",
            "Pull streams re-created because no message or idle heartbeat came for two heartbeat intervals.",
            &sh.consumers,
            |c| c.pull_restarts,
        );
        per_consumer(
            &mut out,
            "router_pull_leader_moves_total",
            "Pull streams re-created because JetStream elected a new leader for the consumer (its LEADER_ELECTED advisory).",
            &sh.consumers,
            |c| c.pull_leader_moves,
        );
        header(
            &mut out,
            "router_delivery_age_seconds",
            "histogram",
            "Age of a delivery when the core takes it: from the server storing the message (its first store, so a redelivery's age includes the wait before it) to the driver handing it over.",
        );
        for c in &sh.consumers {
            c.ages
                .render(&mut out, "router_delivery_age_seconds", c.role);
        }
        header(
            &mut out,
            "router_decide_duration_seconds",
            "histogram",
            "Decide messages from the hand-over to the core to their ack, sent once the reply (and any assignment) was confirmed: the decide latency SLI.",
        );
        let les: Vec<f64> = crate::host::durations::DURATION_BUCKETS_MS
            .iter()
            .map(|ms| *ms as f64 / 1e3)
            .collect();
        let d = &sh.decide_durations;
        render_histogram(
            &mut out,
            "router_decide_duration_seconds",
            "",
            &les,
            &d.counts,
            d.sum_ms as f64 / 1e3,
        );
        render_breakers(&mut out, &snap.breakers);
        header(
            &mut out,
            "router_build_info",
            "gauge",
            "1, labelled with the version of the running binary.",
        );
        let _ = writeln!(
            out,
            "router_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        out
    }
}

fn b(v: bool) -> u64 {
    u64::from(v)
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {v}");
}

fn gauge(out: &mut String, name: &str, help: &str, v: u64) {
    header(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {v}");
}

/// The core's counters and table sizes, under the names `core_counters` declares.
fn render_core(out: &mut String, stats: &Stats, tables: &TableSizes) {
    for c in CORE_COUNTERS {
        header(out, c.name, "counter", c.help);
        for s in c.series {
            let value = (s.read)(stats);
            match c.label {
                Some(label) => {
                    let _ = writeln!(out, "{}{{{label}=\"{}\"}} {value}", c.name, s.label_value);
                }
                None => {
                    let _ = writeln!(out, "{} {value}", c.name);
                }
            }
        }
    }
    header(out, TABLE_ENTRIES, "gauge", TABLE_ENTRIES_HELP);
    for (table, _, read) in CORE_TABLES {
        let _ = writeln!(out, "{TABLE_ENTRIES}{{table=\"{table}\"}} {}", read(tables));
    }
}

/// One gauge per breaker (0 closed, 1 open, 2 half-open; upstream's
/// `router_circuit_breaker_state`), and how many breakers are in each state.
fn render_breakers(out: &mut String, b: &BreakerViews) {
    use crate::core::breaker::BreakerState;
    header(
        out,
        "router_circuit_breaker_state",
        "gauge",
        "Provider breaker state per (tenant, provider): 0 closed, 1 open, 2 half-open.",
    );
    for v in &b.providers {
        let _ = writeln!(
            out,
            "router_circuit_breaker_state{{tenant_id=\"{}\",provider_id=\"{}\"}} {}",
            label(&v.tenant_id),
            label(&v.provider_id),
            v.state.gauge()
        );
    }
    header(
        out,
        "router_circuit_breakers",
        "gauge",
        "Provider breakers (tenant, provider) in each state: closed, open, half_open.",
    );
    for state in [
        BreakerState::Closed,
        BreakerState::Open,
        BreakerState::HalfOpen,
    ] {
        let n = b.providers.iter().filter(|v| v.state == state).count();
        let _ = writeln!(
            out,
            "router_circuit_breakers{{state=\"{}\"}} {n}",
            state.as_str()
        );
    }
    header(
        out,
        "router_extension_breaker_state",
        "gauge",
        "Extension breaker state: 0 closed, 1 open, 2 half-open.",
    );
    for v in &b.extensions {
        let _ = writeln!(
            out,
            "router_extension_breaker_state{{extension_id=\"{}\"}} {}",
            label(&v.provider_id),
            v.state.gauge()
        );
    }
}

/// A counter family with one sample per consumer (`consumer` label: its role).
fn per_consumer(
    out: &mut String,
    name: &str,
    help: &str,
    consumers: &[ConsumerCounters],
    value: impl Fn(&ConsumerCounters) -> u64,
) {
    header(out, name, "counter", help);
    for c in consumers {
        let _ = writeln!(out, "{name}{{consumer=\"{}\"}} {}", c.role, value(c));
    }
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    /// Every metric family the router exports, with its type, as dashboards and alerts
    /// know them. Changing or removing a name here is a breaking change for operators:
    /// docs/CONFIG.md ("Metrics") must say so.
    const EXPORTED: &[(&str, &str)] = &[
        ("router_nats_connected", "gauge"),
        ("router_ready", "gauge"),
        ("router_nats_reconnects_total", "counter"),
        ("router_nats_disconnects_total", "counter"),
        ("router_stream_replicas", "gauge"),
        ("router_streams_under_replicated", "gauge"),
        ("router_decisions_total", "counter"),
        ("router_dlq_total", "counter"),
        ("router_jetstream_acks_total", "counter"),
        ("router_deliveries_total", "counter"),
        ("router_rejected_total", "counter"),
        ("router_publish_failures_total", "counter"),
        ("router_redelivered_after_settle_total", "counter"),
        ("router_idempotent_replays_total", "counter"),
        ("router_overload_naks_total", "counter"),
        ("router_overload_dead_letters_total", "counter"),
        ("router_backpressure_naks_total", "counter"),
        ("router_rate_limited_total", "counter"),
        ("router_rate_admitted_total", "counter"),
        ("router_breaker_records_total", "counter"),
        ("router_assignments_published_total", "counter"),
        ("router_assignments_skipped_total", "counter"),
        ("router_extension_calls_total", "counter"),
        ("router_extension_failures_total", "counter"),
        ("router_results_total", "counter"),
        ("router_results_duplicate_total", "counter"),
        ("router_usage_emitted_total", "counter"),
        ("router_assignment_acks_total", "counter"),
        ("router_inbound_requests_total", "counter"),
        ("router_admin_refused_total", "counter"),
        ("router_disconnects_total", "counter"),
        ("router_exhausted_unseen_total", "counter"),
        ("router_shared_claims_total", "counter"),
        ("router_shared_adopted_total", "counter"),
        ("router_shared_failures_total", "counter"),
        ("router_shared_unreadable_total", "counter"),
        ("router_shared_sessions_adopted_total", "counter"),
        ("router_table_entries", "gauge"),
        ("router_in_flight", "gauge"),
        ("router_io_in_flight", "gauge"),
        ("router_deliveries_held", "gauge"),
        ("router_timers", "gauge"),
        ("router_queue_depth", "gauge"),
        ("router_queue_capacity", "gauge"),
        ("router_deliveries_evicted_total", "counter"),
        ("router_inbound_evicted_total", "counter"),
        ("router_outbox_dropped_total", "counter"),
        ("router_policy_reloads_total", "counter"),
        ("router_policy_reloads_refused_total", "counter"),
        ("router_consumer_deliveries_total", "counter"),
        ("router_pull_restarts_total", "counter"),
        ("router_pull_leader_moves_total", "counter"),
        ("router_delivery_age_seconds", "histogram"),
        ("router_decide_duration_seconds", "histogram"),
        ("router_circuit_breaker_state", "gauge"),
        ("router_circuit_breakers", "gauge"),
        ("router_extension_breaker_state", "gauge"),
        ("router_build_info", "gauge"),
    ];

    /// `(name, type, help)` of every family in `text`, in order.
    fn families(text: &str) -> Vec<(String, String, String)> {
        let mut help = BTreeMap::new();
        let mut out = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
                help.insert(name.to_string(), text.to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                let h = help.get(name).cloned().unwrap_or_default();
                out.push((name.to_string(), kind.to_string(), h));
            }
        }
        out
    }

    #[test]
    fn exported_names_are_the_pinned_and_documented_ones() {
        let text = Metrics::default().render();
        let got = families(&text);
        let names: Vec<(&str, &str)> = got
            .iter()
            .map(|(n, k, _)| (n.as_str(), k.as_str()))
            .collect();
        assert_eq!(
            names, EXPORTED,
            "the exported metric families changed: a rename breaks dashboards and alerts"
        );

        let mut helps = BTreeMap::new();
        for (name, _, help) in &got {
            assert!(help.len() >= 20, "{name}: no real HELP line: {help:?}");
            if let Some(other) = helps.insert(help.clone(), name.clone()) {
                panic!("{name} and {other} share the HELP line {help:?}");
            }
        }

        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/CONFIG.md"),
        )
        .unwrap();
        let documented: Vec<(String, String)> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("| `router_"))
            .map(|rest| {
                let mut cells = rest.split('|').map(str::trim);
                let name = format!("router_{}", cells.next().unwrap().trim_end_matches('`'));
                (name, cells.next().unwrap_or("").to_string())
            })
            .collect();
        let documented: Vec<(&str, &str)> = documented
            .iter()
            .map(|(n, k)| (n.as_str(), k.as_str()))
            .collect();
        let pinned: BTreeSet<_> = EXPORTED.iter().copied().collect();
        let in_doc: BTreeSet<_> = documented.iter().copied().collect();
        assert_eq!(
            in_doc, pinned,
            "docs/CONFIG.md's metrics table (name, type) differs from what is exported"
        );
    }

    #[test]
    fn delivery_ages_render_as_a_cumulative_histogram() {
        let mut ages = AgeHistogram::default();
        for us in [100, 400, 3_000, 200_000_000] {
            ages.observe(us);
        }
        assert_eq!(ages.count(), 4);
        let m = Metrics::default();
        m.publish(
            &Stats::default(),
            TableSizes::default(),
            ShellCounters {
                consumers: vec![ConsumerCounters {
                    ages,
                    ..ConsumerCounters::new("decide")
                }],
                ..ShellCounters::default()
            },
        );
        let text = m.render();
        for line in [
            "# TYPE router_delivery_age_seconds histogram",
            "router_delivery_age_seconds_bucket{consumer=\"decide\",le=\"0.0005\"} 2",
            "router_delivery_age_seconds_bucket{consumer=\"decide\",le=\"0.005\"} 3",
            "router_delivery_age_seconds_bucket{consumer=\"decide\",le=\"120\"} 3",
            "router_delivery_age_seconds_bucket{consumer=\"decide\",le=\"+Inf\"} 4",
            "router_delivery_age_seconds_count{consumer=\"decide\"} 4",
            "router_delivery_age_seconds_sum{consumer=\"decide\"} 200.0035",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }

    #[test]
    fn readiness_follows_connection_streams_and_shutdown() {
        let m = Metrics::default();
        assert!(!m.ready());
        assert!(
            !m.set_connected(true),
            "the first connect is not a reconnect"
        );
        assert!(!m.ready(), "streams not set up yet");
        m.set_streams_ready(true);
        assert!(m.ready());
        m.set_connected(false);
        assert!(!m.ready());
        assert!(m.set_connected(true));
        assert!(m.render().contains("router_nats_reconnects_total 1"));
        m.set_shutting_down();
        assert!(!m.ready());
    }

    #[test]
    fn an_under_replicated_stream_is_a_gauge_and_a_readiness_warning() {
        use crate::shell::cluster::UnderReplicated;
        use crate::shell::nats::StreamState;
        let m = Metrics::default();
        assert_eq!(m.readiness_detail(), "");
        m.set_streams(&[
            StreamState {
                name: "BEAMLINE_DECIDE".into(),
                replicas: 1,
                under: Some(UnderReplicated {
                    stream: "BEAMLINE_DECIDE".into(),
                    have: 1,
                    want: 3,
                }),
            },
            StreamState {
                name: "BEAMLINE_DLQ".into(),
                replicas: 3,
                under: None,
            },
        ]);
        let text = m.render();
        for line in [
            "router_stream_replicas{stream=\"BEAMLINE_DECIDE\"} 1",
            "router_stream_replicas{stream=\"BEAMLINE_DLQ\"} 3",
            "router_streams_under_replicated 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        let detail = m.readiness_detail();
        assert!(
            detail.contains("stream BEAMLINE_DECIDE has 1 replica(s)")
                && detail.contains("fix: nats stream edit BEAMLINE_DECIDE --replicas 3")
                && !detail.contains("BEAMLINE_DLQ"),
            "{detail}"
        );
    }

    #[test]
    fn every_breaker_has_its_gauge() {
        use crate::core::breaker::{BreakerState, BreakerView};
        let view = |tenant: &str, provider: &str, state| BreakerView {
            tenant_id: tenant.into(),
            provider_id: provider.into(),
            state,
            failure_count: 0,
            window_requests: 0,
            window_failures: 0,
            probes_in_flight: 0,
            remaining_open_ms: 0,
        };
        let m = Metrics::default();
        m.publish_breakers(BreakerViews {
            providers: vec![
                view("acme", "openai", BreakerState::Open),
                view("acme", "anthropic", BreakerState::Closed),
                view("ev\"il", "x", BreakerState::HalfOpen),
            ],
            extensions: vec![view("", "pii_guard", BreakerState::Open)],
        });
        let text = m.render();
        for line in [
            "router_circuit_breaker_state{tenant_id=\"acme\",provider_id=\"openai\"} 1",
            "router_circuit_breaker_state{tenant_id=\"acme\",provider_id=\"anthropic\"} 0",
            "router_circuit_breaker_state{tenant_id=\"ev\\\"il\",provider_id=\"x\"} 2",
            "router_circuit_breakers{state=\"open\"} 1",
            "router_circuit_breakers{state=\"closed\"} 1",
            "router_circuit_breakers{state=\"half_open\"} 1",
            "router_extension_breaker_state{extension_id=\"pii_guard\"} 1",
        ] {
            assert!(text.contains(line), "missing {line}:\n{text}");
        }
    }

    #[test]
    fn every_core_counter_and_table_is_exposed() {
        let m = Metrics::default();
        let stats = Stats {
            replies_ok: 3,
            naks: 2,
            usage_emitted: 1,
            ..Stats::default()
        };
        m.publish(
            &stats,
            TableSizes {
                breakers: 4,
                ..TableSizes::default()
            },
            ShellCounters {
                queues: vec![("outbox", 7, 4096)],
                ..ShellCounters::default()
            },
        );
        let text = m.render();
        assert!(
            text.contains("router_decisions_total{result=\"ok\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("router_jetstream_acks_total{kind=\"nak\"} 2"),
            "{text}"
        );
        assert!(text.contains("router_usage_emitted_total 1"), "{text}");
        assert!(
            text.contains("router_queue_depth{queue=\"outbox\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("router_queue_capacity{queue=\"outbox\"} 4096"),
            "{text}"
        );
        assert!(
            text.contains("router_table_entries{table=\"breakers\"} 4"),
            "{text}"
        );
        assert!(
            text.contains("router_table_entries{table=\"sticky_sessions\"} 0"),
            "{text}"
        );
        assert!(
            !text.contains("router_acks_total"),
            "aliased counters appear once"
        );
    }
}
