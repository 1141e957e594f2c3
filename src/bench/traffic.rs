//! A gateway-like load generator: sends decide requests through JetStream with a
//! `Reply-To` header naming its own inbox, matches replies by `context.request_id`, and
//! re-sends a request whose reply is late (same `request_id` and `idempotency_key`, new
//! `Nats-Msg-Id`, as a gateway would). Used by `beamline-router demo-traffic`, the bench (its
//! requests and publishes) and the integration tests; a client of the router, not part
//! of it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use tokio::time::Instant;

use crate::contracts::subjects::{HEADER_MSG_ID, HEADER_REPLY_TO};

#[derive(Clone, Debug)]
pub struct LoadPlan {
    pub requests: usize,
    pub tenant: String,
    /// Requests awaiting their reply at once.
    pub concurrency: usize,
    /// Re-send a request whose reply has not arrived after this long.
    pub resend_after: Duration,
    /// Sends per request, the first included.
    pub max_attempts: u32,
    /// Give up on the whole run after this long.
    pub deadline: Duration,
    /// After the last reply, keep listening this long for duplicate replies.
    pub linger: Duration,
    /// Prefix of request ids, unique per run so that runs never answer each other.
    pub run_id: String,
    pub decide_subject: String,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Progress {
    pub sent: usize,
    pub answered: usize,
    pub resent: usize,
}

#[derive(Clone, Debug)]
pub struct RequestRecord {
    pub request_id: String,
    /// Sends of this request (1 = never re-sent).
    pub attempts: u32,
    /// Every reply that arrived, raw, in arrival order.
    pub replies: Vec<Bytes>,
    /// From the first send to the first reply.
    pub latency: Option<Duration>,
}

#[derive(Clone, Debug)]
pub struct LoadReport {
    pub records: Vec<RequestRecord>,
    pub elapsed: Duration,
    /// Replies whose `context.request_id` matched no request of this run.
    pub unmatched_replies: usize,
    /// Publishes whose PubAck did not arrive (ambiguous: the request may still be stored).
    pub unconfirmed_publishes: u64,
}

impl LoadReport {
    pub fn sent(&self) -> usize {
        self.records.iter().filter(|r| r.attempts > 0).count()
    }

    pub fn answered(&self) -> usize {
        self.records
            .iter()
            .filter(|r| !r.replies.is_empty())
            .count()
    }

    /// The ids of requests that never got a reply.
    pub fn unanswered(&self) -> Vec<&str> {
        self.records
            .iter()
            .filter(|r| r.replies.is_empty())
            .map(|r| r.request_id.as_str())
            .collect()
    }

    pub fn answered_twice(&self) -> usize {
        self.records.iter().filter(|r| r.replies.len() > 1).count()
    }

    /// Requests sent more than once.
    pub fn resent(&self) -> usize {
        self.records.iter().filter(|r| r.attempts > 1).count()
    }

    /// Provider of each successful first reply; `error:<code>` for error replies.
    pub fn outcomes(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for reply in self.records.iter().filter_map(|r| r.replies.first()) {
            *counts.entry(outcome_of(reply)).or_insert(0) += 1;
        }
        counts
    }

    /// The latency below which a fraction `q` (0..=1) of answered requests fall.
    pub fn latency_quantile(&self, q: f64) -> Option<Duration> {
        let mut latencies: Vec<Duration> = self.records.iter().filter_map(|r| r.latency).collect();
        if latencies.is_empty() {
            return None;
        }
        latencies.sort();
        let rank = (q.clamp(0.0, 1.0) * latencies.len() as f64).ceil() as usize;
        Some(latencies[rank.saturating_sub(1).min(latencies.len() - 1)])
    }
}

fn outcome_of(reply: &[u8]) -> String {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(reply) else {
        return "unparseable".to_string();
    };
    if value["ok"] == serde_json::Value::Bool(true) {
        value["decision"]["provider_id"]
            .as_str()
            .unwrap_or("?")
            .to_string()
    } else {
        format!("error:{}", value["error"]["code"].as_str().unwrap_or("?"))
    }
}

/// A valid `DecideRequest` for `tenant`. The idempotency key is the request id: a
/// re-send is the same request.
pub fn decide_request(request_id: &str, tenant: &str, n: usize) -> Vec<u8> {
    serde_json::json!({
        "version": "1",
        "request_id": request_id,
        "tenant_id": tenant,
        "trace_id": format!("{:032x}", 0x5eed_0000_u64 + n as u64),
        "task": {"type": "text.generate", "payload": {"prompt": format!("hello number {n}")}},
        "metadata": {"user_id": format!("u-{}", n % 50)},
        "idempotency_key": request_id,
    })
    .to_string()
    .into_bytes()
}

/// Wait until the router has created the decide stream, so the first publishes are
/// captured rather than answered with "no responders".
pub async fn wait_for_stream(
    js: &jetstream::Context,
    stream: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match js.get_stream(stream).await {
            Ok(_) => return Ok(()),
            Err(err) if Instant::now() >= deadline => {
                return Err(err).with_context(|| format!("stream {stream} did not appear"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

struct Outstanding {
    index: usize,
    first_sent: Instant,
    last_sent: Instant,
}

pub async fn run_load(
    client: &async_nats::Client,
    plan: &LoadPlan,
    mut progress: impl FnMut(Progress),
) -> anyhow::Result<LoadReport> {
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await?;
    // The subscription must reach the server before the first reply can.
    client.flush().await?;
    let js = jetstream::new(client.clone());
    let unconfirmed = Arc::new(AtomicU64::new(0));

    let mut records: Vec<RequestRecord> = (0..plan.requests)
        .map(|i| RequestRecord {
            request_id: format!("{}-{i}", plan.run_id),
            attempts: 0,
            replies: Vec::new(),
            latency: None,
        })
        .collect();
    let index_of: BTreeMap<String, usize> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (r.request_id.clone(), i))
        .collect();
    let mut outstanding: BTreeMap<usize, Outstanding> = BTreeMap::new();
    let mut state = Progress::default();
    let mut unmatched = 0;
    let started = Instant::now();
    let mut check = tokio::time::interval(Duration::from_millis(100));

    let send = |record: &mut RequestRecord, index: usize| {
        record.attempts += 1;
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_REPLY_TO, inbox.as_str());
        headers.insert(
            HEADER_MSG_ID,
            format!("{}-a{}", record.request_id, record.attempts).as_str(),
        );
        let payload = Bytes::from(decide_request(&record.request_id, &plan.tenant, index));
        // The PubAck is awaited off the loop: during an outage it may take seconds.
        spawn_counted_publish(
            js.clone(),
            plan.decide_subject.clone(),
            headers,
            payload,
            Duration::from_secs(5),
            unconfirmed.clone(),
        );
    };

    let mut next = 0;
    let all_answered_at = loop {
        while next < plan.requests && outstanding.len() < plan.concurrency {
            send(&mut records[next], next);
            let now = Instant::now();
            outstanding.insert(
                next,
                Outstanding {
                    index: next,
                    first_sent: now,
                    last_sent: now,
                },
            );
            next += 1;
            state.sent = next;
        }
        if next == plan.requests && outstanding.is_empty() {
            break Some(Instant::now());
        }
        if started.elapsed() >= plan.deadline {
            break None;
        }
        tokio::select! {
            reply = replies.next() => {
                let Some(reply) = reply else { anyhow::bail!("reply subscription closed") };
                match request_id_of(&reply.payload).and_then(|id| index_of.get(&id).copied()) {
                    Some(i) => {
                        let record = &mut records[i];
                        record.replies.push(reply.payload.clone());
                        if let Some(o) = outstanding.remove(&i) {
                            record.latency = Some(o.first_sent.elapsed());
                            state.answered += 1;
                            progress(state);
                        }
                    }
                    None => unmatched += 1,
                }
            }
            _ = check.tick() => {
                let now = Instant::now();
                let late: Vec<usize> = outstanding
                    .values()
                    .filter(|o| now - o.last_sent >= plan.resend_after
                        && records[o.index].attempts < plan.max_attempts)
                    .map(|o| o.index)
                    .collect();
                for i in late {
                    if records[i].attempts == 1 {
                        state.resent += 1;
                    }
                    send(&mut records[i], i);
                    if let Some(o) = outstanding.get_mut(&i) {
                        o.last_sent = now;
                    }
                }
                if state.resent > 0 {
                    progress(state);
                }
            }
        }
    };

    // Late duplicates (a redelivered request answered again) arrive after the last
    // first-reply; listen a little longer so they are counted.
    if all_answered_at.is_some() {
        let until = Instant::now() + plan.linger;
        while let Ok(Some(reply)) = tokio::time::timeout_at(until, replies.next()).await {
            match request_id_of(&reply.payload).and_then(|id| index_of.get(&id).copied()) {
                Some(i) => records[i].replies.push(reply.payload.clone()),
                None => unmatched += 1,
            }
        }
    }

    Ok(LoadReport {
        records,
        elapsed: started.elapsed(),
        unmatched_replies: unmatched,
        unconfirmed_publishes: unconfirmed.load(Ordering::Relaxed),
    })
}

fn request_id_of(reply: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(reply).ok()?;
    value["context"]["request_id"].as_str().map(str::to_string)
}

/// The human summary printed by `demo-traffic`.
pub fn summary(report: &LoadReport) -> String {
    let ms = |d: Option<Duration>| {
        d.map(|d| format!("{:.1} ms", d.as_secs_f64() * 1000.0))
            .unwrap_or_else(|| "-".to_string())
    };
    let mut out = String::new();
    out.push_str(&format!(
        "sent {}  answered {}  unanswered {}  re-sent {}  answered twice {}  in {:.1} s\n",
        report.sent(),
        report.answered(),
        report.sent() - report.answered(),
        report.resent(),
        report.answered_twice(),
        report.elapsed.as_secs_f64(),
    ));
    for (outcome, count) in report.outcomes() {
        out.push_str(&format!("  {outcome:<24} {count}\n"));
    }
    out.push_str(&format!(
        "latency p50 {}  p99 {}  max {}\n",
        ms(report.latency_quantile(0.50)),
        ms(report.latency_quantile(0.99)),
        ms(report.latency_quantile(1.0)),
    ));
    if report.unmatched_replies > 0 || report.unconfirmed_publishes > 0 {
        out.push_str(&format!(
            "unmatched replies {}  publishes without PubAck {}\n",
            report.unmatched_replies, report.unconfirmed_publishes
        ));
    }
    out
}

/// Publish into JetStream off the caller's loop; a publish not PubAcked within
/// `timeout` is counted in `unconfirmed`.
pub fn spawn_counted_publish(
    js: async_nats::jetstream::Context,
    subject: String,
    headers: HeaderMap,
    payload: Bytes,
    timeout: Duration,
    unconfirmed: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    tokio::spawn(async move {
        let confirmed = tokio::time::timeout(timeout, async {
            js.publish_with_headers(subject, headers, payload)
                .await?
                .await
                .map_err(async_nats::Error::from)
        })
        .await;
        if !matches!(confirmed, Ok(Ok(_))) {
            unconfirmed.fetch_add(1, Ordering::Relaxed);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(latency_ms: u64, replies: &[&str]) -> RequestRecord {
        RequestRecord {
            request_id: "r".into(),
            attempts: 1,
            replies: replies.iter().map(|r| Bytes::from(r.to_string())).collect(),
            latency: Some(Duration::from_millis(latency_ms)),
        }
    }

    #[test]
    fn quantiles_and_outcomes() {
        let ok = r#"{"ok":true,"decision":{"provider_id":"openai"}}"#;
        let err = r#"{"ok":false,"error":{"code":"policy_not_found"}}"#;
        let report = LoadReport {
            records: (1..=100)
                .map(|i| record(i, &[ok]))
                .chain([record(500, &[err, err])])
                .collect(),
            elapsed: Duration::from_secs(1),
            unmatched_replies: 0,
            unconfirmed_publishes: 0,
        };
        assert_eq!(
            report.latency_quantile(0.5),
            Some(Duration::from_millis(51))
        );
        assert_eq!(
            report.latency_quantile(1.0),
            Some(Duration::from_millis(500))
        );
        assert_eq!(report.outcomes()["openai"], 100);
        assert_eq!(report.outcomes()["error:policy_not_found"], 1);
        assert_eq!(report.answered_twice(), 1);
    }

    #[test]
    fn requests_carry_the_request_id_as_idempotency_key() {
        let v: serde_json::Value =
            serde_json::from_slice(&decide_request("r-1", "acme", 1)).unwrap();
        assert_eq!(v["idempotency_key"], "r-1");
        assert_eq!(v["trace_id"].as_str().unwrap().len(), 32);
    }
}
