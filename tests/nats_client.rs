//! The typed client against a real nats-server and the `beamline-router` binary: a
//! decision, a typed error for an unknown policy, byte-identical replays for a repeated
//! idempotency key, retries across a router that is not there yet, and the `decide`
//! command's function.
//!
//! Needs nats-server (`$NATS_SERVER_BIN`, `nats-server` on PATH, or
//! `scripts/install-nats-server.sh`); never skips.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod harness {
    //! A copy of the few helpers this file needs (tests/support belongs to the shell).

    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

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
        let on_path = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("nats-server"))
                .find(|p| {
                    Command::new(p)
                        .arg("--version")
                        .output()
                        .is_ok_and(|o| o.status.success())
                })
        });
        if let Some(bin) = on_path {
            return bin;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-nats-server.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .expect("run install-nats-server.sh");
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success() && Path::new(&path).is_file(),
            "no nats-server: {path:?}"
        );
        PathBuf::from(path)
    }

    fn port_open(port: u16) -> bool {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    }

    pub struct NatsServer {
        pub port: u16,
        _dir: tempfile::TempDir,
        child: Child,
    }

    impl NatsServer {
        pub fn start() -> NatsServer {
            let bin = nats_server_bin();
            eprintln!("using {}", bin.display());
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("free port");
            let dir = tempfile::tempdir().expect("temp dir");
            let child = Command::new(&bin)
                .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
                .arg(dir.path().join("store"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start nats-server");
            let deadline = Instant::now() + Duration::from_secs(10);
            while !port_open(port) {
                assert!(Instant::now() < deadline, "nats-server did not listen");
                std::thread::sleep(Duration::from_millis(25));
            }
            NatsServer {
                port,
                _dir: dir,
                child,
            }
        }

        pub fn url(&self) -> String {
            format!("nats://127.0.0.1:{}", self.port)
        }
    }

    impl Drop for NatsServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// `<dir>/acme/default.json`: openai 70 / anthropic 30.
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

    pub struct Router {
        child: Option<Child>,
        log_path: PathBuf,
        _log_dir: tempfile::TempDir,
    }

    impl Router {
        /// Start `serve`; with `wait_ready`, return once it logs "router ready".
        pub fn start(url: &str, policies: &Path, extra: &[&str], wait_ready: bool) -> Router {
            let log_dir = tempfile::tempdir().expect("temp dir");
            let log_path = log_dir.path().join("router.log");
            let log = std::fs::File::create(&log_path).expect("router log");
            let child = Command::new(env!("CARGO_BIN_EXE_beamline-router"))
                .arg("serve")
                .args(["--nats-url", url])
                .arg("--policies")
                .arg(policies)
                .args(extra)
                .env("RUST_LOG", "info,async_nats=warn")
                .env("NO_COLOR", "1")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start beamline-router");
            let router = Router {
                child: Some(child),
                log_path,
                _log_dir: log_dir,
            };
            if wait_ready {
                router.wait_ready();
            }
            router
        }

        pub fn wait_ready(&self) {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !self.log().contains("router ready") {
                assert!(
                    Instant::now() < deadline,
                    "router not ready:\n{}",
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(25));
            }
        }

        pub fn log(&self) -> String {
            let mut text = String::new();
            if let Ok(mut f) = std::fs::File::open(&self.log_path) {
                let _ = f.read_to_string(&mut text);
            }
            text
        }
    }

    impl Drop for Router {
        fn drop(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

use std::time::Duration;

use beamline_router::client::{
    cli, ClientError, DecideClient, DecideOptions, DecideReply, DecideRequestBuilder,
};
use beamline_router::contracts::{DecisionReason, ErrorCode};
use harness::{acme_policies, NatsServer, Router};
use serde_json::{json, Map, Value};

fn payload(n: usize) -> Map<String, Value> {
    match json!({"prompt": format!("hello number {n}")}) {
        Value::Object(map) => map,
        _ => unreachable!(),
    }
}

fn opts() -> DecideOptions {
    DecideOptions::default().with_timeout(Duration::from_secs(5))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_errors_and_idempotent_replays() {
    let server = NatsServer::start();
    let policies = acme_policies();
    let router = Router::start(&server.url(), policies.path(), &[], true);
    let nats = async_nats::connect(server.url()).await.unwrap();
    let client = DecideClient::connect(nats).await.unwrap();

    // A decision.
    let answer = client
        .decide_raw(
            DecideRequestBuilder::new("acme", "text.generate")
                .request_id("c-1")
                .payload(payload(1)),
            &opts(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}; router log:\n{}", router.log()));
    println!("decision: {}", String::from_utf8_lossy(&answer.raw));
    assert_eq!(answer.attempts, 1);
    match &answer.reply {
        DecideReply::Decision(d) => {
            assert!(d.ok);
            assert!(["openai", "anthropic"].contains(&d.decision.provider_id.as_str()));
            assert_eq!(d.decision.reason, DecisionReason::Weighted);
            assert_eq!(d.context.request_id.as_deref(), Some("c-1"));
        }
        other => panic!("expected a decision, got {other:?}"),
    }

    // An unknown policy: the typed error.
    let reply = client
        .decide(
            DecideRequestBuilder::new("acme", "text.generate")
                .request_id("c-2")
                .policy_id("no-such-policy")
                .payload(payload(2)),
            &opts(),
        )
        .await
        .unwrap();
    println!("unknown policy: {reply:?}");
    match reply {
        DecideReply::Error(e) => {
            assert!(!e.ok);
            assert_eq!(e.error.code, ErrorCode::PolicyNotFound);
            assert_eq!(e.context.request_id.as_deref(), Some("c-2"));
        }
        other => panic!("expected policy_not_found, got {other:?}"),
    }

    // The same idempotency key twice, and again with a different payload: the same
    // bytes each time. Twenty keys, so that a weighted choice that differed would show.
    for n in 0..20 {
        let key = format!("order-{n}");
        let request = || {
            DecideRequestBuilder::new("acme", "text.generate")
                .idempotency_key(key.clone())
                .payload(payload(n))
        };
        let first = client.decide_raw(request(), &opts()).await.unwrap();
        let second = client.decide_raw(request(), &opts()).await.unwrap();
        let third = client
            .decide_raw(request().payload(payload(n + 1000)), &opts())
            .await
            .unwrap();
        assert!(first.reply.is_ok(), "{:?}", first.reply);
        assert_eq!(first.request_id, key, "the key is the request id");
        assert_eq!(first.raw, second.raw, "{key}: replies differ");
        assert_eq!(first.raw, third.raw, "{key}: replies differ");
    }
    println!("client stats: {:?}", client.stats());
    let stats = client.stats();
    assert_eq!(stats.republishes, 0, "{stats:?}");
    assert_eq!(stats.unconfirmed_publishes, 0, "{stats:?}");
    assert_eq!(stats.unmatched_replies, 0, "{stats:?}");
}

/// The client publishes before any router runs: the request waits in the stream, the
/// client re-publishes on its timeouts, and the router, once up, answers every copy
/// with the same bytes (the first from a decision, the others from the answer book).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_reach_a_router_that_starts_late() {
    let server = NatsServer::start();
    let policies = acme_policies();
    // A first router creates the streams and stops; the decide stream keeps what arrives.
    let first = Router::start(&server.url(), policies.path(), &[], true);
    drop(first);

    let nats = async_nats::connect(server.url()).await.unwrap();
    let client = DecideClient::connect(nats.clone()).await.unwrap();
    // Watch the client's inbox too, to see every copy of the reply.
    let mut wire = nats.subscribe(client.inbox().to_string()).await.unwrap();
    nats.flush().await.unwrap();

    let options = DecideOptions {
        timeout: Duration::from_millis(700),
        max_attempts: 8,
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_millis(400),
        publish_timeout: Duration::from_secs(2),
    };
    let call = tokio::spawn(async move {
        let answer = client
            .decide_raw(
                DecideRequestBuilder::new("acme", "text.generate")
                    .request_id("late-1")
                    .payload(payload(1)),
                &options,
            )
            .await;
        (answer, client.stats())
    });
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let router =
        tokio::task::block_in_place(|| Router::start(&server.url(), policies.path(), &[], true));
    let (answer, stats) = call.await.unwrap();
    let answer = answer.unwrap_or_else(|e| panic!("{e}; router log:\n{}", router.log()));
    println!(
        "answered after {} attempts; stats {stats:?}",
        answer.attempts
    );
    assert!(
        answer.attempts > 1,
        "the router was down: a retry was needed"
    );
    assert!(answer.reply.is_ok());

    // Every stored copy is answered, all with the first reply's bytes.
    let mut copies = Vec::new();
    while let Ok(Some(m)) =
        tokio::time::timeout(Duration::from_secs(2), futures::StreamExt::next(&mut wire)).await
    {
        copies.push(m.payload);
    }
    println!("{} copies of the reply on the wire", copies.len());
    assert_eq!(
        copies.len() as u64,
        stats.publishes,
        "one reply per stored copy"
    );
    assert!(copies.iter().all(|c| *c == answer.raw), "replies differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_stream_is_a_publish_error_and_no_router_a_timeout() {
    let server = NatsServer::start();
    let nats = async_nats::connect(server.url()).await.unwrap();
    let client = DecideClient::connect(nats).await.unwrap();
    // A PubAck on a busy machine can take a while: a slow one must not turn the
    // "no router" case into a publish error.
    let options = DecideOptions {
        timeout: Duration::from_secs(1),
        max_attempts: 2,
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_millis(50),
        publish_timeout: Duration::from_secs(5),
    };
    let request = || {
        DecideRequestBuilder::new("acme", "text.generate")
            .request_id("x-1")
            .payload(payload(1))
    };
    // No stream captures the subject: JetStream answers "no responders".
    let err = client.decide(request(), &options).await.unwrap_err();
    println!("without a stream: {err}");
    assert!(
        matches!(err, ClientError::Publish { attempts: 2, .. }),
        "{err:?}"
    );

    // The stream exists but no router consumes it.
    let policies = acme_policies();
    drop(tokio::task::block_in_place(|| {
        Router::start(&server.url(), policies.path(), &[], true)
    }));
    let err = client.decide(request(), &options).await.unwrap_err();
    println!("without a router: {err}");
    assert!(
        matches!(err, ClientError::Timeout { attempts: 2 }),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_decide_command_prints_the_reply() {
    let server = NatsServer::start();
    let policies = acme_policies();
    let _router = Router::start(&server.url(), policies.path(), &[], true);
    let code = cli::decide_command(
        &server.url(),
        "acme",
        "text.generate",
        None,
        Some(r#"{"prompt":"from the terminal"}"#),
        Duration::from_secs(6),
    )
    .await
    .unwrap();
    assert_eq!(code, 0);
    let code = cli::decide_command(
        &server.url(),
        "acme",
        "text.generate",
        Some("missing"),
        None,
        Duration::from_secs(6),
    )
    .await
    .unwrap();
    assert_eq!(code, 1, "an error reply exits 1");
}
