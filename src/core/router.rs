//! The decide path: intake, policy, weighted choice, reply, and the fate of each message.

use std::collections::BTreeMap;

use crate::policy::PolicyStore;

use super::config::RouterConfig;
use super::env::Env;
use super::io::{DeliveryId, Input};

/// Counters a shell or the simulator can read at any time.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub deliveries: u64,
    pub replies_ok: u64,
    pub replies_error: u64,
    pub dlq_records: u64,
    pub acks: u64,
    pub naks: u64,
    pub terms: u64,
    pub publish_failures: u64,
    /// Redeliveries of a message already answered (its ack was lost): acked, not re-answered.
    pub redelivered_after_reply: u64,
}

pub struct Router {
    config: RouterConfig,
    policies: PolicyStore,
    stats: Stats,
    in_flight: BTreeMap<u64, DeliveryId>,
}

impl Router {
    pub fn new(config: RouterConfig, policies: PolicyStore) -> Self {
        Router {
            config,
            policies,
            stats: Stats::default(),
            in_flight: BTreeMap::new(),
        }
    }

    pub fn handle(&mut self, _input: Input, _env: &mut impl Env) {}

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    pub fn policies(&self) -> &PolicyStore {
        &self.policies
    }

    /// Messages held, awaiting the confirmation of their publishes.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}
