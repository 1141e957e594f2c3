//! Start-up against JetStream: choose the replicas, then make sure every stream, durable
//! consumer and the KV bucket exist, retrying while the cluster cannot say yet (no
//! leader for a stream or the meta group: an election, a node restarting or replaced).
//! An orchestrator would restart a router that exits then; waiting is cheaper and says
//! why (`/healthz` answers, `/readyz` says no). A refusal with a definite answer (a
//! configuration the server rejects, too few servers for the replicas) still ends the
//! start with its error.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer};

use super::cluster::{self, ClusterView, Replicas};
use super::config::Settings;
use super::metrics::Metrics;
use super::nats::{self, ConsumerSpec, StreamState, Topology};
use crate::host::Role;

/// What start-up found or made.
pub struct SetUp {
    /// Each consumer with the `max_deliver` the server enforces, the decide one first.
    pub consumers: Vec<(ConsumerSpec, PullConsumer, u64)>,
    /// The streams whose messages an advisory may name, for reading them back.
    pub fetchable: Vec<jetstream::stream::Stream>,
    pub answer_bucket: Option<jetstream::kv::Store>,
}

/// The first retry comes after this; each next one after twice as long, up to the cap.
const FIRST_RETRY: Duration = Duration::from_millis(250);
const RETRY_CAP: Duration = Duration::from_secs(5);

/// Set everything up, retrying transient failures until it works or `shutdown`
/// resolves (then `Ok(None)`).
pub async fn until_ready(
    client: &async_nats::Client,
    js: &jetstream::Context,
    settings: &Settings,
    topology: &Topology,
    metrics: &Metrics,
    shutdown: &mut (impl std::future::Future<Output = ()> + Unpin),
) -> anyhow::Result<Option<SetUp>> {
    let cluster = nats::cluster_view(client);
    let replicas = cluster::stream_replicas(settings.streams.replicas, &cluster);
    log_replicas(replicas, &cluster);
    let mut delay = FIRST_RETRY;
    let mut attempt = 1u32;
    loop {
        match set_up(js, settings, topology, replicas, &cluster).await {
            Ok((set_up, states)) => {
                metrics.set_streams(&states);
                return Ok(Some(set_up));
            }
            Err(err) if nats::transient(&err) => {
                tracing::warn!(
                    err = format!("{err:#}"),
                    attempt,
                    retry_in_ms = delay.as_millis() as u64,
                    "JetStream not ready to set up the streams and consumers; retrying"
                );
            }
            Err(err) => return Err(err),
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = &mut *shutdown => return Ok(None),
        }
        delay = (delay * 2).min(RETRY_CAP);
        attempt += 1;
    }
}

fn log_replicas(replicas: Replicas, cluster: &ClusterView) {
    tracing::info!(
        replicas = replicas.value,
        chosen = replicas.chosen_by.label(),
        cluster = cluster.name.as_deref().unwrap_or("(none)"),
        cluster_servers = cluster.servers,
        "stream replicas"
    );
    if replicas.value < cluster.fitting_replicas() {
        tracing::warn!(
            replicas = replicas.value,
            cluster_servers = cluster.servers,
            "streams.replicas is below what the cluster can hold: a node's loss loses the messages it alone holds"
        );
    }
}

async fn set_up(
    js: &jetstream::Context,
    settings: &Settings,
    topology: &Topology,
    replicas: Replicas,
    cluster: &ClusterView,
) -> anyhow::Result<(SetUp, Vec<StreamState>)> {
    let mut states = nats::ensure_streams(js, topology, replicas, cluster).await?;
    let mut consumers = Vec::new();
    for spec in &topology.consumers {
        let (consumer, max_deliver) = nats::ensure_consumer(js, spec).await?;
        consumers.push((spec.clone(), consumer, max_deliver));
    }
    let mut fetchable = Vec::new();
    for (spec, _, _) in consumers
        .iter()
        .filter(|(s, _, _)| s.role != Role::Advisories)
    {
        fetchable.push(js.get_stream(&spec.stream).await?);
    }
    let answer_bucket = if settings.state.shared() {
        let bucket_replicas = cluster::bucket_replicas(settings.state.kv_replicas, replicas);
        let (store, state) =
            nats::ensure_answer_bucket(js, settings, bucket_replicas, cluster).await?;
        tracing::info!(
            bucket = %settings.state.kv_bucket,
            replicas = state.replicas,
            "answers shared through NATS KV"
        );
        states.push(state);
        Some(store)
    } else {
        None
    };
    Ok((
        SetUp {
            consumers,
            fetchable,
            answer_bucket,
        },
        states,
    ))
}
