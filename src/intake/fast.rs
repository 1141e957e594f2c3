//! The common decide request, read straight into typed, borrowed fields instead of a
//! `Value` tree: the parse to `Value` was 11 % of the router's CPU under load
//! (docs/PERFORMANCE.md). It only ever *accepts*: it returns a request when every rule
//! of `validate_decide` passes, and `None` for anything else (a rule that fails, a field
//! of another type, a duplicate key, a null version), and the caller then runs the full
//! validator, which decides the rejection and its reason. The order of the rules does
//! not matter here for that reason. `tests.rs` holds the two to the same answers.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::{
    check_run_flow_step, encoded_len, header, nested_policy_id, subject_version, truthy,
    valid_publish_subject, valid_trace_id, IntakeRules, MAX_IDEMPOTENCY_KEY_BYTES,
};
use crate::contracts::subjects::{HEADER_TENANT_ID, HEADER_TRACE_ID, HEADER_VERSION};
use crate::contracts::{DecideRequest, Task, VERSION};
use crate::policy::valid_policy_id;

/// A key that is absent, `null`, or holds a `T`. `Option<T>` cannot tell the first two
/// apart, and for `version` the full validator does.
#[derive(Default)]
enum Field<T> {
    #[default]
    Absent,
    Null,
    Is(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(d)? {
            None => Field::Null,
            Some(v) => Field::Is(v),
        })
    }
}

type Str<'a> = Option<Cow<'a, str>>;

#[derive(Deserialize)]
struct Doc<'a> {
    #[serde(default, borrow)]
    version: Field<Cow<'a, str>>,
    #[serde(default, borrow)]
    request_id: Str<'a>,
    #[serde(default, borrow)]
    tenant_id: Str<'a>,
    #[serde(default, borrow)]
    trace_id: Str<'a>,
    #[serde(default, borrow)]
    run_id: Str<'a>,
    #[serde(default, borrow)]
    flow_id: Str<'a>,
    #[serde(default, borrow)]
    step_id: Str<'a>,
    #[serde(default, borrow)]
    idempotency_key: Str<'a>,
    #[serde(default, borrow)]
    policy_id: Str<'a>,
    #[serde(default, borrow)]
    assignment_subject: Str<'a>,
    #[serde(default, borrow)]
    task: Option<DocTask<'a>>,
    #[serde(default)]
    constraints: Option<Map<String, Value>>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    options: Option<Map<String, Value>>,
    #[serde(default)]
    push_assignment: Option<Value>,
}

#[derive(Deserialize)]
struct DocTask<'a> {
    #[serde(default, rename = "type", borrow)]
    task_type: Str<'a>,
    #[serde(default, borrow)]
    payload_ref: Str<'a>,
    #[serde(default)]
    payload: Option<Map<String, Value>>,
}

/// A non-empty string of at most `max` bytes, owned.
fn bounded(s: Option<Cow<'_, str>>, max: usize) -> Option<String> {
    s.filter(|s| !s.is_empty() && s.len() <= max)
        .map(Cow::into_owned)
}

/// `Some(None)` when absent, `Some(Some(s))` when a non-empty string, `None` (refused)
/// when empty.
fn optional(s: Option<Cow<'_, str>>) -> Option<Option<String>> {
    match s {
        None => Some(None),
        Some(s) if s.is_empty() => None,
        Some(s) => Some(Some(s.into_owned())),
    }
}

/// The request, when `validate_decide` would accept it and this parse can tell.
pub(super) fn accept(
    subject: &str,
    headers: &[(String, String)],
    payload: &[u8],
    rules: &IntakeRules<'_>,
) -> Option<DecideRequest> {
    if payload.len() > rules.max_payload_bytes {
        return None;
    }
    let doc: Doc<'_> = serde_json::from_slice(payload).ok()?;

    let version_ok = match header(headers, HEADER_VERSION) {
        Some(v) => v == VERSION,
        None => match &doc.version {
            Field::Is(v) => v == VERSION,
            Field::Null => false,
            Field::Absent => subject_version(subject).as_deref() == Some(VERSION),
        },
    };
    if !version_ok {
        return None;
    }

    let tenant_id = match header(headers, HEADER_TENANT_ID) {
        Some(t) => Some(t.to_string()).filter(|t| !t.is_empty() && t.len() <= 255)?,
        None => bounded(doc.tenant_id, 255)?,
    };
    let run_id = optional(doc.run_id)?;
    let flow_id = optional(doc.flow_id)?;
    let step_id = optional(doc.step_id)?;
    check_run_flow_step(&run_id, &flow_id, &step_id).ok()?;
    let trace_id = match header(headers, HEADER_TRACE_ID) {
        Some(t) => Some(t.to_string()),
        None => optional(doc.trace_id)?,
    };
    if trace_id.as_deref().is_some_and(|t| !valid_trace_id(t)) {
        return None;
    }
    let idempotency_key = match doc.idempotency_key {
        None => None,
        key => Some(bounded(key, MAX_IDEMPOTENCY_KEY_BYTES)?),
    };
    let request_id = bounded(doc.request_id, 255)?;

    let task = doc.task?;
    let task_type = bounded(task.task_type, 255)?;
    let payload_ref = optional(task.payload_ref)?;
    if let Some(p) = &task.payload {
        if encoded_len(p) < rules.min_payload_bytes {
            return None;
        }
    }
    if task.payload.is_none() && payload_ref.is_none() {
        return None;
    }

    let constraints = doc.constraints.unwrap_or_default();
    let metadata = doc.metadata.unwrap_or_default();
    let policy_id = match doc.policy_id {
        None => nested_policy_id(Some(&metadata)).or_else(|| nested_policy_id(Some(&constraints))),
        Some(p) if valid_policy_id(&p) => Some(p.into_owned()),
        Some(_) => return None,
    };
    let assignment_subject = match doc.assignment_subject {
        None => None,
        Some(s) if valid_publish_subject(&s) => Some(s.into_owned()),
        Some(_) => return None,
    };
    if let Some(allow) = rules.tenant_allowlist {
        if !allow.contains(&tenant_id) {
            return None;
        }
    }

    Some(DecideRequest {
        version: VERSION.to_string(),
        request_id,
        tenant_id,
        trace_id,
        task: Task {
            task_type,
            payload_ref,
            payload: task.payload,
        },
        policy_id,
        constraints,
        metadata,
        push_assignment: truthy(doc.push_assignment.as_ref()),
        assignment_subject,
        options: doc.options.map(Value::Object),
        idempotency_key,
        run_id,
        flow_id,
        step_id,
    })
}
