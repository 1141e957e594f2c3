//! Connecting to NATS (URLs, credentials, TLS) and making sure the streams and durable
//! pull consumers exist. Created when missing, reused as they are when present: an
//! operator may have tuned them, and the server's settings are the truth.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, stream};
use async_nats::ServerAddr;
use tokio::sync::mpsc;

use super::cluster::{under_replicated, ClusterView, Replicas, UnderReplicated};
use super::config::{ConsumerSettings, Settings};
use super::metrics::Metrics;
use crate::core::ConnectionEvent;
use crate::host::advisories::max_deliveries_subject;
use crate::host::Role;

/// Which stream a consumer reads, and which subject it filters.
#[derive(Clone, Debug)]
pub struct ConsumerSpec {
    pub role: Role,
    pub stream: String,
    /// Its filter subject (empty: the whole stream).
    pub subject: String,
    pub settings: ConsumerSettings,
}

/// Where requests come in and dead letters go, and how the consumers are configured.
#[derive(Clone, Debug)]
pub struct Topology {
    /// `(stream, subjects, max_age, duplicate_window)` of every stream the router needs.
    pub streams: Vec<(String, Vec<String>, Duration, Duration)>,
    /// The decide consumer first.
    pub consumers: Vec<ConsumerSpec>,
}

/// Decide requests, results and acks are worth nothing after a day; keeping them that
/// long lets an operator look at a message that misbehaved.
const INTAKE_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Dead letters and usage events are read after the fact: keep them for two weeks.
const KEEP_MAX_AGE: Duration = Duration::from_secs(14 * 24 * 3600);
/// An advisory is acked within seconds of its message's DLQ record; one still there
/// after a day names a message long gone.
const ADVISORY_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

impl Topology {
    pub fn from_settings(s: &Settings) -> Topology {
        let sub = &s.subjects;
        let st = &s.streams;
        // Gateways' publish retries land in the intake streams within seconds; the
        // router's own retries can come much later (`Settings::output_duplicate_window`).
        let intake = Duration::from_millis(st.duplicate_window_ms);
        let output = s.output_duplicate_window();
        let mut streams = vec![
            (
                st.decide.clone(),
                vec![sub.decide.clone()],
                INTAKE_MAX_AGE,
                intake,
            ),
            (
                st.results.clone(),
                vec![sub.result.clone()],
                INTAKE_MAX_AGE,
                intake,
            ),
            (
                st.usage.clone(),
                vec![sub.usage.clone()],
                KEEP_MAX_AGE,
                output,
            ),
            (
                st.assignments.clone(),
                vec![sub.assignment.clone()],
                INTAKE_MAX_AGE,
                output,
            ),
        ];
        let mut dlq_subjects = vec![sub.decide_dlq.clone(), sub.result_dlq()];
        let mut consumers = vec![
            ConsumerSpec {
                role: Role::Decide,
                stream: st.decide.clone(),
                subject: sub.decide.clone(),
                settings: s.decide.consumer_settings(),
            },
            ConsumerSpec {
                role: Role::Results,
                stream: st.results.clone(),
                subject: sub.result.clone(),
                settings: s.results.consumer_settings(),
            },
        ];
        if s.acks.enabled {
            streams.push((
                st.acks.clone(),
                vec![sub.assignment_ack.clone()],
                INTAKE_MAX_AGE,
                intake,
            ));
            dlq_subjects.push(sub.ack_dlq());
            consumers.push(ConsumerSpec {
                role: Role::Acks,
                stream: st.acks.clone(),
                subject: sub.assignment_ack.clone(),
                settings: s.acks.consumer_settings(),
            });
        }
        streams.push((st.dlq.clone(), dlq_subjects, KEEP_MAX_AGE, output));
        // The server's MAX_DELIVERIES advisories for the consumers above, captured in a
        // stream so that none is lost while the router is disconnected
        // (`crate::host::advisories`), and pulled like any other work.
        let advisory_subjects = consumers
            .iter()
            .map(|c| max_deliveries_subject(&c.stream, &c.settings.consumer))
            .collect();
        streams.push((
            st.advisories.clone(),
            advisory_subjects,
            ADVISORY_MAX_AGE,
            intake,
        ));
        consumers.push(ConsumerSpec {
            role: Role::Advisories,
            stream: st.advisories.clone(),
            subject: String::new(),
            settings: s.advisory_consumer_settings(),
        });
        Topology { streams, consumers }
    }
}

/// Connect with the configured URLs, credentials and TLS, and report
/// `Connected`/`Disconnected` to the driver as core inputs. Reconnects are unlimited,
/// with async-nats's default backoff (0, then 2^(n-1) ms, capped at 4 s).
/// The authentication and TLS of `settings` (`[nats]`, `[tls]`) applied to `options`:
/// what `serve` connects with, and what the client commands (`decide --config`,
/// `demo-traffic --config`) connect with too.
pub async fn credentials(
    mut options: async_nats::ConnectOptions,
    settings: &Settings,
) -> anyhow::Result<async_nats::ConnectOptions> {
    let n = &settings.nats;
    if let (Some(user), Some(password)) = (&n.user, &n.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &n.token {
        options = options.token(token.clone());
    }
    if let Some(path) = &n.nkey_seed_file {
        let seed = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read nats.nkey_seed_file {}", path.display()))?;
        options = options.nkey(seed.trim().to_string());
    }
    if let Some(path) = &n.creds_file {
        options = options
            .credentials_file(path)
            .await
            .with_context(|| format!("cannot read nats.creds_file {}", path.display()))?;
    }
    let tls = &settings.tls;
    if tls.require {
        options = options.require_tls(true);
    }
    if let Some(ca) = &tls.ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    Ok(options)
}

/// `nats.urls` as the client's server addresses.
fn server_addrs(urls: &[String]) -> anyhow::Result<Vec<ServerAddr>> {
    urls.iter()
        .map(|u| {
            u.parse::<ServerAddr>()
                .with_context(|| format!("nats.urls: bad URL {u:?}"))
        })
        .collect()
}

/// The connection of a command-line tool: as `serve --config file` would connect when a
/// file is given, else a plain connection to `url`.
pub async fn connect_tool(
    config: Option<&std::path::Path>,
    url: &str,
) -> anyhow::Result<async_nats::Client> {
    match config {
        Some(file) => connect_with_config_file(file).await,
        None => async_nats::connect(url)
            .await
            .with_context(|| format!("cannot connect to NATS at {url}")),
    }
}

/// A plain client for the command-line tools, connected with `settings`' URLs,
/// authentication and TLS (no retry of the first connection: a tool reports and exits).
pub async fn connect_client(settings: &Settings, name: &str) -> anyhow::Result<async_nats::Client> {
    let n = &settings.nats;
    let options = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_millis(n.connect_timeout_ms));
    let options = credentials(options, settings).await?;
    let addrs = server_addrs(&n.urls)?;
    let shown = n.urls.join(",");
    options
        .connect(addrs)
        .await
        .with_context(|| format!("cannot connect to NATS at {shown}"))
}

/// A client for a command-line tool, connected as `serve --config file` would be (the
/// file's `[nats]` and `[tls]`, with the same environment overrides, validated).
pub async fn connect_with_config_file(
    file: &std::path::Path,
) -> anyhow::Result<async_nats::Client> {
    let settings = Settings::load(
        Some(file),
        |name| std::env::var(name).ok(),
        &super::config::Flags::default(),
    )
    .and_then(|s| s.validate().map(|()| s))
    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    connect_client(&settings, "beamline-router-cli").await
}

/// The first connection, retried while no server answers (refused, unreachable, timed
/// out) for up to `wait_ms`, with a log line per attempt: an orchestrator that starts the
/// router before NATS gets a router that waits, not one that crash-loops. A refusal that
/// waiting cannot cure (authentication, TLS) ends it at once.
async fn connect_patiently(
    options: async_nats::ConnectOptions,
    addrs: Vec<ServerAddr>,
    wait_ms: u64,
    shown: &str,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    use async_nats::ConnectErrorKind;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
    let mut pause = Duration::from_millis(250);
    let mut attempt = 1u32;
    loop {
        // `connect` takes the options by value; the callback and credentials inside are
        // shared handles, so a clone per attempt is cheap.
        match options.clone().connect(addrs.clone()).await {
            Ok(client) => return Ok(client),
            Err(err) => {
                let transient = match err.kind() {
                    ConnectErrorKind::TimedOut => true,
                    ConnectErrorKind::Io => nobody_listens(&err),
                    _ => false,
                };
                let now = tokio::time::Instant::now();
                if !transient || now + pause > deadline {
                    return Err(err);
                }
                tracing::warn!(
                    %err,
                    attempt,
                    retry_in_ms = pause.as_millis() as u64,
                    urls = shown,
                    "no NATS server answers yet; retrying the first connection"
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
                attempt += 1;
            }
        }
    }
}

/// Whether a connect error says that no server is there yet (refused, unreachable),
/// rather than one that answered and refused us: async-nats reports TLS failures as I/O
/// errors too, and those must end the start at once.
fn nobody_listens(err: &async_nats::ConnectError) -> bool {
    use std::error::Error as _;
    use std::io::ErrorKind;
    let mut source = err.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::NotConnected
                    | ErrorKind::AddrNotAvailable
                    | ErrorKind::TimedOut
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
            );
        }
        source = e.source();
    }
    false
}

pub async fn connect(
    settings: &Settings,
    events: mpsc::Sender<ConnectionEvent>,
    metrics: Metrics,
) -> anyhow::Result<async_nats::Client> {
    let n = &settings.nats;
    let callback_metrics = metrics.clone();
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("beamline-router/{}", settings.router.node_id))
        .connection_timeout(Duration::from_millis(n.connect_timeout_ms))
        .event_callback(move |event| {
            let events = events.clone();
            let metrics = callback_metrics.clone();
            async move {
                let input = match event {
                    async_nats::Event::Connected => {
                        let reconnect = metrics.set_connected(true);
                        tracing::info!(reconnect, "nats connected");
                        Some(ConnectionEvent::Up)
                    }
                    async_nats::Event::Disconnected => {
                        metrics.set_connected(false);
                        tracing::warn!("nats disconnected");
                        Some(ConnectionEvent::Down)
                    }
                    async_nats::Event::ClientError(err) => {
                        tracing::debug!(%err, "nats client error");
                        None
                    }
                    other => {
                        tracing::warn!(event = %other, "nats event");
                        None
                    }
                };
                if let Some(input) = input {
                    // Fails only when the driver has stopped.
                    let _ = events.send(input).await;
                }
            }
        });
    options = credentials(options, settings).await?;
    let tls = &settings.tls;
    let addrs = server_addrs(&n.urls)?;
    let shown = n.urls.join(",");
    let hint = if tls.require {
        " (tls.require = true: the server must offer TLS with a certificate that chains to tls.ca_file or the system roots)"
    } else {
        ""
    };
    let client = connect_patiently(options, addrs, n.initial_connect_wait_ms, &shown)
        .await
        .with_context(|| format!("cannot connect to NATS at {shown}{hint}"))?;
    metrics.set_connected(true);
    let info = client.server_info();
    tracing::info!(
        server_version = %info.version,
        server_id = %info.server_id,
        server_name = %info.server_name,
        tls_required = info.tls_required,
        auth_required = info.auth_required,
        "connected to nats-server"
    );
    if !client.is_server_compatible(2, 9, 0) {
        anyhow::bail!(
            "nats-server {} is older than 2.9.0, the oldest this router supports; upgrade the server",
            info.version
        );
    }
    let uses_backoff = settings.decide.backoff_ms.len()
        + settings.results.backoff_ms.len()
        + settings.acks.backoff_ms.len()
        > 0;
    tracing::info!(
        tls = tls.enabled(),
        mtls = tls.cert_file.is_some(),
        consumer_backoff = uses_backoff,
        "server features used: JetStream durable pull consumers (explicit ack, nak delay, +WPI, +TERM), \
         Nats-Msg-Id dedupe, MAX_DELIVERIES advisories, headers; not used: tls_first, multiple filter subjects"
    );
    Ok(client)
}

/// How one stream the router uses stands after start-up.
#[derive(Clone, Debug)]
pub struct StreamState {
    pub name: String,
    /// Replicas the server reports for it.
    pub replicas: u64,
    /// Set when it holds fewer copies than the cluster can give.
    pub under: Option<UnderReplicated>,
}

/// The cluster the connected server describes, as its latest INFO says.
pub fn cluster_view(client: &async_nats::Client) -> ClusterView {
    let info = client.server_info();
    ClusterView::new(info.cluster.as_deref(), &info.connect_urls)
}

/// Create every stream the router reads or publishes to, if missing, with `replicas`;
/// report the replicas of each, and warn of an existing one holding fewer than the
/// cluster can give (it is not changed: see `cluster::under_replicated`).
pub async fn ensure_streams(
    js: &jetstream::Context,
    topology: &Topology,
    replicas: Replicas,
    cluster: &ClusterView,
) -> anyhow::Result<Vec<StreamState>> {
    let mut states = Vec::new();
    for (name, subjects, max_age, duplicate_window) in &topology.streams {
        let stream = js
            .get_or_create_stream(stream::Config {
                name: name.clone(),
                subjects: subjects.clone(),
                storage: stream::StorageType::File,
                retention: stream::RetentionPolicy::Limits,
                max_age: *max_age,
                duplicate_window: *duplicate_window,
                num_replicas: usize::try_from(replicas.value).unwrap_or(1),
                ..Default::default()
            })
            .await
            .map_err(|e| replicas_hint(e.into(), replicas, cluster))
            .with_context(|| format!("cannot create or open stream {name}"))?;
        let config = &stream.cached_info().config;
        for subject in subjects {
            if !config.subjects.iter().any(|s| s == subject) {
                tracing::warn!(stream = %name, subjects = ?config.subjects, expected = %subject,
                    "existing stream does not list the expected subject; publishes may not be captured");
            }
        }
        states.push(stream_state(
            name,
            config.num_replicas as u64,
            replicas,
            cluster,
        ));
    }
    Ok(states)
}

fn stream_state(name: &str, have: u64, wanted: Replicas, cluster: &ClusterView) -> StreamState {
    let under = under_replicated(name, have, wanted, cluster);
    if let Some(u) = &under {
        tracing::warn!(
            stream = %u.stream,
            replicas = u.have,
            cluster_servers = cluster.servers,
            fix = %u.fix(),
            "stream holds fewer replicas than the cluster can give: losing the node with its only copy loses its messages; the router does not change an existing stream"
        );
    }
    StreamState {
        name: name.to_string(),
        replicas: have.max(1),
        under,
    }
}

/// A refused replicated create says what to set: the usual cause is a cluster with
/// fewer JetStream servers than the servers it advertises.
fn replicas_hint(err: anyhow::Error, replicas: Replicas, cluster: &ClusterView) -> anyhow::Error {
    if replicas.value > 1 && !transient(&err) {
        err.context(format!(
            "creating it with {} replicas ({}; the server reports a cluster of {} servers) was refused; \
             if fewer servers run JetStream, set streams.replicas (and state.kv_replicas) to what they can hold",
            replicas.value,
            replicas.chosen_by.label(),
            cluster.servers
        ))
    } else {
        err
    }
}

/// Open the shared answer bucket (`state.backend = "kv"`), creating it if missing with
/// `replicas`. Its `max_age` is the idempotency TTL, so an answer is replayable exactly
/// as long as the in-memory book would keep it; one revision per key is enough (entries
/// are only ever created, never updated).
pub async fn ensure_answer_bucket(
    js: &jetstream::Context,
    settings: &super::config::Settings,
    replicas: Replicas,
    cluster: &ClusterView,
) -> anyhow::Result<(jetstream::kv::Store, StreamState)> {
    let st = &settings.state;
    let config = jetstream::kv::Config {
        bucket: st.kv_bucket.clone(),
        description: "Beamline Router: answers by (tenant, idempotency key)".into(),
        history: 1,
        max_age: std::time::Duration::from_millis(settings.router.idempotency_ttl_ms),
        storage: stream::StorageType::File,
        num_replicas: usize::try_from(replicas.value).unwrap_or(1),
        ..Default::default()
    };
    let store = match js.get_key_value(&st.kv_bucket).await {
        Ok(store) => store,
        Err(_) => js
            .create_key_value(config)
            .await
            .map_err(|e| replicas_hint(e.into(), replicas, cluster))
            .with_context(|| format!("cannot create the answer bucket {}", st.kv_bucket))?,
    };
    let info = store
        .status()
        .await
        .with_context(|| format!("cannot read the answer bucket {}", st.kv_bucket))?
        .info;
    let state = stream_state(
        &info.config.name,
        info.config.num_replicas as u64,
        replicas,
        cluster,
    );
    Ok((store, state))
}

/// Create a durable pull consumer if it is missing, and return it with the `max_deliver`
/// the server actually enforces (the core must use that one).
///
/// The decide consumer should have no `backoff` list: the core chooses each nak's delay
/// itself, and with a backoff list nats-server computes nak redelivery delays
/// differently (docs/BACKGROUND.md, "nats-server"). It is configurable all the same.
pub async fn ensure_consumer(
    js: &jetstream::Context,
    spec: &ConsumerSpec,
) -> anyhow::Result<(consumer::PullConsumer, u64)> {
    let stream = js
        .get_stream(&spec.stream)
        .await
        .with_context(|| format!("cannot open stream {}", spec.stream))?;
    let s = &spec.settings;
    let wanted = consumer::pull::Config {
        durable_name: Some(s.consumer.clone()),
        filter_subject: spec.subject.clone(),
        ack_policy: consumer::AckPolicy::Explicit,
        deliver_policy: consumer::DeliverPolicy::All,
        ack_wait: Duration::from_millis(s.ack_wait_ms),
        max_deliver: i64::try_from(s.max_deliver).unwrap_or(i64::MAX),
        max_ack_pending: i64::try_from(s.max_ack_pending).unwrap_or(i64::MAX),
        backoff: s
            .backoff_ms
            .iter()
            .map(|&ms| Duration::from_millis(ms))
            .collect(),
        ..Default::default()
    };
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(&s.consumer, wanted)
        .await
        .with_context(|| format!("cannot create or open consumer {}", s.consumer))?;
    let config = &consumer.cached_info().config;
    let server_max_deliver = match u64::try_from(config.max_deliver) {
        Ok(n) if n > 0 => n,
        // -1 (unlimited) would mean no delivery is ever the last; the router needs a bound.
        _ => anyhow::bail!(
            "consumer {} has no max_deliver bound ({}); recreate it or set one",
            s.consumer,
            config.max_deliver
        ),
    };
    if server_max_deliver != s.max_deliver
        || config.ack_wait != Duration::from_millis(s.ack_wait_ms)
    {
        tracing::warn!(
            consumer = %s.consumer,
            server_max_deliver,
            server_ack_wait_ms = config.ack_wait.as_millis() as u64,
            "existing consumer differs from the configuration; using the server's settings"
        );
    }
    Ok((consumer, server_max_deliver))
}

/// Subscribe to the requests addressed to the router itself, so that each is answered
/// as its subject says (the core answers, `Command::Respond`, with its `node_id`):
/// - the backpressure status a gateway polls and `admin.<op>`: one instance of all, a
///   queue group;
/// - `admin.node.<node_id>.<op>`: this instance only;
/// - `admin.all.<op>`: every instance (the caller gathers the replies).
pub async fn subscribe_inbound(
    client: &async_nats::Client,
    node_id: &str,
) -> anyhow::Result<futures::stream::SelectAll<async_nats::Subscriber>> {
    use crate::contracts::subjects::{
        ADMIN_ALL_PREFIX, ADMIN_NODE_PREFIX, ADMIN_PREFIX, BACKPRESSURE_STATUS, ROUTER_QUEUE_GROUP,
    };
    let group = || ROUTER_QUEUE_GROUP.to_string();
    let status = client.queue_subscribe(BACKPRESSURE_STATUS, group()).await?;
    // `admin.*` only: `admin.node.<id>.<op>` and `admin.all.<op>` have more tokens.
    let admin_any = client
        .queue_subscribe(format!("{ADMIN_PREFIX}*"), group())
        .await?;
    let admin_node = client
        .subscribe(format!("{ADMIN_NODE_PREFIX}{node_id}.*"))
        .await?;
    let admin_all = client.subscribe(format!("{ADMIN_ALL_PREFIX}*")).await?;
    Ok(futures::stream::select_all([
        status, admin_any, admin_node, admin_all,
    ]))
}

/// The subject of JetStream's advisory that `consumer` on `stream` has a new leader.
pub fn leader_elected_subject(stream: &str, consumer: &str) -> String {
    format!("$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED.{stream}.{consumer}")
}

/// Subscribe to the LEADER_ELECTED advisory of each consumer (core NATS: one missed
/// while disconnected is covered by the client's re-pull on reconnect and by the idle
/// heartbeats). Each yields the consumer's index in `topology.consumers`.
pub async fn subscribe_leader_elections(
    client: &async_nats::Client,
    topology: &Topology,
) -> anyhow::Result<futures::stream::SelectAll<LeaderElections>> {
    use futures::StreamExt as _;
    let mut all = Vec::new();
    for (index, spec) in topology.consumers.iter().enumerate() {
        let subject = leader_elected_subject(&spec.stream, &spec.settings.consumer);
        let subscriber = client
            .subscribe(subject.clone())
            .await
            .with_context(|| format!("cannot subscribe to {subject}"))?;
        let tagged: LeaderElections = Box::pin(subscriber.map(move |_| index));
        all.push(tagged);
    }
    Ok(futures::stream::select_all(all))
}

/// One consumer's leader elections, as its index.
pub type LeaderElections = std::pin::Pin<Box<dyn futures::Stream<Item = usize> + Send>>;

/// Whether a start-up failure may pass by itself: a time-out, no responders, or
/// JetStream saying it is temporarily unavailable (10008: no leader yet). Anything the
/// server answered with another error code is its verdict.
pub fn transient(err: &anyhow::Error) -> bool {
    use async_nats::jetstream::context::{
        CreateKeyValueError, CreateKeyValueErrorKind, CreateStreamError, CreateStreamErrorKind,
        GetStreamError, GetStreamErrorKind,
    };
    use async_nats::jetstream::stream::{ConsumerError, ConsumerErrorKind};
    let unavailable = |e: &async_nats::jetstream::Error| {
        e.error_code() == async_nats::jetstream::ErrorCode::CLUSTER_NOT_AVAILABLE
    };
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<CreateStreamError>() {
            return match e.kind() {
                CreateStreamErrorKind::TimedOut
                | CreateStreamErrorKind::JetStreamUnavailable
                | CreateStreamErrorKind::Response => true,
                CreateStreamErrorKind::JetStream(api) => unavailable(&api),
                _ => false,
            };
        }
        if let Some(e) = cause.downcast_ref::<GetStreamError>() {
            return match e.kind() {
                GetStreamErrorKind::Request => true,
                GetStreamErrorKind::JetStream(api) => unavailable(&api),
                _ => false,
            };
        }
        if let Some(e) = cause.downcast_ref::<ConsumerError>() {
            return match e.kind() {
                ConsumerErrorKind::TimedOut | ConsumerErrorKind::Request => true,
                ConsumerErrorKind::JetStream(api) => unavailable(&api),
                _ => false,
            };
        }
        if let Some(e) = cause.downcast_ref::<CreateKeyValueError>() {
            return matches!(e.kind(), CreateKeyValueErrorKind::TimedOut);
        }
    }
    false
}
