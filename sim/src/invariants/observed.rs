//! The run's history as its clients saw it (`crate::history`), recorded as the world
//! goes and judged at the end of a run that passed every step check: the rules a
//! real-server test is held to hold for every simulated run too.

use super::Checker;
use crate::actors::gateway::Workload;
use crate::history::{self, Rules, SentRequest, StoredMessage};

impl Checker {
    /// A gateway's attempt of `request` was stored in the decide stream.
    pub fn history_request(&mut self, workload: &Workload, request: usize, msg_id: Option<&str>) {
        let r = workload.request(request);
        let index = *self.history_index.entry(request).or_insert_with(|| {
            self.history.requests.push(SentRequest {
                request_id: r.request_id.clone(),
                kind: r.kind,
                tenant: r.tenant.map(str::to_string),
                keyed: r.has_key,
                pii: r.pii,
                payload: Some(r.payload.clone()),
                msg_ids: Vec::new(),
            });
            self.history.requests.len() - 1
        });
        if let Some(id) = msg_id {
            self.history.requests[index].msg_ids.push(id.to_string());
        }
    }

    /// A message the decide DLQ or the usage stream now holds.
    pub fn history_stored(
        &mut self,
        stream: &str,
        seq: u64,
        headers: &[(String, String)],
        payload: &[u8],
    ) {
        let m = StoredMessage {
            seq,
            headers: headers.to_vec(),
            payload: payload.to_vec(),
        };
        match stream {
            "DECIDE_DLQ" => self.history.dlq.push(m),
            "USAGE" => self.history.usage.push(m),
            _ => {}
        }
    }

    /// The history's rules, at the end of a run no step check failed. Skipped when a
    /// broker lost its unsynced tail: records vanished then, and sequences were reused.
    pub fn finish_history(&mut self, at: u64) {
        if self.violation.is_some() || self.tail_lost {
            return;
        }
        let rules = Rules {
            max_deliver: self.max_deliver,
            identical_replies: self.strict_idempotency || self.shared_answers,
            settled: true,
            providers: crate::policies::PROVIDERS
                .iter()
                .map(|p| p.to_string())
                .collect(),
        };
        let (_, violations) = history::check(&self.history, &rules);
        if let Some(v) = violations.into_iter().next() {
            self.fail(at, v.invariant, format!("(history) {}", v.message));
        }
    }
}
