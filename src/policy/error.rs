//! The one error a policy document can earn: the field that is wrong (a JSON path such as
//! `fallbacks[2].backoff.base_ms`, or `$` for the document itself) and the rule it broke.

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid policy: field `{field}`: {rule}")]
pub struct PolicyError {
    pub field: String,
    pub rule: String,
}

pub(super) fn refuse(field: impl Into<String>, rule: impl Into<String>) -> PolicyError {
    PolicyError {
        field: field.into(),
        rule: rule.into(),
    }
}
