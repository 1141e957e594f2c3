//! A JetStream cluster of nats-servers on loopback: free client and route ports,
//! a temporary store each, named `n1`, `n2`, ... so that a node restarted (or replaced
//! after its store is wiped) rejoins under the same name. Every wait is on a condition
//! the cluster reports, never a fixed sleep.

use std::time::{Duration, Instant};

use async_nats::jetstream;

use super::{free_port, NatsServer};

pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
    names: Vec<String>,
}

impl NatsCluster {
    /// Start `size` nodes routed to each other, and wait until JetStream answers
    /// (the meta group has a leader).
    pub async fn start(size: usize) -> NatsCluster {
        let client_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let route_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let routes = route_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let names: Vec<String> = (1..=size).map(|i| format!("n{i}")).collect();
        let mut nodes = Vec::new();
        for i in 0..size {
            let args = vec![
                "-n".to_string(),
                names[i].clone(),
                "--cluster_name".to_string(),
                "beamline-test".to_string(),
                "--cluster".to_string(),
                format!("nats://127.0.0.1:{}", route_ports[i]),
                "--routes".to_string(),
                routes.clone(),
            ];
            nodes.push(NatsServer::prepare("", client_ports[i], args));
        }
        for node in &mut nodes {
            node.start_again();
        }
        let cluster = NatsCluster { nodes, names };
        cluster.wait_jetstream(Duration::from_secs(30)).await;
        cluster
    }

    /// Every node's client URL, comma-separated (as `--nats-url` takes them).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A client of the cluster (any node).
    pub async fn client(&self) -> async_nats::Client {
        let addrs: Vec<async_nats::ServerAddr> = self
            .nodes
            .iter()
            .map(|n| n.url().parse().expect("url"))
            .collect();
        async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(addrs)
            .await
            .expect("connect to the cluster")
    }

    pub fn node(&mut self, name: &str) -> &mut NatsServer {
        let i = self
            .names
            .iter()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("no node {name}"));
        &mut self.nodes[i]
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Wait until JetStream answers an account-info request: the meta group has a
    /// leader and every node that is up has joined.
    pub async fn wait_jetstream(&self, timeout: Duration) {
        let client = self.client().await;
        let js = jetstream::new(client);
        let deadline = Instant::now() + timeout;
        loop {
            match js.query_account().await {
                Ok(_) => return,
                Err(err) if Instant::now() >= deadline => {
                    panic!(
                        "JetStream of the cluster not ready after {timeout:?}: {err}; n1 log:\n{}",
                        self.nodes[0].log()
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// The logs of every node, for a failure message.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .zip(&self.names)
            .map(|(n, name)| format!("--- {name}\n{}", tail(&n.log(), 40)))
            .collect()
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The current leader of `stream`, as the cluster reports it, once it has one.
pub async fn stream_leader(js: &jetstream::Context, stream: &str, timeout: Duration) -> String {
    leader_where(timeout, || async {
        let mut s = js.get_stream(stream).await.ok()?;
        let info = s.info().await.ok()?;
        info.cluster.as_ref()?.leader.clone()
    })
    .await
    .unwrap_or_else(|| panic!("stream {stream} has no leader after {timeout:?}"))
}

/// The current leader of durable `consumer` on `stream`, once it has one.
pub async fn consumer_leader(
    js: &jetstream::Context,
    stream: &str,
    consumer: &str,
    timeout: Duration,
) -> String {
    leader_where(timeout, || async {
        let s = js.get_stream(stream).await.ok()?;
        let mut c: jetstream::consumer::PullConsumer = s.get_consumer(consumer).await.ok()?;
        let info = c.info().await.ok()?;
        info.cluster.as_ref()?.leader.clone()
    })
    .await
    .unwrap_or_else(|| panic!("consumer {stream}/{consumer} has no leader after {timeout:?}"))
}

/// Replicas of `stream` as its configuration says.
pub async fn stream_replicas(js: &jetstream::Context, stream: &str) -> usize {
    let mut s = js
        .get_stream(stream)
        .await
        .unwrap_or_else(|e| panic!("stream {stream}: {e}"));
    s.info()
        .await
        .unwrap_or_else(|e| panic!("stream {stream}: {e}"))
        .config
        .num_replicas
}

async fn leader_where<F, Fut>(timeout: Duration, mut probe: F) -> Option<String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(leader) = probe().await.filter(|l| !l.is_empty()) {
            return Some(leader);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// From `since` (a fault) until a request published after it is answered: a fresh
/// request (its own id and idempotency key) is published every `every` on core NATS,
/// with a `Reply-To` of one inbox, until the first reply to any of them arrives. A
/// publish made while the stream has no leader is simply lost, as a gateway's would
/// be; the ones after the election are stored and answered. Resolution: `every`.
pub async fn time_to_first_answer(
    client: &async_nats::Client,
    since: Instant,
    every: Duration,
    timeout: Duration,
    label: &str,
) -> Option<Duration> {
    use beamline_router::contracts::subjects::{DECIDE, HEADER_REPLY_TO};
    use futures::StreamExt as _;
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.ok()?;
    client.flush().await.ok()?;
    let mut tick = tokio::time::interval(every);
    let mut n = 0;
    let deadline = tokio::time::Instant::from_std(since + timeout);
    loop {
        tokio::select! {
            reply = replies.next() => {
                reply?;
                return Some(since.elapsed());
            }
            _ = tick.tick() => {
                n += 1;
                let id = format!("probe-{label}-{n}");
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(HEADER_REPLY_TO, inbox.as_str());
                let payload = beamline_router::bench::traffic::decide_request(&id, "acme", n);
                let _ = client
                    .publish_with_headers(DECIDE, headers, payload.into())
                    .await;
            }
            () = tokio::time::sleep_until(deadline) => return None,
        }
    }
}

/// When JetStream announced new leaders, as a client of the cluster saw the
/// LEADER_ELECTED advisories of one stream and one of its consumers (stamped on
/// arrival by a task each).
pub struct LeaderWatch {
    stream: std::sync::Arc<std::sync::Mutex<Vec<Instant>>>,
    consumer: std::sync::Arc<std::sync::Mutex<Vec<Instant>>>,
}

impl LeaderWatch {
    pub async fn start(client: &async_nats::Client, stream: &str, consumer: &str) -> LeaderWatch {
        let stream_subject = format!("$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.{stream}");
        let consumer_subject =
            format!("$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED.{stream}.{consumer}");
        let watch = LeaderWatch {
            stream: stamp(client, stream_subject).await,
            consumer: stamp(client, consumer_subject).await,
        };
        client.flush().await.expect("flush");
        watch
    }

    /// The first stream and the first consumer election after `since`, measured from
    /// it (`None`: none seen yet).
    pub fn elections(&self, since: Instant) -> (Option<Duration>, Option<Duration>) {
        let first = |seen: &std::sync::Mutex<Vec<Instant>>| {
            seen.lock()
                .ok()?
                .iter()
                .find(|t| **t >= since)
                .map(|t| *t - since)
        };
        (first(&self.stream), first(&self.consumer))
    }
}

async fn stamp(
    client: &async_nats::Client,
    subject: String,
) -> std::sync::Arc<std::sync::Mutex<Vec<Instant>>> {
    use futures::StreamExt as _;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut sub = client.subscribe(subject).await.expect("subscribe");
    let record = seen.clone();
    tokio::spawn(async move {
        while sub.next().await.is_some() {
            if let Ok(mut v) = record.lock() {
                v.push(Instant::now());
            }
        }
    });
    seen
}

/// Wait until `stream` has a leader and every replica is current (caught up): the
/// cluster can lose another node without losing the stream.
pub async fn wait_replicas_current(js: &jetstream::Context, stream: &str, timeout: Duration) {
    let ok = leader_where(timeout, || async {
        let mut s = js.get_stream(stream).await.ok()?;
        let info = s.info().await.ok()?;
        let cluster = info.cluster.as_ref()?;
        let all_current = cluster.replicas.iter().all(|p| p.current && !p.offline);
        let replicas = cluster.replicas.len() + 1;
        (all_current && replicas == info.config.num_replicas.max(1))
            .then(|| cluster.leader.clone())
            .flatten()
    })
    .await;
    assert!(
        ok.is_some(),
        "stream {stream} not fully current after {timeout:?}"
    );
}
