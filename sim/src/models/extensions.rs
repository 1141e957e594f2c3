//! Extension calls: a call is retried only after it timed out. Per (process,
//! extension subject), the retries sent (calls made when a retry timer fired) never
//! outnumber the time-outs observed; a retry after an error reply or a refusal
//! ("no responders") is `extension_retry_without_timeout`.
//!
//! The model counts per process and subject rather than per request: a retry timer's
//! step does not name its message. The count is still exact for the rule, since every
//! retry spends one time-out of the same subject.

use std::collections::BTreeMap;

use beamline_router::core::{Command, Input, RequestOutcome};

use super::{Finding, ModelCounters, StepView};
use crate::invariants::Proc;

#[derive(Default)]
pub struct ExtensionModel {
    /// (process, request id) -> subject, for calls in flight.
    calls: BTreeMap<(Proc, u64), String>,
    /// (process, subject) -> (time-outs observed, retries sent).
    budget: BTreeMap<(Proc, String), (u64, u64)>,
}

impl ExtensionModel {
    pub fn on_step(&mut self, step: &StepView, c: &mut ModelCounters, found: &mut Vec<Finding>) {
        if let Input::RequestDone { id, outcome } = step.input {
            if let Some(subject) = self.calls.remove(&(step.proc, *id)) {
                if matches!(outcome, RequestOutcome::Timeout) {
                    self.budget.entry((step.proc, subject)).or_default().0 += 1;
                }
            }
        }
        let retry_step = matches!(step.input, Input::Timeout);
        for command in step.commands {
            let Command::Request { id, subject, .. } = command else {
                continue;
            };
            self.calls.insert((step.proc, *id), subject.clone());
            if !retry_step {
                continue;
            }
            c.extension_retries += 1;
            let (timeouts, retries) = self.budget.entry((step.proc, subject.clone())).or_default();
            *retries += 1;
            if *retries > *timeouts {
                found.push(Finding {
                    invariant: "extension_retry_without_timeout",
                    seq: None,
                    message: format!(
                        "router-{} retried {subject} ({} retries) after only {} time-outs",
                        step.proc.router + 1,
                        retries,
                        timeouts
                    ),
                });
            }
        }
    }
}
