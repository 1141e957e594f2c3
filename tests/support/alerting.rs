//! The real alerting pipeline for the alert drill: a Prometheus and an Alertmanager as
//! child processes on free ports with temporary stores (killed on drop), and a webhook
//! receiver that records every notification Alertmanager delivers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use super::free_port;

/// A child process killed (and reaped) when dropped; its output goes to `log`.
pub struct Daemon {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn bin(var: &str, name: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| name.to_string())
}

fn spawn(bin: &str, args: &[String], dir: &Path, name: &str, port: u16) -> Daemon {
    let log = dir.join(format!("{name}.log"));
    let out = std::fs::File::create(&log).expect("daemon log");
    let child = Command::new(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin} (scripts/install-prometheus.sh): {e}"));
    super::wait_for_port(port, true, std::time::Duration::from_secs(20));
    Daemon { child, port, log }
}

/// Alertmanager delivering every group to `webhook_url`, resolved notifications too,
/// with waits of a second so that a drill takes seconds.
pub fn alertmanager(dir: &Path, webhook_url: &str) -> Daemon {
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: {webhook_url:?}\n        send_resolved: true\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let args = vec![
        format!("--config.file={}", config.display()),
        format!("--storage.path={}", dir.join("am-data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        // No peers: a lone instance, no gossip port.
        "--cluster.listen-address=".to_string(),
    ];
    spawn(
        &bin("ALERTMANAGER_BIN", "prometheus-alertmanager"),
        &args,
        dir,
        "alertmanager",
        port,
    )
}

/// Prometheus scraping `target` (job `beamline-router`) every second, evaluating
/// `rules` every second, and sending alerts to `alertmanager_port`.
pub fn prometheus(dir: &Path, target: &str, rules: &Path, alertmanager_port: u16) -> Daemon {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {:?}\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"127.0.0.1:{alertmanager_port}\"]\nscrape_configs:\n  - job_name: beamline-router\n    static_configs:\n      - targets: [{target:?}]\n",
            rules.display().to_string()
        ),
    )
    .unwrap();
    let port = free_port();
    let args = vec![
        format!("--config.file={}", config.display()),
        format!("--storage.tsdb.path={}", dir.join("prom-data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        // Send a firing alert again every second, not every minute.
        "--rules.alert.resend-delay=1s".to_string(),
    ];
    spawn(
        &bin("PROMETHEUS_BIN", "prometheus"),
        &args,
        dir,
        "prometheus",
        port,
    )
}

/// An HTTP server recording the JSON body of every POST (Alertmanager's webhook).
pub struct Webhook {
    pub url: String,
    pub received: Arc<Mutex<Vec<serde_json::Value>>>,
}

pub fn webhook() -> Webhook {
    let listener = TcpListener::bind("127.0.0.1:0").expect("webhook listener");
    let port = listener.local_addr().unwrap().port();
    let received: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let store = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
            let mut length = 0usize;
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                let l = line.trim_end().to_ascii_lowercase();
                if l.is_empty() {
                    break;
                }
                if let Some(v) = l.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0u8; length];
            if reader.read_exact(&mut body).is_ok() {
                if let Ok(v) = serde_json::from_slice(&body) {
                    store.lock().unwrap().push(v);
                }
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    Webhook {
        url: format!("http://127.0.0.1:{port}/alerts"),
        received,
    }
}
