//! What the bench reads about processes and the machine from `/proc`: CPU seconds per
//! process (so that CPU per request can be charged to the router, the nats-server and the
//! bench separately), peak RSS, the load average and the CPU model.

use std::process::Command;

/// CPU seconds (user + system) of a process, from `/proc/<pid>/stat`.
pub(super) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it are plain.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// `sysconf(_SC_CLK_TCK)`: 100 on every Linux this runs on (USER_HZ); `getconf` says so.
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A `Vm*` line of `/proc/<pid>/status`, in bytes.
pub(super) fn vm_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub(super) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub(super) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default()
}

/// CPU seconds of the router, the nats-server and the bench, when known.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct CpuSample {
    router: Option<f64>,
    nats: Option<f64>,
    bench: Option<f64>,
}

#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Pids {
    pub router: Option<u32>,
    pub nats: Option<u32>,
}

impl Pids {
    pub fn sample(&self) -> CpuSample {
        CpuSample {
            router: self.router.and_then(cpu_seconds),
            nats: self.nats.and_then(cpu_seconds),
            bench: cpu_seconds(std::process::id()),
        }
    }
}

/// CPU microseconds per request of each process between two samples.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub(super) struct CpuPerRequest {
    pub router_us: Option<f64>,
    pub nats_us: Option<f64>,
    pub bench_us: Option<f64>,
}

pub(super) fn cpu_per_request(before: CpuSample, after: CpuSample, requests: u64) -> CpuPerRequest {
    let per = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if requests > 0 => Some((b - a) * 1e6 / requests as f64),
        _ => None,
    };
    CpuPerRequest {
        router_us: per(before.router, after.router),
        nats_us: per(before.nats, after.nats),
        bench_us: per(before.bench, after.bench),
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_of_this_process_is_readable() {
        assert!(cpu_seconds(std::process::id()).is_some());
        assert!(vm_bytes(std::process::id(), "VmHWM:").is_some());
    }
}
