use super::*;
use crate::core::breaker::{BreakerState, CallOutcome};
use crate::policy::parse_policy;
use serde_json::json;

struct Seq(u64);
impl Entropy for Seq {
    fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 ^ (self.0 >> 29)
    }
}
impl crate::core::env::Buggify for Seq {}

fn ctx(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

fn run(
    policy: &Policy,
    context: &Map<String, Value>,
    now: u64,
    breakers: &mut Breakers,
    sticky: &mut StickyStore,
    rng: &mut Seq,
) -> Result<Choice, NoProvider> {
    choose(
        policy,
        "acme",
        context,
        Time(now),
        Stores { breakers, sticky },
        rng,
    )
}

fn open_breaker(b: &mut Breakers, provider: &str, cfg: &BreakerConfig) {
    for i in 0..cfg.failure_threshold {
        b.record(
            "acme",
            provider,
            Time(u64::from(i)),
            CallOutcome::Failure,
            None,
            cfg,
        );
    }
    assert!(!b.would_allow("acme", provider, Time(10), cfg));
}

#[test]
fn weighted_draw_is_proportional() {
    let p = parse_policy(
        "p",
        r#"{"providers":[{"name":"a","weight":20},{"name":"b","weight":80}]}"#,
    )
    .unwrap();
    let (mut b, mut s, mut rng) = (Breakers::new(10), StickyStore::new(10), Seq(3));
    let mut a = 0;
    for _ in 0..5_000 {
        let c = run(&p, &Map::new(), 0, &mut b, &mut s, &mut rng).unwrap();
        assert_eq!(c.reason, DecisionReason::Weighted);
        if c.provider_id == "a" {
            a += 1;
        }
    }
    // Binomial(5000, 0.2): sd ~ 28; 5 sd.
    assert!((860..=1140).contains(&a), "a chosen {a} times");
}

#[test]
fn an_open_breaker_is_probed_after_its_timeout_and_closes_on_the_probes_success() {
    let p = parse_policy(
        "p",
        r#"{"providers":[{"name":"a","weight":100}],
            "circuit_breaker":{"enabled":true,"failure_threshold":2,"success_threshold":2,
                               "timeout_ms":1000,"half_open_max_calls":2}}"#,
    )
    .unwrap();
    let cfg = breaker_config(&p).unwrap();
    let (mut b, mut s, mut rng) = (Breakers::new(10), StickyStore::new(10), Seq(1));
    open_breaker(&mut b, "a", &cfg);
    assert!(
        run(&p, &Map::new(), 500, &mut b, &mut s, &mut rng).is_err(),
        "open"
    );
    // Past the timeout: two probes may go, a third must wait for their results.
    for _ in 0..2 {
        let c = run(&p, &Map::new(), 1_500, &mut b, &mut s, &mut rng).unwrap();
        assert_eq!(c.provider_id, "a");
    }
    assert_eq!(
        b.state("acme", "a", Time(1_500), &cfg),
        BreakerState::HalfOpen
    );
    assert!(
        run(&p, &Map::new(), 1_500, &mut b, &mut s, &mut rng).is_err(),
        "no third probe while two are out"
    );
    for t in [1_600, 1_700] {
        b.record("acme", "a", Time(t), CallOutcome::Success, None, &cfg);
    }
    assert_eq!(
        b.state("acme", "a", Time(1_700), &cfg),
        BreakerState::Closed
    );
}

#[test]
fn open_breakers_are_skipped_and_fallback_is_breaker_aware() {
    let p = parse_policy(
        "p",
        r#"{"providers":[{"name":"a","weight":50},{"name":"b","weight":50}],
            "fallbacks":[{"when":{"status":["timeout"]},"to":"local"}],
            "circuit_breaker":{"enabled":true,"failure_threshold":2}}"#,
    )
    .unwrap();
    let cfg = breaker_config(&p).unwrap();
    let (mut b, mut s, mut rng) = (Breakers::new(10), StickyStore::new(10), Seq(1));
    open_breaker(&mut b, "a", &cfg);
    for _ in 0..200 {
        let c = run(&p, &Map::new(), 20, &mut b, &mut s, &mut rng).unwrap();
        assert_eq!(c.provider_id, "b", "never the open provider");
    }
    open_breaker(&mut b, "b", &cfg);
    let c = run(&p, &Map::new(), 20, &mut b, &mut s, &mut rng).unwrap();
    assert_eq!(
        (c.provider_id.as_str(), c.reason),
        ("local", DecisionReason::CircuitBreakerFallback)
    );
    assert_eq!(c.reason.priority(), 20);
}

#[test]
fn selected_provider_with_open_breaker_uses_its_fallback() {
    let p = parse_policy("p", r#"{"providers":[{"name":"a","weight":100}],"circuit_breaker":{"enabled":true,"failure_threshold":1}}"#).unwrap();
    let cfg = breaker_config(&p).unwrap();
    let (mut b, mut s, mut rng) = (Breakers::new(10), StickyStore::new(10), Seq(1));
    open_breaker(&mut b, "a", &cfg);
    let c = run(
        &p,
        &ctx(json!({"selected_provider":"a","fallback_provider":"z"})),
        20,
        &mut b,
        &mut s,
        &mut rng,
    )
    .unwrap();
    assert_eq!(
        (c.provider_id.as_str(), c.reason),
        ("z", DecisionReason::CircuitBreakerFallback)
    );
}

#[test]
fn sticky_sessions_honour_the_policy_ttl() {
    let p = parse_policy(
        "p",
        r#"{"providers":[{"name":"a","weight":50},{"name":"b","weight":50}],"sticky":{"enabled":true,"session_key":"user_id","ttl":"10s"}}"#,
    )
    .unwrap();
    let (mut b, mut s, mut rng) = (Breakers::new(10), StickyStore::new(10), Seq(9));
    let user = ctx(json!({"user_id":"u-1"}));
    let first = run(&p, &user, 0, &mut b, &mut s, &mut rng).unwrap();
    assert_eq!(first.reason, DecisionReason::Weighted);
    for t in [1_000, 5_000, 9_999] {
        let c = run(&p, &user, t, &mut b, &mut s, &mut rng).unwrap();
        assert_eq!(
            (c.provider_id.as_str(), c.reason),
            (first.provider_id.as_str(), DecisionReason::Sticky)
        );
    }
    // A hit refreshes the mapping: it now lives until 9_999 + 10_000.
    let c = run(&p, &user, 19_998, &mut b, &mut s, &mut rng).unwrap();
    assert_eq!(c.reason, DecisionReason::Sticky);
    let c = run(&p, &user, 19_998 + 10_000, &mut b, &mut s, &mut rng).unwrap();
    assert_eq!(c.reason, DecisionReason::Weighted, "expired after the TTL");
}

#[test]
fn fallback_rules_retry_then_fall_back() {
    let p = parse_policy(
        "p",
        r#"{"fallbacks":[{"when":{"status":["timeout"]},"retry":2,"to":"backup","backoff":{"strategy":"fixed","base_ms":100,"jitter":false}}]}"#,
    )
    .unwrap();
    let rule = p.fallback_rules[0].rule_id.clone();
    let (mut b, mut s, mut rng) = (Breakers::new(10), StickyStore::new(10), Seq(1));
    let c = run(
        &p,
        &ctx(json!({"status":"timeout","current_provider":"a"})),
        0,
        &mut b,
        &mut s,
        &mut rng,
    )
    .unwrap();
    assert_eq!(
        (c.provider_id.as_str(), c.reason),
        ("a", DecisionReason::Retry)
    );
    assert_eq!(c.extra["retry_attempt"], 1);
    assert_eq!(c.extra["backoff_ms"], 100);
    let used = ctx(
        json!({"status":"timeout","current_provider":"a", format!("retry_attempts_{rule}"): 2}),
    );
    let c = run(&p, &used, 0, &mut b, &mut s, &mut rng).unwrap();
    assert_eq!(
        (c.provider_id.as_str(), c.reason),
        ("backup", DecisionReason::Fallback)
    );
    assert_eq!(c.reason.priority(), 25);
    let err = run(
        &p,
        &ctx(json!({"status":"ok"})),
        0,
        &mut b,
        &mut s,
        &mut rng,
    )
    .unwrap_err();
    assert!(err.steps.last().unwrap().contains("No provider available"));
}

#[test]
fn legacy_fallback_when_nothing_else() {
    let p = parse_policy(
        "p",
        r#"{"weights":{"a":0.0},"fallback":{"provider":"local_llm"}}"#,
    )
    .unwrap();
    let (mut b, mut s, mut rng) = (Breakers::new(10), StickyStore::new(10), Seq(1));
    let c = run(&p, &Map::new(), 0, &mut b, &mut s, &mut rng).unwrap();
    assert_eq!(
        (c.provider_id.as_str(), c.reason),
        ("local_llm", DecisionReason::Fallback)
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
    /// For any weights, each provider's share of 4,000 draws stays within 5 standard
    /// deviations of its weight's share, and a zero weight is never drawn.
    #[test]
    fn weighted_draw_matches_the_weights(weights in proptest::collection::vec(0u64..=100, 1..6), seed in 0u64..1_000) {
        proptest::prop_assume!(weights.iter().any(|w| *w > 0));
        let providers: Vec<String> = weights.iter().enumerate()
            .map(|(i, w)| format!(r#"{{"name":"p{i}","weight":{w}}}"#)).collect();
        let p = parse_policy("p", &format!(r#"{{"providers":[{}]}}"#, providers.join(","))).unwrap();
        let (mut b, mut s, mut rng) = (Breakers::new(10), StickyStore::new(10), Seq(seed));
        let n = 4_000u64;
        let mut counts = vec![0u64; weights.len()];
        for _ in 0..n {
            let c = run(&p, &Map::new(), 0, &mut b, &mut s, &mut rng).unwrap();
            counts[c.provider_id[1..].parse::<usize>().unwrap()] += 1;
        }
        let total: u64 = weights.iter().sum();
        for (w, c) in weights.iter().zip(&counts) {
            let share = *w as f64 / total as f64;
            let expect = n as f64 * share;
            let sd = (n as f64 * share * (1.0 - share)).sqrt();
            proptest::prop_assert!((*c as f64 - expect).abs() <= 5.0 * sd + 1.0,
                "weight {w}/{total}: {c} draws, expected {expect:.0} ± {sd:.0}");
            if *w == 0 {
                proptest::prop_assert_eq!(*c, 0);
            }
        }
    }
}
