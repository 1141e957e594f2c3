//! The extension pipeline: `pre`, `validators` and `post` items, and its depth limits.

use serde_json::Value;

use super::error::{refuse, PolicyError};
use super::fields::{item, Section};
use super::types::{
    ExtensionMode, OnFail, ProcessorItem, ValidatorItem, MAX_PIPELINE_DEPTH, MAX_PIPELINE_STAGE,
};
use super::when;

/// Keys of an item; `timeout_ms` and `retry` are schema-only overrides, accepted unread.
const PROCESSOR_KEYS: &[&str] = &["id", "mode", "config", "when", "timeout_ms", "retry"];
const VALIDATOR_KEYS: &[&str] = &["id", "on_fail", "config", "when", "timeout_ms", "retry"];
const MODES: &[(&str, ExtensionMode)] = &[
    ("required", ExtensionMode::Required),
    ("optional", ExtensionMode::Optional),
];
const ON_FAIL: &[(&str, OnFail)] = &[
    ("block", OnFail::Block),
    ("warn", OnFail::Warn),
    ("ignore", OnFail::Ignore),
];

#[derive(Debug)]
pub(super) struct Pipeline {
    pub pre: Vec<ProcessorItem>,
    pub validators: Vec<ValidatorItem>,
    pub post: Vec<ProcessorItem>,
}

/// The three lists of the document. The limits are checked before the items, total first
/// (upstream's order), and refused with upstream's error codes as the rule.
pub(super) fn parse_pipeline(
    root: &Section<'_>,
    ignored: &mut Vec<String>,
) -> Result<Pipeline, PolicyError> {
    let pre = root.list("pre")?;
    let validators = root.list("validators")?;
    let post = root.list("post")?;
    if pre.len() + validators.len() + post.len() > MAX_PIPELINE_DEPTH {
        return Err(refuse("pre+validators+post", "pipeline_too_deep"));
    }
    for (field, items, code) in [
        ("pre", pre, "too_many_pre_processors"),
        ("validators", validators, "too_many_validators"),
        ("post", post, "too_many_post_processors"),
    ] {
        if items.len() > MAX_PIPELINE_STAGE {
            return Err(refuse(field, code));
        }
    }
    Ok(Pipeline {
        pre: processors("pre", pre, ignored)?,
        validators: validators
            .iter()
            .enumerate()
            .map(|(i, v)| validator(&item("validators", i), v, ignored))
            .collect::<Result<_, _>>()?,
        post: processors("post", post, ignored)?,
    })
}

fn processors(
    list: &str,
    items: &[Value],
    ignored: &mut Vec<String>,
) -> Result<Vec<ProcessorItem>, PolicyError> {
    items
        .iter()
        .enumerate()
        .map(|(i, value)| {
            let s = Section::new(item(list, i), value)?;
            s.note_unknown(PROCESSOR_KEYS, ignored);
            Ok(ProcessorItem {
                id: s.name("id")?,
                mode: s.choice("mode", MODES, ExtensionMode::Optional)?,
                config: s.object("config")?,
                when: condition(&s)?,
            })
        })
        .collect()
}

fn validator(
    path: &str,
    value: &Value,
    ignored: &mut Vec<String>,
) -> Result<ValidatorItem, PolicyError> {
    let s = Section::new(path, value)?;
    s.note_unknown(VALIDATOR_KEYS, ignored);
    Ok(ValidatorItem {
        id: s.name("id")?,
        on_fail: s.choice("on_fail", ON_FAIL, OnFail::Block)?,
        config: s.object("config")?,
        when: condition(&s)?,
    })
}

fn condition(s: &Section<'_>) -> Result<Option<Value>, PolicyError> {
    match s.get("when") {
        None => Ok(None),
        Some(w) => {
            when::validate(w, &s.field("when"))?;
            Ok(Some(w.clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pipeline(doc: Value) -> Result<Pipeline, PolicyError> {
        parse_pipeline(&Section::new("", &doc).unwrap(), &mut Vec::new())
    }

    fn items(n: usize) -> Value {
        Value::Array((0..n).map(|i| json!({"id": format!("ext_{i}")})).collect())
    }

    #[test]
    fn defaults_and_fields() {
        let p = pipeline(json!({
            "pre": [{"id": "normalize_text", "config": {"lowercase": true},
                     "when": {"lang": ["en"]}, "timeout_ms": 50}],
            "validators": [{"id": "pii_guard"}, {"id": "tone", "on_fail": "warn"}],
            "post": [{"id": "mask_pii", "mode": "required"}]
        }))
        .unwrap();
        assert_eq!(p.pre[0].mode, ExtensionMode::Optional);
        assert_eq!(p.pre[0].config["lowercase"], json!(true));
        assert_eq!(p.pre[0].when, Some(json!({"lang": ["en"]})));
        assert_eq!(p.validators[0].on_fail, OnFail::Block);
        assert_eq!(p.validators[1].on_fail, OnFail::Warn);
        assert!(p.validators[0].config.is_empty());
        assert_eq!(p.post[0].mode, ExtensionMode::Required);
        assert_eq!(p.post[0].when, None);
    }

    #[test]
    fn limits_use_upstream_codes_total_first() {
        let e = pipeline(json!({"pre": items(5), "validators": items(5), "post": items(1)}))
            .unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.rule.as_str()),
            ("pre+validators+post", "pipeline_too_deep")
        );
        let e = pipeline(json!({"pre": items(6)})).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.rule.as_str()),
            ("pre", "too_many_pre_processors")
        );
        let e = pipeline(json!({"validators": items(6)})).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.rule.as_str()),
            ("validators", "too_many_validators")
        );
        let e = pipeline(json!({"post": items(6), "pre": items(1)})).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.rule.as_str()),
            ("post", "too_many_post_processors")
        );
        // Exactly at the limits is fine.
        pipeline(json!({"pre": items(5), "validators": items(5)})).unwrap();
        pipeline(json!({"pre": items(4), "validators": items(3), "post": items(3)})).unwrap();
    }

    #[test]
    fn item_refusals_name_the_item() {
        let cases = [
            (json!({"pre": {}}), "pre"),
            (json!({"pre": ["x"]}), "pre[0]"),
            (json!({"pre": [{"mode": "required"}]}), "pre[0].id"),
            (json!({"pre": [{"id": "a b"}]}), "pre[0].id"),
            (
                json!({"pre": [{"id": "a", "mode": "sometimes"}]}),
                "pre[0].mode",
            ),
            (
                json!({"post": [{"id": "a"}, {"id": "b", "config": []}]}),
                "post[1].config",
            ),
            (
                json!({"validators": [{"id": "a", "on_fail": "explode"}]}),
                "validators[0].on_fail",
            ),
            (
                json!({"validators": [{"id": "a", "when": {"in": [1, 2]}}]}),
                "validators[0].when.in[1]",
            ),
            (
                json!({"post": [{"id": "a", "when": "always"}]}),
                "post[0].when",
            ),
        ];
        for (doc, field) in cases {
            let e = pipeline(doc.clone()).unwrap_err();
            assert_eq!(e.field, field, "{doc}: {e}");
        }
    }
}
