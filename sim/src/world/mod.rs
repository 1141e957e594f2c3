//! The world and its event loop: a virtual clock that jumps from event to event, the
//! simulated JetStream server, the gateway, the router host, the router's connection, the
//! fault injector and the checkers. `World::run` plays one seed to its verdict.
//!
//! A run has two phases. During the chaos phase (`[0, chaos_ms)`) the seed's faults are
//! on. Then everything heals and the liveness phase gives the system a bounded time to
//! bring every accepted request to its final state; the liveness checks run at its end.
//!
//! This file holds the loop and the event dispatch; `server.rs` what happens at the
//! JetStream server, `client.rs` what happens in the router process (feeding the core and
//! carrying out its commands), `connection.rs` the connection fault.

mod client;
mod connection;
mod server;

use beamline_router::contracts::subjects;
use beamline_router::core::{
    ConnectionEvent, Input, Publish, PublishOutcome, RequestOutcome, RouterConfig, TimerKey,
};
use serde_json::json;

use crate::buggify::Buggify;
use crate::gateway::Gateway;
use crate::host::RouterHost;
use crate::invariants::Checker;
use crate::jetstream::{AckKind, ConsumerConfig, Delivered, JetStream, StreamConfig};
use crate::network::{Direction, Link};
use crate::options::SimOptions;
use crate::policies::world_policies;
use crate::profile::{Faults, Profile};
use crate::queue::EventQueue;
use crate::report::{Counters, RunReport, Verdict};
use crate::rng::SimRng;
use crate::trace::Trace;

pub const DECIDE_STREAM: &str = "DECIDE";
pub const DLQ_STREAM: &str = "DECIDE_DLQ";
pub const DURABLE: &str = "router";
/// nats-server's default duplicate window.
pub const DUPLICATE_WINDOW_MS: u64 = 120_000;
/// A run that schedules more events than this at once is an event storm: fail loudly.
const QUEUE_CAPACITY: usize = 1_000_000;

#[derive(Debug)]
enum Event {
    GatewayPublish {
        request: usize,
    },
    LinkDown,
    LinkUp,
    /// The router's client notices that connection `epoch` is gone.
    ClientNotices {
        epoch: u64,
    },
    PullArrive {
        epoch: u64,
        id: u64,
    },
    PullExpire {
        id: u64,
    },
    DeliveryArrive {
        epoch: u64,
        delivery: Delivered,
    },
    AckArrive {
        epoch: u64,
        stream_seq: u64,
        kind: AckKind,
    },
    PublishArrive {
        epoch: u64,
        publish: Publish,
    },
    PublishConfirm {
        epoch: u64,
        id: u64,
        outcome: PublishOutcome,
    },
    PublishTimeout {
        id: u64,
    },
    /// A core NATS request from the router (an extension call) reaches the server.
    RequestArrive {
        epoch: u64,
        id: u64,
    },
    RequestReply {
        epoch: u64,
        id: u64,
        outcome: RequestOutcome,
    },
    RequestTimeout {
        id: u64,
    },
    CoreTimer {
        key: TimerKey,
        at: u64,
    },
    ConsumerWake,
    ReplyArrive {
        subject: String,
        payload: Vec<u8>,
    },
    ChaosEnd,
    End,
}

pub struct World {
    options: SimOptions,
    profile: Profile,
    now: u64,
    end_at: u64,
    queue: EventQueue<Event>,
    js: JetStream,
    link: Link,
    gateway_link: Link,
    gateway: Gateway,
    host: RouterHost,
    checker: Checker,
    trace: Trace,
    faults_rng: SimRng,
    chaos_over: bool,
    /// The earliest consumer wake-up already scheduled, so that we schedule no duplicates.
    wake_at: Option<u64>,
    counters: Counters,
    core_config: RouterConfig,
}

impl World {
    pub fn new(options: SimOptions) -> World {
        let seed = options.seed;
        let profile = Profile::draw(&mut SimRng::stream(seed, "profile"), options.faults);
        let core_config = RouterConfig {
            max_deliver: profile.max_deliver,
            ..RouterConfig::default()
        };
        let longest_nak = core_config
            .nak_backoff_ms
            .iter()
            .copied()
            .max()
            .unwrap_or(0);
        let end_at =
            profile.chaos_ms + profile.liveness_bound_ms(longest_nak, core_config.dlq_retry_ms);

        let mut js = JetStream::new();
        js.add_stream(StreamConfig {
            name: DECIDE_STREAM.to_string(),
            subjects: vec![subjects::DECIDE.to_string()],
            duplicate_window_ms: DUPLICATE_WINDOW_MS,
        });
        js.add_stream(StreamConfig {
            name: DLQ_STREAM.to_string(),
            subjects: vec![subjects::DECIDE_DLQ.to_string()],
            duplicate_window_ms: DUPLICATE_WINDOW_MS,
        });
        js.add_consumer(
            DECIDE_STREAM,
            ConsumerConfig {
                ack_wait_ms: profile.ack_wait_ms,
                max_deliver: profile.max_deliver,
                max_ack_pending: profile.max_ack_pending,
                ..ConsumerConfig::with_defaults(DURABLE)
            },
        );

        let gateway = Gateway::plan(
            &mut SimRng::stream(seed, "gateway"),
            options.requests,
            profile.workload_ms,
        );
        let host = RouterHost::new(
            core_config.clone(),
            world_policies(),
            SimRng::stream(seed, "core"),
            Buggify::new(profile.faults.buggify, SimRng::stream(seed, "buggify")),
        );
        let checker = Checker::new(
            profile.max_deliver,
            &core_config.dlq_subject,
            &core_config.default_reply_subject,
            options.strict_exhaustion,
        );
        World {
            trace: Trace::new(options.keep_trace),
            counters: Counters {
                planned: options.requests,
                ..Counters::default()
            },
            options,
            now: 0,
            end_at,
            queue: EventQueue::new(QUEUE_CAPACITY),
            js,
            link: Link::new(SimRng::stream(seed, "link")),
            gateway_link: Link::new(SimRng::stream(seed, "gateway-link")),
            gateway,
            host,
            checker,
            faults_rng: SimRng::stream(seed, "faults"),
            chaos_over: false,
            wake_at: None,
            profile,
            core_config,
        }
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// Play the seed to the end and return the verdict.
    pub fn run(mut self) -> RunReport {
        self.start();
        while let Some((at, event)) = self.queue.pop() {
            self.now = at;
            self.counters.events += 1;
            if matches!(event, Event::End) {
                self.finish();
                break;
            }
            self.handle(event);
            if self.checker.violation().is_some() {
                break;
            }
        }
        self.report()
    }

    fn in_chaos(&self) -> bool {
        !self.chaos_over
    }

    fn faults(&self) -> &Faults {
        &self.profile.faults
    }

    fn schedule(&mut self, at: u64, event: Event) {
        if !self.queue.push(at.max(self.now), event) {
            self.checker.fail(
                self.now,
                "event_storm",
                format!("more than {QUEUE_CAPACITY} events pending at once"),
            );
        }
    }

    fn start(&mut self) {
        let profile = serde_json::to_string(&self.profile).unwrap_or_default();
        self.trace.record(0, "world.profile", &profile);
        let plan: Vec<_> = self
            .gateway
            .requests()
            .iter()
            .map(|r| (r.index, r.publish_at, r.retry_at))
            .collect();
        for (i, at, retry) in plan {
            self.schedule(at, Event::GatewayPublish { request: i });
            if let Some(retry) = retry {
                self.schedule(retry, Event::GatewayPublish { request: i });
            }
        }
        self.schedule(self.profile.chaos_ms, Event::ChaosEnd);
        self.schedule(self.end_at, Event::End);
        self.feed(Input::Connection(ConnectionEvent::Up));
        self.issue_pull();
        self.schedule_next_drop();
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::GatewayPublish { request } => self.on_gateway_publish(request),
            Event::LinkDown => self.on_link_down(),
            Event::LinkUp => self.on_link_up(),
            Event::ClientNotices { epoch } => {
                if epoch == self.link.epoch() && !self.link.is_up() && self.host.connected() {
                    self.feed(Input::Connection(ConnectionEvent::Down));
                }
            }
            Event::PullArrive { epoch, id } => self.on_pull_arrive(epoch, id),
            Event::PullExpire { id } => {
                if id == self.host.current_pull() {
                    self.issue_pull();
                }
            }
            Event::DeliveryArrive { epoch, delivery } => self.on_delivery_arrive(epoch, delivery),
            Event::AckArrive {
                epoch,
                stream_seq,
                kind,
            } => self.on_ack_arrive(epoch, stream_seq, kind),
            Event::PublishArrive { epoch, publish } => self.on_publish_arrive(epoch, publish),
            Event::PublishConfirm { epoch, id, outcome } => {
                if !self.link.delivers(epoch) {
                    self.lost("confirm", &json!({ "publish": id }));
                } else if self.host.settle_publish(id) {
                    self.publish_done(id, outcome);
                } else {
                    self.trace
                        .record_json(self.now, "net.late-confirm", &json!({ "publish": id }));
                }
            }
            Event::PublishTimeout { id } => {
                if self.host.settle_publish(id) {
                    let outcome = PublishOutcome::Failed {
                        reason: "timeout".to_string(),
                    };
                    self.publish_done(id, outcome);
                }
            }
            Event::RequestArrive { epoch, id } => {
                if !self.link.delivers(epoch) {
                    self.lost("request", &json!({ "request": id }));
                    return;
                }
                // No extension services run in the v0 world: NATS answers "no responders".
                let in_chaos = self.in_chaos();
                let transit = self.link.send(
                    self.now,
                    Direction::ToClient,
                    &self.profile.faults,
                    in_chaos,
                );
                self.count_slow(transit.slow);
                let outcome = RequestOutcome::Failed {
                    reason: "no responders".to_string(),
                };
                self.schedule(
                    transit.arrives_at,
                    Event::RequestReply { epoch, id, outcome },
                );
            }
            Event::RequestReply { epoch, id, outcome } => {
                if !self.link.delivers(epoch) {
                    self.lost("request-reply", &json!({ "request": id }));
                } else if self.host.settle_request(id) {
                    self.feed(Input::RequestDone { id, outcome });
                }
            }
            Event::RequestTimeout { id } => {
                if self.host.settle_request(id) {
                    self.feed(Input::RequestDone {
                        id,
                        outcome: RequestOutcome::Timeout,
                    });
                }
            }
            Event::CoreTimer { key, at } => {
                if self.host.fire_timer(key, at) {
                    self.feed(Input::Timer { key });
                }
            }
            Event::ConsumerWake => {
                if self.wake_at.is_some_and(|w| w <= self.now) {
                    self.wake_at = None;
                }
                self.dispatch();
            }
            Event::ReplyArrive { subject, payload } => {
                self.trace
                    .record_json(self.now, "gw.reply", &json!({ "subject": subject }));
                self.gateway.on_reply(&subject, &payload);
            }
            Event::ChaosEnd => {
                self.chaos_over = true;
                self.trace.record(self.now, "world.chaos-end", "{}");
                if !self.link.is_up() {
                    self.schedule(self.now, Event::LinkUp);
                }
            }
            Event::End => {}
        }
    }

    // --- pulls and deliveries ------------------------------------------------------

    // --- the core ------------------------------------------------------------------

    // --- bookkeeping ---------------------------------------------------------------

    fn lost(&mut self, what: &str, detail: &serde_json::Value) {
        self.counters.lost_in_transit += 1;
        self.trace
            .record_json(self.now, &format!("net.lost-{what}"), detail);
    }

    fn count_slow(&mut self, slow: bool) {
        self.counters.faults += u64::from(slow);
    }

    fn finish(&mut self) {
        let consumer = self.js.consumer(DURABLE);
        let state_of = |seq| {
            consumer
                .map(|c| c.state(seq))
                .unwrap_or(crate::jetstream::MessageState::Undelivered)
        };
        self.checker.finish(self.now, state_of, &self.gateway);
        self.trace.record_json(
            self.now,
            "world.end",
            &json!({ "gateway_replies": self.gateway.replies_received(), "publishes_waiting": self.host.publishes_waiting() }),
        );
    }

    fn report(mut self) -> RunReport {
        self.counters.accepted = self.checker.accepted() as u64;
        self.counters.answered = self.checker.answered() as u64;
        self.counters.duplicate_replies = self.checker.duplicate_replies();
        self.counters.exhausted_unseen = self.checker.exhausted_unseen();
        self.counters.buggify_fired = self.host.buggify_fired();
        let violation = self.checker.violation().cloned();
        if let Some(v) = &violation {
            self.trace.record_json(self.now, "world.violation", v);
        }
        RunReport {
            seed: self.options.seed,
            verdict: if violation.is_some() {
                Verdict::Fail
            } else {
                Verdict::Pass
            },
            violation,
            trace_hash: self.trace.hash(),
            trace_len: self.trace.len(),
            core_stats: self.host.router().stats().clone(),
            profile_summary: self.profile.summary(),
            sim_time_ms: self.now,
            counters: self.counters,
            trace: self.trace.into_lines(),
        }
    }
}

/// Run one seed.
pub fn run(options: SimOptions) -> RunReport {
    World::new(options).run()
}
