//! Properties: parsing never panics, whatever the input, and what it accepts respects the
//! documented bounds. Inputs are arbitrary strings, arbitrary JSON biased towards policy
//! keys and words, and valid policies with one value replaced by arbitrary JSON.

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::{
    parse_policy, parse_policy_value, when, Policy, MAX_FALLBACK_RULES, MAX_PIPELINE_DEPTH,
    MAX_PIPELINE_STAGE, MAX_PROVIDERS, WEIGHT_ONE,
};

const KEYS: &[&str] = &[
    "version",
    "policy_id",
    "tenant_id",
    "providers",
    "weights",
    "fallbacks",
    "fallback",
    "sticky",
    "rate_limit",
    "circuit_breaker",
    "pre",
    "validators",
    "post",
    "metadata",
    "timeout_ms",
    "health_check",
    "name",
    "weight",
    "priority",
    "when",
    "retry",
    "to",
    "backoff",
    "strategy",
    "base_ms",
    "max_ms",
    "jitter",
    "provider",
    "conditions",
    "enabled",
    "session_key",
    "ttl",
    "ttl_seconds",
    "requests_per_second",
    "burst",
    "failure_threshold",
    "success_threshold",
    "half_open_max_calls",
    "error_rate_threshold",
    "error_rate_window_seconds",
    "min_requests",
    "latency_threshold_ms",
    "id",
    "mode",
    "on_fail",
    "config",
    "status",
    "var",
    "==",
    "!=",
    ">",
    "<",
    ">=",
    "<=",
    "in",
];

const WORDS: &[&str] = &[
    "openai",
    "anthropic",
    "local_llm",
    "1.0",
    "10m",
    "90s",
    "1h",
    "10d",
    "exponential",
    "linear",
    "fixed",
    "required",
    "optional",
    "block",
    "warn",
    "ignore",
    "timeout",
    "context.a.b",
    "a.b",
    "context.",
    "",
    "p",
    "a b",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(KEYS).prop_map(String::from),
        1 => "[a-z_.=<>!]{0,6}",
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (0u64..=120).prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-2.0f64..2.0).prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        proptest::sample::select(WORDS).prop_map(Value::from),
        "\\PC{0,8}".prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 96, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..7).prop_map(Value::Array),
            proptest::collection::vec((key(), inner), 0..8)
                .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Map<String, Value>> {
    proptest::collection::vec((key(), json_value()), 0..10)
        .prop_map(|entries| entries.into_iter().collect())
}

fn full_policy() -> Value {
    json!({
        "version": "1.0",
        "providers": [{"name": "openai", "weight": 60}, {"name": "anthropic", "weight": 40}],
        "weights": {"openai": 0.7, "anthropic": 0.3},
        "fallbacks": [
            {"when": {"status": ["timeout", "5xx"]}, "retry": 2,
             "backoff": {"strategy": "exponential", "base_ms": 100, "max_ms": 5000, "jitter": true},
             "to": "anthropic"},
            {"when": {">=": [{"var": "context.attempts"}, 3]}, "to": "local_llm"}
        ],
        "fallback": {"provider": "local_llm", "conditions": ["all_providers_failed"]},
        "sticky": {"enabled": true, "session_key": "user_id", "ttl": "10m", "ttl_seconds": 600},
        "circuit_breaker": {"enabled": true, "failure_threshold": 5, "success_threshold": 2,
            "timeout_ms": 60000, "half_open_max_calls": 3, "error_rate_threshold": 0.5,
            "error_rate_window_seconds": 60, "min_requests": 10},
        "rate_limit": {"enabled": true, "requests_per_second": 100, "burst": 50},
        "pre": [{"id": "normalize_text", "mode": "required", "config": {"lowercase": true},
                 "when": {"in": [{"var": "lang"}, ["en", "de"]]}}],
        "validators": [{"id": "pii_guard", "on_fail": "block"}],
        "post": [{"id": "mask_pii", "mode": "optional"}],
        "metadata": {}
    })
}

/// Every place in `doc` a value can be replaced: object members and list items.
fn slots(doc: &Value, here: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match doc {
        Value::Object(obj) => {
            for (k, v) in obj {
                here.push(k.clone());
                out.push(here.clone());
                slots(v, here, out);
                here.pop();
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                here.push(i.to_string());
                out.push(here.clone());
                slots(v, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

fn replace(doc: &mut Value, path: &[String], with: Value) {
    let Some((last, parents)) = path.split_last() else {
        *doc = with;
        return;
    };
    let mut target = doc;
    for segment in parents {
        target = match target {
            Value::Object(obj) => obj.get_mut(segment).expect("slot exists"),
            Value::Array(items) => &mut items[segment.parse::<usize>().expect("index")],
            _ => unreachable!("slots only descend into containers"),
        };
    }
    match target {
        Value::Object(obj) => {
            obj.insert(last.clone(), with);
        }
        Value::Array(items) => items[last.parse::<usize>().expect("index")] = with,
        _ => unreachable!("slots only descend into containers"),
    }
}

/// What every accepted policy promises.
fn check_invariants(p: &Policy) {
    assert!(p.providers.len() <= MAX_PROVIDERS);
    assert!(p.providers.iter().all(|w| w.weight <= WEIGHT_ONE));
    assert!(p.total_weight() > 0 || p.fallback.is_some() || !p.fallback_rules.is_empty());
    assert!(p.fallback_rules.len() <= MAX_FALLBACK_RULES);
    for rule in &p.fallback_rules {
        assert_eq!(rule.rule_id.len(), 16);
        assert!(rule
            .rule_id
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        assert!(rule.retry <= 10);
        assert!((1..=10_000).contains(&rule.backoff.base_ms));
        assert!(rule.backoff.base_ms <= rule.backoff.max_ms && rule.backoff.max_ms <= 60_000);
        assert!(when::validate(&rule.when, "when").is_ok());
    }
    if let Some(s) = &p.sticky {
        assert!((1..=86_400).contains(&s.ttl_seconds));
        assert!((1..=255).contains(&s.session_key.chars().count()));
    }
    if let Some(c) = &p.circuit_breaker {
        assert!(c.error_rate_threshold_permille <= 1_000);
        assert!((1_000..=300_000).contains(&c.timeout_ms));
    }
    assert!(p.pipeline_len() <= MAX_PIPELINE_DEPTH);
    assert!(p.pre.len().max(p.validators.len()).max(p.post.len()) <= MAX_PIPELINE_STAGE);
}

fn parse_and_check(doc: &Value) -> Result<Policy, super::PolicyError> {
    let parsed = parse_policy_value("p", doc);
    match &parsed {
        Ok(p) => check_invariants(p),
        Err(e) => assert!(!e.field.is_empty() && !e.rule.is_empty(), "{e:?}"),
    }
    // Deterministic, and the same through the text form. (serde_json's float parsing may
    // move a float by an ulp on the way back, so compare with the re-decoded document.)
    assert_eq!(parse_policy_value("p", doc), parsed);
    let text = doc.to_string();
    let redecoded: Value = serde_json::from_str(&text).expect("serde_json reads its own output");
    assert_eq!(
        parse_policy("p", &text),
        parse_policy_value("p", &redecoded)
    );
    parsed
}

#[test]
fn the_mutation_base_is_valid() {
    let p = parse_and_check(&full_policy()).unwrap();
    assert_eq!(p.fallback_rules.len(), 2);
    assert!(p.ignored_keys.is_empty());
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = parse_policy("p", &text);
    }

    #[test]
    fn arbitrary_json_text_never_panics(bytes in proptest::collection::vec(
        proptest::sample::select(&b"{}[]\",:0123456789.eE+-truefalsnl \\u\xc3\xa9"[..]), 0..120)) {
        let _ = parse_policy("p", &String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn arbitrary_json_never_panics(doc in json_value()) {
        let _ = parse_and_check(&doc);
    }

    #[test]
    fn arbitrary_policy_shaped_objects_never_panic(obj in json_object()) {
        let _ = parse_and_check(&Value::Object(obj));
    }

    #[test]
    fn a_valid_policy_with_one_value_replaced_never_panics(
        pick in any::<proptest::sample::Index>(),
        with in json_value(),
    ) {
        let mut doc = full_policy();
        let mut all = Vec::new();
        slots(&doc, &mut Vec::new(), &mut all);
        let path = pick.get(&all).clone();
        replace(&mut doc, &path, with);
        let _ = parse_and_check(&doc);
    }

    #[test]
    fn unknown_top_level_keys_are_listed_not_refused(name in "[a-z]{1,3}_x[a-z]{0,3}", value in json_value()) {
        let mut doc = full_policy();
        doc[name.as_str()] = value;
        let p = parse_and_check(&doc).unwrap();
        prop_assert_eq!(p.ignored_keys, vec![name]);
    }

    #[test]
    fn conditions_never_panic(when in json_value(), context in json_object()) {
        let _ = when::matches(&when, &context);
        let _ = when::validate(&when, "when");
    }

    #[test]
    fn operator_conditions_never_panic(
        op in proptest::sample::select(&["==", "!=", ">", "<", ">=", "<=", "in"][..]),
        lhs in json_value(),
        rhs in json_value(),
        path in "(context\\.)?[a-c](\\.[a-c0-2]){0,2}",
        context in json_object(),
    ) {
        let var = json!({"var": path});
        for (l, r) in [(&lhs, &rhs), (&var, &rhs), (&lhs, &var), (&var, &var)] {
            let cond = json!({ op: [l, r] });
            let _ = when::matches(&cond, &context);
            let _ = when::validate(&cond, "when");
        }
    }
}
