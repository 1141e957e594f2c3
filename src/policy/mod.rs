//! Routing policies: the JSON DSL, validation with errors that name the field and the
//! rule, and the store keyed by (tenant, policy_id).
//!
//! Code map:
//! - `types`: the parsed policy ([`Policy`] and its sections), limits and defaults;
//! - `parse`: the document's top level, weighted providers (`providers` list or legacy
//!   `weights` map) and the legacy `fallback`;
//! - `rules`: `fallbacks` rules, their backoff and their stable `rule_id`;
//! - `limits`: `sticky`, `rate_limit` and `circuit_breaker` settings;
//! - `extensions`: the `pre` / `validators` / `post` pipeline and its depth limits;
//! - [`when`]: the condition DSL, validated at parse time and evaluated by the core;
//! - `fields`, `error`: typed JSON access and the one error type;
//! - `store`, `load`: the (tenant, policy_id) store and loading it from a directory.
//!
//! Invariants: a [`Policy`] is only made by [`parse_policy`] (or [`parse_policy_value`]),
//! so every one the core sees is valid, with defaults filled in. Nothing a decision uses is
//! floating point: weights are integer parts per million, so the same seed picks the same
//! provider on every machine, and the breaker's error-rate threshold is per mille. Lists
//! are bounded ([`MAX_PROVIDERS`], [`MAX_FALLBACK_RULES`], the pipeline limits).

mod error;
mod extensions;
mod fields;
mod limits;
mod load;
mod parse;
mod rules;
mod store;
mod types;
pub mod when;

#[cfg(test)]
mod proptests;

pub use error::PolicyError;
pub use load::{load_dir, valid_id as valid_policy_id, PolicyLoadError};
pub use parse::{parse_policy, parse_policy_value};
pub use store::PolicyStore;
pub use types::{
    Backoff, BackoffStrategy, CircuitBreaker, ExtensionMode, FallbackRule, OnFail, Policy,
    ProcessorItem, ProviderWeight, RateLimit, Sticky, ValidatorItem, MAX_FALLBACK_RULES,
    MAX_PIPELINE_DEPTH, MAX_PIPELINE_STAGE, MAX_PROVIDERS, WEIGHT_ONE,
};
/// [`when::matches`], under the name the core's extension pipeline calls it by.
pub use when::matches as when_matches;

/// The policy id used when a request names none.
pub const DEFAULT_POLICY_ID: &str = "default";
