//! Intake validation of a raw decide message, in the documented order (spec 3.2):
//! size -> schema (a JSON object) -> version -> correlation fields -> decide-specific
//! fields -> tenant allowlist. The first failed rule decides the error code and reason.
//!
//! Headers win over the payload for `version`, `tenant_id` and `trace_id`. Intake never
//! panics: every input, however malformed, yields a `DecideRequest` or a `Rejection`.

mod fast;
mod fields;
mod result;

pub use result::{validate_ack, validate_result};

use serde_json::{Map, Value};

use crate::contracts::subjects::{HEADER_TENANT_ID, HEADER_TRACE_ID, HEADER_VERSION};
use crate::contracts::{DecideRequest, IntakeErrorCode, Task, VERSION};

use fields::valid_trace_id;
pub use fields::{is_ulid, is_uuid_v4};

/// Limits and lists intake checks against.
#[derive(Clone, Debug)]
pub struct IntakeRules<'a> {
    pub max_payload_bytes: usize,
    pub min_payload_bytes: usize,
    pub tenant_allowlist: Option<&'a [String]>,
}

/// Why a message was refused, with whatever correlation fields could be read so that the
/// error reply and the DLQ record can still name the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub code: IntakeErrorCode,
    /// A stable snake_case reason, e.g. `missing_tenant_id`.
    pub reason: String,
    pub message: String,
    pub request_id: Option<String>,
    pub tenant_id: Option<String>,
    pub trace_id: Option<String>,
}

const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;

pub fn validate_decide(
    subject: &str,
    headers: &[(String, String)],
    payload: &[u8],
    rules: &IntakeRules<'_>,
) -> Result<DecideRequest, Box<Rejection>> {
    // The common, valid request without building a `Value` tree; everything else (and
    // every rejection) goes through every rule, in order.
    match fast::accept(subject, headers, payload, rules) {
        Some(request) => Ok(request),
        None => validate_full(subject, headers, payload, rules),
    }
}

/// Every rule, in the documented order, over the parsed `Value`.
fn validate_full(
    subject: &str,
    headers: &[(String, String)],
    payload: &[u8],
    rules: &IntakeRules<'_>,
) -> Result<DecideRequest, Box<Rejection>> {
    let mut r = Rejecter {
        tenant_id: header(headers, HEADER_TENANT_ID).map(str::to_string),
        trace_id: header(headers, HEADER_TRACE_ID).map(str::to_string),
        ..Rejecter::default()
    };

    // 1. Size.
    if payload.len() > rules.max_payload_bytes {
        return Err(r.reject_with(
            IntakeErrorCode::SchemaValidationFailed,
            "payload_too_large",
            format!(
                "Schema validation failed: payload size {} exceeds limit {}",
                payload.len(),
                rules.max_payload_bytes
            ),
        ));
    }

    // 3. Schema: a JSON object.
    let doc: Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(_) => {
            return Err(r.reject(
                IntakeErrorCode::SchemaValidationFailed,
                "invalid_json_format",
            ))
        }
    };
    // Owned: the maps and strings the request keeps are moved out of it, not cloned.
    let Value::Object(mut obj) = doc else {
        return Err(r.reject(IntakeErrorCode::SchemaValidationFailed, "invalid_format"));
    };
    // Read what correlation we can before later rules fail, headers first.
    r.request_id = string_field(&obj, "request_id");
    if r.tenant_id.is_none() {
        r.tenant_id = string_field(&obj, "tenant_id");
    }
    if r.trace_id.is_none() {
        r.trace_id = string_field(&obj, "trace_id");
    }

    // 4. Version: header > payload > the subject's `.v<N>.` infix.
    let version = match header(headers, HEADER_VERSION) {
        Some(v) => Some(v.to_string()),
        None => match obj.get("version") {
            Some(Value::String(v)) => Some(v.clone()),
            // The contract's version is the string "1"; a number is not accepted.
            Some(other) => Some(format!("{other} (not a string)")),
            None => subject_version(subject),
        },
    };
    match version.as_deref() {
        None => return Err(r.reject(IntakeErrorCode::VersionUnsupported, "missing_version")),
        Some(VERSION) => {}
        Some(v) => {
            return Err(r.reject_with(
                IntakeErrorCode::VersionUnsupported,
                "unsupported_version",
                format!("Unsupported schema version: {v}, supported versions: [1]"),
            ))
        }
    }

    // 5. Correlation fields.
    let corr = IntakeErrorCode::CorrelationFieldsInvalid;
    let tenant_id = match header(headers, HEADER_TENANT_ID) {
        Some("") => return Err(r.reject(corr, "empty_tenant_id")),
        Some(t) => t.to_string(),
        None => match obj.get("tenant_id") {
            None | Some(Value::Null) => return Err(r.reject(corr, "missing_tenant_id")),
            Some(Value::String(t)) if t.is_empty() => return Err(r.reject(corr, "empty_tenant_id")),
            Some(Value::String(t)) => t.clone(),
            Some(_) => return Err(r.reject(corr, "invalid_tenant_id_format")),
        },
    };
    if tenant_id.len() > 255 {
        return Err(r.reject(corr, "invalid_tenant_id_format"));
    }
    let run_id =
        optional_string(&obj, "run_id").map_err(|_| r.reject(corr, "invalid_run_id_format"))?;
    let flow_id =
        optional_string(&obj, "flow_id").map_err(|_| r.reject(corr, "invalid_flow_id_format"))?;
    let step_id =
        optional_string(&obj, "step_id").map_err(|_| r.reject(corr, "invalid_step_id_format"))?;
    check_run_flow_step(&run_id, &flow_id, &step_id).map_err(|reason| r.reject(corr, reason))?;
    let trace_id = match header(headers, HEADER_TRACE_ID) {
        Some(t) => Some(t.to_string()),
        None => optional_string(&obj, "trace_id")
            .map_err(|_| r.reject(corr, "invalid_trace_id_format"))?,
    };
    if let Some(t) = &trace_id {
        if !valid_trace_id(t) {
            return Err(r.reject(corr, "invalid_trace_id_format"));
        }
    }
    let idempotency_key = match obj.get("idempotency_key") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) if k.is_empty() => {
            return Err(r.reject(corr, "empty_idempotency_key"))
        }
        Some(Value::String(k)) if k.len() > MAX_IDEMPOTENCY_KEY_BYTES => {
            return Err(r.reject(corr, "idempotency_key_too_long"))
        }
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(r.reject(corr, "invalid_idempotency_key_format")),
    };

    // 6. Decide-specific fields.
    let request_id = match obj.get("request_id") {
        None | Some(Value::Null) => return Err(r.reject(corr, "missing_request_id")),
        Some(Value::String(s)) if s.is_empty() => return Err(r.reject(corr, "empty_request_id")),
        Some(Value::String(s)) if s.len() <= 255 => s.clone(),
        Some(_) => return Err(r.reject(corr, "invalid_request_id_format")),
    };
    let task = validate_task(&mut obj, rules).map_err(|(code, reason)| match code {
        IntakeErrorCode::PayloadTooSmall => r.reject_with(
            code,
            reason,
            format!(
                "Payload is too small or empty: {} bytes, minimum: {} bytes",
                encoded_task_payload_len(&obj),
                rules.min_payload_bytes
            ),
        ),
        _ => r.reject(code, reason),
    })?;
    let policy_id = match obj.get("policy_id") {
        None | Some(Value::Null) => {
            nested_policy_id(obj.get("metadata").and_then(Value::as_object))
                .or_else(|| nested_policy_id(obj.get("constraints").and_then(Value::as_object)))
        }
        Some(Value::String(p)) if crate::policy::valid_policy_id(p) => Some(p.clone()),
        Some(_) => return Err(r.reject(corr, "invalid_policy_id_format")),
    };
    let constraints = take_object(&mut obj, "constraints")
        .map_err(|_| r.reject(corr, "invalid_constraints_format"))?;
    let assignment_subject = match obj.get("assignment_subject") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if valid_publish_subject(s) => Some(s.clone()),
        Some(_) => return Err(r.reject(corr, "invalid_assignment_subject")),
    };
    let options = match obj.remove("options") {
        None | Some(Value::Null) => None,
        Some(o @ Value::Object(_)) => Some(o),
        Some(_) => return Err(r.reject(corr, "invalid_options_format")),
    };
    let metadata =
        take_object(&mut obj, "metadata").map_err(|_| r.reject(corr, "invalid_metadata_format"))?;

    // Tenant allowlist last: it is a policy question about an otherwise valid request.
    if let Some(allow) = rules.tenant_allowlist {
        if !allow.contains(&tenant_id) {
            return Err(r.reject_with(
                IntakeErrorCode::TenantForbidden,
                "tenant_not_allowed",
                "Tenant validation failed: tenant_not_allowed".to_string(),
            ));
        }
    }

    Ok(DecideRequest {
        version: VERSION.to_string(),
        request_id,
        tenant_id,
        trace_id,
        task,
        policy_id,
        constraints,
        metadata,
        push_assignment: truthy(obj.get("push_assignment")),
        assignment_subject,
        options,
        idempotency_key,
        run_id,
        flow_id,
        step_id,
    })
}

/// Moves the task's fields out of `obj`; a payload too small is left in place, for the
/// rejection to measure.
fn validate_task(
    obj: &mut Map<String, Value>,
    rules: &IntakeRules<'_>,
) -> Result<Task, (IntakeErrorCode, &'static str)> {
    let corr = IntakeErrorCode::CorrelationFieldsInvalid;
    let task = match obj.get_mut("task") {
        None | Some(Value::Null) => return Err((corr, "missing_task")),
        Some(Value::Object(t)) => t,
        Some(_) => return Err((corr, "invalid_task_format")),
    };
    let task_type = match task.get("type") {
        None | Some(Value::Null) => return Err((corr, "missing_task_type")),
        Some(Value::String(s)) if s.is_empty() => return Err((corr, "empty_task_type")),
        Some(Value::String(s)) if s.len() <= 255 => s.clone(),
        Some(_) => return Err((corr, "invalid_task_type")),
    };
    let payload_ref = match task.get("payload_ref") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(_) => return Err((corr, "invalid_payload_ref_format")),
    };
    let payload = match task.get("payload") {
        None | Some(Value::Null) => None,
        Some(Value::Object(p)) => {
            if encoded_len(p) < rules.min_payload_bytes {
                return Err((IntakeErrorCode::PayloadTooSmall, "payload_too_small"));
            }
            match task.remove("payload") {
                Some(Value::Object(p)) => Some(p),
                _ => None,
            }
        }
        Some(_) => return Err((corr, "invalid_payload_format")),
    };
    if payload.is_none() && payload_ref.is_none() {
        return Err((corr, "missing_task_payload"));
    }
    Ok(Task {
        task_type,
        payload_ref,
        payload,
    })
}

fn check_run_flow_step(
    run: &Option<String>,
    flow: &Option<String>,
    step: &Option<String>,
) -> Result<(), &'static str> {
    match (run.is_some(), flow.is_some(), step.is_some()) {
        (true, false, _) => return Err("flow_id_required_when_run_id_present"),
        (true, true, false) => return Err("step_id_required_when_run_id_present"),
        (false, true, _) => return Err("run_id_required_when_flow_id_present"),
        (false, false, true) => return Err("run_id_required_when_step_id_present"),
        _ => {}
    }
    let well_formed = |s: &Option<String>| s.as_deref().is_none_or(|v| is_uuid_v4(v) || is_ulid(v));
    if !well_formed(run) {
        return Err("invalid_run_id_format");
    }
    if !well_formed(flow) {
        return Err("invalid_flow_id_format");
    }
    if !well_formed(step) {
        return Err("invalid_step_id_format");
    }
    Ok(())
}

/// Builds rejections carrying the correlation fields read so far.
#[derive(Default)]
struct Rejecter {
    request_id: Option<String>,
    tenant_id: Option<String>,
    trace_id: Option<String>,
}

impl Rejecter {
    fn reject(&self, code: IntakeErrorCode, reason: &str) -> Box<Rejection> {
        let message = match code {
            IntakeErrorCode::SchemaValidationFailed => {
                format!("Schema validation failed: {reason}")
            }
            IntakeErrorCode::VersionUnsupported => format!("Version validation failed: {reason}"),
            IntakeErrorCode::CorrelationFieldsInvalid => {
                format!("Correlation fields validation failed: {reason}")
            }
            IntakeErrorCode::TenantForbidden => format!("Tenant validation failed: {reason}"),
            IntakeErrorCode::PayloadTooSmall => format!("Payload is too small or empty: {reason}"),
        };
        self.reject_with(code, reason, message)
    }

    fn reject_with(&self, code: IntakeErrorCode, reason: &str, message: String) -> Box<Rejection> {
        Box::new(Rejection {
            code,
            reason: reason.to_string(),
            message,
            request_id: self.request_id.clone(),
            tenant_id: self.tenant_id.clone(),
            trace_id: self.trace_id.clone(),
        })
    }
}

/// A subject we may publish to: non-empty tokens, no wildcards, no whitespace.
pub fn valid_publish_subject(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 512
        && s.split('.').all(|t| {
            !t.is_empty()
                && t != "*"
                && t != ">"
                && !t
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        })
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn string_field(obj: &Map<String, Value>, key: &str) -> Option<String> {
    match obj.get(key) {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 255 => Some(s.clone()),
        _ => None,
    }
}

/// A valid `policy_id` inside `outer` (the request's `metadata` or `constraints` object),
/// if it has one.
fn nested_policy_id(outer: Option<&Map<String, Value>>) -> Option<String> {
    match outer?.get("policy_id")? {
        Value::String(s) if crate::policy::valid_policy_id(s) => Some(s.clone()),
        _ => None,
    }
}

/// `Ok(None)` when absent or null, `Err` when present but not a non-empty string.
fn optional_string(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, ()> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(()),
    }
}

/// Moves `key` out of `obj`: an empty map when absent or null, `Err` when not an object.
fn take_object(obj: &mut Map<String, Value>, key: &str) -> Result<Map<String, Value>, ()> {
    match obj.remove(key) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m),
        Some(_) => Err(()),
    }
}

/// Upstream accepts `true/false/"true"/"false"/1/0`; anything else means false.
fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        Some(Value::Number(n)) => n.as_u64() == Some(1),
        _ => false,
    }
}

fn subject_version(subject: &str) -> Option<String> {
    subject.split('.').find_map(|token| {
        let digits = token.strip_prefix('v')?;
        (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.to_string())
    })
}

/// The length of `map` as compact JSON, counted without building it (also the extension
/// pipeline's context bound, `core::extensions`).
pub(crate) fn encoded_len(map: &Map<String, Value>) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, map) {
        Ok(()) => count.0,
        Err(_) => 0,
    }
}

fn encoded_task_payload_len(obj: &Map<String, Value>) -> usize {
    match obj.get("task").and_then(|t| t.get("payload")) {
        Some(Value::Object(p)) => encoded_len(p),
        _ => 0,
    }
}

#[cfg(test)]
mod tests;
