//! Parsing and validating the policy JSON: the document's top level, the weighted
//! providers (`providers` list or legacy `weights` map) and the legacy `fallback`. The
//! other sections have their own modules. Every refusal names the field and the rule.

use serde_json::Value;

use super::error::{refuse, PolicyError};
use super::extensions::parse_pipeline;
use super::fields::{fraction, item, join, valid_name, Section, NAME_RULE};
use super::limits::{parse_circuit_breaker, parse_rate_limit, parse_sticky};
use super::load::valid_id;
use super::rules::{legacy_rule, parse_fallbacks};
use super::types::{Policy, ProviderWeight, MAX_PROVIDERS, WEIGHT_ONE};

/// Top-level keys this parser reads.
const KNOWN_KEYS: &[&str] = &[
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
];
/// Top-level keys of upstream's schema that it never implemented (or deprecated): accepted
/// without a look and without a warning.
const SCHEMA_ONLY_KEYS: &[&str] = &[
    "timeout_ms",
    "health_check",
    "defaults",
    "escalate_on",
    "metadata",
];
/// `priority` is schema-only.
const PROVIDER_KEYS: &[&str] = &["name", "weight", "priority"];
const LEGACY_FALLBACK_KEYS: &[&str] = &["provider", "conditions"];

/// Parse a policy document. `policy_id` names it (a `policy_id` inside the document, if
/// any, must be the same).
pub fn parse_policy(policy_id: &str, text: &str) -> Result<Policy, PolicyError> {
    let doc: Value =
        serde_json::from_str(text).map_err(|e| refuse("$", format!("must be JSON: {e}")))?;
    parse_policy_value(policy_id, &doc)
}

/// [`parse_policy`] for a document already decoded.
pub fn parse_policy_value(policy_id: &str, doc: &Value) -> Result<Policy, PolicyError> {
    let root = Section::new("", doc)?;
    let mut ignored = Vec::new();
    let known: Vec<&str> = KNOWN_KEYS.iter().chain(SCHEMA_ONLY_KEYS).copied().collect();
    root.note_unknown(&known, &mut ignored);

    let version = match root.get("version") {
        None => "1.0".to_string(),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => return Err(refuse("version", "must be a non-empty string")),
    };
    check_ids(&root, policy_id)?;

    let providers = match (root.get("providers"), root.get("weights")) {
        // A non-empty `providers` list wins over `weights` (upstream's rule).
        (Some(Value::Array(list)), weights) if !list.is_empty() || weights.is_none() => {
            parse_providers(list, &mut ignored)?
        }
        (Some(Value::Array(_)), Some(map)) => parse_weights(map)?,
        (Some(_), _) => return Err(refuse("providers", "must be a list")),
        (None, Some(map)) => parse_weights(map)?,
        (None, None) => Vec::new(),
    };

    let legacy = match root.get("fallback") {
        None => None,
        Some(value) => Some(parse_legacy_fallback(value, &mut ignored)?),
    };
    let mut fallback_rules = parse_fallbacks(&root, &mut ignored)?;
    if let (true, Some((provider, conditions))) = (fallback_rules.is_empty(), &legacy) {
        fallback_rules.push(legacy_rule(provider, conditions));
    }
    let fallback = legacy.map(|(provider, _)| provider);

    let sticky = match root.get("sticky") {
        None => None,
        Some(v) => parse_sticky("sticky", v, &mut ignored)?,
    };
    let rate_limit = match root.get("rate_limit") {
        None => None,
        Some(v) => parse_rate_limit("rate_limit", v, &mut ignored)?,
    };
    let circuit_breaker = match root.get("circuit_breaker") {
        None => None,
        Some(v) => parse_circuit_breaker("circuit_breaker", v, &mut ignored)?,
    };
    let pipeline = parse_pipeline(&root, &mut ignored)?;

    if providers.iter().all(|p| p.weight == 0) && fallback.is_none() && fallback_rules.is_empty() {
        return Err(refuse(
            "providers",
            "needs at least one provider with a positive weight, or a fallback",
        ));
    }

    Ok(Policy {
        policy_id: policy_id.to_string(),
        version,
        revision: revision_of(doc),
        providers,
        fallback,
        fallback_rules,
        sticky,
        rate_limit,
        circuit_breaker,
        pre: pipeline.pre,
        validators: pipeline.validators,
        post: pipeline.post,
        ignored_keys: ignored,
    })
}

/// 12 hex digits of the SHA-256 of the document as parsed (keys in their order, no
/// whitespace): the same file reformatted keeps its revision.
fn revision_of(doc: &Value) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(doc.to_string().as_bytes());
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// Upstream's stored form carries `policy_id` and `tenant_id`: accepted when well formed,
/// and `policy_id` must agree with the id the policy is stored under.
fn check_ids(root: &Section<'_>, policy_id: &str) -> Result<(), PolicyError> {
    const RULE: &str = "must be 1-255 characters of [A-Za-z0-9_.-]";
    for key in ["policy_id", "tenant_id"] {
        match root.get(key) {
            None => {}
            Some(Value::String(id)) if key == "policy_id" && valid_id(id) && id != policy_id => {
                return Err(refuse(
                    key,
                    format!("is `{id}` but the policy is stored as `{policy_id}`"),
                ));
            }
            Some(Value::String(id)) if valid_id(id) => {}
            Some(_) => return Err(refuse(key, RULE)),
        }
    }
    Ok(())
}

/// `providers: [{"name": .., "weight": ..}]`. An integer weight is a percentage
/// (0-100); a float is a fraction of 1.0 (upstream's rule).
fn parse_providers(
    items: &[Value],
    ignored: &mut Vec<String>,
) -> Result<Vec<ProviderWeight>, PolicyError> {
    if items.len() > MAX_PROVIDERS {
        return Err(refuse(
            "providers",
            format!("at most {MAX_PROVIDERS} providers"),
        ));
    }
    let mut out: Vec<ProviderWeight> = Vec::with_capacity(items.len());
    for (i, value) in items.iter().enumerate() {
        let entry = Section::new(item("providers", i), value)?;
        entry.note_unknown(PROVIDER_KEYS, ignored);
        let name = entry.name("name")?;
        let field = entry.field("weight");
        let weight = match entry.get("weight") {
            Some(Value::Number(n)) if n.is_u64() => {
                let w = n.as_u64().unwrap_or(u64::MAX);
                if w > 100 {
                    return Err(refuse(field, "an integer weight must be 0-100"));
                }
                w * (WEIGHT_ONE / 100)
            }
            Some(v @ Value::Number(_)) => fraction(v, &field, WEIGHT_ONE)
                .map_err(|_| refuse(&field, "a fractional weight must be within 0.0-1.0"))?,
            _ => return Err(refuse(field, "is required and must be a number")),
        };
        if out.iter().any(|p| p.name == name) {
            return Err(refuse(
                entry.field("name"),
                format!("duplicate provider `{name}`"),
            ));
        }
        out.push(ProviderWeight { name, weight });
    }
    Ok(out)
}

/// Legacy `weights: {"openai": 0.7}`: fractions of 1.0, walked in key order.
fn parse_weights(map: &Value) -> Result<Vec<ProviderWeight>, PolicyError> {
    let obj = map
        .as_object()
        .ok_or_else(|| refuse("weights", "must be an object of provider -> weight"))?;
    if obj.len() > MAX_PROVIDERS {
        return Err(refuse(
            "weights",
            format!("at most {MAX_PROVIDERS} providers"),
        ));
    }
    let mut names: Vec<&String> = obj.keys().collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let field = join("weights", name);
            if !valid_name(name) {
                return Err(refuse(field, format!("provider name {NAME_RULE}")));
            }
            let weight = match &obj[name.as_str()] {
                v @ Value::Number(_) => fraction(v, &field, WEIGHT_ONE)
                    .map_err(|_| refuse(&field, "a fractional weight must be within 0.0-1.0"))?,
                _ => return Err(refuse(field, "must be a number")),
            };
            Ok(ProviderWeight {
                name: name.clone(),
                weight,
            })
        })
        .collect()
}

/// Legacy `fallback {provider, conditions}` -> the provider and its conditions.
fn parse_legacy_fallback(
    value: &Value,
    ignored: &mut Vec<String>,
) -> Result<(String, Vec<String>), PolicyError> {
    let f = Section::new("fallback", value)?;
    f.note_unknown(LEGACY_FALLBACK_KEYS, ignored);
    let provider = f.name("provider")?;
    let conditions = f
        .list("conditions")?
        .iter()
        .enumerate()
        .map(|(i, c)| match c {
            Value::String(s) if !s.is_empty() => Ok(s.clone()),
            _ => Err(refuse(
                item(&f.field("conditions"), i),
                "must be a non-empty string",
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((provider, conditions))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::policy::{BackoffStrategy, CircuitBreaker, ExtensionMode, OnFail};

    #[test]
    fn the_revision_follows_the_content_not_its_formatting() {
        let a = parse_policy("default", r#"{"providers":[{"name":"openai","weight":1}]}"#).unwrap();
        let b = parse_policy(
            "default",
            "{\n  \"providers\": [ {\"name\": \"openai\", \"weight\": 1} ]\n}\n",
        )
        .unwrap();
        let c = parse_policy("default", r#"{"providers":[{"name":"openai","weight":2}]}"#).unwrap();
        assert_eq!(a.revision, b.revision, "reformatted: same revision");
        assert_ne!(a.revision, c.revision, "another weight: another revision");
        assert_eq!(a.revision.len(), 12);
        assert!(a.revision.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn providers_form_uses_percentages() {
        let p = parse_policy(
            "default",
            r#"{"providers":[{"name":"openai","weight":70},{"name":"anthropic","weight":30}]}"#,
        )
        .unwrap();
        assert_eq!(p.providers[0].weight, 700_000);
        assert_eq!(p.providers[1].weight, 300_000);
        assert_eq!(p.total_weight(), WEIGHT_ONE);
    }

    #[test]
    fn providers_win_over_legacy_weights() {
        let p = parse_policy(
            "p",
            r#"{"providers":[{"name":"a","weight":100}],"weights":{"b":1.0}}"#,
        )
        .unwrap();
        assert_eq!(p.providers.len(), 1);
        assert_eq!(p.providers[0].name, "a");
        // An empty list does not hide the map.
        let p = parse_policy("p", r#"{"providers":[],"weights":{"b":1.0}}"#).unwrap();
        assert_eq!(p.providers[0].name, "b");
    }

    #[test]
    fn legacy_weights_are_fractions_in_key_order() {
        let p = parse_policy("p", r#"{"weights":{"z":0.25,"a":0.75}}"#).unwrap();
        let names: Vec<_> = p.providers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "z"]);
        assert_eq!(p.providers[0].weight, 750_000);
    }

    #[test]
    fn refusals_name_field_and_rule() {
        let e = parse_policy("p", r#"{"providers":[{"name":"a","weight":101}]}"#).unwrap_err();
        assert_eq!(e.field, "providers[0].weight");
        assert!(e.rule.contains("0-100"), "{e}");
        let e = parse_policy("p", r#"{"weights":{"a":"x"}}"#).unwrap_err();
        assert_eq!(e.field, "weights.a");
        let e = parse_policy("p", r#"[1]"#).unwrap_err();
        assert_eq!(e.field, "$");
        let e = parse_policy("p", "{").unwrap_err();
        assert_eq!(e.field, "$");
        let e = parse_policy("p", r#"{"providers":[]}"#).unwrap_err();
        assert_eq!(e.field, "providers");
        let cases = [
            (r#"{"providers":{}}"#, "providers"),
            (
                r#"{"providers":[{"name":"a","weight":1.5}]}"#,
                "providers[0].weight",
            ),
            (
                r#"{"providers":[{"name":"a","weight":-1}]}"#,
                "providers[0].weight",
            ),
            (r#"{"providers":[{"weight":1}]}"#, "providers[0].name"),
            (
                r#"{"providers":[{"name":"a","weight":1},{"name":"a","weight":1}]}"#,
                "providers[1].name",
            ),
            (r#"{"weights":{"a b":0.5}}"#, "weights.a b"),
            (r#"{"weights":[]}"#, "weights"),
            (r#"{"version":2,"weights":{"a":1}}"#, "version"),
            (r#"{"fallback":{"provider":""}}"#, "fallback.provider"),
            (r#"{"fallback":"x"}"#, "fallback"),
            (
                r#"{"fallback":{"provider":"x","conditions":[1]}}"#,
                "fallback.conditions[0]",
            ),
            (
                r#"{"fallback":{"provider":"x","conditions":"timeout"}}"#,
                "fallback.conditions",
            ),
            (r#"{"weights":{"a":1},"policy_id":"other"}"#, "policy_id"),
            (r#"{"weights":{"a":1},"tenant_id":"a b"}"#, "tenant_id"),
            (
                r#"{"weights":{"a":1},"sticky":{"enabled":true,"ttl":"10d"}}"#,
                "sticky.ttl",
            ),
        ];
        for (doc, field) in cases {
            let e = parse_policy("p", doc).unwrap_err();
            assert_eq!(e.field, field, "{doc}: {e}");
        }
    }

    #[test]
    fn legacy_fallback_alone_is_a_policy() {
        let p = parse_policy("p", r#"{"fallback":{"provider":"local_llm"}}"#).unwrap();
        assert_eq!(p.fallback.as_deref(), Some("local_llm"));
        assert!(p.providers.is_empty());
        assert_eq!(p.fallback_rules.len(), 1);
        assert_eq!(
            p.fallback_rules[0].when,
            json!({"status": ["all_providers_failed"]})
        );
    }

    #[test]
    fn fallbacks_win_over_the_legacy_rule_but_keep_the_legacy_provider() {
        let p = parse_policy(
            "p",
            r#"{"weights":{"a":1},
                "fallbacks":[{"when":{"status":["timeout"]},"retry":2,"to":"b"}],
                "fallback":{"provider":"local_llm","conditions":["timeout"]}}"#,
        )
        .unwrap();
        assert_eq!(p.fallback_rules.len(), 1);
        assert_eq!(p.fallback_rules[0].to, "b");
        assert_eq!(p.fallback.as_deref(), Some("local_llm"));
    }

    #[test]
    fn provider_at_walks_cumulative_ranges() {
        let p = parse_policy(
            "p",
            r#"{"providers":[{"name":"a","weight":10},{"name":"b","weight":90}]}"#,
        )
        .unwrap();
        assert_eq!(p.provider_at(0).unwrap().name, "a");
        assert_eq!(p.provider_at(99_999).unwrap().name, "a");
        assert_eq!(p.provider_at(100_000).unwrap().name, "b");
        assert_eq!(p.provider_at(999_999).unwrap().name, "b");
        assert!(p.provider_at(1_000_000).is_none());
    }

    #[test]
    fn schema_only_keys_are_silent_and_unknown_keys_are_listed() {
        let p = parse_policy(
            "p",
            r#"{"version":"1.0","timeout_ms":5000,"health_check":{"enabled":true},
                "defaults":{},"escalate_on":[],"metadata":{"x":1},
                "providers":[{"name":"a","weight":100,"priority":3,"region":"eu"}],
                "extensions":{"pre":[]},"owner":"team-a",
                "pre":[{"id":"n","timeout_ms":10,"retry":1,"stage":2}],
                "sticky":{"enabled":false,"sticky_for":"ever"}}"#,
        )
        .unwrap();
        assert_eq!(
            p.ignored_keys,
            [
                "extensions",
                "owner",
                "providers[0].region",
                "sticky.sticky_for",
                "pre[0].stage"
            ]
        );
        assert!(parse_policy("p", r#"{"weights":{"a":1}}"#)
            .unwrap()
            .ignored_keys
            .is_empty());
    }

    #[test]
    fn a_full_document_parses_into_typed_sections() {
        let p = parse_policy_value(
            "full",
            &json!({
                "version": "1.0", "policy_id": "full", "tenant_id": "acme",
                "providers": [{"name": "openai", "weight": 70}, {"name": "anthropic", "weight": 30}],
                "fallbacks": [{"when": {"status": ["timeout", "5xx"]}, "retry": 2,
                    "backoff": {"strategy": "linear", "base_ms": 50, "max_ms": 500, "jitter": false},
                    "to": "anthropic"}],
                "sticky": {"enabled": true, "session_key": "user_id", "ttl": "10m"},
                "circuit_breaker": {"enabled": true, "error_rate_threshold": 0.4},
                "rate_limit": {"enabled": true, "requests_per_second": 10},
                "pre": [{"id": "normalize_text", "mode": "required"}],
                "validators": [{"id": "pii_guard", "on_fail": "ignore"}],
                "post": [{"id": "mask_pii"}]
            }),
        )
        .unwrap();
        let rule = &p.fallback_rules[0];
        assert_eq!((rule.retry, rule.to.as_str()), (2, "anthropic"));
        assert_eq!(rule.backoff.strategy, BackoffStrategy::Linear);
        assert_eq!(
            (
                rule.backoff.base_ms,
                rule.backoff.max_ms,
                rule.backoff.jitter
            ),
            (50, 500, false)
        );
        let sticky = p.sticky.as_ref().unwrap();
        assert_eq!(
            (sticky.session_key.as_str(), sticky.ttl_seconds),
            ("user_id", 600)
        );
        assert_eq!(
            p.circuit_breaker,
            Some(CircuitBreaker {
                error_rate_threshold_permille: 400,
                ..CircuitBreaker::DEFAULT
            })
        );
        let rl = p.rate_limit.unwrap();
        assert_eq!((rl.requests_per_second, rl.burst), (10, 50));
        assert_eq!(p.pre[0].mode, ExtensionMode::Required);
        assert_eq!(p.validators[0].on_fail, OnFail::Ignore);
        assert_eq!(p.post[0].mode, ExtensionMode::Optional);
        assert_eq!(p.pipeline_len(), 3);
        assert!(p.fallback.is_none());
    }

    #[test]
    fn fallback_rules_alone_make_a_routable_policy() {
        let p = parse_policy("p", r#"{"fallbacks":[{"when":{},"retry":0,"to":"b"}]}"#).unwrap();
        assert!(p.providers.is_empty());
        assert_eq!(p.fallback_rules.len(), 1);
    }

    #[test]
    fn list_sizes_are_bounded() {
        let providers: Vec<Value> = (0..=MAX_PROVIDERS)
            .map(|i| json!({"name": format!("p{i}"), "weight": 1}))
            .collect();
        let e = parse_policy_value("p", &json!({ "providers": providers })).unwrap_err();
        assert_eq!(e.field, "providers");
        let rules: Vec<Value> = (0..=crate::policy::MAX_FALLBACK_RULES)
            .map(|_| json!({"when": {}, "to": "b"}))
            .collect();
        let e =
            parse_policy_value("p", &json!({"weights": {"a": 1}, "fallbacks": rules})).unwrap_err();
        assert_eq!(e.field, "fallbacks");
    }
}
