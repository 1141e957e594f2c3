//! Assignments, results and usage events (Part C INV-05, 06, 12, 28, 32): an assignment
//! is stored once per id, and a usage event reaches the usage consumer at most once per
//! assignment, for the tenant the assignment was for.

use beamline_router::contracts::{ExecAssignment, UsageEvent};

use super::Checker;
use crate::actors::gateway::Workload;

impl Checker {
    /// An assignment reached the assignment stream (or was deduped there).
    pub fn on_assignment_stored(
        &mut self,
        at: u64,
        payload: &[u8],
        duplicate: bool,
        workload: &Workload,
    ) {
        self.counters.checks += 1;
        let Ok(a) = serde_json::from_slice::<ExecAssignment>(payload) else {
            return; // the publish-time rules reported it
        };
        let Some(request) = workload.by_request_id(&a.request_id) else {
            return;
        };
        let entry = self
            .assignments
            .entry(a.assignment_id.clone())
            .or_insert((request, 0, at));
        if duplicate {
            return;
        }
        entry.1 += 1;
        if entry.1 > 1 {
            // Stored twice: CAF would run it twice.
            let (copies, first_at) = (entry.1, entry.2);
            self.fail(
                at,
                "assignment_duplicate",
                format!(
                    "assignment {} ({}) stored {copies} times, the first at {first_at}ms",
                    a.assignment_id, a.request_id
                ),
            );
            if at >= first_at + self.output_window_ms {
                self.classify(super::known::DEDUPE_WINDOW);
            }
        }
    }

    /// A usage event reached the usage stream (or was deduped there).
    pub fn on_usage_stored(&mut self, at: u64, payload: &[u8], duplicate: bool) {
        if duplicate {
            return;
        }
        if let Ok(event) = serde_json::from_slice::<UsageEvent>(payload) {
            self.usage_first_stored
                .entry(event.usage_id.clone())
                .or_insert(at);
            self.usage_stored.insert(event.usage_id);
        }
    }

    /// The usage consumer received usage stream message `seq`.
    pub fn on_usage_consumed(&mut self, at: u64, seq: u64, payload: &[u8], workload: &Workload) {
        self.counters.checks += 1;
        let event = match serde_json::from_slice::<UsageEvent>(payload) {
            Ok(e) => e,
            Err(e) => {
                self.fail(at, "usage_malformed", format!("usage seq {seq}: {e}"));
                return;
            }
        };
        match self.usage_consumed.get(&event.usage_id) {
            Some(&first) if first != seq => {
                // INV-12: at most one usage event per assignment.
                let first_at = self
                    .usage_first_stored
                    .get(&event.usage_id)
                    .copied()
                    .unwrap_or(0);
                self.fail(
                    at,
                    "usage_duplicate",
                    format!("{} consumed twice: usage seqs {first} and {seq}, the first stored at {first_at}ms", event.usage_id),
                );
                if at >= first_at + self.output_window_ms {
                    self.classify(super::known::DEDUPE_WINDOW);
                }
                return;
            }
            Some(_) => return, // a redelivery of the same event
            None => {
                self.usage_consumed.insert(event.usage_id.clone(), seq);
                self.counters.usage_events += 1;
            }
        }
        if let Some(problem) = self.usage_problem(&event, workload) {
            self.fail(at, "usage_wrong", format!("{}: {problem}", event.usage_id));
        }
    }

    fn usage_problem(&self, event: &UsageEvent, workload: &Workload) -> Option<String> {
        let Some(assignment_id) = &event.assignment_id else {
            return Some("no assignment_id".to_string());
        };
        let Some(&(request, _, _)) = self.assignments.get(assignment_id) else {
            return Some(format!("assignment {assignment_id} was never stored"));
        };
        let r = workload.request(request);
        // INV-28: the tenant of a usage event is the tenant of the request.
        if Some(event.tenant_id.as_str()) != r.tenant {
            return Some(format!(
                "tenant {} for a request of {:?}",
                event.tenant_id, r.tenant
            ));
        }
        if event.request_id.as_deref() != Some(r.request_id.as_str()) {
            return Some(format!(
                "request_id {:?}, the assignment's is {}",
                event.request_id, r.request_id
            ));
        }
        None
    }
}
