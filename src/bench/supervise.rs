//! The bench's child processes: a nats-server on a free port with its store in a scratch
//! directory, and the router as a `serve` child with a policy of its own. Each is killed
//! when its guard is dropped, so that a failed or interrupted bench leaves nothing running;
//! each writes to a log file that an error message quotes.

use std::io::Read as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use tokio::time::Instant;

use super::{ROUTER_CONSUMER, ROUTER_STREAM, TENANT};

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A scratch directory removed on drop.
pub(super) struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new() -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("beamline-bench-{}-{nanos:08x}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(ScratchDir(path))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed on drop.
pub(super) struct ChildGuard {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        tracing::debug!(name = self.name, "child stopped");
    }
}

pub(super) fn start_nats_server(bin: &Path, dir: &Path) -> anyhow::Result<(ChildGuard, String)> {
    let port = free_port()?;
    let log = dir.join("nats-server.log");
    let file = std::fs::File::create(&log)?;
    let child = Command::new(bin)
        .args(["-js", "-a", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .arg("-sd")
        .arg(dir.join("store"))
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let mut guard = ChildGuard {
        name: "nats-server",
        child,
        log,
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if guard.exited() || std::time::Instant::now() > deadline {
            anyhow::bail!(
                "nats-server did not listen on {port}:\n{}",
                guard.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((guard, format!("nats://127.0.0.1:{port}")))
}

async fn pulling(js: &jetstream::Context) -> bool {
    let Ok(stream) = js.get_stream(ROUTER_STREAM).await else {
        return false;
    };
    stream
        .consumer_info(ROUTER_CONSUMER)
        .await
        .is_ok_and(|info| info.num_waiting > 0)
}

pub(super) async fn start_router(
    js: &jetstream::Context,
    bin: &Path,
    url: &str,
    dir: &Path,
    env: &[(String, String)],
) -> anyhow::Result<ChildGuard> {
    let policies = dir.join("policies");
    std::fs::create_dir_all(policies.join(TENANT))?;
    std::fs::write(
        policies.join(TENANT).join("default.json"),
        r#"{"version":"1.0","providers":[{"name":"openai","weight":70},{"name":"anthropic","weight":30}]}"#,
    )?;
    let log = dir.join("router.log");
    let file = std::fs::File::create(&log)?;
    // The production defaults (log level included), but no metrics port to collide on.
    let child = Command::new(bin)
        .arg("serve")
        .args(["--nats-url", url, "--node-id", "bench", "--metrics-listen="])
        .arg("--policies")
        .arg(&policies)
        .env("NO_COLOR", "1")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let mut guard = ChildGuard {
        name: "router",
        child,
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    // Ready once it logs so, or (with `RUST_LOG` quieter than info) once its decide
    // consumer has a pull request waiting.
    while !guard.log_text().contains("router ready") && !pulling(js).await {
        if guard.exited() || Instant::now() > deadline {
            anyhow::bail!("router did not become ready:\n{}", guard.log_text());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(guard)
}
