//! Circuit breakers, one per (tenant, provider) (spec §7).
//!
//! A breaker watches the results of calls routed to a provider and stops routing to it
//! when the provider looks broken:
//!
//! ```text
//!            failure_threshold | error rate (>= min_requests) | slow calls
//!   Closed ------------------------------------------------------------> Open
//!     ^                                                                  |  ^
//!     | success_threshold probe successes         open_timeout_ms elapsed|  | a probe fails
//!     +------------------------------- HalfOpen <------------------------+  |
//!                                         +---------------------------------+
//! ```
//!
//! Differences from upstream, on purpose:
//! - the error-rate rule needs `min_requests` calls in its window (upstream opened a fresh
//!   breaker on its first failure: 1/1 >= 0.5), and is judged on failures only;
//! - the latency rule looks at this provider's own call latencies (upstream read a global
//!   NATS publish-latency gauge): `failure_threshold` consecutive calls slower than
//!   `latency_threshold_ms` open the breaker (a closed-state rule, like the other two);
//! - in HalfOpen only results of probes count. A result that arrives while no probe is
//!   out, or while Open, belongs to a call admitted before the trip and is ignored;
//! - probes that never come back (a lost ExecResult) would pin a breaker in HalfOpen for
//!   ever; after `open_timeout_ms` without a new probe, the slots are handed out again.
//!
//! Rates are integer per-mille; time is `Time`. The table is bounded by `max_entries` and
//! evicts the least recently used breaker.

use std::collections::{BTreeMap, VecDeque};

use super::env::Time;

/// Events kept per breaker for the error-rate window. Beyond this many calls inside
/// `error_rate_window_ms` the window holds only the most recent ones, which keeps memory
/// per breaker fixed whatever the call rate.
pub const WINDOW_CAP: usize = 1024;

/// Breaker tuning, from the policy's `circuit_breaker` map (converted to integers by the
/// policy layer). Zero thresholds are read as 1: a breaker that can never probe or never
/// close again would be a trap, not a setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures (and consecutive slow calls) that open a closed breaker.
    pub failure_threshold: u32,
    /// Probe successes that close a half-open breaker.
    pub success_threshold: u32,
    /// How long an open breaker refuses calls before it lets probes through.
    pub open_timeout_ms: u64,
    /// Probes a half-open breaker lets out before their results come back.
    pub half_open_max_calls: u32,
    /// Failures per thousand calls in the window that open the breaker (500 = 50 %).
    pub error_rate_permille: u32,
    pub error_rate_window_ms: u64,
    /// Calls the window must hold before the error-rate rule may open the breaker.
    pub min_requests: u32,
    /// A call slower than this is slow; `None` turns the latency rule off.
    pub latency_threshold_ms: Option<u64>,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            success_threshold: 2,
            open_timeout_ms: 60_000,
            half_open_max_calls: 3,
            error_rate_permille: 500,
            error_rate_window_ms: 60_000,
            min_requests: 10,
            latency_threshold_ms: None,
        }
    }
}

impl BreakerConfig {
    fn failure_threshold(&self) -> u32 {
        self.failure_threshold.max(1)
    }
    fn success_threshold(&self) -> u32 {
        self.success_threshold.max(1)
    }
    fn half_open_max_calls(&self) -> u32 {
        self.half_open_max_calls.max(1)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// The value of the `router_circuit_breaker_state` gauge: 0 closed, 1 open,
    /// 2 half_open (upstream's code; its Prometheus metadata said 0/0.5/1, spec §15.15).
    pub fn gauge(self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

/// What the breaker says about one call about to be routed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Closed (or unknown): route freely.
    Allowed,
    /// Half-open: this call is one of the probes; its result decides the breaker.
    Probe,
    /// Open, or half-open with every probe out: do not route; try again after this long.
    Denied { retry_after_ms: u64 },
}

/// A call's result as the breaker sees it (see [`classify`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallOutcome {
    Success,
    /// The provider's fault: timeouts, connection errors, 5xx.
    Failure,
    /// Says nothing about the provider's health: cancellations, 4xx, validation.
    Ignored,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TripReason {
    FailureThresholdExceeded,
    ErrorRateThresholdExceeded,
    LatencyThresholdExceeded,
    HalfOpenFailure,
    TimeoutElapsed,
    Recovered,
}

impl TripReason {
    /// The `reason` label of `router_circuit_breaker_trigger_reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            TripReason::FailureThresholdExceeded => "failure_threshold_exceeded",
            TripReason::ErrorRateThresholdExceeded => "error_rate_threshold_exceeded",
            TripReason::LatencyThresholdExceeded => "latency_threshold_exceeded",
            TripReason::HalfOpenFailure => "half_open_failure",
            TripReason::TimeoutElapsed => "timeout_elapsed",
            TripReason::Recovered => "recovered",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: BreakerState,
    pub to: BreakerState,
    pub reason: TripReason,
}

/// One breaker as admin and metrics see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakerView {
    pub tenant_id: String,
    pub provider_id: String,
    /// The state the next call would meet (an open breaker whose timeout has elapsed
    /// shows as half-open).
    pub state: BreakerState,
    /// Consecutive failures while closed.
    pub failure_count: u32,
    pub window_requests: u32,
    pub window_failures: u32,
    pub probes_in_flight: u32,
    /// Open: time left before probes are let through; otherwise 0.
    pub remaining_open_ms: u64,
}

/// Map a result to what it says about the provider (spec §7.3).
///
/// Upstream also counted any error whose message merely contains the character `5`,
/// which makes "rate limit 50/s" or "field 5 is invalid" provider failures. Here a
/// message counts as a server error only through a whole token `5xx` or a number from
/// 500 to 599 ("HTTP 503", "status=502"). Codes and types compare without case.
pub fn classify(
    status: &str,
    error_code: Option<&str>,
    error_type: Option<&str>,
    error_message: Option<&str>,
) -> CallOutcome {
    const CODES: [&str; 6] = [
        "TIMEOUT",
        "CONNECTION_ERROR",
        "PROVIDER_UNAVAILABLE",
        "5XX",
        "HTTP_5XX",
        "SERVER_ERROR",
    ];
    const TYPES: [&str; 5] = [
        "timeout",
        "connection_error",
        "provider_unavailable",
        "5xx",
        "server_error",
    ];
    let in_set = |value: Option<&str>, set: &[&str]| {
        value.is_some_and(|v| set.iter().any(|s| s.eq_ignore_ascii_case(v)))
    };
    match status {
        "success" => CallOutcome::Success,
        "timeout" => CallOutcome::Failure,
        "error"
            if in_set(error_code, &CODES)
                || in_set(error_type, &TYPES)
                || error_message.is_some_and(message_names_provider_fault) =>
        {
            CallOutcome::Failure
        }
        // "cancelled", client-side errors and statuses we do not know.
        _ => CallOutcome::Ignored,
    }
}

fn message_names_provider_fault(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    ["timeout", "timed out", "connection", "unavailable"]
        .iter()
        .any(|needle| lower.contains(needle))
        || lower
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|token| {
                token == "5xx"
                    || (token.len() == 3
                        && token.starts_with('5')
                        && token.bytes().all(|b| b.is_ascii_digit()))
            })
}

/// Time from `now` until `at`, at least 1 ms: a denial always asks the caller to wait.
fn ms_until(at: Time, now: Time) -> u64 {
    at.millis().saturating_sub(now.millis()).max(1)
}

#[derive(Clone, Debug)]
struct Breaker {
    /// The config of the last call: a policy update takes effect on the next call.
    cfg: BreakerConfig,
    state: BreakerState,
    changed_at: Time,
    /// Closed: consecutive failures.
    failure_count: u32,
    /// Closed: consecutive calls slower than the latency threshold.
    slow_count: u32,
    /// HalfOpen: probe successes.
    success_count: u32,
    /// HalfOpen: probes admitted whose result has not come back.
    probes_in_flight: u32,
    last_probe_at: Time,
    /// Closed: (time, failed) of recent calls, oldest first, at most WINDOW_CAP.
    window: VecDeque<(Time, bool)>,
    window_failures: u32,
    /// Position in the LRU index.
    seq: u64,
}

impl Breaker {
    fn new(cfg: &BreakerConfig, now: Time, seq: u64) -> Self {
        Breaker {
            cfg: cfg.clone(),
            state: BreakerState::Closed,
            changed_at: now,
            failure_count: 0,
            slow_count: 0,
            success_count: 0,
            probes_in_flight: 0,
            last_probe_at: now,
            window: VecDeque::new(),
            window_failures: 0,
            seq,
        }
    }

    /// Enter a state with every counter reset: each state judges only its own calls, and
    /// a breaker that recovers does not carry the failures that opened it.
    fn enter(&mut self, to: BreakerState, reason: TripReason, now: Time) -> Transition {
        let from = self.state;
        self.state = to;
        self.changed_at = now;
        self.failure_count = 0;
        self.slow_count = 0;
        self.success_count = 0;
        self.probes_in_flight = 0;
        self.last_probe_at = now;
        self.window.clear();
        self.window_failures = 0;
        Transition { from, to, reason }
    }

    fn open_elapsed(&self, now: Time) -> bool {
        now.millis().saturating_sub(self.changed_at.millis()) >= self.cfg.open_timeout_ms
    }

    /// Probes out for a whole open timeout with no result are taken as lost.
    fn probes_lost(&self, now: Time) -> bool {
        now.millis().saturating_sub(self.last_probe_at.millis()) >= self.cfg.open_timeout_ms
    }

    /// Open -> HalfOpen once the timeout has elapsed (applied lazily, on the next call).
    fn advance(&mut self, now: Time) -> Option<Transition> {
        (self.state == BreakerState::Open && self.open_elapsed(now))
            .then(|| self.enter(BreakerState::HalfOpen, TripReason::TimeoutElapsed, now))
    }

    /// Drop events older than the window, and make room for one more event.
    fn prune(&mut self, now: Time) {
        let window_ms = self.cfg.error_rate_window_ms;
        while let Some(&(at, failed)) = self.window.front() {
            if at.after(window_ms) > now && self.window.len() < WINDOW_CAP {
                break;
            }
            self.window.pop_front();
            self.window_failures -= u32::from(failed);
        }
    }

    fn record_closed(
        &mut self,
        now: Time,
        failed: bool,
        latency_ms: Option<u64>,
    ) -> Option<Transition> {
        self.prune(now);
        self.window.push_back((now, failed));
        self.window_failures += u32::from(failed);
        debug_assert!(self.window.len() <= WINDOW_CAP);
        debug_assert!(self.window_failures as usize <= self.window.len());
        self.failure_count = if failed { self.failure_count + 1 } else { 0 };
        if let (Some(limit), Some(latency)) = (self.cfg.latency_threshold_ms, latency_ms) {
            self.slow_count = if latency > limit {
                self.slow_count + 1
            } else {
                0
            };
        }

        let total = self.window.len() as u64;
        let reason = if failed && self.failure_count >= self.cfg.failure_threshold() {
            Some(TripReason::FailureThresholdExceeded)
        } else if failed
            && total >= u64::from(self.cfg.min_requests)
            && u64::from(self.window_failures) * 1000
                >= u64::from(self.cfg.error_rate_permille) * total
        {
            Some(TripReason::ErrorRateThresholdExceeded)
        } else if self.slow_count >= self.cfg.failure_threshold() {
            Some(TripReason::LatencyThresholdExceeded)
        } else {
            None
        };
        reason.map(|r| self.enter(BreakerState::Open, r, now))
    }

    fn record_half_open(&mut self, now: Time, outcome: CallOutcome) -> Option<Transition> {
        if self.probes_in_flight == 0 {
            return None; // a call from before the trip, not a probe
        }
        self.probes_in_flight -= 1;
        match outcome {
            CallOutcome::Ignored => None,
            CallOutcome::Failure => {
                Some(self.enter(BreakerState::Open, TripReason::HalfOpenFailure, now))
            }
            CallOutcome::Success => {
                self.success_count += 1;
                (self.success_count >= self.cfg.success_threshold())
                    .then(|| self.enter(BreakerState::Closed, TripReason::Recovered, now))
            }
        }
    }

    fn view(&self, tenant_id: &str, provider_id: &str, now: Time) -> BreakerView {
        let (state, remaining_open_ms) = match self.state {
            BreakerState::Open if self.open_elapsed(now) => (BreakerState::HalfOpen, 0),
            BreakerState::Open => {
                let opens_at = self.changed_at.after(self.cfg.open_timeout_ms);
                (
                    BreakerState::Open,
                    opens_at.millis().saturating_sub(now.millis()),
                )
            }
            other => (other, 0),
        };
        let fresh = |&&(at, _): &&(Time, bool)| at.after(self.cfg.error_rate_window_ms) > now;
        BreakerView {
            tenant_id: tenant_id.to_string(),
            provider_id: provider_id.to_string(),
            state,
            failure_count: self.failure_count,
            window_requests: self.window.iter().filter(fresh).count() as u32,
            window_failures: self.window.iter().filter(fresh).filter(|e| e.1).count() as u32,
            probes_in_flight: self.probes_in_flight,
            remaining_open_ms,
        }
    }
}

/// Every breaker of the process, keyed (tenant, provider), bounded by `max_entries`.
#[derive(Clone, Debug)]
pub struct Breakers {
    by_tenant: BTreeMap<String, BTreeMap<String, Breaker>>,
    /// seq -> key; the first entry is the least recently used breaker.
    lru: BTreeMap<u64, (String, String)>,
    next_seq: u64,
    len: usize,
    max_entries: usize,
}

impl Breakers {
    pub fn new(max_entries: usize) -> Self {
        Breakers {
            by_tenant: BTreeMap::new(),
            lru: BTreeMap::new(),
            next_seq: 0,
            len: 0,
            max_entries: max_entries.max(1),
        }
    }

    /// Breakers held (for the table-size gauge).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The state a call would meet now. Unknown pairs are closed (and not stored).
    pub fn state(
        &mut self,
        tenant: &str,
        provider: &str,
        now: Time,
        cfg: &BreakerConfig,
    ) -> BreakerState {
        self.advance(tenant, provider, now, cfg);
        self.get(tenant, provider)
            .map_or(BreakerState::Closed, |b| b.state)
    }

    /// Apply the Open -> HalfOpen timeout, returning the transition for metrics and logs.
    /// `state` and `admit` apply it too but cannot report it: call this first when the
    /// `timeout_elapsed` transition must be counted.
    pub fn advance(
        &mut self,
        tenant: &str,
        provider: &str,
        now: Time,
        cfg: &BreakerConfig,
    ) -> Option<Transition> {
        let b = self.touch(tenant, provider, cfg)?;
        b.advance(now)
    }

    /// Would `admit` let a call through now? Read-only, so candidates can be filtered
    /// without spending a half-open probe.
    /// The state as stored, without advancing it (`None`: never judged).
    pub fn stored_state(&self, tenant: &str, provider: &str) -> Option<BreakerState> {
        self.get(tenant, provider).map(|b| b.state)
    }

    pub fn would_allow(
        &self,
        tenant: &str,
        provider: &str,
        now: Time,
        cfg: &BreakerConfig,
    ) -> bool {
        let Some(b) = self.get(tenant, provider) else {
            return true;
        };
        match b.state {
            BreakerState::Closed => true,
            // Half-open with no probe out; half_open_max_calls is at least 1.
            BreakerState::Open => {
                now.millis().saturating_sub(b.changed_at.millis()) >= cfg.open_timeout_ms
            }
            BreakerState::HalfOpen => {
                b.probes_in_flight < cfg.half_open_max_calls()
                    || now.millis().saturating_sub(b.last_probe_at.millis()) >= cfg.open_timeout_ms
            }
        }
    }

    /// Ask to route one call to `provider`. In half-open, a granted call is a probe and
    /// holds a probe slot until its result is recorded.
    pub fn admit(
        &mut self,
        tenant: &str,
        provider: &str,
        now: Time,
        cfg: &BreakerConfig,
    ) -> Admission {
        let Some(b) = self.touch(tenant, provider, cfg) else {
            return Admission::Allowed;
        };
        b.advance(now);
        match b.state {
            BreakerState::Closed => Admission::Allowed,
            BreakerState::Open => Admission::Denied {
                retry_after_ms: ms_until(b.changed_at.after(b.cfg.open_timeout_ms), now),
            },
            BreakerState::HalfOpen => {
                if b.probes_in_flight > 0 && b.probes_lost(now) {
                    b.probes_in_flight = 0;
                }
                if b.probes_in_flight < b.cfg.half_open_max_calls() {
                    b.probes_in_flight += 1;
                    b.last_probe_at = now;
                    Admission::Probe
                } else {
                    let slots_free_at = b.last_probe_at.after(b.cfg.open_timeout_ms);
                    Admission::Denied {
                        retry_after_ms: ms_until(slots_free_at, now),
                    }
                }
            }
        }
    }

    /// Feed one call's result. Returns the transition it caused, if any. Does not apply
    /// the Open -> HalfOpen timeout: a result arriving while open is a stale one.
    pub fn record(
        &mut self,
        tenant: &str,
        provider: &str,
        now: Time,
        outcome: CallOutcome,
        latency_ms: Option<u64>,
        cfg: &BreakerConfig,
    ) -> Option<Transition> {
        if self.get(tenant, provider).is_none() {
            if outcome == CallOutcome::Ignored {
                return None; // nothing to remember about a provider we never judged
            }
            self.insert(tenant, provider, now, cfg);
        }
        let b = self.touch(tenant, provider, cfg)?;
        match (b.state, outcome) {
            (BreakerState::Open, _) => None,
            (BreakerState::HalfOpen, outcome) => b.record_half_open(now, outcome),
            (BreakerState::Closed, CallOutcome::Ignored) => None,
            (BreakerState::Closed, outcome) => {
                b.record_closed(now, outcome == CallOutcome::Failure, latency_ms)
            }
        }
    }

    /// Every breaker in (tenant, provider) order, for admin and metrics.
    pub fn snapshot(&self, now: Time) -> Vec<BreakerView> {
        self.by_tenant
            .iter()
            .flat_map(|(tenant, providers)| {
                providers
                    .iter()
                    .map(move |(provider, b)| b.view(tenant, provider, now))
            })
            .collect()
    }

    fn get(&self, tenant: &str, provider: &str) -> Option<&Breaker> {
        self.by_tenant.get(tenant)?.get(provider)
    }

    /// Look a breaker up as used now: refresh its config and move it to the LRU tail.
    fn touch(&mut self, tenant: &str, provider: &str, cfg: &BreakerConfig) -> Option<&mut Breaker> {
        let b = self.by_tenant.get_mut(tenant)?.get_mut(provider)?;
        if let Some(key) = self.lru.remove(&b.seq) {
            self.next_seq += 1;
            b.seq = self.next_seq;
            self.lru.insert(b.seq, key);
        }
        if b.cfg != *cfg {
            b.cfg = cfg.clone();
        }
        Some(b)
    }

    fn insert(&mut self, tenant: &str, provider: &str, now: Time, cfg: &BreakerConfig) {
        while self.len >= self.max_entries {
            self.evict_lru();
        }
        self.next_seq += 1;
        self.lru
            .insert(self.next_seq, (tenant.to_string(), provider.to_string()));
        self.by_tenant
            .entry(tenant.to_string())
            .or_default()
            .insert(provider.to_string(), Breaker::new(cfg, now, self.next_seq));
        self.len += 1;
    }

    fn evict_lru(&mut self) {
        let Some((_, (tenant, provider))) = self.lru.pop_first() else {
            return;
        };
        if let Some(providers) = self.by_tenant.get_mut(&tenant) {
            if providers.remove(&provider).is_some() {
                self.len -= 1;
            }
            if providers.is_empty() {
                self.by_tenant.remove(&tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T: &str = "acme";
    const P: &str = "openai";

    fn cfg() -> BreakerConfig {
        BreakerConfig::default()
    }

    fn fail(b: &mut Breakers, at: u64, cfg: &BreakerConfig) -> Option<Transition> {
        b.record(T, P, Time(at), CallOutcome::Failure, None, cfg)
    }

    fn ok(b: &mut Breakers, at: u64, cfg: &BreakerConfig) -> Option<Transition> {
        b.record(T, P, Time(at), CallOutcome::Success, None, cfg)
    }

    fn opened(reason: TripReason) -> Option<Transition> {
        Some(Transition {
            from: BreakerState::Closed,
            to: BreakerState::Open,
            reason,
        })
    }

    /// A breaker opened by the failure threshold at `at`.
    fn open_at(b: &mut Breakers, at: u64, cfg: &BreakerConfig) {
        for _ in 0..cfg.failure_threshold {
            fail(b, at, cfg);
        }
        assert_eq!(b.state(T, P, Time(at), cfg), BreakerState::Open);
    }

    #[test]
    fn classify_follows_spec_with_a_tight_5xx_rule() {
        use CallOutcome::*;
        assert_eq!(classify("success", None, None, None), Success);
        assert_eq!(classify("timeout", None, None, None), Failure);
        assert_eq!(classify("cancelled", Some("TIMEOUT"), None, None), Ignored);
        assert_eq!(classify("weird", Some("TIMEOUT"), None, None), Ignored);
        for code in [
            "TIMEOUT",
            "CONNECTION_ERROR",
            "PROVIDER_UNAVAILABLE",
            "5XX",
            "HTTP_5XX",
            "server_error",
        ] {
            assert_eq!(classify("error", Some(code), None, None), Failure, "{code}");
        }
        for kind in [
            "timeout",
            "connection_error",
            "provider_unavailable",
            "5xx",
            "SERVER_ERROR",
        ] {
            assert_eq!(classify("error", None, Some(kind), None), Failure, "{kind}");
        }
        for msg in [
            "upstream Timeout",
            "timed out",
            "connection reset",
            "service unavailable",
            "HTTP 503",
            "status=502",
            "got a 5xx",
        ] {
            assert_eq!(classify("error", None, None, Some(msg)), Failure, "{msg}");
        }
        for msg in [
            "rate limit 50/s",
            "field 5 is invalid",
            "HTTP 404",
            "quota 5000 exceeded",
            "bad request",
        ] {
            assert_eq!(classify("error", None, None, Some(msg)), Ignored, "{msg}");
        }
        assert_eq!(
            classify("error", Some("INVALID_REQUEST"), Some("validation"), None),
            Ignored
        );
    }

    #[test]
    fn gauge_and_labels() {
        assert_eq!(BreakerState::Closed.gauge(), 0);
        assert_eq!(BreakerState::Open.gauge(), 1);
        assert_eq!(BreakerState::HalfOpen.gauge(), 2);
        assert_eq!(BreakerState::HalfOpen.as_str(), "half_open");
        assert_eq!(
            TripReason::ErrorRateThresholdExceeded.as_str(),
            "error_rate_threshold_exceeded"
        );
        assert_eq!(TripReason::Recovered.as_str(), "recovered");
    }

    #[test]
    fn unknown_pairs_are_allowed_and_not_stored() {
        let mut b = Breakers::new(8);
        assert!(b.would_allow(T, P, Time(0), &cfg()));
        assert_eq!(b.admit(T, P, Time(0), &cfg()), Admission::Allowed);
        assert_eq!(b.state(T, P, Time(0), &cfg()), BreakerState::Closed);
        assert_eq!(
            b.record(T, P, Time(0), CallOutcome::Ignored, None, &cfg()),
            None
        );
        assert!(b.is_empty());
        ok(&mut b, 0, &cfg());
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn consecutive_failures_open_and_a_success_resets_the_count() {
        let c = cfg();
        let mut b = Breakers::new(8);
        for i in 0..4 {
            assert_eq!(fail(&mut b, i, &c), None);
        }
        ok(&mut b, 4, &c);
        for i in 5..9 {
            assert_eq!(fail(&mut b, i, &c), None);
        }
        assert_eq!(
            fail(&mut b, 9, &c),
            opened(TripReason::FailureThresholdExceeded)
        );
        assert_eq!(
            b.admit(T, P, Time(10), &c),
            Admission::Denied {
                retry_after_ms: 59_999
            }
        );
    }

    #[test]
    fn error_rate_needs_the_volume_floor() {
        let c = cfg();
        let mut b = Breakers::new(8);
        // A fresh breaker's first failure is 1/1 = 100 %: upstream opened here.
        assert_eq!(fail(&mut b, 0, &c), None);
        // F S F S F S F S F: 9 calls, 5 failures (55 %), never 5 in a row.
        for i in 1..9 {
            let t = if i % 2 == 1 {
                ok(&mut b, i, &c)
            } else {
                fail(&mut b, i, &c)
            };
            assert_eq!(t, None);
        }
        // The tenth call reaches min_requests: 6/10 >= 50 %.
        assert_eq!(
            fail(&mut b, 9, &c),
            opened(TripReason::ErrorRateThresholdExceeded)
        );
    }

    #[test]
    fn error_rate_below_threshold_stays_closed() {
        let c = cfg();
        let mut b = Breakers::new(8);
        // 4 failures in 10 calls (40 %).
        for i in 0..10 {
            let t = if i % 5 == 0 || i % 5 == 2 {
                fail(&mut b, i, &c)
            } else {
                ok(&mut b, i, &c)
            };
            assert_eq!(t, None);
        }
        assert_eq!(b.snapshot(Time(10))[0].window_failures, 4);
    }

    #[test]
    fn error_rate_window_slides() {
        let c = BreakerConfig {
            failure_threshold: 100,
            ..cfg()
        };
        let mut b = Breakers::new(8);
        for i in 0..9 {
            fail(&mut b, i, &c);
        }
        // The nine failures have left the window when the next ten calls come.
        for i in 0..9 {
            assert_eq!(ok(&mut b, 60_000 + i, &c), None);
        }
        assert_eq!(
            fail(&mut b, 60_009, &c),
            None,
            "1/10 failures in the window"
        );
        let view = &b.snapshot(Time(60_009))[0];
        assert_eq!((view.window_requests, view.window_failures), (10, 1));
        assert_eq!(view.failure_count, 1);
    }

    #[test]
    fn window_is_capped() {
        let c = BreakerConfig {
            failure_threshold: 100,
            ..cfg()
        };
        let mut b = Breakers::new(8);
        for _ in 0..(WINDOW_CAP + 100) {
            ok(&mut b, 5, &c);
        }
        let view = &b.snapshot(Time(5))[0];
        assert_eq!(view.window_requests as usize, WINDOW_CAP);
    }

    #[test]
    fn slow_calls_open_with_the_latency_reason() {
        let c = BreakerConfig {
            latency_threshold_ms: Some(1_000),
            ..cfg()
        };
        let mut b = Breakers::new(8);
        let slow = |b: &mut Breakers, at: u64, ms: u64| {
            b.record(T, P, Time(at), CallOutcome::Success, Some(ms), &c)
        };
        for i in 0..4 {
            assert_eq!(slow(&mut b, i, 1_001), None);
        }
        assert_eq!(
            slow(&mut b, 4, 1_000),
            None,
            "at the threshold is not slow: resets"
        );
        for i in 5..9 {
            assert_eq!(slow(&mut b, i, 2_000), None);
        }
        assert_eq!(
            slow(&mut b, 9, 2_000),
            opened(TripReason::LatencyThresholdExceeded)
        );

        // Without a threshold latency means nothing.
        let mut b = Breakers::new(8);
        for i in 0..20 {
            assert_eq!(
                b.record(T, P, Time(i), CallOutcome::Success, Some(60_000), &cfg()),
                None
            );
        }
    }

    #[test]
    fn open_denies_until_the_timeout_then_probes() {
        let c = cfg();
        let mut b = Breakers::new(8);
        open_at(&mut b, 1_000, &c);
        assert!(!b.would_allow(T, P, Time(60_999), &c));
        assert_eq!(
            b.admit(T, P, Time(60_999), &c),
            Admission::Denied { retry_after_ms: 1 }
        );
        assert_eq!(b.advance(T, P, Time(60_999), &c), None);
        assert!(b.would_allow(T, P, Time(61_000), &c));
        assert_eq!(b.snapshot(Time(61_000))[0].state, BreakerState::HalfOpen);
        assert_eq!(
            b.advance(T, P, Time(61_000), &c),
            Some(Transition {
                from: BreakerState::Open,
                to: BreakerState::HalfOpen,
                reason: TripReason::TimeoutElapsed
            })
        );
        for _ in 0..3 {
            assert_eq!(b.admit(T, P, Time(61_000), &c), Admission::Probe);
        }
        assert!(!b.would_allow(T, P, Time(61_001), &c));
        assert_eq!(
            b.admit(T, P, Time(61_001), &c),
            Admission::Denied {
                retry_after_ms: 59_999
            }
        );
    }

    #[test]
    fn would_allow_spends_no_probe() {
        let c = BreakerConfig {
            half_open_max_calls: 1,
            ..cfg()
        };
        let mut b = Breakers::new(8);
        open_at(&mut b, 0, &c);
        for _ in 0..5 {
            assert!(b.would_allow(T, P, Time(60_000), &c));
        }
        assert_eq!(b.admit(T, P, Time(60_000), &c), Admission::Probe);
        assert!(!b.would_allow(T, P, Time(60_000), &c));
    }

    #[test]
    fn probe_successes_close_the_breaker() {
        let c = cfg();
        let mut b = Breakers::new(8);
        open_at(&mut b, 0, &c);
        assert_eq!(b.admit(T, P, Time(60_000), &c), Admission::Probe);
        assert_eq!(b.admit(T, P, Time(60_000), &c), Admission::Probe);
        assert_eq!(ok(&mut b, 60_100, &c), None);
        assert_eq!(
            ok(&mut b, 60_200, &c),
            Some(Transition {
                from: BreakerState::HalfOpen,
                to: BreakerState::Closed,
                reason: TripReason::Recovered
            })
        );
        let view = &b.snapshot(Time(60_200))[0];
        assert_eq!(
            (view.state, view.failure_count, view.window_requests),
            (BreakerState::Closed, 0, 0)
        );
        // Recovered with a clean slate: one failure does not reopen.
        assert_eq!(fail(&mut b, 60_300, &c), None);
    }

    #[test]
    fn a_probe_failure_reopens_and_restarts_the_timeout() {
        let c = cfg();
        let mut b = Breakers::new(8);
        open_at(&mut b, 0, &c);
        assert_eq!(b.admit(T, P, Time(60_000), &c), Admission::Probe);
        assert_eq!(
            fail(&mut b, 60_500, &c),
            Some(Transition {
                from: BreakerState::HalfOpen,
                to: BreakerState::Open,
                reason: TripReason::HalfOpenFailure
            })
        );
        assert_eq!(
            b.admit(T, P, Time(120_499), &c),
            Admission::Denied { retry_after_ms: 1 }
        );
        assert_eq!(b.admit(T, P, Time(120_500), &c), Admission::Probe);
    }

    #[test]
    fn an_ignored_probe_frees_its_slot() {
        let c = BreakerConfig {
            half_open_max_calls: 1,
            ..cfg()
        };
        let mut b = Breakers::new(8);
        open_at(&mut b, 0, &c);
        assert_eq!(b.admit(T, P, Time(60_000), &c), Admission::Probe);
        assert!(matches!(
            b.admit(T, P, Time(60_000), &c),
            Admission::Denied { .. }
        ));
        assert_eq!(
            b.record(T, P, Time(60_001), CallOutcome::Ignored, None, &c),
            None
        );
        assert_eq!(b.admit(T, P, Time(60_002), &c), Admission::Probe);
    }

    #[test]
    fn stale_results_are_ignored() {
        let c = cfg();
        let mut b = Breakers::new(8);
        open_at(&mut b, 0, &c);
        // Results of calls admitted before the trip.
        for i in 0..5 {
            assert_eq!(ok(&mut b, 10 + i, &c), None);
        }
        assert_eq!(b.state(T, P, Time(59_000), &c), BreakerState::Open);
        // Half-open, no probe out yet: still stale.
        assert_eq!(b.state(T, P, Time(60_000), &c), BreakerState::HalfOpen);
        assert_eq!(fail(&mut b, 60_001, &c), None);
        assert_eq!(ok(&mut b, 60_002, &c), None);
        assert_eq!(ok(&mut b, 60_003, &c), None);
        assert_eq!(b.state(T, P, Time(60_004), &c), BreakerState::HalfOpen);
    }

    #[test]
    fn lost_probes_are_given_back_after_a_timeout() {
        let c = cfg();
        let mut b = Breakers::new(8);
        open_at(&mut b, 0, &c);
        for _ in 0..3 {
            assert_eq!(b.admit(T, P, Time(60_000), &c), Admission::Probe);
        }
        assert!(matches!(
            b.admit(T, P, Time(119_999), &c),
            Admission::Denied { .. }
        ));
        assert!(b.would_allow(T, P, Time(120_000), &c));
        assert_eq!(b.admit(T, P, Time(120_000), &c), Admission::Probe);
        assert_eq!(b.snapshot(Time(120_000))[0].probes_in_flight, 1);
    }

    #[test]
    fn zero_thresholds_are_read_as_one() {
        let c = BreakerConfig {
            failure_threshold: 0,
            success_threshold: 0,
            half_open_max_calls: 0,
            ..cfg()
        };
        let mut b = Breakers::new(8);
        assert_eq!(
            fail(&mut b, 0, &c),
            opened(TripReason::FailureThresholdExceeded)
        );
        assert_eq!(b.admit(T, P, Time(60_000), &c), Admission::Probe);
        assert!(matches!(
            b.admit(T, P, Time(60_000), &c),
            Admission::Denied { .. }
        ));
        assert_eq!(
            ok(&mut b, 60_001, &c).map(|t| t.to),
            Some(BreakerState::Closed)
        );
    }

    #[test]
    fn table_is_bounded_and_evicts_least_recently_used() {
        let c = cfg();
        let mut b = Breakers::new(2);
        b.record("t1", "p", Time(0), CallOutcome::Success, None, &c);
        b.record("t2", "p", Time(1), CallOutcome::Success, None, &c);
        b.admit("t1", "p", Time(2), &c); // t1 is now the most recent
        b.record("t3", "p", Time(3), CallOutcome::Success, None, &c);
        assert_eq!(b.len(), 2);
        let keys: Vec<_> = b
            .snapshot(Time(3))
            .into_iter()
            .map(|v| v.tenant_id)
            .collect();
        assert_eq!(keys, ["t1", "t3"]);
        assert_eq!(b.lru.len(), 2);
    }

    #[test]
    fn snapshot_is_in_key_order_and_isolates_keys() {
        let c = cfg();
        let mut b = Breakers::new(8);
        for (t, p) in [("b", "x"), ("a", "z"), ("a", "y")] {
            b.record(t, p, Time(0), CallOutcome::Success, None, &c);
        }
        for _ in 0..5 {
            b.record("a", "z", Time(0), CallOutcome::Failure, None, &c);
        }
        let views = b.snapshot(Time(1_000));
        let keys: Vec<_> = views
            .iter()
            .map(|v| (v.tenant_id.as_str(), v.provider_id.as_str()))
            .collect();
        assert_eq!(keys, [("a", "y"), ("a", "z"), ("b", "x")]);
        assert_eq!(views[1].state, BreakerState::Open);
        assert_eq!(views[1].remaining_open_ms, 59_000);
        assert_eq!(views[0].state, BreakerState::Closed);
        assert_eq!(views[2].state, BreakerState::Closed);
    }

    fn legal(t: &Transition) -> bool {
        use BreakerState::*;
        use TripReason::*;
        matches!(
            (t.from, t.to, t.reason),
            (
                Closed,
                Open,
                FailureThresholdExceeded | ErrorRateThresholdExceeded | LatencyThresholdExceeded
            ) | (Open, HalfOpen, TimeoutElapsed)
                | (HalfOpen, Open, HalfOpenFailure)
                | (HalfOpen, Closed, Recovered)
        )
    }

    fn arb_cfg() -> impl Strategy<Value = BreakerConfig> {
        (
            (0u32..6, 0u32..4, 0u64..20_000, 0u32..4),
            (
                0u32..=1_000,
                1u64..30_000,
                0u32..12,
                proptest::option::of(1u64..3_000),
            ),
        )
            .prop_map(|((ft, st, timeout, hmax), (rate, window, min, latency))| {
                BreakerConfig {
                    failure_threshold: ft,
                    success_threshold: st,
                    open_timeout_ms: timeout,
                    half_open_max_calls: hmax,
                    error_rate_permille: rate,
                    error_rate_window_ms: window,
                    min_requests: min,
                    latency_threshold_ms: latency,
                }
            })
    }

    proptest! {
        #[test]
        fn state_machine_invariants(
            c in arb_cfg(),
            ops in proptest::collection::vec((0u8..4, 0u8..3, 0u64..8_000, 0u64..4_000), 1..400),
        ) {
            let mut b = Breakers::new(4);
            let mut now = 0u64;
            for (kind, outcome, step, latency) in ops {
                now += step;
                let at = Time(now);
                let before = b.get(T, P).map(|x| (x.state, x.changed_at));
                match kind {
                    0 => {
                        let predicted = b.would_allow(T, P, at, &c);
                        let adm = b.admit(T, P, at, &c);
                        prop_assert_eq!(predicted, !matches!(adm, Admission::Denied { .. }));
                        let after = b.get(T, P).map(|x| x.state);
                        if let Some((BreakerState::Open, opened_at)) = before {
                            if now < opened_at.millis() + c.open_timeout_ms {
                                prop_assert!(matches!(adm, Admission::Denied { .. }), "open admitted early");
                                prop_assert_eq!(after, Some(BreakerState::Open));
                            } else {
                                prop_assert_eq!(after, Some(BreakerState::HalfOpen));
                            }
                        } else {
                            prop_assert_eq!(after, before.map(|x| x.0), "admit only moves Open -> HalfOpen");
                        }
                        match adm {
                            Admission::Allowed => prop_assert_ne!(after, Some(BreakerState::Open)),
                            Admission::Probe => prop_assert_eq!(after, Some(BreakerState::HalfOpen)),
                            Admission::Denied { retry_after_ms } => prop_assert!(retry_after_ms >= 1),
                        }
                        prop_assert_ne!(adm == Admission::Allowed, after == Some(BreakerState::HalfOpen) || after == Some(BreakerState::Open));
                    }
                    1 | 2 => {
                        let outcome = [CallOutcome::Success, CallOutcome::Failure, CallOutcome::Ignored][outcome as usize];
                        let transition = b.record(T, P, at, outcome, Some(latency), &c);
                        let after = b.get(T, P).map(|x| x.state);
                        match transition {
                            Some(t) => {
                                prop_assert!(legal(&t), "illegal {:?}", t);
                                prop_assert_ne!(t.reason, TripReason::TimeoutElapsed, "record never applies the timeout");
                                prop_assert_eq!(Some(t.from), before.map(|x| x.0).or(Some(BreakerState::Closed)));
                                prop_assert_eq!(Some(t.to), after);
                            }
                            None => prop_assert_eq!(after.unwrap_or(BreakerState::Closed), before.map_or(BreakerState::Closed, |x| x.0)),
                        }
                    }
                    _ => {
                        let t = b.advance(T, P, at, &c);
                        if let Some(t) = t {
                            prop_assert!(legal(&t));
                            prop_assert_eq!(t.reason, TripReason::TimeoutElapsed);
                            let opened_at = before.map_or(0, |x| x.1.millis());
                            prop_assert!(now >= opened_at + c.open_timeout_ms);
                        }
                    }
                }
                if let Some(x) = b.get(T, P) {
                    prop_assert!(x.probes_in_flight <= c.half_open_max_calls.max(1));
                    prop_assert!(x.window.len() <= WINDOW_CAP);
                    prop_assert_eq!(x.window_failures as usize, x.window.iter().filter(|e| e.1).count());
                    match x.state {
                        BreakerState::Closed => {
                            prop_assert!(x.failure_count < c.failure_threshold.max(1));
                            prop_assert_eq!(x.probes_in_flight, 0);
                        }
                        BreakerState::Open => prop_assert!(x.window.is_empty() && x.probes_in_flight == 0),
                        BreakerState::HalfOpen => prop_assert!(x.success_count < c.success_threshold.max(1)),
                    }
                    let view = &b.snapshot(at)[0];
                    prop_assert!(view.window_failures <= view.window_requests);
                }
            }
        }
    }
}
