//! Routing policies: the JSON DSL (`providers` with weights, legacy `weights` map, legacy
//! `fallback`), validation with errors that name the field and the rule, and the store
//! keyed by (tenant, policy_id).
//!
//! Weights are kept as integer parts per million so that the weighted draw involves no
//! floating point: the same seed picks the same provider on every machine.

mod load;
mod parse;
mod store;

pub use load::{load_dir, valid_id as valid_policy_id, PolicyLoadError};
pub use parse::{parse_policy, PolicyError};
pub use store::PolicyStore;

/// The policy id used when a request names none.
pub const DEFAULT_POLICY_ID: &str = "default";

/// One weight unit: a weight of 1.0 (or the integer 100 in the `providers` form).
pub const WEIGHT_ONE: u64 = 1_000_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderWeight {
    pub name: String,
    /// Parts per million of 1.0. Not normalised: the draw is proportional to the sum.
    pub weight: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub policy_id: String,
    pub version: String,
    pub providers: Vec<ProviderWeight>,
    /// Legacy single fallback provider, used when no weighted provider can be drawn.
    pub fallback: Option<String>,
}

impl Policy {
    pub fn total_weight(&self) -> u64 {
        self.providers.iter().map(|p| p.weight).sum()
    }

    /// The provider whose cumulative weight range holds `point` (0 <= point < total).
    pub fn provider_at(&self, point: u64) -> Option<&ProviderWeight> {
        let mut cumulative = 0u64;
        self.providers.iter().find(|p| {
            cumulative += p.weight;
            point < cumulative
        })
    }
}
