//! The router's services: the state the flows consult and update, each part with one job
//! and its own bound. The message table (`Router::in_flight`, `flight.rs`) says what each
//! message waits on; these say what the router has learnt across messages.

use super::answers::{AnswerBook, ResultBook};
use super::backpressure::Backpressure;
use super::breaker::Breakers;
use super::config::RouterConfig;
use super::provider_stats::ProviderStats;
use super::rate_limit::RateLimiter;
use super::sticky::StickyStore;

#[derive(Debug)]
pub(super) struct Services {
    /// Replies by stream sequence and by (tenant, idempotency key), and settled fates.
    pub answers: AnswerBook,
    /// Results by correlation key: one breaker record and one usage event each.
    pub results: ResultBook,
    /// Per (tenant, provider) circuit breakers.
    pub breakers: Breakers,
    /// Per extension circuit breakers (tenant `""`).
    pub extension_breakers: Breakers,
    /// Per (tenant, policy) token buckets.
    pub rate_limiter: RateLimiter,
    pub sticky: StickyStore,
    pub backpressure: Backpressure,
    /// Moving averages of latency and cost per (tenant, provider).
    pub provider_stats: ProviderStats,
}

impl Services {
    pub fn new(config: &RouterConfig) -> Self {
        Services {
            answers: AnswerBook::new(config.completed_capacity, config.idempotency_ttl_ms),
            results: ResultBook::new(config.completed_capacity),
            breakers: Breakers::new(config.max_breakers),
            extension_breakers: Breakers::new(config.extensions.len().max(1) * 4),
            rate_limiter: RateLimiter::new(config.max_rate_buckets),
            sticky: StickyStore::new(config.max_sticky_sessions),
            backpressure: Backpressure::new(config.backpressure.clone()),
            provider_stats: ProviderStats::new(config.max_breakers),
        }
    }
}
