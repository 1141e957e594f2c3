//! Every policy of our copy of the upstream fixture set loads through `load_dir` and parses
//! into the values it spells out; every invalid one is refused naming its field and rule.
//!
//! Layout: `tests/fixtures/policies/<tenant>/<policy_id>.json` (tenant `fixtures`) and
//! `tests/fixtures/invalid_policies/<name>.json`.

use std::path::PathBuf;

use beamline_router::policy::{
    load_dir, parse_policy, when, Backoff, BackoffStrategy, CircuitBreaker, ExtensionMode, OnFail,
    Policy, PolicyStore, RateLimit, WEIGHT_ONE,
};
use serde_json::{json, Map, Value};

const TENANT: &str = "fixtures";

const FIXTURES: &[&str] = &[
    "circuit_breaker_basic",
    "circuit_breaker_disabled",
    "circuit_breaker_error_rate",
    "complex_fallbacks",
    "default",
    "extensions_full",
    "extensions_minimal",
    "extensions_post_only",
    "extensions_pre_only",
    "extensions_validators_only",
    "legacy_format",
    "mixed_format",
    "sticky_weights",
];

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn store() -> PolicyStore {
    load_dir(&fixtures_dir().join("policies")).unwrap_or_else(|e| panic!("{e}"))
}

fn policy(id: &str) -> Policy {
    store()
        .get(TENANT, id)
        .unwrap_or_else(|| panic!("fixture {id} not loaded"))
        .clone()
}

/// (name, weight in percent) of each provider, in draw order.
fn weights(p: &Policy) -> Vec<(&str, u64)> {
    p.providers
        .iter()
        .map(|w| (w.name.as_str(), w.weight * 100 / WEIGHT_ONE))
        .collect()
}

/// (when, retry, to) of each fallback rule.
fn rules(p: &Policy) -> Vec<(Value, u32, &str)> {
    p.fallback_rules
        .iter()
        .map(|r| (r.when.clone(), r.retry, r.to.as_str()))
        .collect()
}

fn context(v: Value) -> Map<String, Value> {
    v.as_object().cloned().expect("an object")
}

#[test]
fn the_whole_set_loads_and_nothing_is_ignored() {
    let store = store();
    let keys: Vec<(&str, &str)> = store.keys().collect();
    let expected: Vec<(&str, &str)> = FIXTURES.iter().map(|id| (TENANT, *id)).collect();
    assert_eq!(keys, expected);
    for (tenant, p) in store.iter() {
        assert_eq!(tenant, TENANT);
        assert_eq!(p.version, "1.0", "{}", p.policy_id);
        assert!(
            p.ignored_keys.is_empty(),
            "{}: {:?}",
            p.policy_id,
            p.ignored_keys
        );
        for rule in &p.fallback_rules {
            assert_eq!(rule.rule_id.len(), 16, "{}", p.policy_id);
            assert!(rule.rule_id.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }
}

#[test]
fn default() {
    let p = policy("default");
    assert_eq!(weights(&p), [("openai", 70), ("anthropic", 30)]);
    assert_eq!(p.total_weight(), WEIGHT_ONE);
    assert_eq!(
        rules(&p),
        [
            (json!({"status": ["timeout", "5xx"]}), 2, "anthropic"),
            (json!({"status": ["rate_limited"]}), 1, "local_llm"),
        ]
    );
    assert!(p
        .fallback_rules
        .iter()
        .all(|r| r.backoff == Backoff::DEFAULT));
    assert_ne!(p.fallback_rules[0].rule_id, p.fallback_rules[1].rule_id);
    let sticky = p.sticky.as_ref().expect("sticky enabled");
    assert_eq!(
        (sticky.session_key.as_str(), sticky.ttl_seconds),
        ("user_id", 600)
    );
    assert_eq!(p.fallback, None);
    assert_eq!((p.rate_limit, p.circuit_breaker), (None, None));
    assert_eq!(p.pipeline_len(), 0);
}

#[test]
fn legacy_format() {
    let p = policy("legacy_format");
    // The weights map is walked in key order.
    assert_eq!(weights(&p), [("anthropic", 30), ("openai", 70)]);
    assert_eq!(p.fallback.as_deref(), Some("local_llm"));
    assert_eq!(
        rules(&p),
        [(
            json!({"status": ["all_providers_failed", "timeout"]}),
            1,
            "local_llm"
        )]
    );
    let sticky = p.sticky.as_ref().expect("sticky enabled");
    assert_eq!(
        (sticky.session_key.as_str(), sticky.ttl_seconds),
        ("session_id", 1_800)
    );
}

#[test]
fn mixed_format() {
    let p = policy("mixed_format");
    // The providers list wins over the weights map.
    assert_eq!(weights(&p), [("openai", 60), ("anthropic", 40)]);
    // The fallbacks list wins over the legacy rule; the legacy provider stays.
    assert_eq!(
        rules(&p),
        [(json!({"status": ["timeout"]}), 2, "anthropic")]
    );
    assert_eq!(p.fallback.as_deref(), Some("local_llm"));
    assert_eq!(p.sticky.as_ref().map(|s| s.ttl_seconds), Some(600));
    assert_eq!(p.pre.len(), 1);
    assert_eq!(p.pre[0].id, "normalize_text");
    assert_eq!(p.pre[0].mode, ExtensionMode::Required);
    assert_eq!(
        Value::Object(p.pre[0].config.clone()),
        json!({"lowercase": true})
    );
}

#[test]
fn sticky_weights() {
    let p = policy("sticky_weights");
    assert_eq!(weights(&p), [("openai", 60), ("anthropic", 40)]);
    let sticky = p.sticky.as_ref().expect("sticky enabled");
    assert_eq!(
        (sticky.session_key.as_str(), sticky.ttl_seconds),
        ("user_id", 900)
    );
    let rule = &p.fallback_rules[0];
    assert_eq!((rule.retry, rule.to.as_str()), (2, "anthropic"));
    assert_eq!(
        rule.backoff,
        Backoff {
            strategy: BackoffStrategy::Exponential,
            base_ms: 200,
            max_ms: 2_000,
            jitter: false
        }
    );
    let delays: Vec<u64> = (1..=5).map(|a| rule.backoff.delay_ms(a, |_| 0)).collect();
    assert_eq!(delays, [200, 400, 800, 1_600, 2_000]);
}

#[test]
fn complex_fallbacks() {
    let p = policy("complex_fallbacks");
    assert_eq!(
        weights(&p),
        [("openai", 50), ("anthropic", 30), ("cohere", 20)]
    );
    assert_eq!(
        rules(&p),
        [
            (json!({"status": ["timeout"]}), 3, "anthropic"),
            (json!({"status": ["5xx", "503"]}), 2, "cohere"),
            (json!({"status": ["rate_limited", "429"]}), 1, "local_llm"),
            (
                json!({"status": ["timeout"], "message_type": ["chat"]}),
                2,
                "anthropic"
            ),
            (
                json!({">=": [{"var": "context.request.tokens"}, 8000]}),
                0,
                "anthropic"
            ),
        ]
    );
    let backoffs: Vec<(BackoffStrategy, u64, u64, bool)> = p
        .fallback_rules
        .iter()
        .map(|r| {
            (
                r.backoff.strategy,
                r.backoff.base_ms,
                r.backoff.max_ms,
                r.backoff.jitter,
            )
        })
        .collect();
    assert_eq!(
        backoffs[..3],
        [
            (BackoffStrategy::Exponential, 100, 5_000, true),
            (BackoffStrategy::Linear, 250, 1_000, true),
            (BackoffStrategy::Fixed, 1_000, 1_000, false),
        ]
    );
    // All five rules are distinct, so are their ids.
    let mut ids: Vec<&str> = p
        .fallback_rules
        .iter()
        .map(|r| r.rule_id.as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 5);
    // The conditions evaluate against a request context.
    let big_chat = context(json!({"status": "timeout", "message_type": "chat",
        "request": {"tokens": 9000}}));
    let matching: Vec<bool> = p
        .fallback_rules
        .iter()
        .map(|r| when::matches(&r.when, &big_chat))
        .collect();
    assert_eq!(matching, [true, false, false, true, true]);
}

#[test]
fn circuit_breaker_basic() {
    let p = policy("circuit_breaker_basic");
    assert_eq!(weights(&p), [("openai", 80), ("anthropic", 20)]);
    assert_eq!(
        p.circuit_breaker,
        Some(CircuitBreaker {
            failure_threshold: 3,
            success_threshold: 2,
            timeout_ms: 30_000,
            half_open_max_calls: 2,
            ..CircuitBreaker::DEFAULT
        })
    );
    let cb = p.circuit_breaker.unwrap();
    assert_eq!(cb.error_rate_threshold_permille, 500);
    assert_eq!(cb.error_rate_window_seconds, 60);
    assert_eq!(cb.min_requests, 10);
    assert_eq!(cb.latency_threshold_ms, None);
}

#[test]
fn circuit_breaker_disabled() {
    let p = policy("circuit_breaker_disabled");
    assert_eq!(weights(&p), [("openai", 100)]);
    assert_eq!(p.circuit_breaker, None);
}

#[test]
fn circuit_breaker_error_rate() {
    let p = policy("circuit_breaker_error_rate");
    assert_eq!(
        p.circuit_breaker,
        Some(CircuitBreaker {
            failure_threshold: 10,
            success_threshold: 3,
            timeout_ms: 45_000,
            half_open_max_calls: 5,
            error_rate_threshold_permille: 250,
            error_rate_window_seconds: 120,
            min_requests: 20,
            latency_threshold_ms: Some(4_000),
        })
    );
    assert_eq!(
        p.rate_limit,
        Some(RateLimit {
            requests_per_second: 200,
            burst: 400
        })
    );
    assert_eq!(
        rules(&p),
        [(json!({"status": ["circuit_breaker_open"]}), 0, "anthropic")]
    );
}

#[test]
fn extensions_full() {
    let p = policy("extensions_full");
    let pre: Vec<(&str, ExtensionMode)> = p.pre.iter().map(|i| (i.id.as_str(), i.mode)).collect();
    assert_eq!(
        pre,
        [
            ("normalize_text", ExtensionMode::Required),
            ("add_context", ExtensionMode::Optional)
        ]
    );
    assert_eq!(
        Value::Object(p.pre[0].config.clone()),
        json!({"lowercase": true, "trim_whitespace": true})
    );
    let validators: Vec<(&str, OnFail)> = p
        .validators
        .iter()
        .map(|i| (i.id.as_str(), i.on_fail))
        .collect();
    assert_eq!(
        validators,
        [
            ("pii_guard", OnFail::Block),
            ("content_filter", OnFail::Warn),
            ("rate_limit_check", OnFail::Ignore)
        ]
    );
    let gate = p.validators[1]
        .when
        .as_ref()
        .expect("content_filter has a condition");
    assert!(when::matches(
        gate,
        &context(json!({"environment": "prod"}))
    ));
    assert!(!when::matches(
        gate,
        &context(json!({"environment": "dev"}))
    ));
    let post: Vec<(&str, ExtensionMode)> = p.post.iter().map(|i| (i.id.as_str(), i.mode)).collect();
    assert_eq!(
        post,
        [
            ("mask_pii", ExtensionMode::Required),
            ("format_response", ExtensionMode::Optional)
        ]
    );
    assert_eq!(p.pipeline_len(), 7);
    // The same rule as mixed_format's, so the same id.
    assert_eq!(
        p.fallback_rules[0].rule_id,
        policy("mixed_format").fallback_rules[0].rule_id
    );
}

#[test]
fn extensions_minimal() {
    let p = policy("extensions_minimal");
    assert_eq!((p.pre.len(), p.validators.len(), p.post.len()), (1, 1, 1));
    assert_eq!(
        (p.pre[0].id.as_str(), p.pre[0].mode),
        ("normalize_text", ExtensionMode::Optional)
    );
    assert_eq!(
        (p.validators[0].id.as_str(), p.validators[0].on_fail),
        ("pii_guard", OnFail::Block)
    );
    assert_eq!(
        (p.post[0].id.as_str(), p.post[0].mode),
        ("mask_pii", ExtensionMode::Optional)
    );
    assert!(
        p.pre[0].config.is_empty()
            && p.validators[0].config.is_empty()
            && p.post[0].config.is_empty()
    );
    assert!(p.pre[0].when.is_none());
}

#[test]
fn extensions_pre_only() {
    let p = policy("extensions_pre_only");
    assert_eq!((p.pre.len(), p.validators.len(), p.post.len()), (2, 0, 0));
    assert_eq!(p.pre[1].id, "translate_to_en");
    let gate = p.pre[1].when.as_ref().expect("translate has a condition");
    assert!(when::matches(gate, &context(json!({"lang": "de"}))));
    assert!(!when::matches(gate, &context(json!({"lang": "en"}))));
    // Undefined operand: false, even for `!=`.
    assert!(!when::matches(gate, &context(json!({}))));
}

#[test]
fn extensions_post_only() {
    let p = policy("extensions_post_only");
    assert_eq!((p.pre.len(), p.validators.len(), p.post.len()), (0, 0, 2));
    assert_eq!(
        (p.post[0].id.as_str(), p.post[0].mode),
        ("mask_pii", ExtensionMode::Required)
    );
    assert_eq!(
        (p.post[1].id.as_str(), p.post[1].mode),
        ("format_response", ExtensionMode::Optional)
    );
}

#[test]
fn extensions_validators_only() {
    let p = policy("extensions_validators_only");
    assert_eq!((p.pre.len(), p.validators.len(), p.post.len()), (0, 3, 0));
    let on_fail: Vec<OnFail> = p.validators.iter().map(|v| v.on_fail).collect();
    assert_eq!(on_fail, [OnFail::Block, OnFail::Warn, OnFail::Ignore]);
    assert_eq!(
        Value::Object(p.validators[0].config.clone()),
        json!({"strict": true})
    );
    let gate = p.validators[2]
        .when
        .as_ref()
        .expect("toxicity_score has a condition");
    assert!(when::matches(gate, &context(json!({"tier": "trial"}))));
    assert!(!when::matches(
        gate,
        &context(json!({"tier": "enterprise"}))
    ));
}

#[test]
fn invalid_policies_are_refused_naming_field_and_rule() {
    let expected: &[(&str, &str, &str)] = &[
        (
            "backoff_base_out_of_range",
            "fallbacks[2].backoff.base_ms",
            "must be an integer within 1-10000",
        ),
        (
            "breaker_error_rate_above_one",
            "circuit_breaker.error_rate_threshold",
            "must be a number within 0.0-1.0",
        ),
        (
            "nothing_to_route_to",
            "providers",
            "needs at least one provider with a positive weight, or a fallback",
        ),
        (
            "pipeline_too_deep",
            "pre+validators+post",
            "pipeline_too_deep",
        ),
        (
            "provider_weight_above_100",
            "providers[1].weight",
            "an integer weight must be 0-100",
        ),
        (
            "sticky_bad_ttl",
            "sticky.ttl",
            "must match ^[0-9]+[smh]$ and be within 1s-24h (e.g. \"10m\")",
        ),
        ("too_many_validators", "validators", "too_many_validators"),
        (
            "when_operator_one_operand",
            "fallbacks[0].when.>=",
            "operator `>=` takes a list of two operands [lhs, rhs]",
        ),
    ];
    let dir = fixtures_dir().join("invalid_policies");
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    found.sort();
    let listed: Vec<&str> = expected.iter().map(|(name, _, _)| *name).collect();
    assert_eq!(found, listed, "every invalid fixture has an expectation");
    for (name, field, rule) in expected {
        let text = std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap();
        let e = parse_policy(name, &text).expect_err(name);
        assert_eq!(
            (e.field.as_str(), e.rule.as_str()),
            (*field, *rule),
            "{name}"
        );
    }
}

#[test]
fn an_invalid_policy_in_a_tenant_dir_fails_the_load_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("acme")).unwrap();
    std::fs::copy(
        fixtures_dir().join("invalid_policies/sticky_bad_ttl.json"),
        tmp.path().join("acme/sticky.json"),
    )
    .unwrap();
    let err = load_dir(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("sticky.json") && err.contains("sticky.ttl"),
        "{err}"
    );
}
