//! `fallbacks`: the ordered retry-then-fallback rules, each with a stable `rule_id`.

use serde_json::{Map, Value};

use crate::hash::fnv1a64;

use super::error::{refuse, PolicyError};
use super::fields::{item, Section};
use super::types::{Backoff, BackoffStrategy, FallbackRule, MAX_FALLBACK_RULES};
use super::when;

const RULE_KEYS: &[&str] = &["when", "retry", "to", "backoff"];
const BACKOFF_KEYS: &[&str] = &["strategy", "base_ms", "max_ms", "jitter"];
const STRATEGIES: &[(&str, BackoffStrategy)] = &[
    ("exponential", BackoffStrategy::Exponential),
    ("linear", BackoffStrategy::Linear),
    ("fixed", BackoffStrategy::Fixed),
];

/// The `fallbacks` list of the document.
pub(super) fn parse_fallbacks(
    root: &Section<'_>,
    ignored: &mut Vec<String>,
) -> Result<Vec<FallbackRule>, PolicyError> {
    let list = root.list("fallbacks")?;
    if list.len() > MAX_FALLBACK_RULES {
        return Err(refuse(
            "fallbacks",
            format!("at most {MAX_FALLBACK_RULES} rules"),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, value)| parse_rule(&item("fallbacks", i), value, ignored))
        .collect()
}

fn parse_rule(
    path: &str,
    value: &Value,
    ignored: &mut Vec<String>,
) -> Result<FallbackRule, PolicyError> {
    let rule = Section::new(path, value)?;
    rule.note_unknown(RULE_KEYS, ignored);
    let when = rule
        .get("when")
        .ok_or_else(|| refuse(rule.field("when"), "is required (use {} to always match)"))?;
    when::validate(when, &rule.field("when"))?;
    let retry = rule.uint("retry", 0..=10, 1u32)?;
    let to = rule.name("to")?;
    let backoff = match rule.get("backoff") {
        None => Backoff::DEFAULT,
        Some(value) => parse_backoff(&rule.field("backoff"), value, ignored)?,
    };
    Ok(new_rule(when.clone(), retry, to, backoff))
}

fn parse_backoff(
    path: &str,
    value: &Value,
    ignored: &mut Vec<String>,
) -> Result<Backoff, PolicyError> {
    let b = Section::new(path, value)?;
    b.note_unknown(BACKOFF_KEYS, ignored);
    let d = Backoff::DEFAULT;
    let backoff = Backoff {
        strategy: b.choice("strategy", STRATEGIES, d.strategy)?,
        base_ms: b.uint("base_ms", 1..=10_000, d.base_ms)?,
        max_ms: b.uint("max_ms", 1..=60_000, d.max_ms)?,
        jitter: b.bool("jitter", d.jitter)?,
    };
    if backoff.max_ms < backoff.base_ms {
        return Err(refuse(
            b.field("max_ms"),
            format!("must be at least base_ms ({})", backoff.base_ms),
        ));
    }
    Ok(backoff)
}

/// The rule the legacy `fallback {provider, conditions}` object stands for.
pub(super) fn legacy_rule(provider: &str, conditions: &[String]) -> FallbackRule {
    let status: Vec<Value> = if conditions.is_empty() {
        vec![Value::from("all_providers_failed")]
    } else {
        conditions.iter().map(|c| Value::from(c.as_str())).collect()
    };
    let mut when = Map::new();
    when.insert("status".into(), Value::Array(status));
    new_rule(
        Value::Object(when),
        1,
        provider.to_string(),
        Backoff::DEFAULT,
    )
}

fn new_rule(when: Value, retry: u32, to: String, backoff: Backoff) -> FallbackRule {
    let mut rule = FallbackRule {
        rule_id: String::new(),
        when,
        retry,
        to,
        backoff,
    };
    rule.rule_id = rule_id(&rule);
    rule
}

/// FNV-1a-64 of the rule's canonical JSON: keys sorted, no whitespace, defaults filled in,
/// so that the same rule gets the same id whatever its spelling or position.
fn rule_id(rule: &FallbackRule) -> String {
    let mut backoff = Map::new();
    backoff.insert("base_ms".into(), rule.backoff.base_ms.into());
    backoff.insert("jitter".into(), rule.backoff.jitter.into());
    backoff.insert("max_ms".into(), rule.backoff.max_ms.into());
    backoff.insert("strategy".into(), rule.backoff.strategy.as_str().into());
    let mut doc = Map::new();
    doc.insert("backoff".into(), Value::Object(backoff));
    doc.insert("retry".into(), rule.retry.into());
    doc.insert("to".into(), rule.to.as_str().into());
    doc.insert("when".into(), rule.when.clone());
    let mut text = String::new();
    canonical(&Value::Object(doc), &mut text);
    format!("{:016x}", fnv1a64(text.as_bytes()))
}

fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(obj) => {
            let mut keys: Vec<&String> = obj.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(key.as_str()).to_string());
                out.push(':');
                canonical(&obj[key.as_str()], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rules(doc: Value) -> Result<Vec<FallbackRule>, PolicyError> {
        parse_fallbacks(&Section::new("", &doc).unwrap(), &mut Vec::new())
    }

    #[test]
    fn defaults_are_filled_in() {
        let r = rules(json!({"fallbacks": [{"when": {"status": ["timeout"]}, "to": "anthropic"}]}))
            .unwrap();
        assert_eq!(r[0].retry, 1);
        assert_eq!(r[0].backoff, Backoff::DEFAULT);
        let r = rules(json!({"fallbacks": [{"when": {}, "to": "b", "retry": 0,
            "backoff": {"strategy": "linear"}}]}))
        .unwrap();
        assert_eq!(r[0].retry, 0);
        assert_eq!(r[0].backoff.strategy, BackoffStrategy::Linear);
        assert_eq!(r[0].backoff.base_ms, 100);
        assert_eq!(r[0].backoff.max_ms, 5_000);
        assert!(r[0].backoff.jitter);
    }

    #[test]
    fn rule_ids_are_stable_and_ignore_spelling() {
        let a = rules(json!({"fallbacks": [
            {"when": {"status": ["timeout"], "type": "chat"}, "to": "b"},
            {"to": "b", "retry": 1, "when": {"type": "chat", "status": ["timeout"]},
             "backoff": {"base_ms": 100}},
            {"when": {"status": ["timeout"], "type": "chat"}, "to": "b", "retry": 2}
        ]}))
        .unwrap();
        assert_eq!(a[0].rule_id, a[1].rule_id);
        assert_ne!(a[0].rule_id, a[2].rule_id);
        assert_eq!(a[0].rule_id.len(), 16);
        assert!(a[0].rule_id.bytes().all(|b| b.is_ascii_hexdigit()));
        // Pinned: a rule id is part of the retry contract with callers
        // (`retry_attempts_<rule_id>`), so it must not drift between releases.
        let pinned =
            rules(json!({"fallbacks": [{"when": {"status": ["timeout"]}, "to": "anthropic"}]}))
                .unwrap();
        let canonical_text = r#"{"backoff":{"base_ms":100,"jitter":true,"max_ms":5000,"strategy":"exponential"},"retry":1,"to":"anthropic","when":{"status":["timeout"]}}"#;
        assert_eq!(
            pinned[0].rule_id,
            format!("{:016x}", fnv1a64(canonical_text.as_bytes()))
        );
        // And the hash itself, so that a change to `crate::hash` cannot move it either.
        assert_eq!(pinned[0].rule_id, "d1cf24ae7ad313ef");
    }

    #[test]
    fn refusals_name_the_rule_field() {
        let cases = [
            (json!({"fallbacks": {}}), "fallbacks"),
            (json!({"fallbacks": [1]}), "fallbacks[0]"),
            (json!({"fallbacks": [{"to": "a"}]}), "fallbacks[0].when"),
            (
                json!({"fallbacks": [{"when": {}, "to": ""}]}),
                "fallbacks[0].to",
            ),
            (json!({"fallbacks": [{"when": {}}]}), "fallbacks[0].to"),
            (
                json!({"fallbacks": [{"when": {}, "to": "a", "retry": 11}]}),
                "fallbacks[0].retry",
            ),
            (
                json!({"fallbacks": [{"when": {}, "to": "a", "retry": -1}]}),
                "fallbacks[0].retry",
            ),
            (
                json!({"fallbacks": [{"when": {}, "to": "a"}, {"when": {}, "to": "a",
                "backoff": {"base_ms": 0}}]}),
                "fallbacks[1].backoff.base_ms",
            ),
            (
                json!({"fallbacks": [{"when": {}, "to": "a", "backoff": {"max_ms": 60001}}]}),
                "fallbacks[0].backoff.max_ms",
            ),
            (
                json!({"fallbacks": [{"when": {}, "to": "a", "backoff": {"base_ms": 500, "max_ms": 400}}]}),
                "fallbacks[0].backoff.max_ms",
            ),
            (
                json!({"fallbacks": [{"when": {}, "to": "a", "backoff": {"strategy": "random"}}]}),
                "fallbacks[0].backoff.strategy",
            ),
            (
                json!({"fallbacks": [{"when": {}, "to": "a", "backoff": {"jitter": "yes"}}]}),
                "fallbacks[0].backoff.jitter",
            ),
            (
                json!({"fallbacks": [{"when": {}, "to": "a", "backoff": 5}]}),
                "fallbacks[0].backoff",
            ),
            (
                json!({"fallbacks": [{"when": {">": [1]}, "to": "a"}]}),
                "fallbacks[0].when.>",
            ),
        ];
        for (doc, field) in cases {
            let e = rules(doc.clone()).unwrap_err();
            assert_eq!(e.field, field, "{doc}: {e}");
        }
    }

    #[test]
    fn unknown_rule_keys_are_reported() {
        let doc = json!({"fallbacks": [{"when": {}, "to": "a", "match": "x",
            "backoff": {"factor": 2}}]});
        let mut ignored = Vec::new();
        parse_fallbacks(&Section::new("", &doc).unwrap(), &mut ignored).unwrap();
        assert_eq!(
            ignored,
            ["fallbacks[0].match", "fallbacks[0].backoff.factor"]
        );
    }

    #[test]
    fn the_legacy_rule_defaults_its_conditions() {
        let r = legacy_rule("local_llm", &[]);
        assert_eq!(r.when, json!({"status": ["all_providers_failed"]}));
        assert_eq!((r.retry, r.to.as_str()), (1, "local_llm"));
        let r = legacy_rule("local_llm", &["timeout".to_string()]);
        assert_eq!(r.when, json!({"status": ["timeout"]}));
    }

    #[test]
    fn backoff_delays_follow_the_strategy_and_cap() {
        let exp = Backoff {
            jitter: false,
            ..Backoff::DEFAULT
        };
        let delays: Vec<u64> = (1..=8).map(|a| exp.delay_ms(a, |_| 0)).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(exp.delay_ms(60, |_| 0), 5000);
        let lin = Backoff {
            strategy: BackoffStrategy::Linear,
            ..exp
        };
        assert_eq!(lin.delay_ms(3, |_| 0), 300);
        let fixed = Backoff {
            strategy: BackoffStrategy::Fixed,
            ..exp
        };
        assert_eq!(fixed.delay_ms(9, |_| 0), 100);
        let jittered = Backoff::DEFAULT;
        // Jitter draws below 10% of the delay (here 40 for attempt 3's 400 ms).
        let mut asked = 0;
        assert_eq!(
            jittered.delay_ms(3, |n| {
                asked = n;
                n - 1
            }),
            439
        );
        assert_eq!(asked, 40);
    }
}
