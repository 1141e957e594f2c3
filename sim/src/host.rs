//! A router process: the very host production runs (`beamline_router::host::Host`,
//! around the very same core), with the simulated transport's share beside it: the
//! modelled client's pull requests, the process's clock, and its ids. Everything the
//! production driver decides is decided by the shared host; this file and
//! `world/routers.rs` only carry its actions over the simulated wire and bring back
//! what arrives, as the production driver does with async-nats.
//!
//! A process can crash: the world then drops its `RouterHost` (memory lost) and builds a
//! new one on restart (a new incarnation). The durable consumers live on at the server.

use beamline_router::core::{
    Buggify as CoreBuggify, Entropy, Probe as CoreProbe, Router, RouterConfig, Time,
};
use beamline_router::host::{ConsumerRef, Host, HostConfig, Role};
use beamline_router::policy::PolicyStore;

use crate::actors::{Ids, Out, Puller};
use crate::buggify::Buggify;
use crate::net::NodeId;
use crate::rng::SimRng;
use crate::wire::Cons;

/// Virtual time 0 is this on every process's clock, before skew: a plausible epoch in
/// milliseconds, so that a clock behind the world's does not go below zero.
pub const EPOCH_MS: u64 = 1_700_000_000_000;

/// What settles a delivery on the simulated server: its consumer and sequence (the
/// simulated `$JS.ACK` subject).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeliveryRef {
    pub cons: Cons,
    pub stream_seq: u64,
    pub delivered: u64,
}

/// Who asked an inbound request: (requester node, its request id).
pub type ReplyRef = (NodeId, u64);

pub type SimHost = Host<DeliveryRef, ReplyRef>;

/// The consumers a router process pulls, in the host's order: its consumer indexes.
pub const CONSUMERS: [Cons; 3] = [Cons::Decide, Cons::Results, Cons::Advisories];

/// The host's index of consumer `cons`.
/// The idle heartbeat the modelled client asks of each pull, as production's
/// `router.pull_heartbeat_ms` default: a pull lost at the server is reported silent
/// after two of them.
pub const PULL_HEARTBEAT_MS: u64 = beamline_router::host::pulls::DEFAULT_PULL_HEARTBEAT_MS;

pub fn consumer_index(cons: Cons) -> Option<usize> {
    CONSUMERS.iter().position(|&c| c == cons)
}

/// The settings a world gives each router's host.
#[derive(Clone, Debug)]
pub struct HostSettings {
    pub batch: u64,
    pub expires_ms: u64,
    pub publish_timeout_ms: u64,
    pub kv_timeout_ms: u64,
    /// `max_ack_pending` of the decide and results consumers.
    pub max_ack_pending: u64,
    /// `max_ack_pending` of the advisory consumer.
    pub advisories_max_ack_pending: u64,
}

pub struct RouterHost {
    pub host: SimHost,
    entropy: SimRng,
    pub ids: Ids,
    pullers: [Puller; 3],
    /// Offset of this process's clock from the world's, in ms.
    pub clock_offset: i64,
    /// The world time of the wake-up scheduled for the host's next deadline.
    pub wake: Option<u64>,
    /// Intake stopped (shutting down): no more pulls.
    pub intake_stopped: bool,
    /// The host's counts of reused ids and unknown handles already reported.
    pub seen_reused: u64,
    pub seen_unknown: u64,
    /// Message ids this process published, with how often (the
    /// `fresh-msg-id-on-retry` bug only).
    pub msg_ids_sent: std::collections::BTreeMap<String, u64>,
}

impl RouterHost {
    pub fn new(
        node: NodeId,
        config: RouterConfig,
        policies: PolicyStore,
        entropy: SimRng,
        clock_offset: i64,
        settings: &HostSettings,
    ) -> Self {
        let consumers = CONSUMERS
            .iter()
            .map(|&cons| ConsumerRef {
                role: match cons {
                    Cons::Decide => Role::Decide,
                    Cons::Results => Role::Results,
                    _ => Role::Advisories,
                },
                stream: cons.stream().to_string(),
                durable: cons.durable().to_string(),
            })
            .collect();
        let held = 2 * settings.max_ack_pending + settings.advisories_max_ack_pending;
        let host_config = HostConfig {
            publish_timeout_ms: settings.publish_timeout_ms,
            kv_timeout_ms: settings.kv_timeout_ms,
            record_steps: true,
            ..HostConfig::new(consumers, held)
        };
        let (batch, expires) = (settings.batch, settings.expires_ms);
        RouterHost {
            host: Host::new(Router::new(config, policies), host_config),
            entropy,
            ids: Ids::new(node),
            pullers: [
                Puller::new(Cons::Decide, batch, expires),
                Puller::new(Cons::Results, batch, expires),
                Puller::new(Cons::Advisories, batch.min(8), expires),
            ],
            clock_offset,
            wake: None,
            intake_stopped: false,
            seen_reused: 0,
            seen_unknown: 0,
            msg_ids_sent: std::collections::BTreeMap::new(),
        }
    }

    pub fn router(&self) -> &Router {
        self.host.router()
    }

    /// Replace the core with a fresh one (the `forget-answers` bug), keeping the host.
    pub fn reset_core(&mut self) {
        let router = self.host.router_mut();
        let (config, policies) = (router.config().clone(), router.policies().clone());
        *router = Router::new(config, policies);
    }

    /// This process's clock at world time `now`.
    pub fn core_now(&self, now: u64) -> Time {
        let t = i128::from(EPOCH_MS) + i128::from(now) + i128::from(self.clock_offset);
        Time(u64::try_from(t.max(0)).unwrap_or(u64::MAX))
    }

    /// World time at which this process's clock reads `at` (not before `now`).
    pub fn world_time_of(&self, at: Time, now: u64) -> u64 {
        now + at.millis().saturating_sub(self.core_now(now).millis())
    }

    pub fn puller(&mut self, cons: Cons) -> Option<&mut Puller> {
        let i = consumer_index(cons)?;
        Some(&mut self.pullers[i])
    }

    /// Pull the next batch on `cons`.
    pub fn pull(&mut self, cons: Cons, now: u64, out: &mut Out) {
        if self.intake_stopped {
            return;
        }
        if let Some(i) = consumer_index(cons) {
            self.pullers[i].pull(now, &mut self.ids, out);
        }
    }

    /// The randomness and fault points the host's core draws on during one call.
    pub fn env<'a>(
        &'a mut self,
        buggify: &'a mut Buggify,
        in_chaos: bool,
    ) -> (&'a mut SimHost, SimEnv<'a>) {
        (
            &mut self.host,
            SimEnv {
                entropy: &mut self.entropy,
                buggify,
                in_chaos,
                fired: Vec::new(),
                activated: Vec::new(),
                probed: Vec::new(),
            },
        )
    }
}

/// The entropy stream and BUGGIFY of one process, recording which sites fired.
pub struct SimEnv<'a> {
    entropy: &'a mut SimRng,
    buggify: &'a mut Buggify,
    in_chaos: bool,
    /// BUGGIFY sites that fired.
    pub fired: Vec<&'static str>,
    /// BUGGIFY sites asked for the first time (activated or not).
    pub activated: Vec<(&'static str, bool)>,
    /// Coverage probes reached, in order (counted by the world, never traced).
    pub probed: Vec<&'static str>,
}

impl CoreProbe for SimEnv<'_> {
    fn probe(&mut self, name: &'static str) {
        self.probed.push(name);
    }
}

impl Entropy for SimEnv<'_> {
    fn next_u64(&mut self) -> u64 {
        self.entropy.next_u64()
    }
}

impl CoreBuggify for SimEnv<'_> {
    fn buggify(&mut self, site: &'static str) -> bool {
        let (fire, first) = self.buggify.decide(site, self.in_chaos);
        if let Some(active) = first {
            self.activated.push((site, active));
        }
        if fire {
            self.fired.push(site);
        }
        fire
    }

    fn planted(&self, bug: &'static str) -> bool {
        self.buggify.planted(bug)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skewed_clocks_map_back_to_world_time() {
        let settings = HostSettings {
            batch: 1,
            expires_ms: 1_000,
            publish_timeout_ms: 1_000,
            kv_timeout_ms: 1_000,
            max_ack_pending: 10,
            advisories_max_ack_pending: 10,
        };
        let host = RouterHost::new(
            0,
            RouterConfig::default(),
            PolicyStore::new(),
            SimRng::stream(1, "core"),
            -5_000,
            &settings,
        );
        assert_eq!(host.core_now(10_000), Time(EPOCH_MS + 5_000));
        let at = Time(host.core_now(10_000).millis() + 300);
        assert_eq!(host.world_time_of(at, 10_000), 10_300);
        assert_eq!(host.world_time_of(Time(0), 10_000), 10_000);
    }
}
