//! The driver: one loop that owns the core and is the only caller of `Router::handle`.
//!
//! Each turn it waits (biased, in this order) for: the shutdown signal, a connection
//! event, an input from a background task (publish and request outcomes, consumer
//! pending, given-up messages), the next timer deadline, an inbound request, and only
//! then a new delivery, so finishing work already taken always beats taking more. After
//! each input it executes the commands the core emitted: settles and responses go to one
//! outbox task in order, publishes and requests to a task each, timers into the table.
//!
//! A pull stream that hears neither a message nor an idle heartbeat for two heartbeat
//! intervals is replaced at once; the old one is retired, still served for `RETIRE_AFTER`
//! and then dropped, so at most a handful per consumer exist even through a long outage
//! (one more every 10 s, each gone after 35 s).
//!
//! Shutdown (SIGINT or SIGTERM): stop pulling and listening, keep serving outcomes and
//! timers until the core holds nothing and no publish or request is pending or the
//! grace period ends, then let the outbox finish, flush and return. Messages the pull
//! had buffered but the core never saw are nak'ed at once (`hand_back_buffered`); those
//! of a pull still in flight are redelivered by JetStream after `ack_wait`.

use std::pin::Pin;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::pull, consumer::PullConsumer, AckKind};
use async_nats::Subject;
use bytes::Bytes;
use futures::stream::{AbortHandle, SelectAll};
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::config::Settings;
use super::env::{wall_clock, ShellEnv};
use super::feeds;
use super::handles::HandleTable;
use super::headers::headers_of;
use super::metrics::{ConsumerCounters, Metrics, ShellCounters};
use super::nats::{self, ConsumerSpec, Topology};
use super::publisher::Publisher;
use super::timers::Timers;
use crate::contracts::subjects::{HEADER_TENANT_ID, HEADER_TRACEPARENT, HEADER_TRACE_ID};
use crate::core::{Clock, Command, ConnectionEvent, Delivery, InboundRequest, Input, Router};
use crate::policy;

/// Everything `serve` needs: the validated settings.
pub type ServeConfig = Settings;

/// Bounds of the queues into and out of the loop. Background tasks wait when the inputs
/// queue is full; see `Driver::send_out` for the outbox.
const CONNECTION_EVENTS_BOUND: usize = 64;
const INPUTS_BOUND: usize = 4096;
const OUTBOX_BOUND: usize = 4096;
/// Inbound requests awaiting the core's answer.
const INBOUND_BOUND: usize = 1024;
/// Retry delay when a pull subscription ended and must be re-created.
const RESUBSCRIBE_DELAY: Duration = Duration::from_secs(1);
/// How often the consumer's pending count is read for backpressure.
const PENDING_EVERY: Duration = Duration::from_secs(1);
const STATS_EVERY: Duration = Duration::from_secs(30);
/// How often the metrics snapshot is refreshed.
const METRICS_EVERY: Duration = Duration::from_secs(1);
/// Settles and replies still queued in the client get this long to reach the server.
const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Run the router until SIGINT or SIGTERM. `settings` must have been validated.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    serve_until(settings, Metrics::default(), shutdown_signal()).await
}

/// Run the router until `shutdown` resolves, reporting into `metrics`.
pub async fn serve_until(
    settings: Settings,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let policies_dir = settings
        .router
        .policies_dir
        .clone()
        .context("router.policies_dir is not set")?;
    let policies = policy::load_dir(&policies_dir)
        .with_context(|| format!("cannot load policies from {}", policies_dir.display()))?;
    tracing::info!(policies = policies.len(), dir = %policies_dir.display(), "policies loaded");

    if !settings.metrics.listen.is_empty() {
        let addr = settings
            .metrics
            .listen
            .parse()
            .with_context(|| format!("metrics.listen {:?}", settings.metrics.listen))?;
        super::metrics::spawn_server(addr, metrics.clone()).await?;
    }

    let topology = Topology::from_settings(&settings);
    let (connection_tx, connection_rx) = mpsc::channel(CONNECTION_EVENTS_BOUND);
    let client = nats::connect(&settings, connection_tx, metrics.clone()).await?;
    let js = jetstream::ContextBuilder::new()
        .timeout(settings.publish_timeout())
        .build(client.clone());
    nats::ensure_streams(&js, &topology).await?;
    let mut consumers = Vec::new();
    for spec in &topology.consumers {
        let (consumer, max_deliver) = nats::ensure_consumer(&js, spec).await?;
        consumers.push((spec.clone(), consumer, max_deliver));
    }
    let (_, decide_consumer, max_deliver) = consumers[0].clone();
    let ack_wait = decide_consumer.cached_info().config.ack_wait;

    let answer_bucket = if settings.state.shared() {
        let store = nats::ensure_answer_bucket(&js, &settings).await?;
        tracing::info!(bucket = %settings.state.kv_bucket, "answers shared through NATS KV");
        Some(store)
    } else {
        None
    };

    let router = Router::new(settings.router_config(max_deliver, ack_wait)?, policies);
    let (inputs_tx, inputs_rx) = mpsc::channel(INPUTS_BOUND);
    let mut publisher = Publisher::new(
        client.clone(),
        js.clone(),
        settings.publish_timeout(),
        inputs_tx.clone(),
    );
    if let Some(store) = answer_bucket {
        publisher = publisher
            .with_answer_bucket(store, Duration::from_millis(settings.state.kv_timeout_ms));
    }
    let (outbox_tx, outbox_rx) = mpsc::channel(OUTBOX_BOUND);
    let outbox = tokio::spawn(run_outbox(client.clone(), outbox_rx));
    let inbound = nats::subscribe_inbound(&client).await?;
    let mut feeds = vec![feeds::spawn_pending_poller(
        decide_consumer.clone(),
        PENDING_EVERY,
        inputs_tx.clone(),
    )];
    for (spec, _, _) in &consumers {
        feeds.push(
            feeds::spawn_exhausted_watcher(
                client.clone(),
                js.clone(),
                &spec.stream,
                &spec.settings.consumer,
                inputs_tx.clone(),
            )
            .await?,
        );
    }
    let held_bound: u64 = consumers
        .iter()
        .map(|(spec, _, _)| spec.settings.max_ack_pending.max(1))
        .sum();
    let driver = Driver {
        router,
        env: ShellEnv::from_os(),
        // Room for every unsettled delivery the server may hand out, several times over.
        deliveries: HandleTable::new(usize::try_from(held_bound * 4).unwrap_or(usize::MAX)),
        inbound_requests: HandleTable::new(INBOUND_BOUND),
        timers: Timers::default(),
        publisher,
        outbox: outbox_tx,
        io_in_flight: 0,
        outbox_dropped: 0,
        metrics: metrics.clone(),
        consumers: consumers
            .iter()
            .map(|(spec, _, _)| ConsumerCounters::new(spec.role))
            .collect(),
    };
    metrics.set_streams_ready(true);
    tracing::info!(
        streams = ?topology.streams.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
        consumers = ?consumers.iter().map(|(s, _, md)| format!("{}:{} (max_deliver {md})", s.stream, s.settings.consumer)).collect::<Vec<_>>(),
        max_deliver,
        ack_wait_ms = ack_wait.as_millis() as u64,
        node_id = %settings.router.node_id,
        "router ready"
    );
    let consumers: Vec<(ConsumerSpec, PullConsumer)> =
        consumers.into_iter().map(|(s, c, _)| (s, c)).collect();
    let stats = driver
        .run(
            &settings,
            consumers,
            inbound,
            connection_rx,
            inputs_rx,
            shutdown,
        )
        .await;
    tracing::info!(?stats, "driver stopped");
    for feed in feeds {
        feed.abort();
    }

    // The driver dropped its sender: the outbox ends once it has sent what is queued.
    if tokio::time::timeout(FINAL_FLUSH_TIMEOUT, outbox)
        .await
        .is_err()
    {
        tracing::warn!("settles still queued at exit; JetStream will redeliver those messages");
    }
    match tokio::time::timeout(FINAL_FLUSH_TIMEOUT, client.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::warn!(%err, "final flush failed"),
        Err(_) => tracing::warn!("final flush timed out"),
    }
    tracing::info!("router stopped");
    Ok(())
}

/// One consumer's pull stream, tagged with its index and generation; `None` once it
/// has ended.
type Feed = Pin<Box<dyn futures::Stream<Item = (usize, u64, Option<PullItem>)> + Send>>;
type PullItem = <pull::Stream as futures::Stream>::Item;

/// A retired pull stream still serves what reaches it for this long: the pull request
/// it last sent has expired at the server by then (`expires` 30 s, and some).
const RETIRE_AFTER: Duration = Duration::from_secs(35);

/// Which pull stream of each consumer is current. A stream taken for stalled is replaced
/// at once, and ended `RETIRE_AFTER` later; until then its deliveries are served, but its
/// errors and its end no longer decide anything.
struct PullGenerations {
    current: Vec<u64>,
    aborts: Vec<Option<AbortHandle>>,
}

impl PullGenerations {
    fn new(consumers: usize) -> Self {
        PullGenerations {
            current: vec![0; consumers],
            aborts: vec![None; consumers],
        }
    }

    fn is_current(&self, index: usize, generation: u64) -> bool {
        self.current.get(index) == Some(&generation)
    }

    /// Make `stream` the current one of consumer `index`.
    fn start(&mut self, index: usize, stream: pull::Stream) -> Feed {
        self.current[index] += 1;
        let generation = self.current[index];
        let (stream, abort) = futures::stream::abortable(stream);
        self.aborts[index] = Some(abort);
        Box::pin(
            stream
                .map(move |item| (index, generation, Some(item)))
                .chain(futures::stream::once(
                    async move { (index, generation, None) },
                )),
        )
    }

    /// End the current stream of `index` after `RETIRE_AFTER`.
    fn retire(&mut self, index: usize) {
        self.current[index] += 1;
        if let Some(abort) = self.aborts[index].take() {
            tokio::spawn(async move {
                tokio::time::sleep(RETIRE_AFTER).await;
                abort.abort();
            });
        }
    }
}

/// Fire-and-forget messages, sent in the order the core issued them.
enum Outgoing {
    /// `+ACK`, `-NAK`, `+TERM` or `+WPI` to a delivery's ack subject.
    Settle { subject: Subject, kind: AckKind },
    /// The core's answer to an inbound request.
    Respond { subject: Subject, payload: Bytes },
}

struct Driver {
    router: Router,
    env: ShellEnv,
    deliveries: HandleTable,
    inbound_requests: HandleTable,
    timers: Timers,
    publisher: Publisher,
    outbox: mpsc::Sender<Outgoing>,
    /// Publishes and requests whose outcome the core still awaits.
    io_in_flight: usize,
    outbox_dropped: u64,
    metrics: Metrics,
    /// Counters of each consumer, by index (its role is the `consumer` label).
    consumers: Vec<ConsumerCounters>,
}

impl Driver {
    async fn run(
        mut self,
        settings: &Settings,
        consumers: Vec<(ConsumerSpec, PullConsumer)>,
        inbound: SelectAll<async_nats::Subscriber>,
        mut connection_events: mpsc::Receiver<ConnectionEvent>,
        mut inputs: mpsc::Receiver<Input>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> crate::core::Stats {
        tokio::pin!(shutdown);
        let pull_batch = usize::try_from(settings.router.pull_batch).unwrap_or(64);
        // One merged stream of every consumer's deliveries; a consumer whose pull stream
        // ended is re-subscribed at its `resubscribe` instant.
        let mut messages: SelectAll<Feed> = SelectAll::new();
        let mut resubscribe: Vec<Option<Instant>> = vec![Some(Instant::now()); consumers.len()];
        let mut pulls = PullGenerations::new(consumers.len());
        let mut inbound = Some(inbound);
        let mut drain_until: Option<Instant> = None;
        let mut stats_tick = tokio::time::interval(STATS_EVERY);
        stats_tick.tick().await;
        let mut metrics_tick = tokio::time::interval(METRICS_EVERY);

        loop {
            if let Some(deadline) = drain_until {
                if self.idle() {
                    break;
                }
                if Instant::now() >= deadline {
                    tracing::warn!(
                        held = self.router.in_flight(),
                        io = self.io_in_flight,
                        "shutdown grace ended with work in flight; JetStream will redeliver it"
                    );
                    break;
                }
            }
            let next_timer = self
                .timers
                .next_deadline()
                .map(|at| Duration::from_millis(at.saturating_sub(wall_clock().millis())));
            let next_resubscribe = resubscribe.iter().flatten().min().copied();

            tokio::select! {
                biased;
                () = &mut shutdown, if drain_until.is_none() => {
                    tracing::info!(
                        held = self.router.in_flight(),
                        io = self.io_in_flight,
                        "shutdown requested: no more pulls, finishing in-flight work"
                    );
                    self.metrics.set_shutting_down();
                    let handed_back = self.hand_back_buffered(&mut messages);
                    if handed_back > 0 {
                        tracing::info!(handed_back, "buffered deliveries the core never saw nak'ed for another instance");
                    }
                    messages = SelectAll::new();
                    resubscribe.iter_mut().for_each(|r| *r = None);
                    inbound = None;
                    drain_until = Some(Instant::now() + settings.shutdown_grace());
                }
                () = sleep_until_opt(drain_until), if drain_until.is_some() => {}
                Some(event) = connection_events.recv() => self.feed(Input::Connection(event)),
                Some(input) = inputs.recv() => {
                    if matches!(input, Input::PublishDone { .. } | Input::RequestDone { .. } | Input::KvDone { .. }) {
                        self.io_in_flight = self.io_in_flight.saturating_sub(1);
                    }
                    self.feed(input);
                }
                () = tokio::time::sleep(next_timer.unwrap_or_default()), if next_timer.is_some() => {
                    let now = wall_clock();
                    for key in self.timers.pop_due(now) {
                        self.feed(Input::Timer { key });
                    }
                }
                Some(request) = next_of(&mut inbound), if inbound.is_some() => self.on_inbound(request),
                Some((index, generation, item)) = messages.next(), if !messages.is_empty() => match item {
                    // A retired stream's late deliveries are served like any other.
                    Some(Ok(message)) => self.on_message(index, message),
                    Some(Err(_)) | None if !pulls.is_current(index, generation) => {}
                    Some(Err(err)) if err.kind() == pull::MessagesErrorKind::MissingHeartbeat => {
                        self.restart_stalled_pull(index, &mut pulls);
                        resubscribe[index] = Some(Instant::now());
                    }
                    Some(Err(err)) => {
                        tracing::warn!(%err, consumer = self.role(index), "pull error");
                    }
                    None => {
                        tracing::warn!(consumer = self.role(index), "pull subscription ended; re-creating it");
                        resubscribe[index] = Some(Instant::now() + RESUBSCRIBE_DELAY);
                    }
                },
                () = sleep_until_opt(next_resubscribe), if next_resubscribe.is_some() && drain_until.is_none() => {
                    let now = Instant::now();
                    for (index, (spec, consumer)) in consumers.iter().enumerate() {
                        if resubscribe[index].is_none_or(|at| at > now) {
                            continue;
                        }
                        match pull_stream(consumer, pull_batch).await {
                            Ok(stream) => {
                                resubscribe[index] = None;
                                messages.push(pulls.start(index, stream));
                            }
                            Err(err) => {
                                tracing::warn!(%err, consumer = %spec.settings.consumer, "cannot start pulling; retrying");
                                resubscribe[index] = Some(Instant::now() + RESUBSCRIBE_DELAY);
                            }
                        }
                    }
                }
                _ = metrics_tick.tick() => self.publish_metrics(),
                _ = stats_tick.tick() => self.log_stats(),
            }
        }
        self.log_stats();
        self.publish_metrics();
        self.router.stats().clone()
    }

    /// Neither a message nor an idle heartbeat for two heartbeat intervals: the server
    /// holds no pull request of ours, or it or the connection is stuck. async-nats would
    /// pull again only when its request expires (`expires` + 5 s, 35 s). Seen under CPU
    /// contention with several worker threads: the stream's count of messages still
    /// owed drifts above the truth, so it stops asking while the server has messages
    /// waiting (docs/PERFORMANCE.md, "A stall of the pull"). The caller starts a fresh
    /// stream at once; this one is retired, not dropped: if the server was only stuck,
    /// it may still deliver to the old pull request, and those messages are served.
    fn restart_stalled_pull(&mut self, index: usize, pulls: &mut PullGenerations) {
        tracing::warn!(
            consumer = self.role(index),
            "pull stream silent (missed idle heartbeats); pulling afresh"
        );
        if let Some(c) = self.consumers.get_mut(index) {
            c.pull_restarts += 1;
        }
        pulls.retire(index);
    }

    fn publish_metrics(&self) {
        self.metrics
            .publish_breakers(self.router.breaker_views(self.env.now()));
        self.metrics.publish(
            self.router.stats(),
            self.router.table_sizes(),
            ShellCounters {
                io_in_flight: self.io_in_flight as u64,
                deliveries_held: self.deliveries.len() as u64,
                deliveries_evicted: self.deliveries.evicted(),
                inbound_evicted: self.inbound_requests.evicted(),
                outbox_dropped: self.outbox_dropped,
                timers: self.timers.len() as u64,
                consumers: self.consumers.clone(),
                queues: {
                    let (replies, replies_bound) = self.publisher.reply_queue();
                    let outbox_bound = self.outbox.max_capacity();
                    vec![
                        (
                            "outbox",
                            (outbox_bound - self.outbox.capacity()) as u64,
                            outbox_bound as u64,
                        ),
                        ("replies", replies, replies_bound),
                        (
                            "inbound",
                            self.inbound_requests.len() as u64,
                            INBOUND_BOUND as u64,
                        ),
                    ]
                },
            },
        );
    }

    /// The `consumer` label of consumer `index`.
    fn role(&self, index: usize) -> &'static str {
        self.consumers.get(index).map_or("?", |c| c.role)
    }

    /// Nothing held by the core and no publish or request whose outcome it awaits.
    fn idle(&self) -> bool {
        self.router.in_flight() == 0 && self.io_in_flight == 0
    }

    fn feed(&mut self, input: Input) {
        self.env.stamp();
        self.router.handle(input, &mut self.env);
        for command in self.env.take_commands() {
            self.execute(command);
        }
    }

    fn execute(&mut self, command: Command) {
        match command {
            Command::Ack { delivery } => self.settle(delivery, AckKind::Ack),
            Command::Nak { delivery, delay_ms } => {
                let delay = (delay_ms > 0).then(|| Duration::from_millis(delay_ms));
                self.settle(delivery, AckKind::Nak(delay));
            }
            Command::Term { delivery } => self.settle(delivery, AckKind::Term),
            Command::InProgress { delivery } => self.settle(delivery, AckKind::Progress),
            Command::Publish(publish) => {
                self.io_in_flight += 1;
                self.publisher.spawn_publish(publish);
            }
            Command::Request {
                id,
                subject,
                headers,
                payload,
                timeout_ms,
            } => {
                self.io_in_flight += 1;
                self.publisher
                    .spawn_request(id, subject, headers, payload, timeout_ms);
            }
            Command::KvCreate { id, key, value } => {
                self.io_in_flight += 1;
                self.publisher.spawn_kv_create(id, key, value);
            }
            Command::KvGet { id, key } => {
                self.io_in_flight += 1;
                self.publisher.spawn_kv_access(id, key, None);
            }
            Command::KvPut { id, key, value } => {
                self.io_in_flight += 1;
                self.publisher.spawn_kv_access(id, key, Some(value));
            }
            Command::Respond { id, payload } => match self.inbound_requests.take(id) {
                Some(subject) => self.send_out(Outgoing::Respond {
                    subject,
                    payload: payload.into(),
                }),
                None => tracing::warn!(inbound = id, "answer for an unknown or evicted request"),
            },
            Command::SetTimer { key, at } => self.timers.set(key, at),
        }
    }

    fn settle(&mut self, delivery: u64, kind: AckKind) {
        let subject = match kind {
            AckKind::Progress => self.deliveries.get(delivery).cloned(),
            _ => self.deliveries.take(delivery),
        };
        match subject {
            Some(subject) => self.send_out(Outgoing::Settle { subject, kind }),
            None => tracing::warn!(delivery, ?kind, "settle for an unknown or evicted delivery"),
        }
    }

    /// Queue for the outbox task. Never blocks the loop: if the queue is full (the
    /// client has been cut off for a long time) the message is dropped. A dropped settle
    /// means JetStream redelivers after `ack_wait`, which the core treats as any
    /// redelivery; a dropped response means the caller times out.
    fn send_out(&mut self, outgoing: Outgoing) {
        if self.outbox.try_send(outgoing).is_err() {
            self.outbox_dropped += 1;
            tracing::warn!("outbox full; dropping a settle or response");
        }
    }

    /// Deliveries the pull had already buffered but the loop never read: nak them
    /// without delay, so that another instance gets them now rather than after
    /// `ack_wait`. Only what is ready at once; a pull still in flight is not waited for.
    fn hand_back_buffered(&mut self, messages: &mut SelectAll<Feed>) -> usize {
        let mut handed_back = 0;
        while let Some(Some((_, _, Some(Ok(message))))) = messages.next().now_or_never() {
            if let Some(subject) = message.message.reply {
                self.send_out(Outgoing::Settle {
                    subject,
                    kind: AckKind::Nak(None),
                });
                handed_back += 1;
            }
        }
        handed_back
    }

    fn on_message(&mut self, index: usize, message: jetstream::Message) {
        let (stream_seq, delivered) = match message.info() {
            Ok(info) => {
                if let Some(c) = self.consumers.get_mut(index) {
                    c.ages.observe(age_us(info.published));
                }
                (
                    info.stream_sequence,
                    u64::try_from(info.delivered).unwrap_or(0),
                )
            }
            Err(err) => {
                // Not a JetStream delivery (no `$JS.ACK` reply): nothing to settle either.
                tracing::warn!(%err, subject = %message.subject, "message without JetStream metadata");
                return;
            }
        };
        let message = message.message;
        let Some(ack_subject) = message.reply else {
            return;
        };
        if let Some(c) = self.consumers.get_mut(index) {
            c.deliveries += 1;
        }
        let headers = headers_of(message.headers.as_ref());
        let span = message_span(self.role(index), &headers, &message.payload);
        let _entered = span.enter();
        let id = self.deliveries.hold(ack_subject);
        tracing::debug!(delivery = id, stream_seq, delivered, "delivery");
        self.feed(Input::Delivery(Delivery {
            id,
            subject: message.subject.to_string(),
            headers,
            payload: message.payload.to_vec(),
            stream_seq,
            delivered,
        }));
    }

    fn on_inbound(&mut self, request: async_nats::Message) {
        // A publish without a reply subject cannot be answered; the core is not asked.
        let Some(reply) = request.reply else {
            tracing::debug!(subject = %request.subject, "inbound message without reply subject");
            return;
        };
        let id = self.inbound_requests.hold(reply);
        self.feed(Input::Inbound(InboundRequest {
            id,
            subject: request.subject.to_string(),
            headers: headers_of(request.headers.as_ref()),
            payload: request.payload.to_vec(),
        }));
    }

    fn log_stats(&self) {
        self.publish_metrics();
        tracing::info!(
            stats = ?self.router.stats(),
            held = self.router.in_flight(),
            deliveries = self.deliveries.len(),
            deliveries_evicted = self.deliveries.evicted(),
            inbound_evicted = self.inbound_requests.evicted(),
            timers = self.timers.len(),
            io = self.io_in_flight,
            outbox_dropped = self.outbox_dropped,
            "router stats"
        );
    }
}

/// Microseconds since the server stored the message, by this host's clock (0 if that
/// clock is behind the server's).
fn age_us(published: async_nats::datetime::DateTime) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let stored = u128::try_from(published.unix_timestamp_nanos()).unwrap_or(0);
    u64::try_from(now.saturating_sub(stored) / 1_000).unwrap_or(u64::MAX)
}

/// A span carrying what the headers say about a message: `trace_id` (from `trace_id`, or
/// the trace id of a W3C `traceparent`), `tenant_id`, `request_id` (the `Nats-Msg-Id`
/// the gateway sets, when present) and a hash of the payload. Never the payload itself.
fn message_span(consumer: &str, headers: &crate::core::Headers, payload: &[u8]) -> tracing::Span {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let trace_id = get(HEADER_TRACE_ID)
        .or_else(|| get(HEADER_TRACEPARENT).and_then(|tp| tp.split('-').nth(1)));
    // The first 16 hex digits of the digest the DLQ record carries in full.
    let mut payload_sha256 = crate::core::sha256_hex(payload);
    payload_sha256.truncate(16);
    tracing::info_span!(
        "message",
        consumer,
        trace_id = trace_id.unwrap_or(""),
        tenant_id = get(HEADER_TENANT_ID).unwrap_or(""),
        request_id = get("request_id").or_else(|| get("Nats-Msg-Id")).unwrap_or(""),
        payload_sha256 = %payload_sha256,
        payload_bytes = payload.len(),
    )
}

/// Sends settles and responses in the order the core issued them: plain publishes that
/// wait in the client's buffer while disconnected.
async fn run_outbox(client: async_nats::Client, mut outbox: mpsc::Receiver<Outgoing>) {
    while let Some(outgoing) = outbox.recv().await {
        let result = match outgoing {
            Outgoing::Settle { subject, kind } => client.publish(subject, kind.into()).await,
            Outgoing::Respond { subject, payload } => client.publish(subject, payload).await,
        };
        if let Err(err) = result {
            tracing::warn!(%err, "outbox publish failed");
        }
    }
}

async fn pull_stream(consumer: &PullConsumer, batch: usize) -> anyhow::Result<pull::Stream> {
    Ok(consumer
        .stream()
        .max_messages_per_batch(batch)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await?)
}

/// The next item of an optional stream; pending forever when there is none.
async fn next_of<S: futures::Stream + Unpin>(stream: &mut Option<S>) -> Option<S::Item> {
    match stream {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(err) => {
            tracing::warn!(%err, "cannot listen for SIGTERM; only SIGINT stops the router");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
        _ = terminate.recv() => tracing::info!("SIGTERM"),
    }
}
