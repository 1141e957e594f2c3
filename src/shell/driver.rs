//! The driver: one loop that owns the host (and through it the core) and performs what
//! the host asks for with async-nats and tokio. It decides nothing: tables, time-outs,
//! timers, the advisory journey, the pull watchdog and the shutdown drain are the host's
//! (`crate::host`), which the simulator runs too.
//!
//! Each turn it waits (biased, in this order) for: the shutdown signal, a connection
//! event, an event from a background task (publish and request outcomes, reads of
//! server state), the host's next deadline, an inbound request, and only then a new
//! delivery, so finishing work already taken always beats taking more. After each event
//! it performs the host's actions: settles and responses go to one outbox task in
//! order, publishes, requests and reads to a task each, pulls are started inline.
//!
//! Pull streams are transport state: a consumer's current stream is replaced when the
//! host says so (`Action::Pull`, after a stall or an end); the old one is retired, still
//! served for `RETIRE_AFTER` and then dropped, so at most a handful per consumer exist
//! even through a long outage.
//!
//! Shutdown (SIGINT or SIGTERM): the host stops intake (`Action::StopIntake`: messages
//! the pull had buffered but the core never saw are nak'ed at once), keeps serving
//! outcomes and timers until it is idle or its grace period ends (`Action::Exit`), then
//! the outbox finishes, the client flushes, and `serve` returns.

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
use super::headers::headers_of;
use super::metrics::{ConsumerCounters, Metrics, ShellCounters};
use super::nats::{self, Topology};
use super::publisher::Publisher;
use super::reload::PolicySource;
use super::setup;
use super::{HostAction, HostEvent};
use crate::contracts::subjects::{HEADER_TENANT_ID, HEADER_TRACEPARENT, HEADER_TRACE_ID};
use crate::core::{Command, PayloadDigest, Router};
use crate::host::{Arrival, ConsumerRef, Host, HostConfig, PullEvent, Settle};
use crate::policy;

/// Everything `serve` needs: the validated settings.
pub type ServeConfig = Settings;

/// Bounds of the queues into and out of the loop. Background tasks wait when the events
/// queue is full. The outbox channel is twice the host's outbox bound, so that the
/// host's bound (settles queued while disconnected) is the one that bites.
const CONNECTION_EVENTS_BOUND: usize = 64;
const EVENTS_BOUND: usize = 4096;
const OUTBOX_BOUND: usize = 8192;
const STATS_EVERY: Duration = Duration::from_secs(30);
/// How often the metrics snapshot is refreshed.
const METRICS_EVERY: Duration = Duration::from_secs(1);
/// Settles and replies still queued in the client get this long to reach the server.
const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// A read of server state (pending count, a given-up message) may take this long.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

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
    let mut shutdown = Box::pin(shutdown);
    let Some(set_up) =
        setup::until_ready(&client, &js, &settings, &topology, &metrics, &mut shutdown).await?
    else {
        tracing::info!("shutdown requested before JetStream was ready; router stopped");
        return Ok(());
    };
    let setup::SetUp {
        consumers,
        fetchable,
        answer_bucket,
    } = set_up;
    let (_, decide_consumer, max_deliver) = consumers[0].clone();
    let ack_wait = decide_consumer.cached_info().config.ack_wait;

    let router = Router::new(settings.router_config(max_deliver, ack_wait)?, policies);
    let (events_tx, events_rx) = mpsc::channel(EVENTS_BOUND);
    let mut publisher = Publisher::new(client.clone(), js.clone(), events_tx.clone());
    if let Some(store) = answer_bucket {
        publisher = publisher.with_answer_bucket(store);
    }
    let (outbox_tx, outbox_rx) = mpsc::channel(OUTBOX_BOUND);
    let outbox = tokio::spawn(run_outbox(client.clone(), outbox_rx));
    let inbound = nats::subscribe_inbound(&client, &settings.router.node_id).await?;
    let leader_elections = nats::subscribe_leader_elections(&client, &topology).await?;
    let held_bound: u64 = consumers
        .iter()
        .map(|(spec, _, _)| spec.settings.max_ack_pending.max(1))
        .sum();
    let host_config = HostConfig {
        publish_timeout_ms: settings.nats.publish_timeout_ms,
        kv_timeout_ms: settings.state.kv_timeout_ms,
        ..HostConfig::new(
            consumers
                .iter()
                .map(|(spec, _, _)| ConsumerRef {
                    role: spec.role,
                    stream: spec.stream.clone(),
                    durable: spec.settings.consumer.clone(),
                })
                .collect(),
            held_bound,
        )
    };
    let driver = Driver {
        host: Host::new(router, host_config),
        env: ShellEnv::from_os(),
        publisher,
        outbox: outbox_tx,
        outbox_refused: 0,
        events: events_tx,
        metrics: metrics.clone(),
        counters: consumers
            .iter()
            .map(|(spec, _, _)| ConsumerCounters::new(spec.role.label()))
            .collect(),
        pull_batch: usize::try_from(settings.router.pull_batch).unwrap_or(64),
        pull_heartbeat: Duration::from_millis(settings.router.pull_heartbeat_ms),
        shutdown_grace_ms: settings.router.shutdown_grace_ms,
        fetchable,
        pulls: PullGenerations::new(consumers.len()),
        messages: SelectAll::new(),
        inbound: Some(inbound),
        leader_elections,
        exit: None,
        consumers: consumers.iter().map(|(_, c, _)| c.clone()).collect(),
        policy_source: PolicySource::new(policies_dir.clone(), &settings),
        hangups: super::reload::hangups(),
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
    let stats = driver.run(connection_rx, events_rx, shutdown).await;
    tracing::info!(?stats, "driver stopped");

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

/// At most this many deliveries are served in one turn of the driver's loop (the
/// default pull batch): enough to share a turn's cost, few enough that a PubAck or a
/// timer waits for no more than a batch.
const DELIVERIES_PER_TURN: usize = 64;

/// Which pull stream of each consumer is current. A replaced stream is ended
/// `RETIRE_AFTER` later; until then its deliveries are served, but its errors and its
/// end are no longer reported to the host.
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

    /// Make `stream` the current one of consumer `index`, retiring the one before.
    fn start(&mut self, index: usize, stream: pull::Stream) -> Feed {
        self.retire(index);
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
        if let Some(abort) = self.aborts[index].take() {
            tokio::spawn(async move {
                tokio::time::sleep(RETIRE_AFTER).await;
                abort.abort();
            });
        }
    }
}

/// Fire-and-forget messages, sent in the order the host issued them.
enum Outgoing {
    /// `+ACK`, `-NAK`, `+TERM` or `+WPI` to a delivery's ack subject.
    Settle { subject: Subject, kind: AckKind },
    /// The core's answer to an inbound request.
    Respond { subject: Subject, payload: Bytes },
}

struct Driver {
    host: Host<Subject, Subject>,
    env: ShellEnv,
    publisher: Publisher,
    outbox: mpsc::Sender<Outgoing>,
    /// Settles or answers the outbox channel refused (it is sized so that the host's
    /// own bound bites first: a non-zero count means that sizing is wrong).
    outbox_refused: u64,
    events: mpsc::Sender<HostEvent>,
    metrics: Metrics,
    /// Counters of each consumer, by index (its role is the `consumer` label).
    counters: Vec<ConsumerCounters>,
    pull_batch: usize,
    pull_heartbeat: Duration,
    shutdown_grace_ms: u64,
    /// Streams an advisory may name.
    fetchable: Vec<jetstream::stream::Stream>,
    consumers: Vec<PullConsumer>,
    /// Where the policies came from, read again on SIGHUP.
    policy_source: PolicySource,
    hangups: Option<tokio::signal::unix::Signal>,
    pulls: PullGenerations,
    /// One merged stream of every consumer's deliveries.
    messages: SelectAll<Feed>,
    inbound: Option<SelectAll<async_nats::Subscriber>>,
    /// Each consumer's LEADER_ELECTED advisories, as the consumer's index.
    leader_elections: SelectAll<nats::LeaderElections>,
    /// Set by `Action::Exit`: whether the drain completed.
    exit: Option<bool>,
}

impl Driver {
    async fn run(
        mut self,
        mut connection_events: mpsc::Receiver<crate::core::ConnectionEvent>,
        mut events: mpsc::Receiver<HostEvent>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> crate::core::Stats {
        tokio::pin!(shutdown);
        let mut shutdown_seen = false;
        let mut stats_tick = tokio::time::interval(STATS_EVERY);
        stats_tick.tick().await;
        let mut metrics_tick = tokio::time::interval(METRICS_EVERY);
        self.host.start(wall_clock());
        self.perform().await;

        // One timer, moved only when the host's deadline moves: a fresh `sleep_until` per
        // loop turn registers and cancels a timer-wheel entry for every event.
        let wake = tokio::time::sleep(Duration::from_secs(3_600));
        tokio::pin!(wake);
        let mut wake_at: Option<crate::core::Time> = None;
        while self.exit.is_none() {
            let deadline = self.host.poll_timeout();
            if deadline != wake_at {
                wake_at = deadline;
                if let Some(at) = deadline {
                    let ms = at.millis().saturating_sub(wall_clock().millis());
                    wake.as_mut()
                        .reset(Instant::now() + Duration::from_millis(ms));
                }
            }
            tokio::select! {
                biased;
                () = &mut shutdown, if !shutdown_seen => {
                    shutdown_seen = true;
                    tracing::info!(
                        held = self.host.router().in_flight(),
                        io = self.host.counters().io_in_flight,
                        "shutdown requested: no more pulls, finishing in-flight work"
                    );
                    self.metrics.set_shutting_down();
                    let grace_ms = self.shutdown_grace_ms;
                    self.handle(HostEvent::Shutdown { grace_ms });
                }
                Some(event) = connection_events.recv() => self.handle(HostEvent::Connection(event)),
                Some(event) = events.recv() => self.handle(event),
                () = &mut wake, if wake_at.is_some() => {
                    // Re-armed from the host's next deadline on the next turn.
                    wake_at = None;
                    self.host.handle_timeout(wall_clock(), &mut self.env);
                }
                Some(request) = next_of(&mut self.inbound), if self.inbound.is_some() => self.on_inbound(request),
                Some(consumer) = self.leader_elections.next() => {
                    tracing::info!(consumer = self.role(consumer), "consumer leader elected; pulling afresh from it");
                    self.handle(HostEvent::Pull { consumer, event: PullEvent::LeaderElected });
                }
                Some(item) = self.messages.next(), if !self.messages.is_empty() => self.on_pull_items(item),
                () = next_signal(&mut self.hangups) => self.load_policies(None, "SIGHUP"),
                _ = metrics_tick.tick() => self.publish_metrics(),
                _ = stats_tick.tick() => self.log_stats(),
            }
            self.perform().await;
        }
        if self.exit == Some(false) {
            tracing::warn!(
                held = self.host.router().in_flight(),
                io = self.host.counters().io_in_flight,
                "shutdown grace ended with work in flight; JetStream will redeliver it"
            );
        }
        self.log_stats();
        self.host.router().stats().clone()
    }

    fn handle(&mut self, event: HostEvent) {
        self.host.handle(wall_clock(), event, &mut self.env);
    }

    /// Perform every action the host has queued (performing one may queue more).
    async fn perform(&mut self) {
        while let Some(action) = self.host.poll_action() {
            self.perform_one(action).await;
        }
    }

    async fn perform_one(&mut self, action: HostAction) {
        match action {
            HostAction::Settle { ack, how } => {
                let kind = match how {
                    Settle::Ack => AckKind::Ack,
                    Settle::Nak { delay_ms } => {
                        AckKind::Nak((delay_ms > 0).then(|| Duration::from_millis(delay_ms)))
                    }
                    Settle::Term => AckKind::Term,
                    Settle::Progress => AckKind::Progress,
                };
                self.send_out(Outgoing::Settle { subject: ack, kind });
            }
            HostAction::Respond { reply, payload } => self.send_out(Outgoing::Respond {
                subject: reply,
                payload: payload.into(),
            }),
            HostAction::Io {
                command,
                timeout_ms,
            } => self.perform_io(command, Duration::from_millis(timeout_ms)),
            HostAction::Fetch { id, stream, seq } => {
                match self
                    .fetchable
                    .iter()
                    .find(|s| s.cached_info().config.name == stream)
                {
                    Some(s) => {
                        feeds::spawn_fetch(s.clone(), id, seq, READ_TIMEOUT, self.events.clone())
                    }
                    None => {
                        // The host only fetches from our own consumers' streams.
                        tracing::error!(%stream, "fetch from a stream the driver does not know");
                        let message = crate::host::Fetched::Failed;
                        self.handle(HostEvent::Fetched { id, message });
                    }
                }
            }
            HostAction::ReadPending => {
                feeds::spawn_read_pending(
                    self.consumers[0].clone(),
                    READ_TIMEOUT,
                    self.events.clone(),
                );
            }
            HostAction::Pull { consumer } => {
                let event = match pull_stream(
                    &self.consumers[consumer],
                    self.pull_batch,
                    self.pull_heartbeat,
                )
                .await
                {
                    Ok(stream) => {
                        self.messages.push(self.pulls.start(consumer, stream));
                        PullEvent::Started
                    }
                    Err(err) => {
                        tracing::warn!(%err, consumer = self.role(consumer), "cannot start pulling; retrying");
                        PullEvent::StartFailed
                    }
                };
                self.handle(HostEvent::Pull { consumer, event });
            }
            HostAction::LoadPolicies { reply } => self.load_policies(reply, "admin request"),
            HostAction::StopIntake => {
                let handed_back = self.hand_back_buffered();
                if handed_back > 0 {
                    tracing::info!(
                        handed_back,
                        "buffered deliveries the core never saw nak'ed for another instance"
                    );
                }
                self.messages = SelectAll::new();
                self.inbound = None;
            }
            HostAction::Exit { drained } => self.exit = Some(drained),
        }
    }

    fn perform_io(&mut self, command: Command, timeout: Duration) {
        match command {
            Command::Publish(publish) => self.publisher.spawn_publish(publish, timeout),
            Command::Request {
                id,
                subject,
                headers,
                payload,
                ..
            } => self
                .publisher
                .spawn_request(id, subject, headers, payload, timeout),
            Command::Kv { id, op } => self.publisher.spawn_kv(id, op, timeout),
            other => tracing::error!(?other, "the host asked for I/O that is not I/O"),
        }
    }

    /// SIGHUP, or an operator's `reload_policies` (`reply` to answer): read the policy
    /// set again and hand it to the host, which puts it in force or refuses it whole.
    fn load_policies(&mut self, reply: Option<Subject>, cause: &'static str) {
        let loaded = self.policy_source.load();
        let shown = loaded
            .as_ref()
            .map(|r| (r.policies.len(), r.extensions.as_ref().map(|e| e.len())))
            .map_err(String::clone);
        self.handle(HostEvent::PoliciesLoaded { reply, loaded });
        let dir = self.policy_source.dir().display();
        match shown {
            Ok((policies, extensions)) => {
                tracing::info!(policies, extensions, %dir, cause, "policies reloaded");
            }
            Err(error) => tracing::warn!(
                %error,
                %dir,
                cause,
                "policy reload refused: the running policies stay in force"
            ),
        }
        self.publish_metrics();
    }

    fn publish_metrics(&self) {
        let now = wall_clock();
        self.metrics
            .publish_breakers(self.host.router().breaker_views(now));
        let h = self.host.counters();
        let mut consumers = self.counters.clone();
        for (i, c) in consumers.iter_mut().enumerate() {
            c.pull_restarts = h.pull_restarts.get(i).copied().unwrap_or(0);
            c.pull_leader_moves = h.pull_leader_moves.get(i).copied().unwrap_or(0);
        }
        self.metrics.publish(
            self.host.router().stats(),
            self.host.router().table_sizes(),
            ShellCounters {
                io_in_flight: h.io_in_flight,
                deliveries_held: h.deliveries_held,
                deliveries_evicted: h.deliveries_evicted,
                inbound_evicted: h.inbound_evicted,
                outbox_dropped: h.outbox_dropped + self.outbox_refused,
                timers: h.timers,
                decide_durations: h.decide_durations.clone(),
                policy_reloads: h.policy_reloads,
                policy_reloads_refused: h.policy_reloads_refused,
                consumers,
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
                        ("inbound", h.inbound_held, self.host.inbound_bound() as u64),
                    ]
                },
            },
        );
    }

    /// The `consumer` label of consumer `index`.
    fn role(&self, index: usize) -> &'static str {
        self.counters.get(index).map_or("?", |c| c.role)
    }

    /// Queue for the outbox task. Never blocks the loop; the host has already bounded
    /// what is queued while disconnected, so a refusal here is counted and logged.
    fn send_out(&mut self, outgoing: Outgoing) {
        if self.outbox.try_send(outgoing).is_err() {
            self.outbox_refused += 1;
            tracing::warn!("outbox channel full; dropping a settle or response");
        }
    }

    /// Deliveries the pull had already buffered but the loop never read: nak them
    /// without delay, so that another instance gets them now rather than after
    /// `ack_wait`. Only what is ready at once; a pull still in flight is not waited for.
    /// Whatever the pulls had buffered goes to the host like any delivery: intake has
    /// stopped, so the host hands it back (a nak without delay) for another instance.
    fn hand_back_buffered(&mut self) -> u64 {
        let before = self.host.counters().handed_back;
        while let Some(Some((index, _, Some(Ok(message))))) = self.messages.next().now_or_never() {
            self.on_message(index, message);
        }
        self.host.counters().handed_back - before
    }

    /// `first`, then whatever the pulls have already buffered, up to a batch: one turn of
    /// the loop (a select over every source, the timer, the signal futures) per batch
    /// rather than per delivery. The actions all of them queued are performed after the
    /// batch, in the order the host queued them.
    fn on_pull_items(&mut self, first: (usize, u64, Option<PullItem>)) {
        self.on_pull_item(first);
        for _ in 1..DELIVERIES_PER_TURN {
            match self.messages.next().now_or_never() {
                Some(Some(item)) => self.on_pull_item(item),
                _ => break,
            }
        }
    }

    fn on_pull_item(&mut self, (index, generation, item): (usize, u64, Option<PullItem>)) {
        match item {
            // A retired stream's late deliveries are served like any other.
            Some(Ok(message)) => self.on_message(index, message),
            Some(Err(_)) | None if !self.pulls.is_current(index, generation) => {}
            Some(Err(err)) if err.kind() == pull::MessagesErrorKind::MissingHeartbeat => {
                tracing::warn!(
                    consumer = self.role(index),
                    "pull stream silent (missed idle heartbeats)"
                );
                self.handle(HostEvent::Pull {
                    consumer: index,
                    event: PullEvent::Stalled,
                });
            }
            Some(Err(err)) => {
                tracing::warn!(%err, consumer = self.role(index), "pull error");
            }
            None => {
                tracing::warn!(consumer = self.role(index), "pull subscription ended");
                self.handle(HostEvent::Pull {
                    consumer: index,
                    event: PullEvent::Ended,
                });
            }
        }
    }

    fn on_message(&mut self, index: usize, message: jetstream::Message) {
        let (stream_seq, delivered, pending) = match message.info() {
            Ok(info) => {
                if let Some(c) = self.counters.get_mut(index) {
                    c.ages.observe(age_us(info.published));
                }
                (
                    info.stream_sequence,
                    u64::try_from(info.delivered).unwrap_or(0),
                    info.pending,
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
        if let Some(c) = self.counters.get_mut(index) {
            c.deliveries += 1;
        }
        let headers = headers_of(message.headers.as_ref());
        let digest = PayloadDigest::of(&message.payload);
        let span = message_span(self.role(index), &headers, &message.payload, &digest);
        let _entered = span.enter();
        tracing::debug!(stream_seq, delivered, "delivery");
        self.handle(HostEvent::Delivery(Arrival {
            consumer: index,
            ack: ack_subject,
            subject: message.subject.to_string(),
            headers,
            payload: message.payload.to_vec(),
            digest,
            stream_seq,
            delivered,
            pending: Some(pending),
        }));
    }

    fn on_inbound(&mut self, request: async_nats::Message) {
        // A publish without a reply subject cannot be answered; the core is not asked.
        let Some(reply) = request.reply else {
            tracing::debug!(subject = %request.subject, "inbound message without reply subject");
            return;
        };
        self.handle(HostEvent::Inbound {
            reply,
            subject: request.subject.to_string(),
            headers: headers_of(request.headers.as_ref()),
            payload: request.payload.to_vec(),
        });
    }

    fn log_stats(&self) {
        self.publish_metrics();
        tracing::info!(
            stats = ?self.host.router().stats(),
            held = self.host.router().in_flight(),
            host = ?self.host.counters(),
            outbox_refused = self.outbox_refused,
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
fn message_span(
    consumer: &str,
    headers: &crate::core::Headers,
    payload: &[u8],
    digest: &PayloadDigest,
) -> tracing::Span {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let trace_id = get(HEADER_TRACE_ID)
        .or_else(|| get(HEADER_TRACEPARENT).and_then(|tp| tp.split('-').nth(1)));
    // The first 16 hex digits of the digest the DLQ record carries in full.
    tracing::info_span!(
        "message",
        consumer,
        trace_id = trace_id.unwrap_or(""),
        tenant_id = get(HEADER_TENANT_ID).unwrap_or(""),
        request_id = get("request_id").or_else(|| get("Nats-Msg-Id")).unwrap_or(""),
        payload_sha256 = %digest.short(),
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

async fn pull_stream(
    consumer: &PullConsumer,
    batch: usize,
    heartbeat: Duration,
) -> anyhow::Result<pull::Stream> {
    Ok(consumer
        .stream()
        .max_messages_per_batch(batch)
        .heartbeat(heartbeat)
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

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not
/// when the future is first polled: a signal that arrives between start-up and the
/// driver's first turn (a supervisor stopping a router that has just said "ready") must
/// start the drain, not kill the process with the default action.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let listen = |kind: SignalKind, name: &'static str| match signal(kind) {
        Ok(s) => Some(s),
        Err(err) => {
            tracing::warn!(%err, signal = name, "cannot listen for this signal");
            None
        }
    };
    let mut terminate = listen(SignalKind::terminate(), "SIGTERM");
    let mut interrupt = listen(SignalKind::interrupt(), "SIGINT");
    async move {
        tokio::select! {
            () = next_signal(&mut interrupt) => tracing::info!("SIGINT"),
            () = next_signal(&mut terminate) => tracing::info!("SIGTERM"),
        }
    }
}

/// The next delivery of `signal`; never, when it could not be listened for.
async fn next_signal(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}
