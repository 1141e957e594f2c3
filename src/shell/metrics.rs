//! `/metrics` (Prometheus text format), `/healthz` and `/readyz` over a tiny HTTP/1.1
//! server on a tokio `TcpListener`: GET only, one request per connection.
//!
//! The driver owns the core, so it publishes a snapshot of the core's counters and table
//! sizes once a second (and at shutdown); the connection state is set by the NATS event
//! callback directly.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::core::{BreakerViews, Stats, TableSizes};

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
        let mut cumulative = 0;
        for (i, n) in self.counts.iter().enumerate() {
            cumulative += n;
            let le = match AGE_BUCKETS_US.get(i) {
                Some(us) => format!("{}", *us as f64 / 1e6),
                None => "+Inf".to_string(),
            };
            let _ = writeln!(
                out,
                "{name}_bucket{{consumer=\"{consumer}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_sum{{consumer=\"{consumer}\"}} {}",
            self.sum_us as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{{consumer=\"{consumer}\"}} {cumulative}");
    }
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
            "1 while connected to NATS.",
            b(i.connected.load(Ordering::SeqCst)),
        );
        gauge(
            &mut out,
            "router_ready",
            "1 while connected, streams set up and not shutting down.",
            b(self.ready()),
        );
        counter(
            &mut out,
            "router_nats_reconnects_total",
            "Reconnections to NATS after a disconnect.",
            i.reconnects.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "router_nats_disconnects_total",
            "Disconnections from NATS.",
            i.disconnects.load(Ordering::Relaxed),
        );

        let st = &snap.stats;
        header(
            &mut out,
            "router_decisions_total",
            "counter",
            "Decide replies sent, by result.",
        );
        let _ = writeln!(
            out,
            "router_decisions_total{{result=\"ok\"}} {}",
            st.replies_ok
        );
        let _ = writeln!(
            out,
            "router_decisions_total{{result=\"error\"}} {}",
            st.replies_error
        );
        counter(
            &mut out,
            "router_dlq_total",
            "DLQ records written.",
            st.dlq_records,
        );
        header(
            &mut out,
            "router_jetstream_acks_total",
            "counter",
            "Settles sent to JetStream, by kind.",
        );
        for (kind, n) in [
            ("ack", st.acks),
            ("nak", st.naks),
            ("term", st.terms),
            ("in_progress", st.in_progress),
        ] {
            let _ = writeln!(out, "router_jetstream_acks_total{{kind=\"{kind}\"}} {n}");
        }
        // Every other core counter, under its own name.
        if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(st) {
            for (name, value) in fields {
                if matches!(
                    name.as_str(),
                    "replies_ok"
                        | "replies_error"
                        | "dlq_records"
                        | "acks"
                        | "naks"
                        | "terms"
                        | "in_progress"
                ) {
                    continue;
                }
                if let Some(n) = value.as_u64() {
                    counter(
                        &mut out,
                        &format!("router_{name}_total"),
                        "Core counter (see core::Stats).",
                        n,
                    );
                }
            }
        }

        header(
            &mut out,
            "router_table_entries",
            "gauge",
            "Entries in each bounded table of the core.",
        );
        if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(snap.tables) {
            for (name, value) in fields {
                let _ = writeln!(
                    out,
                    "router_table_entries{{table=\"{name}\"}} {}",
                    value.as_u64().unwrap_or(0)
                );
            }
        }
        gauge(
            &mut out,
            "router_in_flight",
            "Messages held by the core.",
            snap.tables.in_flight as u64,
        );
        let sh = &snap.shell;
        gauge(
            &mut out,
            "router_io_in_flight",
            "Publishes and requests awaiting their outcome.",
            sh.io_in_flight,
        );
        gauge(
            &mut out,
            "router_deliveries_held",
            "Ack subjects held for unsettled deliveries.",
            sh.deliveries_held,
        );
        gauge(&mut out, "router_timers", "Core timers armed.", sh.timers);
        header(
            &mut out,
            "router_queue_depth",
            "gauge",
            "Messages waiting in each bounded queue of the shell.",
        );
        for (queue, depth, _) in &sh.queues {
            let _ = writeln!(out, "router_queue_depth{{queue=\"{queue}\"}} {depth}");
        }
        header(
            &mut out,
            "router_queue_capacity",
            "gauge",
            "The bound of each queue of the shell.",
        );
        for (queue, _, bound) in &sh.queues {
            let _ = writeln!(out, "router_queue_capacity{{queue=\"{queue}\"}} {bound}");
        }
        counter(
            &mut out,
            "router_deliveries_evicted_total",
            "Unsettled deliveries dropped from the bounded handle table.",
            sh.deliveries_evicted,
        );
        counter(
            &mut out,
            "router_inbound_evicted_total",
            "Inbound requests dropped from the bounded handle table.",
            sh.inbound_evicted,
        );
        counter(
            &mut out,
            "router_outbox_dropped_total",
            "Settles or responses dropped because the outbox was full.",
            sh.outbox_dropped,
        );
        header(
            &mut out,
            "router_consumer_deliveries_total",
            "counter",
            "JetStream deliveries fed to the core, by consumer.",
        );
        for c in &sh.consumers {
            let _ = writeln!(
                out,
                "router_consumer_deliveries_total{{consumer=\"{}\"}} {}",
                c.role, c.deliveries
            );
        }
        header(
            &mut out,
            "router_pull_restarts_total",
            "counter",
            "Pull streams re-created because no message or idle heartbeat came for two heartbeat intervals.",
        );
        for c in &sh.consumers {
            let _ = writeln!(
                out,
                "router_pull_restarts_total{{consumer=\"{}\"}} {}",
                c.role, c.pull_restarts
            );
        }
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
        render_breakers(&mut out, &snap.breakers);
        header(&mut out, "router_build_info", "gauge", "Build information.");
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

/// Bind `addr` and serve until the process ends. Bound before NATS is reached, so that
/// `/healthz` answers (and `/readyz` says no) while the router is still connecting.
pub async fn spawn_server(addr: SocketAddr, metrics: Metrics) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on metrics.listen {addr}: {e}"))?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, "metrics and health endpoints listening");
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((socket, _)) => {
                    let metrics = metrics.clone();
                    tokio::spawn(async move {
                        let _ =
                            tokio::time::timeout(Duration::from_secs(10), answer(socket, metrics))
                                .await;
                    });
                }
                Err(err) => {
                    tracing::warn!(%err, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(local)
}

async fn answer(mut socket: TcpStream, metrics: Metrics) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut chunk).await?;
        if n == 0 || buf.len() > 8192 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".to_string()),
        ("GET", "/readyz") if metrics.ready() => ("200 OK", "text/plain", "ready\n".to_string()),
        ("GET", "/readyz") => (
            "503 Service Unavailable",
            "text/plain",
            "not ready\n".to_string(),
        ),
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_string(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(response.as_bytes()).await?;
    socket.shutdown().await
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
        "Provider breakers by state.",
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

/// A Prometheus label value: backslash, quote and newline escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

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
