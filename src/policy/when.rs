//! The condition DSL (`when`) of fallback rules and extension items (spec 5.7).
//!
//! A condition is a JSON object whose entries must all hold (AND):
//! - `"key": [v1, v2]`: the context's `key` equals one of the values;
//! - `"key": v`: the context's `key` equals `v`;
//! - `"op": [lhs, rhs]` with `op` one of `==`, `!=`, `>`, `<`, `>=`, `<=`, `in`: each
//!   operand is a literal or `{"var": "context.a.b"}` (the `context.` prefix is optional),
//!   a dotted path into the context (a numeric segment indexes a list).
//!
//! A missing key or an undefined operand makes the entry false (`!=` included). `{}` is
//! true; anything but an object is false. Numbers compare by value (`1 == 1.0`), exactly,
//! whether integer or float; strings compare by code point; ordering between other types,
//! or between mixed types, is false. `in` needs a list on the right.
//!
//! [`validate`] runs at parse time, so a policy never carries a malformed operator form;
//! [`matches`] still treats anything malformed as false rather than panicking.

use std::cmp::Ordering;

use serde_json::{Map, Number, Value};

use super::error::{refuse, PolicyError};
use super::fields::item;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    In,
}

impl Op {
    fn parse(key: &str) -> Option<Op> {
        Some(match key {
            "==" => Op::Eq,
            "!=" => Op::Ne,
            ">" => Op::Gt,
            "<" => Op::Lt,
            ">=" => Op::Ge,
            "<=" => Op::Le,
            "in" => Op::In,
            _ => return None,
        })
    }
}

/// An operand as written.
enum Operand<'a> {
    Var(&'a str),
    /// An object with a `var` key that is not exactly `{"var": "<path>"}`.
    BadVar,
    Literal(&'a Value),
}

fn operand(value: &Value) -> Operand<'_> {
    match value {
        Value::Object(obj) if obj.contains_key("var") => match obj.get("var") {
            Some(Value::String(path)) if obj.len() == 1 && valid_path(path) => Operand::Var(path),
            _ => Operand::BadVar,
        },
        other => Operand::Literal(other),
    }
}

fn strip_context(path: &str) -> &str {
    path.strip_prefix("context.").unwrap_or(path)
}

fn valid_path(path: &str) -> bool {
    strip_context(path)
        .split('.')
        .all(|segment| !segment.is_empty())
}

/// Refuses a condition that [`matches`] could only ever treat as malformed. `field` is the
/// condition's path, used in the error.
pub fn validate(when: &Value, field: &str) -> Result<(), PolicyError> {
    let Value::Object(conditions) = when else {
        return Err(refuse(field, "must be a JSON object of conditions"));
    };
    for (key, expected) in conditions {
        let field = format!("{field}.{key}");
        if key.is_empty() {
            return Err(refuse(field, "a condition key must not be empty"));
        }
        let Some(op) = Op::parse(key) else {
            if matches!(expected, Value::Array(any) if any.is_empty()) {
                return Err(refuse(field, "a list of accepted values must not be empty"));
            }
            continue;
        };
        let Some([lhs, rhs]) = pair(expected) else {
            return Err(refuse(
                field,
                format!("operator `{key}` takes a list of two operands [lhs, rhs]"),
            ));
        };
        for (i, side) in [lhs, rhs].into_iter().enumerate() {
            if let Operand::BadVar = operand(side) {
                return Err(refuse(
                    item(&field, i),
                    "a variable must be {\"var\": \"<dotted.path>\"} with non-empty segments",
                ));
            }
        }
        if op == Op::In && matches!(operand(rhs), Operand::Literal(v) if !v.is_array()) {
            return Err(refuse(
                item(&field, 1),
                "`in` needs a list (or a variable holding one) on the right",
            ));
        }
    }
    Ok(())
}

/// Whether `when` holds for `context` (see the module documentation).
pub fn matches(when: &Value, context: &Map<String, Value>) -> bool {
    let Value::Object(conditions) = when else {
        return false;
    };
    conditions
        .iter()
        .all(|(key, expected)| match Op::parse(key) {
            Some(op) => operator(op, expected, context),
            None => match (context.get(key), expected) {
                (None, _) => false,
                (Some(actual), Value::Array(any)) => any.iter().any(|v| equal(actual, v)),
                (Some(actual), v) => equal(actual, v),
            },
        })
}

fn pair(value: &Value) -> Option<[&Value; 2]> {
    match value.as_array().map(Vec::as_slice) {
        Some([lhs, rhs]) => Some([lhs, rhs]),
        _ => None,
    }
}

fn operator(op: Op, operands: &Value, context: &Map<String, Value>) -> bool {
    let Some([lhs, rhs]) = pair(operands) else {
        return false;
    };
    let (Some(l), Some(r)) = (resolve(lhs, context), resolve(rhs, context)) else {
        return false;
    };
    match op {
        Op::Eq => equal(l, r),
        Op::Ne => !equal(l, r),
        Op::Gt => order(l, r) == Some(Ordering::Greater),
        Op::Lt => order(l, r) == Some(Ordering::Less),
        Op::Ge => matches!(order(l, r), Some(Ordering::Greater | Ordering::Equal)),
        Op::Le => matches!(order(l, r), Some(Ordering::Less | Ordering::Equal)),
        Op::In => r
            .as_array()
            .is_some_and(|list| list.iter().any(|x| equal(l, x))),
    }
}

/// The value an operand stands for; `None` when it is undefined.
fn resolve<'a>(value: &'a Value, context: &'a Map<String, Value>) -> Option<&'a Value> {
    match operand(value) {
        Operand::Literal(v) => Some(v),
        Operand::BadVar => None,
        Operand::Var(path) => lookup(strip_context(path), context),
    }
}

fn lookup<'a>(path: &str, context: &'a Map<String, Value>) -> Option<&'a Value> {
    let mut segments = path.split('.');
    let mut current = context.get(segments.next()?)?;
    for segment in segments {
        current = match current {
            Value::Object(obj) => obj.get(segment)?,
            Value::Array(list) => list.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(current)
}

/// JSON equality with numbers compared by value, through lists and objects.
fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_cmp(x, y) == Ordering::Equal,
        (Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| equal(x, y))
        }
        (Value::Object(xs), Value::Object(ys)) => {
            xs.len() == ys.len()
                && xs
                    .iter()
                    .all(|(k, x)| ys.get(k).is_some_and(|y| equal(x, y)))
        }
        _ => a == b,
    }
}

/// Ordering is defined between two numbers or two strings only.
fn order(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => Some(number_cmp(x, y)),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

enum Num {
    Int(i128),
    Float(f64),
}

fn num(n: &Number) -> Num {
    if let Some(u) = n.as_u64() {
        Num::Int(i128::from(u))
    } else if let Some(i) = n.as_i64() {
        Num::Int(i128::from(i))
    } else {
        Num::Float(n.as_f64().unwrap_or(0.0))
    }
}

/// Exact comparison of two JSON numbers: comparisons only, no arithmetic, so no rounding.
/// JSON numbers are finite, so the float comparisons are total.
fn number_cmp(a: &Number, b: &Number) -> Ordering {
    match (num(a), num(b)) {
        (Num::Int(x), Num::Int(y)) => x.cmp(&y),
        (Num::Float(x), Num::Float(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        (Num::Int(x), Num::Float(y)) => int_float_cmp(x, y),
        (Num::Float(x), Num::Int(y)) => int_float_cmp(y, x).reverse(),
    }
}

/// `i` (within the range of i64 and u64) against a finite `f`.
fn int_float_cmp(i: i128, f: f64) -> Ordering {
    const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;
    const MINUS_TWO_POW_63: f64 = -9_223_372_036_854_775_808.0;
    if f >= TWO_POW_64 {
        return Ordering::Less;
    }
    if f < MINUS_TWO_POW_63 {
        return Ordering::Greater;
    }
    let whole = f.trunc();
    // Exact: `whole` is an integer within [-2^63, 2^64).
    let whole_int = whole as i128;
    match i.cmp(&whole_int) {
        Ordering::Equal if f > whole => Ordering::Less,
        Ordering::Equal if f < whole => Ordering::Greater,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ctx(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn empty_condition_is_true_and_non_objects_are_false() {
        let c = ctx(json!({"status": "timeout"}));
        assert!(matches(&json!({}), &c));
        assert!(matches(&json!({}), &Map::new()));
        for not_object in [
            json!(null),
            json!(true),
            json!(1),
            json!("status"),
            json!([]),
        ] {
            assert!(!matches(&not_object, &c), "{not_object}");
        }
    }

    #[test]
    fn keys_are_anded() {
        let c = ctx(json!({"status": "timeout", "message_type": "chat"}));
        assert!(matches(
            &json!({"status": "timeout", "message_type": "chat"}),
            &c
        ));
        assert!(!matches(
            &json!({"status": "timeout", "message_type": "code"}),
            &c
        ));
    }

    #[test]
    fn a_list_means_any_of() {
        let c = ctx(json!({"status": "5xx"}));
        assert!(matches(&json!({"status": ["timeout", "5xx"]}), &c));
        assert!(!matches(
            &json!({"status": ["timeout", "rate_limited"]}),
            &c
        ));
    }

    #[test]
    fn a_scalar_means_equality() {
        let c = ctx(json!({"tier": "gold", "n": 3, "flag": true}));
        assert!(matches(&json!({"tier": "gold"}), &c));
        assert!(!matches(&json!({"tier": "silver"}), &c));
        assert!(matches(&json!({"n": 3.0}), &c));
        assert!(matches(&json!({"flag": true}), &c));
        assert!(!matches(&json!({"flag": "true"}), &c));
    }

    #[test]
    fn a_missing_key_is_false() {
        let c = ctx(json!({"status": "timeout"}));
        assert!(!matches(&json!({"region": "eu"}), &c));
        assert!(!matches(&json!({"region": ["eu", "us"]}), &c));
    }

    #[test]
    fn operators_with_variables_and_dotted_paths() {
        let c = ctx(json!({
            "tenant_id": "acme",
            "request": {"tokens": 1200, "tags": ["a", "b"], "model": "gpt"},
            "limits": [10, 20]
        }));
        assert!(matches(
            &json!({">": [{"var": "context.request.tokens"}, 1000]}),
            &c
        ));
        assert!(matches(
            &json!({">": [{"var": "request.tokens"}, 1000]}),
            &c
        ));
        assert!(!matches(
            &json!({"<": [{"var": "request.tokens"}, 1000]}),
            &c
        ));
        assert!(matches(
            &json!({">=": [{"var": "request.tokens"}, 1200]}),
            &c
        ));
        assert!(matches(
            &json!({"<=": [{"var": "request.tokens"}, 1200.0]}),
            &c
        ));
        assert!(matches(&json!({"==": [{"var": "tenant_id"}, "acme"]}), &c));
        assert!(matches(
            &json!({"!=": [{"var": "tenant_id"}, "globex"]}),
            &c
        ));
        assert!(matches(&json!({"==": [{"var": "limits.1"}, 20]}), &c));
        assert!(matches(
            &json!({"in": [{"var": "tenant_id"}, ["acme", "globex"]]}),
            &c
        ));
        assert!(matches(&json!({"in": ["b", {"var": "request.tags"}]}), &c));
        assert!(!matches(&json!({"in": ["c", {"var": "request.tags"}]}), &c));
        // Both sides may be variables, and entries are ANDed with plain keys.
        assert!(matches(
            &json!({"<": [{"var": "limits.0"}, {"var": "limits.1"}], "tenant_id": "acme"}),
            &c
        ));
    }

    #[test]
    fn an_undefined_operand_is_false_even_for_not_equal() {
        let c = ctx(json!({"a": {"b": 1}}));
        assert!(!matches(&json!({"==": [{"var": "a.c"}, 1]}), &c));
        assert!(!matches(&json!({"!=": [{"var": "a.c"}, 1]}), &c));
        assert!(!matches(&json!({"!=": [{"var": "a.b.c"}, 1]}), &c));
        assert!(!matches(&json!({"in": [{"var": "x"}, [1]]}), &c));
        assert!(!matches(&json!({"in": [1, {"var": "x"}]}), &c));
        // A malformed variable is undefined too.
        assert!(!matches(&json!({"==": [{"var": 5}, 5]}), &c));
    }

    #[test]
    fn in_requires_a_list_on_the_right() {
        let c = ctx(json!({"s": "abc"}));
        assert!(!matches(&json!({"in": ["a", {"var": "s"}]}), &c));
        assert!(!matches(&json!({"in": ["abc", "abc"]}), &c));
    }

    #[test]
    fn numbers_compare_by_value_exactly() {
        let c = ctx(json!({"i": 2, "neg": -3, "big": u64::MAX, "f": 2.5}));
        assert!(matches(&json!({">": [{"var": "f"}, {"var": "i"}]}), &c));
        assert!(matches(&json!({"<": [{"var": "neg"}, 0.5]}), &c));
        assert!(matches(&json!({">": [{"var": "neg"}, -3.5]}), &c));
        assert!(matches(&json!({"==": [{"var": "i"}, 2.0]}), &c));
        assert!(!matches(&json!({"==": [{"var": "i"}, 2.000_000_1]}), &c));
        // u64::MAX is not 2^64, though both round to the same f64.
        assert!(matches(
            &json!({"<": [{"var": "big"}, 18_446_744_073_709_551_616.0]}),
            &c
        ));
        assert!(!matches(
            &json!({"==": [{"var": "big"}, 18_446_744_073_709_551_616.0]}),
            &c
        ));
        assert!(matches(&json!({">": [{"var": "big"}, -1e300]}), &c));
    }

    #[test]
    fn strings_order_lexicographically_and_mixed_types_do_not_order() {
        let c = ctx(json!({"s": "beta", "n": 1, "b": true}));
        assert!(matches(&json!({">": [{"var": "s"}, "alpha"]}), &c));
        assert!(matches(&json!({"<": [{"var": "s"}, "gamma"]}), &c));
        assert!(!matches(&json!({">": [{"var": "s"}, 0]}), &c));
        assert!(!matches(&json!({"<": [{"var": "s"}, 0]}), &c));
        assert!(!matches(&json!({">=": [{"var": "n"}, "1"]}), &c));
        assert!(!matches(&json!({">=": [{"var": "b"}, true]}), &c));
        assert!(matches(&json!({"!=": [{"var": "n"}, "1"]}), &c));
    }

    #[test]
    fn validation_refuses_malformed_operator_forms_with_their_path() {
        let f = "fallbacks[2].when";
        let cases = [
            (json!([]), "fallbacks[2].when"),
            (json!({">": 1}), "fallbacks[2].when.>"),
            (json!({">": [1]}), "fallbacks[2].when.>"),
            (json!({"==": [1, 2, 3]}), "fallbacks[2].when.=="),
            (json!({"in": [1, 2]}), "fallbacks[2].when.in[1]"),
            (json!({"in": [1, "abc"]}), "fallbacks[2].when.in[1]"),
            (json!({"<": [{"var": 1}, 2]}), "fallbacks[2].when.<[0]"),
            (json!({"<": [1, {"var": "a..b"}]}), "fallbacks[2].when.<[1]"),
            (
                json!({"<": [1, {"var": "a", "x": 1}]}),
                "fallbacks[2].when.<[1]",
            ),
            (
                json!({"<": [1, {"var": "context."}]}),
                "fallbacks[2].when.<[1]",
            ),
            (json!({"status": []}), "fallbacks[2].when.status"),
            (json!({"": 1}), "fallbacks[2].when."),
        ];
        for (when, field) in cases {
            let e = validate(&when, f).unwrap_err();
            assert_eq!(e.field, field, "{when}: {e}");
        }
    }

    #[test]
    fn validation_accepts_the_documented_forms() {
        for when in [
            json!({}),
            json!({"status": ["timeout", "5xx"]}),
            json!({"status": "timeout", "n": 1, "o": {"a": 1}, "z": null}),
            json!({">=": [{"var": "context.a.b"}, 10]}),
            json!({"in": [{"var": "a"}, {"var": "b"}]}),
            json!({"in": [{"var": "a"}, []]}),
            json!({"==": [{"not_a_var": 1}, {"not_a_var": 1}]}),
        ] {
            validate(&when, "when").unwrap_or_else(|e| panic!("{when}: {e}"));
        }
    }
}
