//! Message fates the reply rules cannot see: how long a nak asks the server to wait,
//! and when a message may be dead-lettered for exhaustion.
//!
//! - A failure nak (the core gives a message back because a publish it needed failed)
//!   carries the documented delay for its delivery count: `nak_backoff_ms[delivered-1]`,
//!   the last entry repeating (docs/CONFIG.md). Backpressure and overload naks have
//!   their own delays and are told apart by the core's counters.
//! - The nak that reaches the server carries the delay the core asked for: the host
//!   does not drop or change it.
//! - A `maxdeliver_exhausted` DLQ record is written only for a message at its last
//!   delivery (`delivered` = `max_deliver`), or on the server's advisory.

use std::collections::BTreeMap;

use beamline_router::core::{Command, Input, RouterConfig, Settle};
use serde_json::Value;

use super::{dlq_cons, Finding, ModelCounters, StepView};
use crate::host::DeliveryRef;
use crate::invariants::Proc;
use crate::wire::Cons;

pub struct Fates {
    backoff_ms: Vec<u64>,
    max_deliver: u64,
    results_max_deliver: u64,
    /// (process, consumer, seq, delivery) -> the delays the core asked for, not yet
    /// seen on the wire (a delivery handed over twice is nak'ed twice).
    asked: BTreeMap<(Proc, Cons, u64, u64), Vec<u64>>,
}

impl Fates {
    pub fn new(config: &RouterConfig) -> Fates {
        Fates {
            backoff_ms: config.nak_backoff_ms.clone(),
            max_deliver: config.max_deliver,
            results_max_deliver: config.results_max_deliver,
            asked: BTreeMap::new(),
        }
    }

    /// The documented delay of a failure nak at delivery `delivered` (1-based).
    pub fn documented_delay(&self, delivered: u64) -> u64 {
        let i = delivered.saturating_sub(1) as usize;
        self.backoff_ms
            .get(i)
            .or(self.backoff_ms.last())
            .copied()
            .unwrap_or(1_000)
    }

    fn max_deliver(&self, cons: Cons) -> u64 {
        if cons == Cons::Results {
            self.results_max_deliver
        } else {
            self.max_deliver
        }
    }

    pub fn on_step(&mut self, step: &StepView, c: &mut ModelCounters, found: &mut Vec<Finding>) {
        let load_naks = step.delta(|s| s.backpressure_naks) + step.delta(|s| s.overload_naks);
        // A message held under several deliveries gives them all back with the delay of
        // its count, the highest of them.
        let mut count: BTreeMap<(Cons, u64), u64> = BTreeMap::new();
        for command in step.commands {
            if let Command::Settle {
                delivery,
                how: Settle::Nak { .. },
            } = command
            {
                if let Some(d) = step.handle(*delivery) {
                    let e = count.entry((d.cons, d.stream_seq)).or_default();
                    *e = (*e).max(d.delivered);
                }
            }
        }
        for command in step.commands {
            match command {
                Command::Settle {
                    delivery,
                    how: Settle::Nak { delay_ms },
                } => {
                    let Some(d) = step.handle(*delivery) else {
                        continue;
                    };
                    if !matches!(d.cons, Cons::Decide | Cons::Results) {
                        continue;
                    }
                    self.asked
                        .entry((step.proc, d.cons, d.stream_seq, d.delivered))
                        .or_default()
                        .push(*delay_ms);
                    if load_naks > 0 {
                        continue;
                    }
                    c.nak_checks += 1;
                    let delivered = count
                        .get(&(d.cons, d.stream_seq))
                        .copied()
                        .unwrap_or(d.delivered);
                    let want = self.documented_delay(delivered);
                    if *delay_ms != want {
                        found.push(Finding {
                            invariant: "nak_delay_wrong",
                            seq: Some(d.stream_seq),
                            message: format!(
                                "router-{} nak'ed {} seq {} at delivery {delivered} with delay {delay_ms} ms; the backoff table says {want} ms",
                                step.proc.router + 1,
                                d.cons.durable(),
                                d.stream_seq,
                            ),
                        });
                    }
                }
                Command::Publish(p) => {
                    let Some(cons) = dlq_cons(&p.subject) else {
                        continue;
                    };
                    self.check_exhaustion_record(step, cons, &p.payload, found);
                }
                _ => {}
            }
        }
    }

    fn check_exhaustion_record(
        &self,
        step: &StepView,
        cons: Cons,
        payload: &[u8],
        found: &mut Vec<Finding>,
    ) {
        let Ok(record) = serde_json::from_slice::<Value>(payload) else {
            return; // the message checkers judge malformed records
        };
        let code = record.pointer("/error/code").and_then(Value::as_str);
        if code != Some("MAXDELIVER_EXHAUSTED") {
            return;
        }
        let seq = record.get("stream_seq").and_then(Value::as_u64);
        let delivered = record.get("delivered").and_then(Value::as_u64).unwrap_or(0);
        let advisory = matches!(step.input, Input::Exhausted(e) if Some(e.stream_seq) == seq);
        let max = self.max_deliver(cons);
        if delivered < max && !advisory {
            found.push(Finding {
                invariant: "dlq_before_last_delivery",
                seq,
                message: format!(
                    "router-{} dead-lettered {} seq {} for exhaustion at delivery {delivered} of max_deliver {max}, with no advisory from the server",
                    step.proc.router + 1,
                    cons.durable(),
                    seq.unwrap_or(0)
                ),
            });
        }
    }

    /// The host sent a nak: it must carry what the core asked for.
    pub fn on_wire_nak(
        &mut self,
        proc: Proc,
        d: DeliveryRef,
        delay_ms: u64,
        c: &mut ModelCounters,
        found: &mut Vec<Finding>,
    ) {
        // Naks the host makes itself (a delivery handed back while draining) were never
        // asked for by the core.
        let key = (proc, d.cons, d.stream_seq, d.delivered);
        let Some(asked) = self.asked.get_mut(&key) else {
            return;
        };
        c.nak_checks += 1;
        let matched = asked.iter().position(|&a| a == delay_ms);
        let first = asked.first().copied().unwrap_or(0);
        match matched {
            Some(i) => {
                asked.remove(i);
            }
            None => {
                asked.remove(0);
            }
        }
        if asked.is_empty() {
            self.asked.remove(&key);
        }
        if matched.is_none() {
            let asked = first;
            found.push(Finding {
                invariant: "nak_delay_lost",
                seq: Some(d.stream_seq),
                message: format!(
                    "router-{}'s host nak'ed {} seq {} (delivery {}) with delay {delay_ms} ms; the core asked for {asked} ms",
                    proc.router + 1,
                    d.cons.durable(),
                    d.stream_seq,
                    d.delivered
                ),
            });
        }
    }
}
