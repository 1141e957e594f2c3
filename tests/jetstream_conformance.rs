//! Conformance of the simulated JetStream (`beamline_sim::jetstream`) with a real
//! nats-server (the pinned one, see `tests/support`).
//!
//! Each script below is a small sequence of client actions (publish, fetch, ack, nak,
//! nak with delay, in progress, term, wait, server restart) on one stream and one durable
//! pull consumer. Two executors run it: one against the real server in wall-clock time,
//! one against the model in virtual time, driven the way the simulated world drives it
//! (`sim/src/world/broker.rs`: wake the consumer at its next deadline, hand out what can
//! go, publish advisories). Each produces a normalized log, `(ms since start, event)`,
//! and the two logs must agree: the same events in the same order (publishes and their
//! PubAcks, deliveries with the server's delivery count, MAX_DELIVERIES / MSG_TERMINATED
//! / MSG_NAKED advisories), and each delivery and advisory at the same time within a
//! tolerance (`TOLERANCE_MS` or `TOLERANCE_FRACTION` of the time since the previous
//! event, whichever is larger), measured from the previous event so that the few
//! milliseconds every real round trip costs do not add up over a script. (When the script
//! acts is the script's business, not the server's: actions are compared, not timed.)
//!
//! A difference fails the test with both logs side by side. When they differ, the model
//! is wrong (or the difference is one `docs/SIMULATION.md` "Conformance" lists and the
//! test encodes).
//!
//! The scripts run concurrently, each on its own stream and consumer: all but the restart
//! scripts share one server; each restart script has a server of its own.
//!
//! Needs nats-server (`$NATS_SERVER_BIN`, `nats-server` on PATH, or
//! `scripts/install-nats-server.sh`); never skips.

// The real side runs in wall-clock time against a real server; only the model's side is
// virtual.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy};
use beamline_router::contracts::subjects::HEADER_MSG_ID;
use beamline_sim::jetstream::{AckKind, Advisory, ConsumerConfig, JetStream, StreamConfig};
use futures::{FutureExt, StreamExt};
use support::NatsServer;

/// Timing tolerance: an event may come this much earlier or later, relative to the
/// previous event, than the model says...
const TOLERANCE_MS: u64 = 150;
/// ...or this fraction of the time since the previous event, if that is more.
const TOLERANCE_FRACTION: f64 = 0.2;
/// After a server restart, nats-server recovers the timestamps of pending messages from
/// its store at whole-second resolution (the file store downsamples them), so the first
/// redelivery of a message after a restart may come up to this much earlier than the
/// model, which keeps them to the millisecond, says. See docs/SIMULATION.md,
/// "Conformance".
const RESTART_EARLY_MS: u64 = 1_000;
/// nats-server tells a consumer about a stored message asynchronously, so a delivery's
/// `pending` figure may not count yet the messages stored in this many ms before it.
const PENDING_LAG_MS: u64 = 100;
/// How often a script that differs is run before it fails the test (see the test).
const ATTEMPTS: u32 = 3;
/// How long the real side waits for the advisory of a nak or term it sent.
const ADVISORY_GRACE_MS: u64 = 100;
/// Both executors let this much time pass after the last step, so that late deliveries
/// and advisories are seen.
const SETTLE_MS: u64 = 400;

// ---------------------------------------------------------------------------------------
// The script language
// ---------------------------------------------------------------------------------------

/// What the script does with a delivered message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Ack,
    /// `-NAK`: redeliver now.
    Nak,
    /// `-NAK {"delay": ..}`.
    NakDelay(u64),
    /// `+WPI`.
    InProgress,
    Term,
}

#[derive(Clone, Copy, Debug)]
enum Step {
    /// Publish a message, with a `Nats-Msg-Id` if given.
    Publish(Option<&'static str>),
    /// One pull request for up to `batch` messages, waiting at most `expires_ms`; the step
    /// ends when the batch is full or the request has expired.
    Fetch {
        batch: u64,
        expires_ms: u64,
    },
    /// Settle a delivery of a stream sequence: the latest, or the one with this
    /// delivery count (an older one: its ack subject names that count).
    Settle {
        seq: u64,
        delivery: Option<u64>,
        fate: Fate,
    },
    Wait(u64),
    /// Stop the server and start it again on the same port and store. The downtime is
    /// not counted: the normalized clock stands still while the server is down.
    Restart,
}

struct Script {
    name: &'static str,
    ack_wait_ms: u64,
    max_deliver: u64,
    backoff_ms: &'static [u64],
    max_ack_pending: u64,
    duplicate_window_ms: u64,
    steps: Vec<Step>,
}

impl Script {
    fn new(name: &'static str, steps: Vec<Step>) -> Script {
        Script {
            name,
            ack_wait_ms: 1_000,
            max_deliver: 5,
            backoff_ms: &[],
            max_ack_pending: 1_000,
            duplicate_window_ms: 120_000,
            steps,
        }
    }

    fn duplicate_window(mut self, ms: u64) -> Script {
        self.duplicate_window_ms = ms;
        self
    }

    fn max_ack_pending(mut self, n: u64) -> Script {
        self.max_ack_pending = n;
        self
    }

    fn ack_wait(mut self, ms: u64) -> Script {
        self.ack_wait_ms = ms;
        self
    }

    fn max_deliver(mut self, n: u64) -> Script {
        self.max_deliver = n;
        self
    }

    fn backoff(mut self, ms: &'static [u64]) -> Script {
        self.backoff_ms = ms;
        self
    }

    fn stream(&self) -> String {
        format!("CONF_{}", self.name.to_uppercase())
    }

    fn subject(&self) -> String {
        format!("conf.{}", self.name)
    }
}

fn publish() -> Step {
    Step::Publish(None)
}
fn publish_id(id: &'static str) -> Step {
    Step::Publish(Some(id))
}
fn fetch(batch: u64, expires_ms: u64) -> Step {
    Step::Fetch { batch, expires_ms }
}
fn ack(seq: u64) -> Step {
    Step::Settle {
        seq,
        delivery: None,
        fate: Fate::Ack,
    }
}
fn nak(seq: u64) -> Step {
    Step::Settle {
        seq,
        delivery: None,
        fate: Fate::Nak,
    }
}
fn nak_delay(seq: u64, ms: u64) -> Step {
    Step::Settle {
        seq,
        delivery: None,
        fate: Fate::NakDelay(ms),
    }
}
fn in_progress(seq: u64) -> Step {
    Step::Settle {
        seq,
        delivery: None,
        fate: Fate::InProgress,
    }
}
fn term(seq: u64) -> Step {
    Step::Settle {
        seq,
        delivery: None,
        fate: Fate::Term,
    }
}
/// Settle the delivery of `seq` with delivery count `delivery`, not the latest one.
fn settle_old(seq: u64, delivery: u64, fate: Fate) -> Step {
    Step::Settle {
        seq,
        delivery: Some(delivery),
        fate,
    }
}
fn wait(ms: u64) -> Step {
    Step::Wait(ms)
}

/// The sequences both sides must agree on. Expiries and waits keep every expected event
/// well away (300 ms or more) from the end of a pull or of the script.
fn scripts() -> Vec<Script> {
    vec![
        // Acked messages are never redelivered.
        Script::new(
            "ack",
            vec![
                publish(),
                publish(),
                fetch(2, 500),
                ack(1),
                ack(2),
                fetch(1, 1_600),
            ],
        ),
        // A nak without delay: redelivered at once, the count going up.
        Script::new(
            "nak",
            vec![
                publish(),
                fetch(1, 500),
                nak(1),
                fetch(1, 1_000),
                nak(1),
                fetch(1, 1_000),
                ack(1),
                fetch(1, 600),
            ],
        )
        .ack_wait(2_000),
        // A nak with delay: redelivered after the delay, not after ack_wait.
        Script::new(
            "nak_delay",
            vec![
                publish(),
                fetch(1, 500),
                nak_delay(1, 400),
                fetch(1, 1_500),
                nak_delay(1, 700),
                fetch(1, 1_500),
                ack(1),
            ],
        )
        .ack_wait(2_000),
        // A backoff list: a plain nak, then naks with delay (docs/BACKGROUND.md: the delay
        // becomes d - backoff[0] + backoff[min(n, len - 1)]).
        Script::new(
            "nak_backoff",
            vec![
                publish(),
                fetch(1, 500),
                nak(1),
                fetch(1, 1_800),
                nak_delay(1, 300),
                fetch(1, 1_800),
                nak_delay(1, 300),
                fetch(1, 1_800),
                ack(1),
            ],
        )
        .max_deliver(6)
        .backoff(&[400, 800, 1_200]),
        // No ack: redelivered after ack_wait, again and again.
        Script::new(
            "ack_wait",
            vec![
                publish(),
                fetch(1, 500),
                fetch(1, 1_500),
                fetch(1, 1_500),
                ack(1),
            ],
        ),
        // With a backoff list, the backoff governs ack-timeout redeliveries.
        Script::new(
            "ack_wait_backoff",
            vec![
                publish(),
                fetch(1, 500),
                fetch(1, 1_000),
                fetch(1, 1_400),
                fetch(1, 1_900),
                fetch(1, 1_900),
                ack(1),
            ],
        )
        .backoff(&[400, 900, 1_400]),
        // +WPI restarts the ack_wait timer.
        Script::new(
            "in_progress",
            vec![
                publish(),
                fetch(1, 500),
                wait(600),
                in_progress(1),
                fetch(1, 1_500),
                wait(300),
                in_progress(1),
                wait(300),
                in_progress(1),
                fetch(1, 1_500),
                ack(1),
            ],
        ),
        // Term: never redelivered; a MSG_TERMINATED advisory with the delivery count.
        Script::new(
            "term",
            vec![
                publish(),
                publish(),
                fetch(2, 500),
                nak(1),
                fetch(1, 500),
                term(1),
                term(2),
                fetch(1, 1_600),
            ],
        ),
        // max_deliver reached by naks: no more deliveries; MAX_DELIVERIES.
        Script::new(
            "max_deliver_nak",
            vec![
                publish(),
                fetch(1, 500),
                nak(1),
                fetch(1, 500),
                nak(1),
                fetch(1, 500),
                nak(1),
                fetch(1, 1_500),
            ],
        )
        .max_deliver(3),
        // max_deliver reached by ack timeouts, with no pull waiting when the last ack
        // wait runs out, then with one.
        Script::new(
            "max_deliver_timeout",
            vec![
                publish(),
                fetch(1, 500),
                fetch(1, 1_300),
                wait(1_500),
                fetch(1, 1_200),
            ],
        )
        .ack_wait(800)
        .max_deliver(2),
        // max_deliver reached by an ack timeout while a pull waits.
        Script::new(
            "max_deliver_waiting",
            vec![publish(), fetch(1, 500), fetch(1, 1_300), fetch(1, 1_300)],
        )
        .ack_wait(800)
        .max_deliver(2),
        // A term after MAX_DELIVERIES (the router's DLQ path: copy, then term): nothing
        // is redelivered, and the server still raises MSG_TERMINATED.
        Script::new(
            "term_after_max_deliver",
            vec![
                publish(),
                fetch(1, 500),
                fetch(1, 1_300),
                fetch(1, 1_300),
                term(1),
                fetch(1, 1_000),
            ],
        )
        .ack_wait(800)
        .max_deliver(2),
        // Settling a message already acked: a nak does nothing, a term raises
        // MSG_TERMINATED all the same.
        Script::new(
            "settle_after_ack",
            vec![
                publish(),
                fetch(1, 500),
                ack(1),
                nak(1),
                term(1),
                fetch(1, 1_500),
            ],
        ),
        // A nak delay longer than ack_wait; then, unsettled, the next redelivery comes
        // after ack_wait.
        Script::new(
            "nak_delay_long",
            vec![
                publish(),
                fetch(1, 500),
                nak_delay(1, 1_600),
                fetch(1, 2_200),
                fetch(1, 1_500),
                ack(1),
            ],
        ),
        // Past the end of the backoff list its last entry repeats, for naks with delay
        // and for ack timeouts alike.
        Script::new(
            "nak_backoff_clamp",
            vec![
                publish(),
                fetch(1, 500),
                nak_delay(1, 200),
                fetch(1, 1_000),
                nak_delay(1, 200),
                fetch(1, 1_000),
                nak_delay(1, 200),
                fetch(1, 1_000),
                fetch(1, 1_000),
                ack(1),
            ],
        )
        .max_deliver(6)
        .backoff(&[300, 600]),
        // +WPI with a backoff list: the deadline moves to now + the current backoff entry.
        Script::new(
            "in_progress_backoff",
            vec![
                publish(),
                fetch(1, 500),
                wait(250),
                in_progress(1),
                fetch(1, 1_000),
                wait(500),
                in_progress(1),
                fetch(1, 1_600),
                ack(1),
            ],
        )
        .max_deliver(4)
        .backoff(&[400, 1_000]),
        // Settling a message whose ack wait ran out while no pull was waiting (it sits in
        // the redelivery queue): an ack still counts...
        Script::new(
            "ack_when_due",
            vec![
                publish(),
                fetch(1, 500),
                wait(1_100),
                ack(1),
                fetch(1, 1_500),
            ],
        )
        .ack_wait(800),
        // ...and so do +WPI...
        Script::new(
            "in_progress_when_due",
            vec![
                publish(),
                fetch(1, 500),
                wait(1_100),
                in_progress(1),
                fetch(1, 1_500),
                ack(1),
            ],
        )
        .ack_wait(800),
        // ...and a nak with delay.
        Script::new(
            "nak_delay_when_due",
            vec![
                publish(),
                fetch(1, 500),
                wait(1_100),
                nak_delay(1, 500),
                fetch(1, 1_500),
                ack(1),
            ],
        )
        .ack_wait(800),
        // ...and a term.
        Script::new(
            "term_when_due",
            vec![
                publish(),
                fetch(1, 500),
                wait(1_100),
                term(1),
                fetch(1, 1_500),
            ],
        )
        .ack_wait(800),
        // Settling an older delivery of a message still pending acts on the message; the
        // advisories report a delivery count.
        Script::new(
            "settle_old_delivery",
            vec![
                publish(),
                publish(),
                publish(),
                fetch(3, 500),
                fetch(3, 1_500),
                settle_old(1, 1, Fate::Term),
                settle_old(2, 1, Fate::Nak),
                fetch(1, 500),
                settle_old(3, 1, Fate::Ack),
                ack(2),
                fetch(1, 1_500),
            ],
        ),
        // max_deliver reached through a nak with delay, a pull waiting.
        Script::new(
            "max_deliver_nak_delay",
            vec![
                publish(),
                fetch(1, 500),
                nak(1),
                fetch(1, 500),
                nak_delay(1, 300),
                fetch(1, 1_000),
            ],
        )
        .max_deliver(2),
        // The redelivery order: a nak'ed message is queued first; messages whose ack
        // waits run out together follow in stream order.
        Script::new(
            "redelivery_order",
            vec![
                publish(),
                publish(),
                publish(),
                fetch(3, 500),
                nak(3),
                wait(1_200),
                fetch(3, 500),
                ack(1),
                ack(2),
                ack(3),
            ],
        ),
        // A redelivery goes before a message never delivered.
        Script::new(
            "redelivery_first",
            vec![
                publish(),
                publish(),
                fetch(1, 500),
                nak(1),
                fetch(2, 500),
                ack(1),
                ack(2),
            ],
        ),
        // max_ack_pending holds back new messages, not redeliveries.
        Script::new(
            "max_ack_pending",
            vec![
                publish(),
                publish(),
                fetch(2, 500),
                nak(1),
                fetch(2, 500),
                ack(1),
                fetch(2, 500),
                ack(2),
            ],
        )
        .ack_wait(2_000)
        .max_ack_pending(1),
        // Publish dedupe by Nats-Msg-Id within the duplicate window.
        Script::new(
            "dedupe",
            vec![
                publish_id("a"),
                publish_id("a"),
                publish_id("b"),
                publish_id("a"),
                fetch(3, 600),
                ack(1),
                ack(2),
            ],
        ),
        // A msg id is forgotten once the duplicate window has passed since it was stored.
        Script::new(
            "dedupe_window",
            vec![
                publish_id("a"),
                wait(600),
                publish_id("a"),
                wait(900),
                publish_id("a"),
                publish_id("a"),
            ],
        )
        .duplicate_window(1_000),
    ]
}

/// Scripts that restart the server, each on a server of its own.
fn restart_scripts() -> Vec<Script> {
    vec![
        // A durable consumer across a server restart: the acked message stays acked, the
        // unacked one (its ack wait ran out while the server was up) is redelivered with
        // the next count.
        Script::new(
            "restart",
            vec![
                publish(),
                publish(),
                fetch(2, 500),
                ack(1),
                wait(1_300),
                Step::Restart,
                fetch(2, 1_500),
                ack(2),
                fetch(1, 1_500),
            ],
        ),
        // A restart while a message's ack wait runs.
        Script::new(
            "restart_early",
            vec![
                publish(),
                fetch(1, 500),
                wait(300),
                Step::Restart,
                fetch(1, 6_000),
                ack(1),
            ],
        )
        .ack_wait(4_000),
    ]
}

// ---------------------------------------------------------------------------------------
// The normalized log
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AdvisoryKind {
    MaxDeliveries,
    Terminated,
    Naked,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    Published {
        seq: u64,
        duplicate: bool,
    },
    Fetch {
        batch: u64,
    },
    /// `count`: the server's delivery count; `cseq`: the consumer sequence, one per
    /// delivery; `pending`: messages the consumer has not delivered yet (the router reads
    /// it for backpressure). All three as the delivery's metadata says.
    Delivered {
        seq: u64,
        count: u64,
        cseq: u64,
        pending: u64,
    },
    Settled {
        seq: u64,
        delivery: Option<u64>,
        fate: Fate,
    },
    Restarted,
    Advisory {
        kind: AdvisoryKind,
        seq: u64,
        deliveries: u64,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Published { seq, duplicate } => {
                write!(f, "publish -> seq {seq}")?;
                if *duplicate {
                    write!(f, " (duplicate)")?;
                }
                Ok(())
            }
            Event::Fetch { batch } => write!(f, "fetch {batch}"),
            Event::Delivered {
                seq,
                count,
                cseq,
                pending,
            } => write!(
                f,
                "deliver seq {seq} #{count} (cseq {cseq}, pending {pending})"
            ),
            Event::Settled {
                seq,
                delivery,
                fate,
            } => {
                match fate {
                    Fate::Ack => write!(f, "ack seq {seq}")?,
                    Fate::Nak => write!(f, "nak seq {seq}")?,
                    Fate::NakDelay(ms) => write!(f, "nak({ms}ms) seq {seq}")?,
                    Fate::InProgress => write!(f, "wpi seq {seq}")?,
                    Fate::Term => write!(f, "term seq {seq}")?,
                }
                match delivery {
                    Some(n) => write!(f, " (delivery #{n})"),
                    None => Ok(()),
                }
            }
            Event::Restarted => write!(f, "server restart"),
            Event::Advisory {
                kind,
                seq,
                deliveries,
            } => {
                let kind = match kind {
                    AdvisoryKind::MaxDeliveries => "MAX_DELIVERIES",
                    AdvisoryKind::Terminated => "MSG_TERMINATED",
                    AdvisoryKind::Naked => "MSG_NAKED",
                };
                write!(f, "{kind} seq {seq} after {deliveries}")
            }
        }
    }
}

/// `(ms since the script started, event)`, in the order they happened.
type Log = Vec<(u64, Event)>;

fn tolerance(gap_ms: u64) -> u64 {
    TOLERANCE_MS.max((gap_ms as f64 * TOLERANCE_FRACTION) as u64)
}

/// How many messages the model stored in the last `PENDING_LAG_MS` before `t`.
fn recent_publishes(sim: &[(u64, Event)], t: u64) -> u64 {
    let recent = sim.iter().filter(|(ts, e)| {
        *ts + PENDING_LAG_MS >= t
            && matches!(
                e,
                Event::Published {
                    duplicate: false,
                    ..
                }
            )
    });
    recent.count() as u64
}

/// The same event, except that a real delivery's `pending` may not count yet the
/// `recent` messages stored just before it (see `PENDING_LAG_MS`).
fn same_event(real: &Event, sim: &Event, recent: u64) -> bool {
    match (real, sim) {
        (
            Event::Delivered {
                seq,
                count,
                cseq,
                pending,
            },
            Event::Delivered {
                seq: sim_seq,
                count: sim_count,
                cseq: sim_cseq,
                pending: sim_pending,
            },
        ) => {
            (seq, count, cseq) == (sim_seq, sim_count, sim_cseq)
                && pending <= sim_pending
                && pending + recent >= *sim_pending
        }
        _ => real == sim,
    }
}

/// Ok, or both logs side by side with every differing line marked.
fn compare(name: &str, real: &Log, sim: &Log) -> Result<(), String> {
    let mut lines = Vec::new();
    let mut differs = false;
    let (mut prev_real, mut prev_sim) = (0, 0);
    // Messages whose first redelivery since the last restart is still to come, if any
    // restart happened: those may come early (RESTART_EARLY_MS).
    let mut redelivered_since_restart: Option<BTreeSet<u64>> = None;
    for i in 0..real.len().max(sim.len()) {
        let (r, s) = (real.get(i), sim.get(i));
        let ok = match (r, s) {
            (Some((tr, er)), Some((ts, es))) => {
                let (gap_real, gap_sim) = (tr - prev_real, ts - prev_sim);
                let tol = tolerance(gap_sim);
                let mut early = 0;
                match es {
                    Event::Restarted => redelivered_since_restart = Some(BTreeSet::new()),
                    Event::Delivered { seq, count, .. } if *count > 1 => {
                        if let Some(seen) = &mut redelivered_since_restart {
                            if seen.insert(*seq) {
                                early = RESTART_EARLY_MS;
                            }
                        }
                    }
                    _ => {}
                }
                // The script decides when it acts; the server decides when it delivers
                // and raises advisories: only the server's timing is checked.
                let timed = matches!(es, Event::Delivered { .. } | Event::Advisory { .. });
                same_event(er, es, recent_publishes(&sim[..i], *ts))
                    && (!timed || (gap_real + tol + early >= gap_sim && gap_real <= gap_sim + tol))
            }
            _ => false,
        };
        differs |= !ok;
        let cell = |e: Option<&(u64, Event)>| {
            e.map_or(String::from("-"), |(t, e)| format!("{t:>6} ms  {e}"))
        };
        lines.push(format!(
            "{} {:<52} | {}",
            if ok { "  " } else { "!!" },
            cell(r),
            cell(s)
        ));
        prev_real = r.map_or(prev_real, |(t, _)| *t);
        prev_sim = s.map_or(prev_sim, |(t, _)| *t);
    }
    let listing = format!(
        "script {name}: real nats-server | simulated broker (!! = differs; times within \
         max({TOLERANCE_MS} ms, {}% of the gap) of the previous event; after a restart, a \
         message's first redelivery up to {RESTART_EARLY_MS} ms earlier)\n{}",
        (TOLERANCE_FRACTION * 100.0) as u64,
        lines.join("\n")
    );
    if differs {
        Err(listing)
    } else {
        println!("{listing}\n");
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The simulated side: the model in virtual time
// ---------------------------------------------------------------------------------------

struct SimRun {
    js: JetStream,
    durable: String,
    subject: String,
    now: u64,
    pulls: u64,
    log: Log,
}

fn run_sim(script: &Script) -> Log {
    let mut js = JetStream::new();
    let stream = script.stream();
    js.add_stream(StreamConfig {
        name: stream.clone(),
        subjects: vec![script.subject()],
        duplicate_window_ms: script.duplicate_window_ms,
    });
    js.add_consumer(
        &stream,
        ConsumerConfig {
            ack_wait_ms: script.ack_wait_ms,
            max_deliver: script.max_deliver,
            backoff_ms: script.backoff_ms.to_vec(),
            max_ack_pending: usize::try_from(script.max_ack_pending).expect("max_ack_pending"),
            ..ConsumerConfig::with_defaults(script.name)
        },
    );
    let mut run = SimRun {
        js,
        durable: script.name.to_string(),
        subject: script.subject(),
        now: 0,
        pulls: 0,
        log: Vec::new(),
    };
    for step in &script.steps {
        run.step(*step);
    }
    run.advance_to(run.now + SETTLE_MS);
    run.log
}

impl SimRun {
    fn record(&mut self, event: Event) {
        self.log.push((self.now, event));
    }

    /// What the world does when it wakes a consumer (`World::dispatch`): hand out what
    /// can go to waiting pulls, then publish the advisories. Returns how many went.
    fn dispatch(&mut self) -> u64 {
        let mut sent = 0;
        while let Some(d) = self.js.next_delivery(self.now, &self.durable) {
            // As the world computes a delivery's `pending`: right after handing it out.
            let pending = self.js.num_pending(&self.durable);
            self.record(Event::Delivered {
                seq: d.stream_seq,
                count: d.delivered,
                cseq: d.consumer_seq,
                pending,
            });
            sent += 1;
        }
        let advisories = self
            .js
            .consumer_mut(&self.durable)
            .map(|c| c.take_advisories())
            .unwrap_or_default();
        for advisory in advisories {
            let (kind, seq, deliveries) = match advisory {
                Advisory::MaxDeliveries {
                    stream_seq,
                    deliveries,
                } => (AdvisoryKind::MaxDeliveries, stream_seq, deliveries),
                Advisory::Terminated {
                    stream_seq,
                    deliveries,
                } => (AdvisoryKind::Terminated, stream_seq, deliveries),
                Advisory::Naked {
                    stream_seq,
                    deliveries,
                } => (AdvisoryKind::Naked, stream_seq, deliveries),
            };
            self.record(Event::Advisory {
                kind,
                seq,
                deliveries,
            });
        }
        sent
    }

    fn next_deadline(&self) -> Option<u64> {
        self.js
            .consumer(&self.durable)
            .and_then(|c| c.next_deadline())
    }

    /// Let virtual time pass until `t`, waking the consumer at each of its deadlines on
    /// the way, as the world's `ConsumerWake` events do.
    fn advance_to(&mut self, t: u64) {
        while let Some(deadline) = self.next_deadline().filter(|&d| d > self.now && d <= t) {
            self.now = deadline;
            self.dispatch();
        }
        self.now = t;
        self.dispatch();
    }

    fn step(&mut self, step: Step) {
        match step {
            Step::Publish(msg_id) => {
                let headers: Vec<(String, String)> = msg_id
                    .map(|id| (HEADER_MSG_ID.to_string(), id.to_string()))
                    .into_iter()
                    .collect();
                let ack = self
                    .js
                    .publish(self.now, &self.subject, &headers, b"payload")
                    .expect("the script's stream captures its subject");
                self.record(Event::Published {
                    seq: ack.seq,
                    duplicate: ack.duplicate,
                });
                self.dispatch();
            }
            Step::Fetch { batch, expires_ms } => {
                self.pulls += 1;
                self.record(Event::Fetch { batch });
                let (now, id) = (self.now, self.pulls);
                let accepted = self
                    .js
                    .consumer_mut(&self.durable)
                    .is_some_and(|c| c.pull(now, id, batch, expires_ms));
                assert!(accepted, "pull refused");
                let end = self.now + expires_ms;
                let mut got = self.dispatch();
                while got < batch && self.now < end {
                    // The next deadline, or the pull's expiry; never standing still (a
                    // broken model must fail the test, not hang it).
                    let next = self.next_deadline().map_or(end, |d| d.min(end));
                    self.now = if next > self.now { next } else { end };
                    got += self.dispatch();
                }
            }
            Step::Settle {
                seq,
                delivery,
                fate,
            } => {
                let kind = match fate {
                    Fate::Ack => AckKind::Ack,
                    Fate::Nak => AckKind::Nak { delay_ms: 0 },
                    Fate::NakDelay(delay_ms) => AckKind::Nak { delay_ms },
                    Fate::InProgress => AckKind::Progress,
                    Fate::Term => AckKind::Term,
                };
                self.record(Event::Settled {
                    seq,
                    delivery,
                    fate,
                });
                // As the real side: on the ack subject of that delivery, or of the
                // latest one.
                let latest = self.log.iter().rev().find_map(|(_, e)| match e {
                    Event::Delivered { seq: s, count, .. } if *s == seq => Some(*count),
                    _ => None,
                });
                let delivered = delivery
                    .or(latest)
                    .unwrap_or_else(|| panic!("script settles seq {seq}, never delivered"));
                let now = self.now;
                if let Some(c) = self.js.consumer_mut(&self.durable) {
                    c.ack_delivery(now, seq, delivered, kind);
                }
                self.dispatch();
            }
            Step::Wait(ms) => self.advance_to(self.now + ms),
            // As the world's broker restart (`World::broker_restart`, no tail loss):
            // waiting pull requests are gone, stored messages and consumer state stay.
            Step::Restart => {
                let durables: Vec<String> = self.js.durables().map(str::to_string).collect();
                for durable in durables {
                    if let Some(c) = self.js.consumer_mut(&durable) {
                        c.drop_pulls();
                    }
                }
                self.record(Event::Restarted);
                self.dispatch();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The real side: a nats-server in wall-clock time
// ---------------------------------------------------------------------------------------

struct RealRun<'a> {
    server: Option<&'a mut NatsServer>,
    client: async_nats::Client,
    js: jetstream::Context,
    consumer: jetstream::consumer::PullConsumer,
    advisories: async_nats::Subscriber,
    subject: String,
    start: Instant,
    /// Server downtime so far, which the normalized clock leaves out.
    paused: Duration,
    /// Every delivery by (stream sequence, delivery count), to settle it.
    held: BTreeMap<(u64, u64), jetstream::Message>,
    log: Log,
}

/// What one wait for the server produced.
enum Got {
    Advisory(Option<async_nats::Message>),
    Delivery(Box<Option<Result<jetstream::Message, async_nats::Error>>>),
    Timeout,
}

/// Run `script` against the server at `url`; `attempt` keeps the stream of a rerun apart
/// from the earlier ones.
async fn run_real(
    script: &Script,
    url: &str,
    server: Option<&mut NatsServer>,
    attempt: u32,
) -> Log {
    let (stream_name, subject) = (
        format!("{}_{attempt}", script.stream()),
        format!("{}.{attempt}", script.subject()),
    );
    let client = async_nats::connect(url).await.expect("connect");
    let js = jetstream::new(client.clone());
    let stream = js
        .create_stream(jetstream::stream::Config {
            name: stream_name.clone(),
            subjects: vec![subject.clone()],
            duplicate_window: Duration::from_millis(script.duplicate_window_ms),
            ..Default::default()
        })
        .await
        .expect("create stream");
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(script.name.to_string()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_millis(script.ack_wait_ms),
            max_deliver: i64::try_from(script.max_deliver).expect("max_deliver"),
            backoff: script
                .backoff_ms
                .iter()
                .map(|&ms| Duration::from_millis(ms))
                .collect(),
            max_ack_pending: i64::try_from(script.max_ack_pending).expect("max_ack_pending"),
            ..Default::default()
        })
        .await
        .expect("create consumer");
    let advisories = client
        .subscribe(format!(
            "$JS.EVENT.ADVISORY.CONSUMER.*.{}.{}",
            stream_name, script.name
        ))
        .await
        .expect("subscribe to advisories");
    client.flush().await.expect("flush");
    let mut run = RealRun {
        server,
        client,
        js,
        consumer,
        advisories,
        subject,
        start: Instant::now(),
        paused: Duration::ZERO,
        held: BTreeMap::new(),
        log: Vec::new(),
    };
    for step in &script.steps {
        run.step(*step).await;
    }
    run.wait(SETTLE_MS).await;
    run.log
}

impl RealRun<'_> {
    fn now(&self) -> u64 {
        let t = self.start.elapsed().saturating_sub(self.paused);
        u64::try_from(t.as_millis()).unwrap_or(u64::MAX)
    }

    fn record(&mut self, event: Event) {
        let t = self.now();
        self.log.push((t, event));
    }

    fn record_advisory(&mut self, msg: async_nats::Message) {
        // $JS.EVENT.ADVISORY.CONSUMER.<KIND>.<stream>.<consumer>
        let kind = match msg.subject.split('.').nth(4) {
            Some("MAX_DELIVERIES") => AdvisoryKind::MaxDeliveries,
            Some("MSG_TERMINATED") => AdvisoryKind::Terminated,
            Some("MSG_NAKED") => AdvisoryKind::Naked,
            _ => return, // another kind of consumer advisory (created, deleted, ...)
        };
        let body: serde_json::Value =
            serde_json::from_slice(&msg.payload).expect("advisory is JSON");
        let field = |name: &str| {
            body[name]
                .as_u64()
                .unwrap_or_else(|| panic!("advisory without {name}: {body}"))
        };
        self.record(Event::Advisory {
            kind,
            seq: field("stream_seq"),
            deliveries: field("deliveries"),
        });
    }

    /// Record the advisories that have arrived already.
    fn drain_advisories(&mut self) {
        while let Some(Some(msg)) = self.advisories.next().now_or_never() {
            self.record_advisory(msg);
        }
    }

    /// Wait until one advisory has come, or `ms` have passed.
    async fn wait_for_advisory(&mut self, ms: u64) {
        self.drain_advisories();
        if self
            .log
            .last()
            .is_some_and(|(_, e)| matches!(e, Event::Advisory { .. }))
        {
            return;
        }
        let got = tokio::select! {
            msg = self.advisories.next() => Got::Advisory(msg),
            () = tokio::time::sleep(Duration::from_millis(ms)) => Got::Timeout,
        };
        if let Got::Advisory(msg) = got {
            self.record_advisory(msg.expect("advisories end"));
        }
    }

    async fn wait(&mut self, ms: u64) {
        let until = tokio::time::Instant::now() + Duration::from_millis(ms);
        loop {
            let got = tokio::select! {
                biased;
                msg = self.advisories.next() => Got::Advisory(msg),
                () = tokio::time::sleep_until(until) => Got::Timeout,
            };
            match got {
                Got::Advisory(msg) => self.record_advisory(msg.expect("advisories end")),
                _ => return,
            }
        }
    }

    async fn step(&mut self, step: Step) {
        self.drain_advisories();
        match step {
            Step::Publish(msg_id) => {
                let mut headers = async_nats::HeaderMap::new();
                if let Some(id) = msg_id {
                    headers.insert(HEADER_MSG_ID, id);
                }
                let ack = self
                    .js
                    .publish_with_headers(self.subject.clone(), headers, "payload".into())
                    .await
                    .expect("publish")
                    .await
                    .expect("pub ack");
                self.record(Event::Published {
                    seq: ack.sequence,
                    duplicate: ack.duplicate,
                });
            }
            Step::Fetch { batch, expires_ms } => {
                self.record(Event::Fetch { batch });
                let mut deliveries = self
                    .consumer
                    .batch()
                    .max_messages(usize::try_from(batch).expect("batch"))
                    .expires(Duration::from_millis(expires_ms))
                    .messages()
                    .await
                    .expect("pull request");
                loop {
                    let got = tokio::select! {
                        biased;
                        msg = self.advisories.next() => Got::Advisory(msg),
                        msg = deliveries.next() => Got::Delivery(Box::new(msg)),
                    };
                    let delivery = match got {
                        Got::Advisory(msg) => {
                            self.record_advisory(msg.expect("advisories end"));
                            continue;
                        }
                        Got::Delivery(delivery) => *delivery,
                        Got::Timeout => None,
                    };
                    match delivery {
                        Some(msg) => {
                            let msg = msg.expect("delivery");
                            let info = msg.info().expect("JetStream metadata");
                            let seq = info.stream_sequence;
                            let count = u64::try_from(info.delivered).expect("delivery count");
                            self.record(Event::Delivered {
                                seq,
                                count,
                                cseq: info.consumer_sequence,
                                pending: info.pending,
                            });
                            self.held.insert((seq, count), msg);
                        }
                        None => break,
                    }
                }
            }
            Step::Settle {
                seq,
                delivery,
                fate,
            } => {
                let kind = match fate {
                    Fate::Ack => jetstream::AckKind::Ack,
                    Fate::Nak => jetstream::AckKind::Nak(None),
                    Fate::NakDelay(ms) => jetstream::AckKind::Nak(Some(Duration::from_millis(ms))),
                    Fate::InProgress => jetstream::AckKind::Progress,
                    Fate::Term => jetstream::AckKind::Term,
                };
                self.record(Event::Settled {
                    seq,
                    delivery,
                    fate,
                });
                let msg = match delivery {
                    Some(n) => self.held.get(&(seq, n)),
                    None => self
                        .held
                        .range((seq, 0)..=(seq, u64::MAX))
                        .next_back()
                        .map(|(_, m)| m),
                };
                let msg =
                    msg.unwrap_or_else(|| panic!("script settles seq {seq}, never delivered"));
                // Wait for the server's confirmation, so that the next step comes after.
                msg.double_ack_with(kind).await.expect("ack");
                // The advisory a nak or term raises can reach us just after the
                // confirmation: give it a moment, so that it is logged before the next
                // step, as the server raised it.
                if matches!(fate, Fate::Nak | Fate::NakDelay(_) | Fate::Term) {
                    self.wait_for_advisory(ADVISORY_GRACE_MS).await;
                }
            }
            Step::Wait(ms) => self.wait(ms).await,
            Step::Restart => {
                let down = Instant::now();
                let server = self
                    .server
                    .as_deref_mut()
                    .expect("restart needs the server");
                tokio::task::block_in_place(|| server.restart());
                let deadline = Instant::now() + Duration::from_secs(15);
                while self.client.connection_state() != async_nats::connection::State::Connected {
                    assert!(Instant::now() < deadline, "no reconnect after the restart");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                self.client.flush().await.expect("flush after reconnect");
                self.paused += down.elapsed();
                self.record(Event::Restarted);
                println!("server down for {:?} (not counted)", down.elapsed());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulated_broker_delivers_what_nats_server_delivers() {
    let started = Instant::now();
    let shared = NatsServer::start();
    let url = shared.url();
    let scripts = scripts();
    let restart_scripts = restart_scripts();
    let mut own: Vec<NatsServer> = restart_scripts
        .iter()
        .map(|_| NatsServer::start())
        .collect();

    // Script index -> its listing, while it still differs.
    let mut failures: BTreeMap<usize, String> = BTreeMap::new();
    let mut pending: Vec<usize> = (0..scripts.len() + restart_scripts.len()).collect();
    for attempt in 1..=ATTEMPTS {
        let url = url.as_str();
        let shared_runs = futures::future::join_all(
            scripts
                .iter()
                .enumerate()
                .filter(|(i, _)| pending.contains(i))
                .map(|(i, script)| async move { (i, run_real(script, url, None, attempt).await) }),
        );
        let restart_runs = futures::future::join_all(
            restart_scripts
                .iter()
                .zip(&mut own)
                .enumerate()
                .map(|(j, run)| (scripts.len() + j, run))
                .filter(|(i, _)| pending.contains(i))
                .map(|(i, (script, server))| async move {
                    let url = server.url();
                    (i, run_real(script, &url, Some(server), attempt).await)
                }),
        );
        let (mut real_logs, restart_logs) = tokio::join!(shared_runs, restart_runs);
        real_logs.extend(restart_logs);
        for (i, real) in real_logs {
            let script = scripts
                .iter()
                .chain(&restart_scripts)
                .nth(i)
                .expect("script");
            match compare(script.name, &real, &run_sim(script)) {
                Ok(()) => {
                    failures.remove(&i);
                }
                Err(listing) => {
                    failures.insert(i, listing);
                }
            }
        }
        pending = failures.keys().copied().collect();
        if pending.is_empty() {
            break;
        }
        if attempt < ATTEMPTS {
            // A model that is wrong is wrong every time; a machine too loaded to keep time
            // is not, so a script that differs gets another run before it fails the test.
            println!(
                "attempt {attempt}: {} script(s) differ, running them again:\n\n{}\n",
                failures.len(),
                failures.values().cloned().collect::<Vec<_>>().join("\n\n")
            );
        }
    }
    println!(
        "{} scripts compared in {:.1} s",
        scripts.len() + restart_scripts.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "the model differs from nats-server in {} script(s), {ATTEMPTS} runs each:\n\n{}",
        failures.len(),
        failures.values().cloned().collect::<Vec<_>>().join("\n\n")
    );
}

/// The comparator itself must be able to fail: a wrong count, a missing event, and a
/// late redelivery are each flagged.
#[test]
fn the_comparator_flags_a_different_log() {
    let log: Log = vec![
        (
            0,
            Event::Published {
                seq: 1,
                duplicate: false,
            },
        ),
        (1, Event::Fetch { batch: 1 }),
        (
            2,
            Event::Delivered {
                seq: 1,
                count: 1,
                cseq: 1,
                pending: 0,
            },
        ),
        (
            3,
            Event::Settled {
                seq: 1,
                delivery: None,
                fate: Fate::NakDelay(1_000),
            },
        ),
        (4, Event::Fetch { batch: 1 }),
        (
            1_004,
            Event::Delivered {
                seq: 1,
                count: 2,
                cseq: 2,
                pending: 0,
            },
        ),
    ];
    assert!(compare("same", &log, &log).is_ok());

    // Jitter within the tolerance is fine.
    let mut jitter = log.clone();
    jitter[5].0 += 100;
    assert!(compare("jitter", &jitter, &log).is_ok());

    let mut count = log.clone();
    count[5].1 = Event::Delivered {
        seq: 1,
        count: 3,
        cseq: 3,
        pending: 0,
    };
    let listing = compare("count", &count, &log).unwrap_err();
    assert!(listing.contains("!!"), "{listing}");

    let mut late = log.clone();
    late[5].0 += 400;
    assert!(compare("late", &late, &log).is_err());

    // A slow round trip delays the script's next action; that is not the server's doing.
    let mut slow_client = log.clone();
    for entry in &mut slow_client[3..] {
        entry.0 += 300;
    }
    assert!(compare("slow client", &slow_client, &log).is_ok());

    let mut missing = log.clone();
    missing.pop();
    assert!(compare("missing", &missing, &log).is_err());

    // After a restart, a message's first redelivery may come early, not late, and
    // only the first.
    let restarted: Log = vec![
        (
            0,
            Event::Delivered {
                seq: 1,
                count: 1,
                cseq: 1,
                pending: 0,
            },
        ),
        (300, Event::Restarted),
        (300, Event::Fetch { batch: 2 }),
        (
            1_000,
            Event::Delivered {
                seq: 1,
                count: 2,
                cseq: 2,
                pending: 0,
            },
        ),
        (
            2_000,
            Event::Delivered {
                seq: 1,
                count: 3,
                cseq: 3,
                pending: 0,
            },
        ),
    ];
    let mut early = restarted.clone();
    early[3].0 = 400;
    early[4].0 = 1_400;
    assert!(compare("early after restart", &early, &restarted).is_ok());
    let mut late = restarted.clone();
    late[3].0 = 1_400;
    late[4].0 = 2_400;
    assert!(compare("late after restart", &late, &restarted).is_err());
    let mut second_early = restarted.clone();
    second_early[4].0 = 1_500;
    assert!(compare("second early", &second_early, &restarted).is_err());

    // A delivery's pending figure may lag behind a message stored just before, not
    // more, and never run ahead.
    let two: Log = vec![
        (
            0,
            Event::Published {
                seq: 1,
                duplicate: false,
            },
        ),
        (
            0,
            Event::Published {
                seq: 2,
                duplicate: false,
            },
        ),
        (
            500,
            Event::Delivered {
                seq: 1,
                count: 1,
                cseq: 1,
                pending: 1,
            },
        ),
    ];
    let mut lagging = two.clone();
    lagging[2].1 = Event::Delivered {
        seq: 1,
        count: 1,
        cseq: 1,
        pending: 0,
    };
    let mut lagging_late = lagging.clone();
    (lagging[2].0, lagging_late[2].0) = (50, 500);
    let mut early_two = two.clone();
    early_two[2].0 = 50;
    assert!(compare("pending lags", &lagging, &early_two).is_ok());
    assert!(compare("pending lags long after", &lagging_late, &two).is_err());
    let mut ahead = early_two.clone();
    ahead[2].1 = Event::Delivered {
        seq: 1,
        count: 1,
        cseq: 1,
        pending: 2,
    };
    assert!(compare("pending ahead", &ahead, &early_two).is_err());

    let mut extra = log.clone();
    extra.push((
        1_300,
        Event::Advisory {
            kind: AdvisoryKind::MaxDeliveries,
            seq: 1,
            deliveries: 2,
        },
    ));
    assert!(compare("extra", &extra, &log).is_err());
}

/// The sim executor on its own, so that a broken model shows up even where no
/// nats-server runs: the nak-with-backoff script follows the measured formula.
#[test]
fn the_sim_executor_follows_the_measured_nak_formula() {
    let script = scripts()
        .into_iter()
        .find(|s| s.name == "nak_backoff")
        .expect("nak_backoff script");
    let log = run_sim(&script);
    let deliveries: Vec<(u64, u64)> = log
        .iter()
        .filter_map(|(t, e)| match e {
            Event::Delivered { count, .. } => Some((*t, *count)),
            _ => None,
        })
        .collect();
    // #2 right after the plain nak; #3 300 - 400 + 800 ms after the nak of #2; #4
    // 300 - 400 + 1200 ms after the nak of #3.
    let gaps: Vec<u64> = deliveries.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert_eq!(
        deliveries.iter().map(|d| d.1).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(gaps, vec![0, 700, 1_100], "{log:?}");
}
