//! The shape of one run, drawn from its seed in swarm style (TigerBeetle's VOPR): each
//! seed gets its own topology (router processes, gateways, CAF workers), consumer and
//! core settings, client behaviour and fault menu (`faults.rs`), so that a sweep explores
//! combinations no single hand-written profile would.

use beamline_router::core::extensions::{ExtensionRegistry, RETRY_BASE_MS};
use serde::Serialize;

use crate::actors::gateway::WorkloadMix;
use crate::faults::Faults;
use crate::rng::SimRng;

/// Everything a run's world is built from, besides the seed and the options.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Profile {
    // --- topology ---
    pub routers: usize,
    pub gateways: usize,
    pub caf_workers: usize,
    /// JetStream cluster nodes: 1, 3 or 5 (`jetstream::Cluster`).
    pub cluster_nodes: usize,
    // --- the consumers (shared by the decide and results consumers) ---
    pub ack_wait_ms: u64,
    /// The consumers' `backoff` list; empty for none. nats-server requires
    /// `max_deliver > backoff.len()`.
    pub backoff_ms: Vec<u64>,
    pub max_deliver: u64,
    pub max_ack_pending: usize,
    pub pull_batch: u64,
    pub pull_expires_ms: u64,
    /// How long a client waits for a PubAck before reporting the publish failed.
    pub publish_timeout_ms: u64,
    // --- the core ---
    pub nak_backoff_ms: Vec<u64>,
    pub dlq_retry_ms: u64,
    pub max_in_flight: usize,
    pub queue_overload: u64,
    pub inflight_overload: u64,
    pub latency_overload_ms: u64,
    pub retry_after_seconds: u64,
    /// Retries after a timeout, per built-in extension (normalize_text, pii_guard, mask_pii).
    pub extension_retry: [u32; 3],
    // --- the gateway ---
    /// A request with no reply after this long is sent again (same request_id and
    /// idempotency_key, new Nats-Msg-Id).
    pub reply_timeout_ms: u64,
    pub max_attempts: u64,
    pub status_poll_ms: u64,
    // --- CAF ---
    pub caf_latency_max_ms: u64,
    /// Whether CAF workers set a `Nats-Msg-Id` on their results.
    pub caf_msg_id: bool,
    /// How often the operator calls an admin or status operation; drawn by the ops
    /// actor unless a scenario sets it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ops_every_ms: Option<u64>,
    /// What the requests are made of. Always the swarm's default when drawn; only a
    /// scenario changes it (and then it enters the trace's profile line).
    #[serde(skip_serializing_if = "WorkloadMix::is_default")]
    pub mix: WorkloadMix,
    // --- shared state ---
    /// The routers claim keyed answers in the shared KV bucket (`core/shared.rs`), so
    /// idempotency holds across processes, not only within one.
    pub shared_answers: bool,
    // --- the run ---
    /// Requests are published within `[0, workload_ms)`.
    pub workload_ms: u64,
    /// Faults stop at `chaos_ms`; then the liveness phase begins.
    pub chaos_ms: u64,
    pub faults: Faults,
}

impl Profile {
    /// Draw a profile. With `faults == false`, the world is drawn the same way but healthy.
    pub fn draw(rng: &mut SimRng, faults: bool, tail_loss: bool) -> Profile {
        let workload_ms = 60_000;
        let max_deliver = rng.between(2, 6);
        let backoff_ms = if rng.chance(300) {
            let len = rng.between(1, (max_deliver - 1).min(3));
            let mut list: Vec<u64> = (0..len).map(|_| rng.between(500, 15_000)).collect();
            list.sort_unstable();
            list
        } else {
            Vec::new()
        };
        let mut p = Profile {
            routers: rng.between(1, 3) as usize,
            gateways: rng.between(1, 2) as usize,
            caf_workers: rng.between(1, 2) as usize,
            // Drawn last (below).
            cluster_nodes: 1,
            ack_wait_ms: *rng.pick(&[5_000, 10_000, 30_000]),
            backoff_ms,
            max_deliver,
            max_ack_pending: if rng.chance(300) {
                rng.between(2, 64) as usize
            } else {
                1_000
            },
            pull_batch: rng.between(1, 32),
            pull_expires_ms: rng.between(1_000, 30_000),
            publish_timeout_ms: rng.between(1_000, 5_000),
            nak_backoff_ms: {
                let first = rng.between(200, 2_000);
                vec![first, first * rng.between(2, 5), first * rng.between(5, 15)]
            },
            dlq_retry_ms: rng.between(500, 3_000),
            max_in_flight: if rng.chance(200) {
                rng.between(4, 64) as usize
            } else {
                256
            },
            queue_overload: if rng.chance(300) {
                rng.between(5, 100)
            } else {
                1_000
            },
            inflight_overload: if rng.chance(300) {
                rng.between(3, 50)
            } else {
                500
            },
            latency_overload_ms: if rng.chance(300) {
                rng.between(200, 5_000)
            } else {
                5_000
            },
            retry_after_seconds: rng.between(1, 30),
            extension_retry: [
                rng.between(0, 2) as u32,
                rng.between(0, 2) as u32,
                rng.between(0, 2) as u32,
            ],
            reply_timeout_ms: rng.between(3_000, 20_000),
            max_attempts: rng.between(1, 4),
            status_poll_ms: rng.between(2_000, 15_000),
            caf_latency_max_ms: rng.between(50, 3_000),
            caf_msg_id: rng.chance(500),
            ops_every_ms: None,
            mix: WorkloadMix::default(),
            workload_ms,
            chaos_ms: workload_ms + rng.between(0, 60_000),
            faults: Faults::none(),
            shared_answers: false,
        };
        if faults {
            p.faults = Faults::draw(rng, &p, tail_loss);
        }
        // Drawn last, so that adding it changed no other draw of an existing seed.
        p.shared_answers = rng.chance(500);
        // Later still, for the same reason.
        if faults && p.routers > 0 && rng.chance(300) {
            p.faults.stops = rng.between(1, 3);
        }
        // Last again: consumer leader moves, as a JetStream cluster's elections make them.
        if faults && p.routers > 0 && rng.chance(250) {
            p.faults.leader_moves = rng.between(1, 4);
        }
        // Last again: the JetStream cluster and its node crashes.
        p.cluster_nodes = *rng.pick(&[1, 3, 3, 5]);
        if faults && p.cluster_nodes >= 3 && rng.chance(350) {
            p.faults.node_crashes = rng.between(1, 3);
            p.faults.node_down_max_ms = rng.between(1_000, 30_000);
            // nats-server elects in 4 to 9 s after a SIGKILL (docs/OPERATIONS.md).
            p.faults.elect_max_ms = rng.between(500, 9_000);
            p.faults.ambiguous_permille = rng.between(0, 500);
        }
        p
    }

    /// The built-in extension registry with this profile's retry counts.
    pub fn extension_registry(&self) -> ExtensionRegistry {
        let builtin = ExtensionRegistry::builtin();
        let mut registry = ExtensionRegistry::default();
        for (i, id) in crate::topology::EXTENSIONS.iter().enumerate() {
            if let Some(def) = builtin.get(id) {
                let mut def = def.clone();
                def.retry = self.extension_retry[i];
                registry.insert(def);
            }
        }
        registry
    }

    /// The ack timeout after the longest backoff step (or `ack_wait`).
    pub fn longest_ack_timeout_ms(&self) -> u64 {
        self.backoff_ms
            .iter()
            .copied()
            .max()
            .unwrap_or(self.ack_wait_ms)
            .max(self.backoff_ms.first().copied().unwrap_or(self.ack_wait_ms))
    }

    /// The duplicate window of the streams the routers write (assignments, usage, DLQ),
    /// as the production shell derives it (`Settings::output_duplicate_window`): twice
    /// the longest redelivery span, `max_deliver` x (longest ack timeout + longest nak),
    /// and never less than the intake window.
    pub fn output_duplicate_window_ms(&self) -> u64 {
        let span = self
            .max_deliver
            .saturating_mul(self.longest_ack_timeout_ms() + self.longest_nak_ms());
        span.saturating_mul(2)
            .max(crate::world::DUPLICATE_WINDOW_MS)
    }

    /// The longest a nak of the core can keep a message away, with the server's backoff
    /// formula (`d - backoff[0] + backoff[min(n, len - 1)]`) applied.
    pub fn longest_nak_ms(&self) -> u64 {
        let core = self
            .nak_backoff_ms
            .iter()
            .copied()
            .max()
            .unwrap_or(0)
            .max(self.retry_after_seconds * 1_000);
        match (self.backoff_ms.first(), self.backoff_ms.iter().max()) {
            (Some(first), Some(max)) => core.saturating_sub(*first) + max,
            _ => core,
        }
    }

    /// The longest an extension pipeline can take: each item its timeout times its
    /// attempts, plus the retry delays.
    pub fn longest_pipeline_ms(&self) -> u64 {
        self.extension_registry()
            .iter()
            .map(|d| {
                let attempts = u64::from(d.retry) + 1;
                let delays: u64 = (0..u64::from(d.retry)).map(|a| RETRY_BASE_MS << a).sum();
                d.timeout_ms * attempts + delays
            })
            .sum()
    }

    /// After the chaos phase, a message stored by then (or later) must reach its final
    /// state within this long: each of its `max_deliver` deliveries can cost an ack
    /// timeout, the longest nak, a publish timeout, a DLQ retry, an extension pipeline and
    /// a pull cycle; then the server's advisory must be read and the message
    /// dead-lettered (an ack wait and a pull cycle more); plus a margin.
    pub fn liveness_bound_ms(&self) -> u64 {
        let per_delivery = self.longest_ack_timeout_ms()
            + self.longest_nak_ms()
            + self.publish_timeout_ms
            + self.dlq_retry_ms
            + self.longest_pipeline_ms()
            + self.pull_expires_ms;
        let advisory = self.ack_wait_ms + self.pull_expires_ms + self.publish_timeout_ms;
        self.max_deliver * per_delivery + advisory + 30_000
    }

    /// How long after the heal the network may still deliver what the chaos phase left
    /// in it (a slow message holds up those behind it), and clients finish reconnecting.
    pub fn settle_ms(&self) -> u64 {
        let f = &self.faults;
        let slow = if f.slow_permille > 0 {
            f.slow_max_ms
        } else {
            0
        };
        let spike = if f.spikes > 0 { f.spike_extra_ms } else { 0 };
        2_000 + slow.max(spike)
    }

    /// The hard end of a run: the liveness bound for every gateway attempt that may
    /// still start after the chaos phase.
    /// (A scenario may end the chaos phase before the workload; then the bound runs from
    /// the end of the workload.)
    pub fn hard_end_ms(&self) -> u64 {
        self.chaos_ms.max(self.workload_ms)
            + (self.max_attempts + 1) * (self.liveness_bound_ms() + self.reply_timeout_ms)
    }

    /// One line for the CLI.
    pub fn summary(&self) -> String {
        format!(
            "routers={} gateways={} caf={} ack_wait={}ms backoff={:?} max_deliver={} max_ack_pending={} batch={} chaos={}ms reply_timeout={}ms attempts={} answers={} faults[{}]",
            self.routers,
            self.gateways,
            self.caf_workers,
            self.ack_wait_ms,
            self.backoff_ms,
            self.max_deliver,
            self.max_ack_pending,
            self.pull_batch,
            self.chaos_ms,
            self.reply_timeout_ms,
            self.max_attempts,
            if self.shared_answers { "kv" } else { "memory" },
            self.faults.summary(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_respect_the_servers_rules() {
        for seed in 0..500 {
            let p = Profile::draw(&mut SimRng::stream(seed, "profile"), true, false);
            assert!(p.max_deliver > p.backoff_ms.len() as u64, "seed {seed}");
            assert!(p.chaos_ms >= p.workload_ms);
            assert!(p.liveness_bound_ms() > p.max_deliver * p.ack_wait_ms.min(500));
            assert!((1..=3).contains(&p.routers));
        }
    }

    #[test]
    fn the_registry_keeps_the_builtin_subjects() {
        let p = Profile::draw(&mut SimRng::stream(1, "profile"), false, false);
        let r = p.extension_registry();
        assert_eq!(r.len(), 3);
        assert!(r.get("pii_guard").is_some());
    }
}
