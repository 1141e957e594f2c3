//! The demo's counterparts of the router (`demo-traffic --pipeline-requests N`): a
//! pre-processor extension answering on its subject, a worker pulling the assignments
//! the decisions asked for and acking them, and a batch of requests through the policy
//! that uses the extension. Each part counts what it did, for the demo's summary.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use serde_json::{json, Map, Value};

use crate::client::{DecideClient, DecideOptions, DecideReply, DecideRequestBuilder};
use crate::contracts::subjects;

/// The demo policy that calls the extension (`scripts/demo-policies/acme/pipeline.json`).
pub const PIPELINE_POLICY: &str = "pipeline";
/// The built-in pre-processor the demo extension answers for.
pub const EXTENSION_SUBJECT: &str = "beamline.ext.pre.normalize_text.v1";
/// Every `ASSIGN_EVERY`th pipeline request asks for an assignment.
pub const ASSIGN_EVERY: usize = 4;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DemoCounts {
    /// Calls the demo extension answered.
    pub extension_calls: u64,
    /// Decisions whose `executed_extensions` name the demo extension as ok.
    pub decided_with_extension: u64,
    /// Requests that asked for an assignment.
    pub assignments_asked: u64,
    /// Assignments the demo worker pulled and acked.
    pub assignments_acked: u64,
    /// Requests answered with an error.
    pub errors: u64,
}

/// A normalize-text pre-processor: lowercases the prompt and marks the metadata.
async fn start_extension(client: &async_nats::Client) -> anyhow::Result<Arc<AtomicU64>> {
    let calls = Arc::new(AtomicU64::new(0));
    let mut sub = client.subscribe(EXTENSION_SUBJECT).await?;
    client.flush().await?;
    let (client, counted) = (client.clone(), calls.clone());
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            let Some(reply) = m.reply else { continue };
            let body: Value = serde_json::from_slice(&m.payload).unwrap_or(Value::Null);
            let mut payload = body.get("payload").cloned().unwrap_or(Value::Null);
            if let Some(Value::String(p)) = payload.get_mut("prompt") {
                *p = p.to_lowercase();
            }
            let answer =
                json!({"payload": payload, "metadata": {"normalized_by": "demo-extension"}});
            if client
                .publish(reply, answer.to_string().into())
                .await
                .is_ok()
            {
                counted.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    Ok(calls)
}

/// A worker: its own durable pull consumer on the assignment stream, acking each.
async fn start_worker(js: &jetstream::Context) -> anyhow::Result<Arc<AtomicU64>> {
    let acked = Arc::new(AtomicU64::new(0));
    let stream = js
        .get_stream("BEAMLINE_ASSIGNMENTS")
        .await
        .context("the assignment stream (the router creates it at start)")?;
    let consumer = stream
        .get_or_create_consumer(
            "demo-worker",
            pull::Config {
                durable_name: Some("demo-worker".into()),
                filter_subject: subjects::ASSIGNMENT.into(),
                ..Default::default()
            },
        )
        .await?;
    let mut messages = consumer.messages().await?;
    let counted = acked.clone();
    tokio::spawn(async move {
        while let Some(Ok(m)) = messages.next().await {
            if m.ack().await.is_ok() {
                counted.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    Ok(acked)
}

/// `n` requests through the extension policy, every `ASSIGN_EVERY`th asking for an
/// assignment, answered by the demo extension and consumed by the demo worker.
pub async fn run_pipeline(
    client: &async_nats::Client,
    tenant: &str,
    n: usize,
) -> anyhow::Result<DemoCounts> {
    let js = jetstream::new(client.clone());
    let extension = start_extension(client).await?;
    let worker = start_worker(&js).await?;
    let decide = DecideClient::connect(client.clone()).await?;
    let opts = DecideOptions::default().with_timeout(Duration::from_secs(10));
    let mut counts = DemoCounts::default();
    for i in 0..n {
        let assign = i % ASSIGN_EVERY == 0;
        let mut payload = Map::new();
        payload.insert("prompt".into(), format!("Hello Pipeline {i}").into());
        let request = DecideRequestBuilder::new(tenant, "text.generate")
            .request_id(format!("demo-pipeline-{i}"))
            .policy_id(PIPELINE_POLICY)
            .payload(payload)
            .push_assignment(assign);
        counts.assignments_asked += u64::from(assign);
        match decide.decide(request, &opts).await? {
            DecideReply::Decision(d) => {
                let ran = serde_json::to_value(&d)
                    .ok()
                    .and_then(|v| v.pointer("/decision/metadata/executed_extensions").cloned())
                    .and_then(|v| v.as_array().cloned())
                    .is_some_and(|items| {
                        items
                            .iter()
                            .any(|i| i["id"] == "normalize_text" && i["status"] == "ok")
                    });
                counts.decided_with_extension += u64::from(ran);
            }
            DecideReply::Error(_) => counts.errors += 1,
        }
    }
    // The worker pulls on its own: give it a moment to drain what was published.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while worker.load(Ordering::Relaxed) < counts.assignments_asked
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    counts.extension_calls = extension.load(Ordering::Relaxed);
    counts.assignments_acked = worker.load(Ordering::Relaxed);
    Ok(counts)
}
