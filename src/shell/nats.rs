//! Connecting to NATS and making sure the decide stream, the DLQ stream and the durable
//! pull consumer exist. Created when missing, reused as they are when present: an
//! operator may have tuned them, and the server's settings are the truth.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, stream};
use tokio::sync::mpsc;

use crate::core::ConnectionEvent;

/// Where requests come in and dead letters go, and how the consumer is configured.
#[derive(Clone, Debug)]
pub struct Topology {
    pub decide_stream: String,
    pub decide_subject: String,
    pub dlq_stream: String,
    pub dlq_subject: String,
    pub consumer: String,
    pub ack_wait: Duration,
    pub max_deliver: u64,
    pub max_ack_pending: usize,
}

/// Decide requests are worth nothing after a day; keeping them that long lets an operator
/// look at a message that misbehaved. The bound keeps the stream from growing forever.
const DECIDE_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Dead letters are read by people, after the fact: keep them for two weeks.
const DLQ_MAX_AGE: Duration = Duration::from_secs(14 * 24 * 3600);
/// The window in which a re-published `Nats-Msg-Id` is dropped. The core's retries of an
/// ambiguous DLQ publish happen within seconds; two minutes is the server default.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Connect and report `Connected`/`Disconnected` to the driver as core inputs. Other
/// client events are only logged. Reconnects are unlimited, with async-nats's default
/// backoff (0, then 2^(n-1) ms, capped at 4 s).
pub async fn connect(
    url: &str,
    node_id: &str,
    events: mpsc::Sender<ConnectionEvent>,
) -> anyhow::Result<async_nats::Client> {
    let client = async_nats::ConnectOptions::new()
        .name(format!("beamline-router/{node_id}"))
        .event_callback(move |event| {
            let events = events.clone();
            async move {
                let input = match event {
                    async_nats::Event::Connected => {
                        tracing::info!("nats connected");
                        Some(ConnectionEvent::Up)
                    }
                    async_nats::Event::Disconnected => {
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
        })
        .connect(url)
        .await
        .with_context(|| format!("cannot connect to NATS at {url}"))?;
    let info = client.server_info();
    tracing::info!(server_version = %info.version, server_id = %info.server_id, "connected to nats-server");
    if !client.is_server_compatible(2, 9, 0) {
        anyhow::bail!(
            "nats-server {} is older than 2.9.0, the oldest this router supports",
            info.version
        );
    }
    Ok(client)
}

/// Create the decide and DLQ streams if they are missing.
pub async fn ensure_streams(js: &jetstream::Context, topology: &Topology) -> anyhow::Result<()> {
    for (name, subject, max_age) in [
        (
            &topology.decide_stream,
            &topology.decide_subject,
            DECIDE_MAX_AGE,
        ),
        (&topology.dlq_stream, &topology.dlq_subject, DLQ_MAX_AGE),
    ] {
        let stream = js
            .get_or_create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![subject.clone()],
                storage: stream::StorageType::File,
                retention: stream::RetentionPolicy::Limits,
                max_age,
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            })
            .await
            .with_context(|| format!("cannot create or open stream {name}"))?;
        let subjects = &stream.cached_info().config.subjects;
        if !subjects.iter().any(|s| s == subject) {
            tracing::warn!(stream = %name, ?subjects, expected = %subject,
                "existing stream does not list the expected subject; publishes may not be captured");
        }
    }
    Ok(())
}

/// Create the durable pull consumer on the decide stream if it is missing, and return
/// it with the `max_deliver` the server actually enforces (the core must use that one).
///
/// No `backoff` list: the core chooses each nak's delay itself, and with a backoff list
/// nats-server computes nak redelivery delays differently (dst-research.md 3.2).
pub async fn ensure_consumer(
    js: &jetstream::Context,
    topology: &Topology,
) -> anyhow::Result<(consumer::PullConsumer, u64)> {
    let stream = js
        .get_stream(&topology.decide_stream)
        .await
        .with_context(|| format!("cannot open stream {}", topology.decide_stream))?;
    let wanted = consumer::pull::Config {
        durable_name: Some(topology.consumer.clone()),
        filter_subject: topology.decide_subject.clone(),
        ack_policy: consumer::AckPolicy::Explicit,
        deliver_policy: consumer::DeliverPolicy::All,
        ack_wait: topology.ack_wait,
        max_deliver: i64::try_from(topology.max_deliver).unwrap_or(i64::MAX),
        max_ack_pending: i64::try_from(topology.max_ack_pending).unwrap_or(i64::MAX),
        ..Default::default()
    };
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(&topology.consumer, wanted)
        .await
        .with_context(|| format!("cannot create or open consumer {}", topology.consumer))?;
    let config = &consumer.cached_info().config;
    let server_max_deliver = match u64::try_from(config.max_deliver) {
        Ok(n) if n > 0 => n,
        // -1 (unlimited) would mean no delivery is ever the last; the router needs a bound.
        _ => anyhow::bail!(
            "consumer {} has no max_deliver bound ({}); recreate it or set one",
            topology.consumer,
            config.max_deliver
        ),
    };
    if server_max_deliver != topology.max_deliver || config.ack_wait != topology.ack_wait {
        tracing::warn!(
            consumer = %topology.consumer,
            server_max_deliver,
            server_ack_wait_ms = config.ack_wait.as_millis() as u64,
            "existing consumer differs from the command line; using the server's settings"
        );
    }
    Ok((consumer, server_max_deliver))
}

/// Subscribe to the requests addressed to the router itself: the backpressure status a
/// gateway polls and the admin subjects. The core answers them (`Command::Respond`).
pub async fn subscribe_inbound(
    client: &async_nats::Client,
) -> anyhow::Result<futures::stream::SelectAll<async_nats::Subscriber>> {
    use crate::contracts::subjects::{ADMIN_PREFIX, BACKPRESSURE_STATUS};
    let status = client.subscribe(BACKPRESSURE_STATUS).await?;
    let admin = client.subscribe(format!("{ADMIN_PREFIX}>")).await?;
    Ok(futures::stream::select_all([status, admin]))
}
