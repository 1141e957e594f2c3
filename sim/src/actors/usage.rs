//! The usage consumer: pulls `beamline.usage.v1.metered` (durable `usage`) and acks each
//! event. What it saw is checked by the world (`invariants`): at most one usage event per
//! assignment, whatever the router processes, the stream dedupe and CAF did.

use super::{Ids, Puller};
use crate::wire::Cons;

#[derive(Debug)]
pub struct UsageConsumer {
    pub puller: Puller,
    pub ids: Ids,
}

impl UsageConsumer {
    pub fn new(node: usize, batch: u64, expires_ms: u64) -> Self {
        UsageConsumer {
            puller: Puller::new(Cons::Usage, batch, expires_ms),
            ids: Ids::new(node),
        }
    }
}
