//! Real-server histories judged by the simulator's checkers (`beamline_sim::history`):
//! what a test's gateways sent and received, and what the DLQ and usage streams hold,
//! held to the same rules, under the same names, as every simulated run.

use async_nats::jetstream;
use beamline_router::bench::traffic::LoadReport;
use beamline_sim::history::{self, History, Rules, SentRequest, StoredMessage};

/// Every message a stream holds, in order (read back by sequence).
pub async fn stream_messages(js: &jetstream::Context, name: &str) -> Vec<StoredMessage> {
    let Ok(mut stream) = js.get_stream(name).await else {
        return Vec::new(); // never created: nothing was written to it
    };
    let (first, last, count) = {
        let state = &stream.info().await.expect("stream info").state;
        (state.first_sequence, state.last_sequence, state.messages)
    };
    let mut out = Vec::new();
    if count == 0 {
        return out;
    }
    for seq in first..=last {
        let Ok(m) = stream.get_raw_message(seq).await else {
            continue; // deleted or aged out
        };
        let headers = m
            .headers
            .iter()
            .flat_map(|(k, vs)| {
                vs.iter()
                    .map(move |v| (k.to_string(), v.as_str().to_string()))
            })
            .collect();
        out.push(StoredMessage {
            seq,
            headers,
            payload: m.payload.to_vec(),
        });
    }
    out
}

/// The history of a gateway load (`bench::traffic`): valid keyed requests of `tenant`,
/// every reply that reached the gateway, and the DLQ and usage streams as they are now.
pub async fn of_load(report: &LoadReport, tenant: &str, js: &jetstream::Context) -> History {
    History {
        requests: report
            .records
            .iter()
            .filter(|r| r.attempts > 0)
            .map(|r| SentRequest::valid(&r.request_id, tenant))
            .collect(),
        replies: report
            .records
            .iter()
            .flat_map(|r| r.replies.iter().map(|b| (r.request_id.clone(), b.to_vec())))
            .collect(),
        dlq: stream_messages(js, "BEAMLINE_DLQ").await,
        usage: stream_messages(js, "BEAMLINE_USAGE").await,
    }
}

/// The rules of a run: `max_deliver` as the router was started with, the providers of
/// `acme_policies`, every request settled.
pub fn rules(max_deliver: u64, identical_replies: bool) -> Rules {
    Rules {
        max_deliver,
        identical_replies,
        settled: true,
        providers: vec!["openai".into(), "anthropic".into()],
    }
}

/// Judge `history`: print what was judged, panic with every violation.
pub fn judge(label: &str, history: &History, rules: &Rules) {
    let (summary, violations) = history::check(history, rules);
    println!(
        "history ({label}): {summary:?}, {} violations",
        violations.len()
    );
    assert!(
        violations.is_empty(),
        "{label}: the history breaks the simulator's rules: {:#?}",
        &violations[..violations.len().min(10)]
    );
    assert!(
        summary.requests > 0,
        "{label}: an empty history proves nothing"
    );
}
