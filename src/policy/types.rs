//! The parsed, validated policy. Every field is typed and has its defaults filled in, so
//! the core never looks at policy JSON again. No floating point: weights are parts per
//! million, the breaker's error-rate threshold is per mille.

use serde_json::{Map, Value};

/// One weight unit: a weight of 1.0 (or the integer 100 in the `providers` form).
pub const WEIGHT_ONE: u64 = 1_000_000;

/// At most this many extension items in `pre` + `validators` + `post` together.
pub const MAX_PIPELINE_DEPTH: usize = 10;
/// At most this many items in each of `pre`, `validators` and `post`.
pub const MAX_PIPELINE_STAGE: usize = 5;
/// Bounds on the two lists a policy can grow without limit upstream.
pub const MAX_PROVIDERS: usize = 100;
pub const MAX_FALLBACK_RULES: usize = 50;

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
    /// The content's revision: 12 hex digits of the SHA-256 of the parsed document
    /// (formatting and whitespace aside). Every decision names it, so that a reload can
    /// be traced in the replies.
    pub revision: String,
    /// In the `providers` list's order, or the legacy `weights` map's key order.
    pub providers: Vec<ProviderWeight>,
    /// Legacy single fallback provider, used when no weighted provider can be drawn.
    pub fallback: Option<String>,
    /// The `fallbacks` rules in order; without them, the one rule derived from the legacy
    /// `fallback` object.
    pub fallback_rules: Vec<FallbackRule>,
    /// Present only when `sticky.enabled` is true.
    pub sticky: Option<Sticky>,
    /// Present only when `rate_limit.enabled` is true.
    pub rate_limit: Option<RateLimit>,
    /// Present only when `circuit_breaker.enabled` is true. Breakers of providers whose
    /// policy has none use [`CircuitBreaker::DEFAULT`].
    pub circuit_breaker: Option<CircuitBreaker>,
    pub pre: Vec<ProcessorItem>,
    pub validators: Vec<ValidatorItem>,
    pub post: Vec<ProcessorItem>,
    /// JSON paths of keys this parser does not know (top level and inside known
    /// sections), in document order: accepted, ignored, and worth a warning to the operator.
    /// Schema-only keys (`timeout_ms`, `health_check`, `metadata`, ...) are not listed.
    pub ignored_keys: Vec<String>,
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

    /// Extension items in `pre`, `validators` and `post` together.
    pub fn pipeline_len(&self) -> usize {
        self.pre.len() + self.validators.len() + self.post.len()
    }
}

/// A `fallbacks` rule: when `when` matches the request context, retry the current provider
/// up to `retry` times (with `backoff`), then go to `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FallbackRule {
    /// Opaque and stable: FNV-1a-64 ([`crate::hash`]) of the rule's canonical JSON (sorted
    /// keys, defaults filled in), as 16 lowercase hex digits. Callers count retries under
    /// `retry_attempts_<rule_id>`.
    pub rule_id: String,
    /// A condition validated by [`super::when::validate`]; evaluate with [`super::when::matches`].
    pub when: Value,
    /// 0-10.
    pub retry: u32,
    pub to: String,
    /// The rule's `backoff`, or the defaults when it has none.
    pub backoff: Backoff,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackoffStrategy {
    Exponential,
    Linear,
    Fixed,
}

impl BackoffStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            BackoffStrategy::Exponential => "exponential",
            BackoffStrategy::Linear => "linear",
            BackoffStrategy::Fixed => "fixed",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub strategy: BackoffStrategy,
    /// 1-10000.
    pub base_ms: u64,
    /// 1-60000, at least `base_ms`.
    pub max_ms: u64,
    /// Add a random 0-10% of the delay.
    pub jitter: bool,
}

impl Backoff {
    pub const DEFAULT: Backoff = Backoff {
        strategy: BackoffStrategy::Exponential,
        base_ms: 100,
        max_ms: 5_000,
        jitter: true,
    };

    /// The delay before retry `attempt` (1-based): exponential `base * 2^(attempt-1)`,
    /// linear `base * attempt` or fixed `base`; plus, with `jitter`, `below(delay / 10)`
    /// (the caller's seeded draw in `0..n`, asked only when `n > 0`); capped at `max_ms`.
    /// Integer arithmetic only, saturating.
    pub fn delay_ms(&self, attempt: u32, below: impl FnOnce(u64) -> u64) -> u64 {
        let attempt = attempt.max(1);
        let delay = match self.strategy {
            BackoffStrategy::Exponential => {
                let doublings = (attempt - 1).min(63);
                self.base_ms.saturating_mul(1u64 << doublings)
            }
            BackoffStrategy::Linear => self.base_ms.saturating_mul(u64::from(attempt)),
            BackoffStrategy::Fixed => self.base_ms,
        };
        let jitter_range = if self.jitter { delay / 10 } else { 0 };
        let jitter = if jitter_range > 0 {
            below(jitter_range).min(jitter_range - 1)
        } else {
            0
        };
        delay.saturating_add(jitter).min(self.max_ms)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::DEFAULT
    }
}

/// Sticky sessions: the context key whose value names the session, and how long a
/// session keeps its provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sticky {
    /// 1-255 characters; default `session_id`.
    pub session_key: String,
    /// 1-86400; from `ttl` ("10m") or `ttl_seconds`; default 3600.
    pub ttl_seconds: u64,
}

/// The per-policy token bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// 1-1000000; default 100.
    pub requests_per_second: u64,
    /// 1-1000000; default 50.
    pub burst: u64,
}

/// Per-provider circuit breaker settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CircuitBreaker {
    /// Consecutive failures that open a closed breaker: 1-100, default 5.
    pub failure_threshold: u32,
    /// Successes in half-open that close it: 1-10, default 2.
    pub success_threshold: u32,
    /// Open -> half-open after this long: 1000-300000, default 60000.
    pub timeout_ms: u64,
    /// Calls admitted while half-open: 1-100, default 3.
    pub half_open_max_calls: u32,
    /// Failures per thousand requests in the window that open the breaker: 0-1000
    /// (from a fraction 0.0-1.0), default 500.
    pub error_rate_threshold_permille: u32,
    /// The error-rate window: 1-3600, default 60.
    pub error_rate_window_seconds: u64,
    /// Requests the window must hold before the error rate can open the breaker:
    /// 1-10000, default 10. (Upstream had no floor: one failure opened a fresh breaker.)
    pub min_requests: u32,
    /// Optional latency trip: 1-300000.
    pub latency_threshold_ms: Option<u64>,
}

impl CircuitBreaker {
    pub const DEFAULT: CircuitBreaker = CircuitBreaker {
        failure_threshold: 5,
        success_threshold: 2,
        timeout_ms: 60_000,
        half_open_max_calls: 3,
        error_rate_threshold_permille: 500,
        error_rate_window_seconds: 60,
        min_requests: 10,
        latency_threshold_ms: None,
    };
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        CircuitBreaker::DEFAULT
    }
}

/// `mode` of a pre- or post-processor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtensionMode {
    /// A failure aborts the decision (`pre_processor_failed` / `post_processor_failed`).
    Required,
    /// A failure is logged and the pipeline goes on (the default).
    Optional,
}

/// `on_fail` of a validator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFail {
    /// An invalid verdict or an error aborts with `validator_blocked` (the default).
    Block,
    /// Logged, and the pipeline goes on.
    Warn,
    /// The pipeline goes on.
    Ignore,
}

/// An item of `pre` or `post`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessorItem {
    /// The extension's registry id: 1-128 characters of `[A-Za-z0-9_.:-]`.
    pub id: String,
    pub mode: ExtensionMode,
    pub config: Map<String, Value>,
    /// The item runs only when this condition matches the context.
    pub when: Option<Value>,
}

/// An item of `validators`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatorItem {
    pub id: String,
    pub on_fail: OnFail,
    pub config: Map<String, Value>,
    pub when: Option<Value>,
}
