//! Reading one JSON object of the policy with typed accessors that refuse with the field's
//! path and the rule. Every section parser goes through these, so refusals read alike.
//!
//! `null` counts as absent everywhere: `"backoff": null` means "no backoff given".

use std::ops::RangeInclusive;

use serde_json::{Map, Number, Value};

use super::error::{refuse, PolicyError};

/// The path of `key` inside the object at `path` (the root's path is empty).
pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The path of item `i` of the list at `path`.
pub(super) fn item(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// One JSON object of the document and where it sits.
pub(super) struct Section<'a> {
    path: String,
    obj: &'a Map<String, Value>,
}

impl<'a> Section<'a> {
    pub(super) fn new(path: impl Into<String>, value: &'a Value) -> Result<Self, PolicyError> {
        let path = path.into();
        match value {
            Value::Object(obj) => Ok(Section { path, obj }),
            _ => Err(refuse(
                if path.is_empty() { "$" } else { path.as_str() },
                "must be a JSON object",
            )),
        }
    }

    pub(super) fn field(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The value under `key`, unless absent or `null`.
    pub(super) fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    /// Appends the path of every key not in `known` to `ignored`, in document order.
    pub(super) fn note_unknown(&self, known: &[&str], ignored: &mut Vec<String>) {
        ignored.extend(
            self.obj
                .keys()
                .filter(|k| !known.contains(&k.as_str()))
                .map(|k| self.field(k)),
        );
    }

    /// An integer within `range`, `default` when absent.
    pub(super) fn uint<T: TryFrom<u64>>(
        &self,
        key: &str,
        range: RangeInclusive<u64>,
        default: T,
    ) -> Result<T, PolicyError> {
        Ok(self.opt_uint(key, range)?.unwrap_or(default))
    }

    /// An integer within `range`, if present.
    pub(super) fn opt_uint<T: TryFrom<u64>>(
        &self,
        key: &str,
        range: RangeInclusive<u64>,
    ) -> Result<Option<T>, PolicyError> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        let rule = || {
            refuse(
                self.field(key),
                format!(
                    "must be an integer within {}-{}",
                    range.start(),
                    range.end()
                ),
            )
        };
        let n = value
            .as_u64()
            .filter(|n| range.contains(n))
            .ok_or_else(rule)?;
        T::try_from(n).map(Some).map_err(|_| rule())
    }

    /// A boolean, `default` when absent.
    pub(super) fn bool(&self, key: &str, default: bool) -> Result<bool, PolicyError> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(refuse(self.field(key), "must be true or false")),
        }
    }

    /// A boolean that must be given.
    pub(super) fn required_bool(&self, key: &str) -> Result<bool, PolicyError> {
        match self.get(key) {
            Some(Value::Bool(b)) => Ok(*b),
            None => Err(refuse(self.field(key), "is required (true or false)")),
            Some(_) => Err(refuse(self.field(key), "must be true or false")),
        }
    }

    /// A provider or extension name that must be given (see [`valid_name`]).
    pub(super) fn name(&self, key: &str) -> Result<String, PolicyError> {
        match self.get(key) {
            Some(Value::String(s)) if valid_name(s) => Ok(s.clone()),
            Some(Value::String(_)) => Err(refuse(self.field(key), NAME_RULE)),
            _ => Err(refuse(self.field(key), "is required and must be a string")),
        }
    }

    /// One of a fixed set of words, `default` when absent.
    pub(super) fn choice<T: Copy>(
        &self,
        key: &str,
        options: &[(&str, T)],
        default: T,
    ) -> Result<T, PolicyError> {
        let Some(value) = self.get(key) else {
            return Ok(default);
        };
        value
            .as_str()
            .and_then(|s| options.iter().find(|(word, _)| *word == s))
            .map(|(_, t)| *t)
            .ok_or_else(|| {
                let words: Vec<&str> = options.iter().map(|(w, _)| *w).collect();
                refuse(
                    self.field(key),
                    format!("must be one of {}", words.join(", ")),
                )
            })
    }

    /// A list, empty when absent.
    pub(super) fn list(&self, key: &str) -> Result<&'a [Value], PolicyError> {
        match self.get(key) {
            None => Ok(&[]),
            Some(Value::Array(items)) => Ok(items),
            Some(_) => Err(refuse(self.field(key), "must be a list")),
        }
    }

    /// An object, empty when absent.
    pub(super) fn object(&self, key: &str) -> Result<Map<String, Value>, PolicyError> {
        match self.get(key) {
            None => Ok(Map::new()),
            Some(Value::Object(obj)) => Ok(obj.clone()),
            Some(_) => Err(refuse(self.field(key), "must be a JSON object")),
        }
    }
}

/// A fraction of 1.0 in `0.0..=1.0`, as an integer number of `scale`ths (rounded to the
/// nearest). The policy module's only floating-point arithmetic: it happens once, at parse
/// time, and IEEE 754 makes it the same on every machine; decisions then see integers.
pub(super) fn fraction(value: &Value, field: &str, scale: u64) -> Result<u64, PolicyError> {
    let f = value.as_number().and_then(Number::as_f64);
    match f {
        Some(f) if (0.0..=1.0).contains(&f) => Ok((f * scale as f64).round() as u64),
        _ => Err(refuse(field, "must be a number within 0.0-1.0")),
    }
}

pub(super) const NAME_RULE: &str = "must be 1-128 characters of [A-Za-z0-9_.:-]";

/// Provider and extension names: 1-128 characters of `[A-Za-z0-9_.:-]`.
pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}
