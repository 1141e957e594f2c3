//! The fate of a message once nothing is pending for it (`Fates::maybe_resolve`):
//! - done: every publish (reply, assignment, usage) confirmed -> `Ack`;
//! - refused or exhausted: DLQ record confirmed -> `Term`;
//! - not yet: a publish failed and the server's delivery count is below `max_deliver`
//!   -> `Nak` with a delay, and the server redelivers;
//! - the last delivery could not be completed: a DLQ record of our own (retried by timer
//!   while it fails), then `Term`.
//!
//! Over disjoint borrows of the router's parts, like the flows: the router resolves the
//! message an input concerns once its flow returns, and the decide flow resolves the
//! copies waiting on an idempotency key the moment it releases them (before the holder's
//! own reply goes out).

use super::answers::{Fate, SeqKey};
use super::config::RouterConfig;
use super::dlq;
use super::env::Env;
use super::flight::{Flights, Purpose, TimerPurpose, Work};
use super::io::{Command, DeliveryId, Settle, Source};
use super::outputs;
use super::services::Services;
use super::stats::Stats;

/// How late a BUGGIFY'd timer fires: about what a paused process or a long GC-like stall
/// of the event loop costs.
pub(super) const LATE_TIMER_MS: u64 = 1_500;

enum Next {
    Settle(Fate),
    Redeliver,
    DeadLetter,
    RetryDlqLater,
}

/// What deciding a fate may touch: the configuration (read), the stats, the services
/// (answer book, result book, backpressure latency) and the message table.
pub(super) struct Fates<'a> {
    pub config: &'a RouterConfig,
    pub stats: &'a mut Stats,
    pub services: &'a mut Services,
    pub flights: &'a mut Flights,
}

impl Fates<'_> {
    /// If nothing is pending for `seq` any more, choose its fate.
    pub(super) fn maybe_resolve(&mut self, seq: SeqKey, env: &mut impl Env) {
        let ready = self
            .flights
            .messages
            .get(&seq)
            .is_some_and(|m| m.pending.is_empty() && matches!(m.work, Work::Publishing));
        if ready {
            self.resolve(seq, env);
        }
    }

    fn resolve(&mut self, seq: SeqKey, env: &mut impl Env) {
        let Some(mut msg) = self.flights.messages.remove(&seq) else {
            return;
        };
        // Planted bug `dlq-one-early`: the delivery before the last is taken for it.
        let early = u64::from(env.planted("dlq-one-early"));
        let last = msg.delivered + early >= max_deliver_for(self.config, msg.source);
        let next = match (&msg.dlq, msg.failed) {
            (Some(_), _) if msg.dlq_confirmed && (!msg.failed || last) => Next::Settle(Fate::Term),
            // The last delivery: the server will not redeliver, so we keep the message
            // and retry the record ourselves.
            (Some(_), _) if !msg.dlq_confirmed && last => Next::RetryDlqLater,
            (Some(_), _) => Next::Redeliver,
            (None, false) => Next::Settle(Fate::Ack),
            (None, true) if !last => Next::Redeliver,
            // The last delivery allowed could not be completed.
            (None, true) => Next::DeadLetter,
        };
        match next {
            Next::RetryDlqLater => {
                // BUGGIFY: the timer fires late (a busy loop, a paused process).
                let late_ms = if env.buggify("router.dlq_retry_late") {
                    LATE_TIMER_MS
                } else {
                    0
                };
                let at = env.now().after(self.config.dlq_retry_ms + late_ms);
                self.flights.timers.set(at, TimerPurpose::RetryDlq(seq));
                self.flights.messages.insert(seq, msg);
            }
            Next::DeadLetter => {
                let publish = outputs::exhausted_dlq(
                    self.config,
                    &msg,
                    seq,
                    msg.delivered,
                    dlq::Exhaustion::PublishFailed,
                    env.now(),
                );
                msg.dlq = Some(publish.clone());
                self.flights.send(seq, &mut msg, publish, Purpose::Dlq, env);
                let delivered = msg.delivered;
                outputs::reply_exhausted(self.stats, self.flights, seq, &mut msg, delivered, env);
                self.flights.messages.insert(seq, msg);
            }
            Next::Settle(fate) => {
                if msg.source == Source::Decide {
                    let elapsed = env.now().millis().saturating_sub(msg.received_at.millis());
                    self.services
                        .backpressure
                        .record_latency(elapsed, env.now());
                }
                self.services.answers.settle(seq, fate);
                if let (Some(key), Fate::Ack) = (&msg.origin.result_key, fate) {
                    if let Some(entry) = self.services.results.get_mut(key) {
                        entry.settled = true;
                    }
                }
                settle(self.stats, &msg.deliveries, fate, env);
            }
            Next::Redeliver => {
                let delay_ms = backoff(self.config, msg.delivered);
                nak(self.stats, &msg.deliveries, delay_ms, env);
            }
        }
    }
}

/// Ack or term each delivery.
pub(super) fn settle(stats: &mut Stats, deliveries: &[DeliveryId], fate: Fate, env: &mut impl Env) {
    let how = match fate {
        Fate::Ack => Settle::Ack,
        Fate::Term => Settle::Term,
    };
    for &delivery in deliveries {
        match fate {
            Fate::Ack => stats.acks += 1,
            Fate::Term => stats.terms += 1,
        }
        env.execute(Command::Settle { delivery, how });
    }
}

/// Give each delivery back, to be redelivered after `delay_ms`.
pub(super) fn nak(stats: &mut Stats, deliveries: &[DeliveryId], delay_ms: u64, env: &mut impl Env) {
    for &delivery in deliveries {
        stats.naks += 1;
        if delay_ms > 0 {
            env.probe("fate.nak_delayed");
        }
        env.execute(Command::Settle {
            delivery,
            how: Settle::Nak { delay_ms },
        });
    }
}

/// Nak delay for a delivery with server count `delivered` (1-based).
pub(super) fn backoff(config: &RouterConfig, delivered: u64) -> u64 {
    let list = &config.nak_backoff_ms;
    let i = (delivered.saturating_sub(1) as usize).min(list.len().saturating_sub(1));
    list.get(i).copied().unwrap_or(1_000)
}

/// Each consumer has its own `max_deliver`.
pub(super) fn max_deliver_for(config: &RouterConfig, source: Source) -> u64 {
    match source {
        Source::Decide => config.max_deliver,
        Source::Result => config.results_max_deliver,
        Source::AssignmentAck => config.acks_max_deliver,
    }
}
