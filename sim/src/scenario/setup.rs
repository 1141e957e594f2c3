//! A scenario applied to a world (`world::WorldSetup`): its settings, workload and fault
//! menu override the profile the seed drew; its timed faults join the drawn schedule.
//!
//! What a scenario leaves unset: topology and consumer/core settings stay as the seed
//! drew them, except the swarm's stress settings (`max_ack_pending`, `max_in_flight`,
//! backpressure thresholds), which go back to production defaults unless the scenario
//! says `swarm_settings = true`; the fault menu is healthy (`Faults::none`) unless
//! `swarm = true`, when the seed draws it first. So a scenario's seeds vary timings and
//! topology, never the faults it did not ask for.

use crate::faults::{ExtBehaviour, FaultKind, Schedule, ScheduledFault};
use crate::net::NodeId;
use crate::profile::Profile;
use crate::topology::Topology;
use crate::wire::Cons;
use crate::world::WorldSetup;

use super::Scenario;

/// A timed fault with its nodes still named (resolved against the run's topology).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimedFault {
    LinkDrop {
        node: String,
        down_ms: u64,
        detect_ms: u64,
        server_notices: bool,
    },
    Partition {
        a: String,
        b: String,
        ms: u64,
    },
    Spike {
        node: Option<String>,
        ms: u64,
        extra_ms: u64,
    },
    Storm {
        cons: Cons,
    },
    Burst {
        gateway: usize,
        count: u64,
    },
    Crash {
        router: usize,
        down_ms: u64,
        server_notices: bool,
    },
    Stop {
        router: usize,
        grace_ms: u64,
        down_ms: u64,
    },
    BrokerRestart {
        down_ms: u64,
    },
    SkewJump {
        router: usize,
        delta_ms: i64,
    },
    LeaderMove {
        cons: Cons,
        advisory: bool,
        elect_ms: u64,
    },
    NodeCrash {
        target: crate::faults::NodeTarget,
        down_ms: u64,
        elect_ms: u64,
    },
}

/// A node name (`router-1`, `gw-2`, `ext-pii_guard`, ...) in a topology.
pub fn resolve(topo: &Topology, name: &str) -> Option<NodeId> {
    topo.nodes().find(|&n| topo.name(n) == name)
}

pub fn ext_behaviour(name: &str) -> Option<ExtBehaviour> {
    Some(match name {
        "healthy" => ExtBehaviour::Healthy,
        "slow" => ExtBehaviour::Slow,
        "flapping" => ExtBehaviour::Flapping,
        "dead" => ExtBehaviour::Dead,
        _ => return None,
    })
}

impl WorldSetup for Scenario {
    fn profile(&self, p: &mut Profile) {
        let w = &self.file.workload;
        let s = &self.file.settings;
        macro_rules! set {
            ($dst:expr, $src:expr) => {
                if let Some(v) = $src.clone() {
                    $dst = v;
                }
            };
        }
        set!(p.routers, w.routers);
        set!(p.gateways, w.gateways);
        set!(p.caf_workers, w.caf_workers);
        set!(p.workload_ms, w.duration_ms);
        p.chaos_ms = match (w.chaos_ms, w.duration_ms) {
            (Some(c), _) => c,
            (None, Some(d)) => d,
            (None, None) => p.chaos_ms,
        };
        set!(p.max_attempts, w.max_attempts);
        set!(p.reply_timeout_ms, w.reply_timeout_ms);
        set!(p.status_poll_ms, w.status_poll_ms);
        let kinds = [w.valid, w.ext, w.limited, w.no_policy, w.invalid];
        if kinds.iter().any(Option::is_some) {
            p.mix.valid = w.valid.unwrap_or(0);
            p.mix.ext = w.ext.unwrap_or(0);
            p.mix.limited = w.limited.unwrap_or(0);
            p.mix.no_policy = w.no_policy.unwrap_or(0);
            p.mix.invalid = w.invalid.unwrap_or(0);
        }
        set!(p.mix.idempotency_permille, w.idempotency_permille);
        set!(p.mix.assignment_permille, w.assignment_permille);
        set!(p.mix.pii_permille, w.pii_permille);
        set!(p.mix.trace_header_permille, w.trace_header_permille);

        if !s.swarm_settings {
            p.max_ack_pending = 1_000;
            p.max_in_flight = 256;
            p.queue_overload = 1_000;
            p.inflight_overload = 500;
            p.latency_overload_ms = 5_000;
            p.shared_answers = false;
        }
        set!(p.shared_answers, s.shared_answers);
        set!(p.cluster_nodes, s.cluster_nodes);
        set!(p.ack_wait_ms, s.ack_wait_ms);
        set!(p.max_deliver, s.max_deliver);
        set!(p.backoff_ms, s.backoff_ms);
        // nats-server requires max_deliver > len(backoff): trim a drawn list.
        let cap = p.max_deliver.saturating_sub(1) as usize;
        p.backoff_ms.truncate(cap);
        set!(p.max_ack_pending, s.max_ack_pending);
        set!(p.pull_batch, s.pull_batch);
        set!(p.pull_expires_ms, s.pull_expires_ms);
        set!(p.publish_timeout_ms, s.publish_timeout_ms);
        set!(p.nak_backoff_ms, s.nak_backoff_ms);
        set!(p.dlq_retry_ms, s.dlq_retry_ms);
        set!(p.max_in_flight, s.max_in_flight);
        set!(p.queue_overload, s.queue_overload);
        set!(p.inflight_overload, s.inflight_overload);
        set!(p.latency_overload_ms, s.latency_overload_ms);
        set!(p.retry_after_seconds, s.retry_after_seconds);
        set!(p.extension_retry, s.extension_retry);
        set!(p.caf_latency_max_ms, s.caf_latency_max_ms);
        set!(p.caf_msg_id, s.caf_msg_id);
        if s.ops_every_ms.is_some() {
            p.ops_every_ms = s.ops_every_ms;
        }

        let f = &self.file.faults;
        let m = &mut p.faults;
        set!(m.drop_routers, f.drop_routers);
        set!(m.drop_clients, f.drop_clients);
        set!(m.mean_uptime_ms, f.mean_uptime_ms);
        set!(m.down_min_ms, f.down_min_ms);
        set!(m.down_max_ms, f.down_max_ms);
        set!(m.detect_max_ms, f.detect_max_ms);
        set!(m.server_notices_permille, f.server_notices_permille);
        set!(m.ack_loss_permille, f.ack_loss_permille);
        set!(m.publish_error_permille, f.publish_error_permille);
        set!(m.publish_error_routers_only, f.publish_error_routers_only);
        set!(m.slow_permille, f.slow_permille);
        set!(m.slow_max_ms, f.slow_max_ms);
        set!(m.reply_loss_permille, f.reply_loss_permille);
        set!(m.reply_dup_permille, f.reply_dup_permille);
        set!(m.delivery_dup_permille, f.delivery_dup_permille);
        set!(m.partitions, f.partitions);
        set!(m.partition_max_ms, f.partition_max_ms);
        set!(m.spikes, f.spikes);
        set!(m.spike_max_ms, f.spike_max_ms);
        set!(m.spike_extra_ms, f.spike_extra_ms);
        set!(m.storms, f.storms);
        set!(m.bursts, f.bursts);
        set!(m.burst_size, f.burst_size);
        set!(m.crashes, f.crashes);
        set!(m.crash_down_max_ms, f.crash_down_max_ms);
        set!(m.broker_restarts, f.broker_restarts);
        set!(m.broker_down_max_ms, f.broker_down_max_ms);
        set!(m.clock_skew_ms, f.clock_skew_ms);
        set!(m.skew_jumps, f.skew_jumps);
        set!(m.ambiguous_permille, f.ambiguous_permille);
        set!(m.elect_max_ms, f.elect_max_ms);
        if m.clock_skew_ms == 0 {
            m.skew_jumps = 0;
        }
        set!(m.extensions, self.extensions);
        set!(m.caf_error_permille, f.caf_error_permille);
        set!(m.caf_timeout_permille, f.caf_timeout_permille);
        set!(m.caf_dup_permille, f.caf_dup_permille);
        set!(m.caf_malformed_permille, f.caf_malformed_permille);
        set!(m.buggify, f.buggify);
        // Drawn schedules need at least one node of each kind they pick from.
        p.routers = p.routers.max(1);
        p.gateways = p.gateways.max(1);
        p.caf_workers = p.caf_workers.max(1);
    }

    fn schedule(&self, topo: &Topology, _profile: &Profile, schedule: &mut Schedule) {
        for (at, fault) in &self.timed {
            let node = |name: &str| {
                resolve(topo, name).unwrap_or_else(|| {
                    panic!("scenario {}: no node {name} in this topology", self.name)
                })
            };
            let kind = match fault {
                TimedFault::LinkDrop {
                    node: n,
                    down_ms,
                    detect_ms,
                    server_notices,
                } => FaultKind::LinkDrop {
                    node: node(n),
                    down_ms: *down_ms,
                    detect_ms: *detect_ms,
                    server_notices: *server_notices,
                },
                TimedFault::Partition { a, b, ms } => FaultKind::Partition {
                    a: node(a),
                    b: node(b),
                    ms: *ms,
                },
                TimedFault::Spike {
                    node: n,
                    ms,
                    extra_ms,
                } => FaultKind::Spike {
                    node: n.as_deref().map(node),
                    ms: *ms,
                    extra_ms: *extra_ms,
                },
                TimedFault::Storm { cons } => FaultKind::Storm { cons: *cons },
                TimedFault::Burst { gateway, count } => FaultKind::Burst {
                    gateway: gateway.min(&topo.gateways()).saturating_sub(1),
                    count: *count,
                },
                TimedFault::Crash {
                    router,
                    down_ms,
                    server_notices,
                } => FaultKind::Crash {
                    router: router.min(&topo.routers()).saturating_sub(1),
                    down_ms: *down_ms,
                    server_notices: *server_notices,
                },
                TimedFault::Stop {
                    router,
                    grace_ms,
                    down_ms,
                } => FaultKind::Stop {
                    router: router.min(&topo.routers()).saturating_sub(1),
                    grace_ms: *grace_ms,
                    down_ms: *down_ms,
                },
                TimedFault::BrokerRestart { down_ms } => {
                    FaultKind::BrokerRestart { down_ms: *down_ms }
                }
                TimedFault::SkewJump { router, delta_ms } => FaultKind::SkewJump {
                    router: router.min(&topo.routers()).saturating_sub(1),
                    delta_ms: *delta_ms,
                },
                TimedFault::LeaderMove {
                    cons,
                    advisory,
                    elect_ms,
                } => FaultKind::LeaderMove {
                    cons: *cons,
                    advisory: *advisory,
                    elect_ms: *elect_ms,
                },
                TimedFault::NodeCrash {
                    target,
                    down_ms,
                    elect_ms,
                } => FaultKind::NodeCrash {
                    target: target.clone(),
                    down_ms: *down_ms,
                    elect_ms: *elect_ms,
                },
            };
            schedule.entries.push(ScheduledFault { at: *at, kind });
        }
    }
}
