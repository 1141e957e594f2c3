//! Parsing and validating the policy JSON. Every refusal names the field and the rule.

use serde_json::Value;

use super::{Policy, ProviderWeight, WEIGHT_ONE};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid policy: field `{field}`: {rule}")]
pub struct PolicyError {
    pub field: String,
    pub rule: String,
}

fn refuse(field: impl Into<String>, rule: impl Into<String>) -> PolicyError {
    PolicyError {
        field: field.into(),
        rule: rule.into(),
    }
}

/// Parse a policy document. `policy_id` names it when the document does not.
pub fn parse_policy(policy_id: &str, text: &str) -> Result<Policy, PolicyError> {
    let doc: Value =
        serde_json::from_str(text).map_err(|e| refuse("$", format!("must be JSON: {e}")))?;
    let obj = doc
        .as_object()
        .ok_or_else(|| refuse("$", "must be a JSON object"))?;

    let version = match obj.get("version") {
        None => "1.0".to_string(),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => return Err(refuse("version", "must be a non-empty string")),
    };

    let providers = match (obj.get("providers"), obj.get("weights")) {
        (Some(list @ Value::Array(_)), _) => parse_providers(list)?,
        (Some(_), _) => return Err(refuse("providers", "must be a list")),
        (None, Some(map)) => parse_weights(map)?,
        (None, None) => Vec::new(),
    };

    let fallback = match obj.get("fallback") {
        None | Some(Value::Null) => None,
        Some(Value::Object(f)) => match f.get("provider") {
            Some(Value::String(p)) if !p.is_empty() => Some(p.clone()),
            _ => return Err(refuse("fallback.provider", "must be a non-empty string")),
        },
        Some(_) => return Err(refuse("fallback", "must be an object")),
    };

    if providers.iter().all(|p| p.weight == 0) && fallback.is_none() {
        return Err(refuse(
            "providers",
            "needs at least one provider with a positive weight, or a fallback",
        ));
    }

    Ok(Policy {
        policy_id: policy_id.to_string(),
        version,
        providers,
        fallback,
    })
}

/// `providers: [{"name": .., "weight": ..}]`. An integer weight is a percentage
/// (0-100); a float is a fraction of 1.0 (upstream's rule).
fn parse_providers(list: &Value) -> Result<Vec<ProviderWeight>, PolicyError> {
    let items = list.as_array().map(Vec::as_slice).unwrap_or_default();
    let mut out: Vec<ProviderWeight> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = |k: &str| format!("providers[{i}].{k}");
        let entry = item
            .as_object()
            .ok_or_else(|| refuse(format!("providers[{i}]"), "must be an object"))?;
        let name = match entry.get("name") {
            Some(Value::String(n)) if valid_provider_name(n) => n.clone(),
            Some(Value::String(_)) => {
                return Err(refuse(
                    field("name"),
                    "must be 1-128 characters of [A-Za-z0-9_.:-]",
                ))
            }
            _ => return Err(refuse(field("name"), "is required and must be a string")),
        };
        let weight = match entry.get("weight") {
            Some(Value::Number(n)) if n.is_u64() => {
                let w = n.as_u64().unwrap_or(u64::MAX);
                if w > 100 {
                    return Err(refuse(field("weight"), "an integer weight must be 0-100"));
                }
                w * (WEIGHT_ONE / 100)
            }
            Some(Value::Number(n)) => fraction(n.as_f64(), &field("weight"))?,
            _ => return Err(refuse(field("weight"), "is required and must be a number")),
        };
        if out.iter().any(|p| p.name == name) {
            return Err(refuse(
                field("name"),
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
    let mut names: Vec<&String> = obj.keys().collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let field = format!("weights.{name}");
            if !valid_provider_name(name) {
                return Err(refuse(
                    field,
                    "provider name must be 1-128 characters of [A-Za-z0-9_.:-]",
                ));
            }
            let weight = match &obj[name.as_str()] {
                Value::Number(n) => fraction(n.as_f64(), &field)?,
                _ => return Err(refuse(field, "must be a number")),
            };
            Ok(ProviderWeight {
                name: name.clone(),
                weight,
            })
        })
        .collect()
}

fn fraction(value: Option<f64>, field: &str) -> Result<u64, PolicyError> {
    match value {
        Some(f) if (0.0..=1.0).contains(&f) => Ok((f * WEIGHT_ONE as f64).round() as u64),
        _ => Err(refuse(field, "a fractional weight must be within 0.0-1.0")),
    }
}

fn valid_provider_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let e = parse_policy("p", r#"{"providers":[]}"#).unwrap_err();
        assert_eq!(e.field, "providers");
    }

    #[test]
    fn legacy_fallback_alone_is_a_policy() {
        let p = parse_policy("p", r#"{"fallback":{"provider":"local_llm"}}"#).unwrap();
        assert_eq!(p.fallback.as_deref(), Some("local_llm"));
        assert!(p.providers.is_empty());
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
}
