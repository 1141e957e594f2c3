//! The bench's report: a table for people, and the same figures as one `BENCH_JSON`
//! line (`Report` serialised) for scripts and docs/PERFORMANCE.md.

use super::phases::{LevelResult, SaturationResult};
use super::STALL_AFTER;

#[derive(Clone, Debug, serde::Serialize)]
pub(super) struct Report {
    pub nproc: usize,
    pub cpu_model: String,
    pub load_before: String,
    pub load_after: String,
    pub nats_server: String,
    pub quick: bool,
    pub raw: SaturationResult,
    pub router: SaturationResult,
    pub ratio: f64,
    pub levels: Vec<LevelResult>,
    pub router_peak_rss_bytes: Option<u64>,
    pub nats_peak_rss_bytes: Option<u64>,
    pub unconfirmed_publishes: u64,
    pub error_replies: u64,
    /// Raw saturation attempts that stalled and were repeated.
    pub raw_stalls: u32,
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into())
}

fn mib(v: Option<u64>) -> String {
    v.map(|b| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)))
        .unwrap_or_else(|| "-".into())
}

pub(super) fn print_report(r: &Report) {
    println!(
        "machine: nproc {} ({}); load average {} (before) / {} (after); nats-server {}",
        r.nproc, r.cpu_model, r.load_before, r.load_after, r.nats_server
    );
    println!(
        "\nsaturation (closed loop, {} requests in flight, {:.1} s measured after warm-up)",
        r.raw.outstanding, r.raw.secs
    );
    println!(
        "{:<8} {:>10} {:>9} {:>9} {:>9} {:>14} {:>12} {:>13} {:>5}",
        "path",
        "req/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "router µs/req",
        "nats µs/req",
        "bench µs/req",
        "lost"
    );
    for s in [&r.raw, &r.router] {
        println!(
            "{:<8} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>14} {:>12} {:>13} {:>5}",
            s.path,
            s.throughput,
            s.latency.p50_ms,
            s.latency.p99_ms,
            s.latency.p999_ms,
            fmt_opt(s.cpu.router_us),
            fmt_opt(s.cpu.nats_us),
            fmt_opt(s.cpu.bench_us),
            s.lost
        );
    }
    for s in [&r.raw, &r.router] {
        if s.stalled {
            println!("WARNING: the {} phase stalled (nothing completed for {STALL_AFTER:?}); its figures are not valid", s.path);
        }
    }
    if r.raw_stalls > 0 {
        println!(
            "(the raw phase stalled {} time(s) and was measured again)",
            r.raw_stalls
        );
    }
    println!("ratio router/raw: {:.3}", r.ratio);
    if !r.levels.is_empty() {
        println!("\nfixed offered load (open loop; latency from the intended send time)");
        println!(
            "{:<8} {:>5} {:>9} {:>9} {:>8} {:>8} {:>9} {:>8} {:>10} {:>14} {:>12} {:>5}",
            "path",
            "load",
            "offered",
            "achieved",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "late p99",
            "router µs/req",
            "nats µs/req",
            "lost"
        );
        for l in &r.levels {
            println!(
                "{:<8} {:>4.0}% {:>9.0} {:>9.0} {:>8.2} {:>8.2} {:>9.2} {:>8.2} {:>10.2} {:>14} {:>12} {:>5}",
                l.path,
                l.fraction * 100.0,
                l.offered,
                l.achieved,
                l.latency.p50_ms,
                l.latency.p99_ms,
                l.latency.p999_ms,
                l.latency.max_ms,
                l.send_lateness_p99_ms,
                fmt_opt(l.cpu.router_us),
                fmt_opt(l.cpu.nats_us),
                l.lost
            );
        }
    }
    println!(
        "\npeak RSS (VmHWM): router {}, nats-server {}; unconfirmed publishes {}, error replies {}",
        mib(r.router_peak_rss_bytes),
        mib(r.nats_peak_rss_bytes),
        r.unconfirmed_publishes,
        r.error_replies
    );
}
