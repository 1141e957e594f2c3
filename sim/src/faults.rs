//! The fault menu of a seed and its fault schedule.
//!
//! The menu (`Faults`) says which faults are on and how bad they are: per-message rates
//! (lost acks, refused publishes, slow messages, lost or duplicated replies, duplicated
//! deliveries), misbehaving actors (extensions, CAF workers), clock skew and BUGGIFY.
//! The schedule (`Schedule`) lists the timed faults, drawn once at the start of the run:
//! connection drops, partitions, latency spikes, redelivery storms, overload bursts,
//! router crashes, broker restarts and clock jumps. Faults overlap freely.
//!
//! Both are shrinkable: the shrinker switches rate faults off one kind at a time
//! (`RateFault`) and removes schedule entries, and a seed file records what it removed.

use serde::Serialize;

use crate::net::{NodeId, SlowFault};
use crate::profile::Profile;
use crate::rng::SimRng;
use crate::topology::{Role, Topology, EXTENSIONS};
use crate::wire::Cons;

/// How an extension service behaves during the chaos phase (always healthy afterwards).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ExtBehaviour {
    /// Answers in a few ms.
    Healthy,
    /// Often answers after the caller's timeout.
    Slow,
    /// Unsubscribes and resubscribes every few seconds (no responders meanwhile), and
    /// sometimes answers garbage.
    Flapping,
    /// Never subscribed: every call gets "no responders".
    Dead,
}

/// The fault menu. A zero rate, a zero count or `false` switches a fault off.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Faults {
    // --- connections (scheduled) ---
    pub drop_routers: bool,
    pub drop_clients: bool,
    pub mean_uptime_ms: u64,
    pub down_min_ms: u64,
    pub down_max_ms: u64,
    /// How late a client notices a drop; until then it sends into the void.
    pub detect_max_ms: u64,
    /// Chance that the server notices a drop at once and forgets the client's pulls;
    /// otherwise (half-open) it keeps delivering into them, and those deliveries are lost.
    pub server_notices_permille: u64,
    // --- per message ---
    pub ack_loss_permille: u64,
    pub publish_error_permille: u64,
    /// Refuse only the router processes' publishes (replies, DLQ records, assignments,
    /// usage events), not the gateways' or CAF workers'. Never drawn (the swarm refuses
    /// everyone's); a scenario sets it to aim publish failures at the router's side effects.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub publish_error_routers_only: bool,
    pub slow_permille: u64,
    pub slow_max_ms: u64,
    /// A core message routed between clients (a reply, an extension call or answer, a
    /// status request) is lost, or delivered twice.
    pub reply_loss_permille: u64,
    pub reply_dup_permille: u64,
    /// A delivery reaches its client twice.
    pub delivery_dup_permille: u64,
    // --- timed (scheduled) ---
    pub partitions: u64,
    pub partition_max_ms: u64,
    pub spikes: u64,
    pub spike_max_ms: u64,
    pub spike_extra_ms: u64,
    pub storms: u64,
    pub bursts: u64,
    pub burst_size: u64,
    pub crashes: u64,
    pub crash_down_max_ms: u64,
    /// Graceful stops (an operator's SIGTERM): the router drains for its grace period,
    /// exits and is started again.
    pub stops: u64,
    /// Consumer leader moves (an election in a JetStream cluster): waiting pulls lost.
    pub leader_moves: u64,
    /// Crashes of a JetStream cluster node (only on a cluster of 3 or 5): the groups it
    /// led hold an election, its clients reconnect to another node.
    pub node_crashes: u64,
    pub node_down_max_ms: u64,
    pub elect_max_ms: u64,
    /// A publish that reaches a stream while it has no leader is, this often, stored
    /// anyway (the old leader had replicated it) though no PubAck ever comes: ambiguous.
    pub ambiguous_permille: u64,
    pub broker_restarts: u64,
    pub broker_down_max_ms: u64,
    /// On a broker restart, writes of the last `sync_interval_ms` are lost (opt-in:
    /// `SimOptions::tail_loss`).
    pub tail_loss: bool,
    pub sync_interval_ms: u64,
    /// Router clocks are off by up to this much (each its own offset), and jump.
    pub clock_skew_ms: u64,
    pub skew_jumps: u64,
    // --- actors ---
    pub extensions: [ExtBehaviour; 3],
    pub caf_error_permille: u64,
    pub caf_timeout_permille: u64,
    /// A CAF worker publishes a result twice.
    pub caf_dup_permille: u64,
    /// A CAF worker publishes a result intake refuses (no tenant).
    pub caf_malformed_permille: u64,
    /// Core BUGGIFY sites may fire in this run (FoundationDB: on in 80% of runs).
    pub buggify: bool,
}

/// A fault the shrinker can switch off as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum RateFault {
    AckLoss,
    PublishError,
    Slow,
    ReplyLoss,
    ReplyDup,
    DeliveryDup,
    Extensions,
    CafFailures,
    CafDuplicates,
    CafMalformed,
    ClockSkew,
    Buggify,
}

impl RateFault {
    pub const ALL: [RateFault; 12] = [
        RateFault::AckLoss,
        RateFault::PublishError,
        RateFault::Slow,
        RateFault::ReplyLoss,
        RateFault::ReplyDup,
        RateFault::DeliveryDup,
        RateFault::Extensions,
        RateFault::CafFailures,
        RateFault::CafDuplicates,
        RateFault::CafMalformed,
        RateFault::ClockSkew,
        RateFault::Buggify,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RateFault::AckLoss => "ack_loss",
            RateFault::PublishError => "publish_error",
            RateFault::Slow => "slow",
            RateFault::ReplyLoss => "reply_loss",
            RateFault::ReplyDup => "reply_dup",
            RateFault::DeliveryDup => "delivery_dup",
            RateFault::Extensions => "extensions",
            RateFault::CafFailures => "caf_failures",
            RateFault::CafDuplicates => "caf_duplicates",
            RateFault::CafMalformed => "caf_malformed",
            RateFault::ClockSkew => "clock_skew",
            RateFault::Buggify => "buggify",
        }
    }

    pub fn parse(name: &str) -> Option<RateFault> {
        RateFault::ALL.into_iter().find(|r| r.name() == name)
    }
}

fn maybe(rng: &mut SimRng, permille: u64, lo: u64, hi: u64) -> u64 {
    if rng.chance(permille) {
        rng.between(lo, hi)
    } else {
        0
    }
}

impl Faults {
    pub fn none() -> Faults {
        Faults {
            drop_routers: false,
            drop_clients: false,
            mean_uptime_ms: 0,
            down_min_ms: 0,
            down_max_ms: 0,
            detect_max_ms: 0,
            server_notices_permille: 1000,
            ack_loss_permille: 0,
            publish_error_permille: 0,
            publish_error_routers_only: false,
            slow_permille: 0,
            slow_max_ms: 0,
            reply_loss_permille: 0,
            reply_dup_permille: 0,
            delivery_dup_permille: 0,
            partitions: 0,
            partition_max_ms: 0,
            spikes: 0,
            spike_max_ms: 0,
            spike_extra_ms: 0,
            storms: 0,
            bursts: 0,
            burst_size: 0,
            crashes: 0,
            crash_down_max_ms: 0,
            stops: 0,
            leader_moves: 0,
            node_crashes: 0,
            node_down_max_ms: 0,
            elect_max_ms: 0,
            ambiguous_permille: 0,
            broker_restarts: 0,
            broker_down_max_ms: 0,
            tail_loss: false,
            sync_interval_ms: 0,
            clock_skew_ms: 0,
            skew_jumps: 0,
            extensions: [ExtBehaviour::Healthy; 3],
            caf_error_permille: 0,
            caf_timeout_permille: 0,
            caf_dup_permille: 0,
            caf_malformed_permille: 0,
            buggify: false,
        }
    }

    /// Draw a fault menu, swarm style: each fault is on in a share of seeds, with its
    /// own severity.
    pub fn draw(rng: &mut SimRng, profile: &Profile, tail_loss: bool) -> Faults {
        let down_min_ms = rng.between(50, 2_000);
        let mut f = Faults {
            drop_routers: rng.chance(700),
            drop_clients: rng.chance(400),
            mean_uptime_ms: rng.between(3_000, 40_000),
            down_min_ms,
            // Now and then an outage outlasts the ack wait, so that redeliveries pile up.
            down_max_ms: if rng.chance(200) {
                rng.between(30_000, 60_000)
            } else {
                rng.between(down_min_ms, 15_000)
            },
            detect_max_ms: rng.between(0, 2_000),
            server_notices_permille: rng.between(0, 1000),
            ack_loss_permille: maybe(rng, 300, 1, 100),
            publish_error_permille: maybe(rng, 300, 1, 400),
            publish_error_routers_only: false,
            slow_permille: maybe(rng, 300, 1, 100),
            slow_max_ms: rng.between(50, 3_000),
            reply_loss_permille: maybe(rng, 250, 1, 200),
            reply_dup_permille: maybe(rng, 200, 1, 200),
            delivery_dup_permille: maybe(rng, 200, 1, 100),
            partitions: maybe(rng, 300, 1, 6),
            partition_max_ms: rng.between(1_000, 30_000),
            spikes: maybe(rng, 300, 1, 6),
            spike_max_ms: rng.between(500, 20_000),
            spike_extra_ms: rng.between(100, 5_000),
            storms: maybe(rng, 250, 1, 4),
            bursts: maybe(rng, 250, 1, 3),
            burst_size: rng.between(20, 200),
            crashes: if profile.routers > 0 {
                maybe(rng, 350, 1, 4)
            } else {
                0
            },
            crash_down_max_ms: rng.between(200, 40_000),
            // Drawn last (`Profile::draw`), so that no other draw of an existing seed moved.
            stops: 0,
            leader_moves: 0,
            node_crashes: 0,
            node_down_max_ms: 0,
            elect_max_ms: 0,
            ambiguous_permille: 0,
            broker_restarts: maybe(rng, 150, 1, 2),
            broker_down_max_ms: rng.between(200, 10_000),
            tail_loss: false,
            sync_interval_ms: rng.between(1_000, 60_000),
            clock_skew_ms: maybe(rng, 300, 1, 120_000),
            skew_jumps: maybe(rng, 300, 1, 3),
            extensions: [ExtBehaviour::Healthy; 3],
            caf_error_permille: maybe(rng, 500, 1, 300),
            caf_timeout_permille: maybe(rng, 300, 1, 200),
            caf_dup_permille: maybe(rng, 300, 1, 200),
            caf_malformed_permille: maybe(rng, 200, 1, 50),
            buggify: rng.chance(800),
        };
        if rng.chance(600) {
            for e in &mut f.extensions {
                *e = *rng.pick(&[
                    ExtBehaviour::Healthy,
                    ExtBehaviour::Healthy,
                    ExtBehaviour::Slow,
                    ExtBehaviour::Flapping,
                    ExtBehaviour::Dead,
                ]);
            }
        }
        // Opt-in: losing acknowledged writes breaks what JetStream promises, so only a run
        // that asks for it gets it (and only with broker restarts to lose them in).
        f.tail_loss = tail_loss && f.broker_restarts > 0;
        if f.clock_skew_ms == 0 {
            f.skew_jumps = 0;
        }
        f
    }

    /// Switch one rate fault off (the shrinker's move).
    pub fn disable(&mut self, kind: RateFault) {
        match kind {
            RateFault::AckLoss => self.ack_loss_permille = 0,
            RateFault::PublishError => self.publish_error_permille = 0,
            RateFault::Slow => self.slow_permille = 0,
            RateFault::ReplyLoss => self.reply_loss_permille = 0,
            RateFault::ReplyDup => self.reply_dup_permille = 0,
            RateFault::DeliveryDup => self.delivery_dup_permille = 0,
            RateFault::Extensions => self.extensions = [ExtBehaviour::Healthy; 3],
            RateFault::CafFailures => {
                self.caf_error_permille = 0;
                self.caf_timeout_permille = 0;
            }
            RateFault::CafDuplicates => self.caf_dup_permille = 0,
            RateFault::CafMalformed => self.caf_malformed_permille = 0,
            RateFault::ClockSkew => {
                self.clock_skew_ms = 0;
                self.skew_jumps = 0;
            }
            RateFault::Buggify => self.buggify = false,
        }
    }

    /// The rate faults that are on.
    pub fn enabled_rates(&self) -> Vec<RateFault> {
        RateFault::ALL
            .into_iter()
            .filter(|&k| {
                let mut off = self.clone();
                off.disable(k);
                off != *self
            })
            .collect()
    }

    pub fn slow(&self) -> SlowFault {
        SlowFault {
            permille: self.slow_permille,
            max_ms: self.slow_max_ms,
        }
    }

    pub fn summary(&self) -> String {
        let mut on: Vec<String> = Vec::new();
        if self.drop_routers || self.drop_clients {
            on.push(format!(
                "drops({}{} uptime~{}ms down={}..{}ms notice={}‰)",
                if self.drop_routers { "R" } else { "" },
                if self.drop_clients { "C" } else { "" },
                self.mean_uptime_ms,
                self.down_min_ms,
                self.down_max_ms,
                self.server_notices_permille
            ));
        }
        let rates = [
            ("ack_loss", self.ack_loss_permille),
            ("pub_err", self.publish_error_permille),
            ("slow", self.slow_permille),
            ("reply_loss", self.reply_loss_permille),
            ("reply_dup", self.reply_dup_permille),
            ("delivery_dup", self.delivery_dup_permille),
            ("caf_err", self.caf_error_permille),
            ("caf_timeout", self.caf_timeout_permille),
            ("caf_dup", self.caf_dup_permille),
            ("caf_bad", self.caf_malformed_permille),
        ];
        for (name, rate) in rates {
            if rate > 0 {
                on.push(format!("{name}={rate}‰"));
            }
        }
        let counts = [
            ("partitions", self.partitions),
            ("spikes", self.spikes),
            ("storms", self.storms),
            ("bursts", self.bursts),
            ("crashes", self.crashes),
            ("stops", self.stops),
            ("leader_moves", self.leader_moves),
            ("node_crashes", self.node_crashes),
            ("broker_restarts", self.broker_restarts),
            ("skew_jumps", self.skew_jumps),
        ];
        for (name, n) in counts {
            if n > 0 {
                on.push(format!("{name}={n}"));
            }
        }
        if self.clock_skew_ms > 0 {
            on.push(format!("skew<={}ms", self.clock_skew_ms));
        }
        if self.tail_loss {
            on.push(format!("tail_loss(sync={}ms)", self.sync_interval_ms));
        }
        if self.extensions != [ExtBehaviour::Healthy; 3] {
            on.push(format!("ext={:?}", self.extensions));
        }
        if self.buggify {
            on.push("buggify".to_string());
        }
        if on.is_empty() {
            "none".to_string()
        } else {
            on.join(" ")
        }
    }
}

/// One timed fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum FaultKind {
    /// `node`'s connection drops for `down_ms`; the client notices after `detect_ms`.
    LinkDrop {
        node: NodeId,
        down_ms: u64,
        detect_ms: u64,
        server_notices: bool,
    },
    /// Core messages between `a` and `b` are cut for `ms`.
    Partition { a: NodeId, b: NodeId, ms: u64 },
    /// Messages on `node`'s connection (every one if `None`) are slow for `ms`.
    Spike {
        node: Option<NodeId>,
        ms: u64,
        extra_ms: u64,
    },
    /// Every pending message of the consumer is due for redelivery now.
    Storm { cons: Cons },
    /// A gateway sends `count` extra requests at once.
    Burst { gateway: usize, count: u64 },
    /// A router process dies (memory lost) and restarts after `down_ms`.
    Crash {
        router: usize,
        down_ms: u64,
        server_notices: bool,
    },
    /// A router is stopped gracefully (SIGTERM): its host stops intake and drains for
    /// at most `grace_ms`, the process exits, and starts again `down_ms` later.
    Stop {
        router: usize,
        grace_ms: u64,
        down_ms: u64,
    },
    /// The NATS server restarts; every connection drops for `down_ms`.
    BrokerRestart { down_ms: u64 },
    /// A router's clock steps by `delta_ms`.
    SkewJump { router: usize, delta_ms: i64 },
    /// The consumer's leader moves (an election in a JetStream cluster): every waiting
    /// pull request is lost with the old leader, unacked messages stay pending (the new
    /// leader redelivers them after `ack_wait`). With `advisory`, each connected router
    /// hears the new leader's LEADER_ELECTED advisory after `elect_ms`; without, only
    /// the idle heartbeats tell it (two missed: `PULL_HEARTBEAT_MS` twice).
    LeaderMove {
        cons: Cons,
        advisory: bool,
        elect_ms: u64,
    },
    /// A node of the JetStream cluster dies and is back after `down_ms` (its store
    /// intact, or caught up from its peers: R3 acknowledges only what a quorum stored).
    /// Each group it led holds an election of `elect_ms` (none while a majority of the
    /// group's peers is down); its clients reconnect to another node.
    NodeCrash {
        target: NodeTarget,
        down_ms: u64,
        elect_ms: u64,
    },
}

/// Which cluster node a `NodeCrash` kills.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeTarget {
    /// Node `i` (0-based), whatever it leads.
    Node(usize),
    /// The node that leads this group (a stream, a durable or `KV`) when the fault
    /// lands; nothing if it has no leader then.
    LeaderOf(String),
}

/// The groups a drawn `NodeCrash` may aim at (by the node that leads them).
pub const CRASH_GROUPS: [&str; 8] = [
    "DECIDE",
    "DECIDE",
    "router",
    "router-results",
    "DECIDE_DLQ",
    "USAGE",
    "ADVISORIES",
    crate::jetstream::KV_GROUP,
];

impl FaultKind {
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::LinkDrop { .. } => "link_drop",
            FaultKind::Partition { .. } => "partition",
            FaultKind::Spike { .. } => "spike",
            FaultKind::Storm { .. } => "storm",
            FaultKind::Burst { .. } => "burst",
            FaultKind::Crash { .. } => "crash",
            FaultKind::Stop { .. } => "stop",
            FaultKind::BrokerRestart { .. } => "broker_restart",
            FaultKind::SkewJump { .. } => "skew_jump",
            FaultKind::LeaderMove { .. } => "leader_move",
            FaultKind::NodeCrash { .. } => "node_crash",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ScheduledFault {
    pub at: u64,
    pub kind: FaultKind,
}

/// The timed faults of a run, in time order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Schedule {
    pub entries: Vec<ScheduledFault>,
}

impl Schedule {
    pub fn draw(rng: &mut SimRng, profile: &Profile, topo: &Topology) -> Schedule {
        let f = &profile.faults;
        let chaos = profile.chaos_ms;
        let mut entries = Vec::new();
        for node in topo.nodes() {
            let drops = match topo.role(node) {
                Role::Router(_) => f.drop_routers,
                _ => f.drop_clients,
            };
            if !drops {
                continue;
            }
            let mean = f.mean_uptime_ms.max(1);
            let mut t = rng.between(1, 2 * mean);
            while t < chaos {
                let down_ms = rng.between(f.down_min_ms, f.down_max_ms.max(f.down_min_ms));
                entries.push(ScheduledFault {
                    at: t,
                    kind: FaultKind::LinkDrop {
                        node,
                        down_ms,
                        detect_ms: rng.between(0, f.detect_max_ms),
                        server_notices: rng.chance(f.server_notices_permille),
                    },
                });
                t += down_ms + rng.between(1, 2 * mean);
            }
        }
        for _ in 0..f.partitions {
            let a = rng.below(topo.len() as u64) as usize;
            let mut b = rng.below(topo.len() as u64 - 1) as usize;
            if b >= a {
                b += 1;
            }
            entries.push(ScheduledFault {
                at: rng.below(chaos),
                kind: FaultKind::Partition {
                    a,
                    b,
                    ms: rng.between(500, f.partition_max_ms.max(500)),
                },
            });
        }
        for _ in 0..f.spikes {
            let node = (!rng.chance(300)).then(|| rng.below(topo.len() as u64) as usize);
            entries.push(ScheduledFault {
                at: rng.below(chaos),
                kind: FaultKind::Spike {
                    node,
                    ms: rng.between(200, f.spike_max_ms.max(200)),
                    extra_ms: f.spike_extra_ms,
                },
            });
        }
        for _ in 0..f.storms {
            let cons = *rng.pick(&[Cons::Decide, Cons::Decide, Cons::Results, Cons::Assign]);
            entries.push(ScheduledFault {
                at: rng.below(chaos),
                kind: FaultKind::Storm { cons },
            });
        }
        for _ in 0..f.bursts {
            entries.push(ScheduledFault {
                at: rng.below(chaos),
                kind: FaultKind::Burst {
                    gateway: rng.below(topo.gateways() as u64) as usize,
                    count: f.burst_size,
                },
            });
        }
        for _ in 0..f.crashes {
            entries.push(ScheduledFault {
                at: rng.below(chaos),
                kind: FaultKind::Crash {
                    router: rng.below(topo.routers() as u64) as usize,
                    down_ms: rng.between(100, f.crash_down_max_ms.max(100)),
                    server_notices: rng.chance(700),
                },
            });
        }
        for _ in 0..f.broker_restarts {
            entries.push(ScheduledFault {
                at: rng.between(1, chaos),
                kind: FaultKind::BrokerRestart {
                    down_ms: rng.between(200, f.broker_down_max_ms.max(200)),
                },
            });
        }
        for _ in 0..f.skew_jumps {
            let delta = rng.between(1, f.clock_skew_ms.max(1)) as i64;
            entries.push(ScheduledFault {
                at: rng.below(chaos),
                kind: FaultKind::SkewJump {
                    router: rng.below(topo.routers() as u64) as usize,
                    delta_ms: if rng.chance(300) { -delta } else { delta },
                },
            });
        }
        for _ in 0..f.stops {
            entries.push(ScheduledFault {
                at: rng.below(chaos),
                kind: FaultKind::Stop {
                    router: rng.below(topo.routers() as u64) as usize,
                    // Mostly long enough to drain; sometimes too short (the drain is cut).
                    grace_ms: rng.between(100, 30_000),
                    down_ms: rng.between(100, 10_000),
                },
            });
        }
        for _ in 0..f.leader_moves {
            entries.push(ScheduledFault {
                at: rng.below(chaos),
                kind: FaultKind::LeaderMove {
                    cons: *rng.pick(&[Cons::Decide, Cons::Decide, Cons::Results]),
                    // Core NATS: the advisory is mostly heard, sometimes not.
                    advisory: rng.chance(700),
                    elect_ms: rng.between(0, 2_000),
                },
            });
        }
        for _ in 0..f.node_crashes {
            let target = if rng.chance(600) {
                NodeTarget::LeaderOf(rng.pick(&CRASH_GROUPS).to_string())
            } else {
                NodeTarget::Node(rng.below(profile.cluster_nodes.max(1) as u64) as usize)
            };
            entries.push(ScheduledFault {
                at: rng.below(chaos),
                kind: FaultKind::NodeCrash {
                    target,
                    down_ms: rng.between(500, f.node_down_max_ms.max(500)),
                    elect_ms: rng.between(200, f.elect_max_ms.max(200)),
                },
            });
        }
        // Stable: entries drawn earlier stay earlier among equal times.
        entries.sort_by_key(|e| e.at);
        Schedule { entries }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keep only the entries at or before `chaos_ms` whose index is not in `dropped`.
    pub fn reduce(&mut self, dropped: &[usize], chaos_ms: u64) {
        let mut i = 0;
        self.entries.retain(|e| {
            let keep = !dropped.contains(&i) && e.at < chaos_ms;
            i += 1;
            keep
        });
    }

    /// Counts per kind, for the CLI.
    pub fn summary(&self) -> String {
        let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
        for e in &self.entries {
            *counts.entry(e.kind.name()).or_default() += 1;
        }
        if counts.is_empty() {
            return "none".to_string();
        }
        counts
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The extension id an `Ext(i)` node serves.
pub fn extension_id(i: usize) -> &'static str {
    EXTENSIONS[i]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_are_sorted_and_within_chaos() {
        for seed in 0..200 {
            let p = Profile::draw(&mut SimRng::stream(seed, "profile"), true, true);
            let topo = Topology::new(p.routers, p.gateways, p.caf_workers);
            let s = Schedule::draw(&mut SimRng::stream(seed, "schedule"), &p, &topo);
            assert!(s.entries.windows(2).all(|w| w[0].at <= w[1].at));
            assert!(s.entries.iter().all(|e| e.at < p.chaos_ms));
            if let Some(FaultKind::Partition { a, b, .. }) = s
                .entries
                .iter()
                .map(|e| &e.kind)
                .find(|k| matches!(k, FaultKind::Partition { .. }))
            {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn disabling_a_rate_fault_removes_it_from_the_menu() {
        let mut f = Faults::none();
        f.ack_loss_permille = 5;
        f.buggify = true;
        assert_eq!(
            f.enabled_rates(),
            vec![RateFault::AckLoss, RateFault::Buggify]
        );
        f.disable(RateFault::AckLoss);
        assert_eq!(f.enabled_rates(), vec![RateFault::Buggify]);
        assert_eq!(RateFault::parse("buggify"), Some(RateFault::Buggify));
    }

    #[test]
    fn reduce_drops_by_index_and_time() {
        let mut s = Schedule {
            entries: (0..5)
                .map(|i| ScheduledFault {
                    at: i * 10,
                    kind: FaultKind::Storm { cons: Cons::Decide },
                })
                .collect(),
        };
        s.reduce(&[1, 3], 35);
        assert_eq!(
            s.entries.iter().map(|e| e.at).collect::<Vec<_>>(),
            vec![0, 20]
        );
    }
}
