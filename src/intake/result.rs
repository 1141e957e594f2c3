//! Intake of `ExecResult` and `ExecAssignmentAck` messages: schema, version (header or
//! payload; the result subject has no `.v1.` infix), correlation, then the fields the
//! router acts on. Same codes and the same never-panic rule as decide intake.

use serde_json::{Map, Value};

use crate::contracts::subjects::{HEADER_TENANT_ID, HEADER_TRACE_ID, HEADER_VERSION};
use crate::contracts::{
    AckStatus, ExecAssignmentAck, ExecResult, ExecStatus, IntakeErrorCode, VERSION,
};

use super::fields::valid_trace_id;
use super::{header, IntakeRules, Rejecter, Rejection};

const SCHEMA: IntakeErrorCode = IntakeErrorCode::SchemaValidationFailed;
const CORR: IntakeErrorCode = IntakeErrorCode::CorrelationFieldsInvalid;

/// What steps 1-5 read: the object, its tenant and trace, and a rejecter that knows them.
type Common = (Map<String, Value>, String, Option<String>, Rejecter);

/// Steps 1, 3, 4 and 5 shared by results and acks: the object, its tenant and trace.
fn common(
    headers: &[(String, String)],
    payload: &[u8],
    rules: &IntakeRules<'_>,
) -> Result<Common, Box<Rejection>> {
    let mut r = Rejecter {
        tenant_id: header(headers, HEADER_TENANT_ID).map(str::to_string),
        trace_id: header(headers, HEADER_TRACE_ID).map(str::to_string),
        ..Rejecter::default()
    };
    if payload.len() > rules.max_payload_bytes {
        return Err(r.reject(SCHEMA, "payload_too_large"));
    }
    let Ok(doc) = serde_json::from_slice::<Value>(payload) else {
        return Err(r.reject(SCHEMA, "invalid_json_format"));
    };
    let Value::Object(obj) = doc else {
        return Err(r.reject(SCHEMA, "invalid_format"));
    };
    r.request_id = super::string_field(&obj, "request_id");
    let version = header(headers, HEADER_VERSION)
        .map(str::to_string)
        .or_else(|| {
            // A non-string version is present but wrong, as in decide intake.
            obj.get("version").map(|v| match v.as_str() {
                Some(s) => s.to_string(),
                None => format!("{v} (not a string)"),
            })
        });
    match version.as_deref() {
        None => return Err(r.reject(IntakeErrorCode::VersionUnsupported, "missing_version")),
        Some(VERSION) => {}
        Some(_) => return Err(r.reject(IntakeErrorCode::VersionUnsupported, "unsupported_version")),
    }
    let tenant = match header(headers, HEADER_TENANT_ID) {
        Some("") => return Err(r.reject(CORR, "empty_tenant_id")),
        Some(t) if t.len() > 255 => return Err(r.reject(CORR, "invalid_tenant_id_format")),
        Some(t) => t.to_string(),
        None => match obj.get("tenant_id") {
            None | Some(Value::Null) => return Err(r.reject(CORR, "missing_tenant_id")),
            Some(Value::String(t)) if t.is_empty() => return Err(r.reject(CORR, "empty_tenant_id")),
            Some(Value::String(t)) if t.len() <= 255 => t.clone(),
            Some(_) => return Err(r.reject(CORR, "invalid_tenant_id_format")),
        },
    };
    r.tenant_id = Some(tenant.clone());
    let trace = match header(headers, HEADER_TRACE_ID) {
        Some(t) => Some(t.to_string()),
        None => super::optional_string(&obj, "trace_id")
            .map_err(|_| r.reject(CORR, "invalid_trace_id_format"))?,
    };
    if trace.as_deref().is_some_and(|t| !valid_trace_id(t)) {
        return Err(r.reject(CORR, "invalid_trace_id_format"));
    }
    r.trace_id = trace.clone();
    if let Some(allow) = rules.tenant_allowlist {
        if !allow.contains(&tenant) {
            return Err(r.reject(IntakeErrorCode::TenantForbidden, "tenant_not_allowed"));
        }
    }
    Ok((obj, tenant, trace, r))
}

fn id_field(
    obj: &Map<String, Value>,
    key: &str,
    r: &Rejecter,
) -> Result<Option<String>, Box<Rejection>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 255 => Ok(Some(s.clone())),
        Some(_) => Err(r.reject(CORR, &format!("invalid_{key}_format"))),
    }
}

fn text(obj: &Map<String, Value>, key: &str) -> Option<String> {
    obj.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(|s| s.chars().take(1024).collect())
}

pub fn validate_result(
    headers: &[(String, String)],
    payload: &[u8],
    rules: &IntakeRules<'_>,
) -> Result<ExecResult, Box<Rejection>> {
    let (obj, tenant_id, trace_id, r) = common(headers, payload, rules)?;
    let assignment_id = id_field(&obj, "assignment_id", &r)?;
    let request_id = id_field(&obj, "request_id", &r)?;
    if assignment_id.is_none() && request_id.is_none() {
        return Err(r.reject(CORR, "missing_correlation_id"));
    }
    let status = match obj.get("status").and_then(Value::as_str) {
        None => return Err(r.reject(SCHEMA, "missing_status")),
        Some("success") => ExecStatus::Success,
        Some("error") => ExecStatus::Error,
        Some("timeout") => ExecStatus::Timeout,
        Some("cancelled") => ExecStatus::Cancelled,
        Some(_) => return Err(r.reject(SCHEMA, "invalid_status")),
    };
    let latency_ms = match obj.get("latency_ms") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| r.reject(SCHEMA, "invalid_latency_ms"))?,
    };
    let cost = match obj.get("cost") {
        None | Some(Value::Null) => 0.0,
        Some(v) => v
            .as_f64()
            .filter(|c| c.is_finite() && *c >= 0.0)
            .ok_or_else(|| r.reject(SCHEMA, "invalid_cost"))?,
    };
    let job_type = obj
        .get("job")
        .and_then(|j| j.get("type"))
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(ExecResult {
        assignment_id,
        request_id,
        status,
        provider_id: id_field(&obj, "provider_id", &r)?,
        job_type,
        latency_ms,
        cost,
        tenant_id,
        trace_id,
        timestamp: obj.get("timestamp").and_then(Value::as_u64),
        error_code: text(&obj, "error_code"),
        error_type: text(&obj, "error_type"),
        error_message: text(&obj, "error_message"),
    })
}

pub fn validate_ack(
    headers: &[(String, String)],
    payload: &[u8],
    rules: &IntakeRules<'_>,
) -> Result<ExecAssignmentAck, Box<Rejection>> {
    let (obj, tenant_id, _, r) = common(headers, payload, rules)?;
    let Some(assignment_id) = id_field(&obj, "assignment_id", &r)? else {
        return Err(r.reject(CORR, "missing_assignment_id"));
    };
    let status = match obj.get("status").and_then(Value::as_str) {
        Some("accepted") => AckStatus::Accepted,
        Some("rejected") => AckStatus::Rejected,
        Some("error") => AckStatus::Error,
        _ => return Err(r.reject(SCHEMA, "invalid_status")),
    };
    Ok(ExecAssignmentAck {
        assignment_id,
        status,
        message: text(&obj, "message"),
        tenant_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> IntakeRules<'static> {
        IntakeRules {
            max_payload_bytes: 4096,
            min_payload_bytes: 10,
            tenant_allowlist: None,
        }
    }

    fn check(doc: &str) -> Result<ExecResult, Box<Rejection>> {
        validate_result(&[], doc.as_bytes(), &rules())
    }

    #[test]
    fn a_result_passes_with_its_fields() {
        let r = check(r#"{"version":"1","assignment_id":"a-1","request_id":"r-1","status":"error","provider_id":"openai","job":{"type":"t"},"latency_ms":12,"cost":0.5,"tenant_id":"acme","error_code":"HTTP_5XX"}"#).unwrap();
        assert_eq!(r.correlation_key(), "a-1");
        assert_eq!(r.status, ExecStatus::Error);
        assert_eq!(r.job_type.as_deref(), Some("t"));
        assert_eq!(r.error_code.as_deref(), Some("HTTP_5XX"));
    }

    #[test]
    fn version_must_come_from_header_or_payload() {
        let e =
            check(r#"{"assignment_id":"a","status":"success","tenant_id":"acme"}"#).unwrap_err();
        assert_eq!(e.reason, "missing_version");
        let h = vec![("version".to_string(), "1".to_string())];
        assert!(validate_result(
            &h,
            br#"{"assignment_id":"a","status":"success","tenant_id":"acme"}"#,
            &rules()
        )
        .is_ok());
    }

    #[test]
    fn refusals() {
        let reason = |d: &str| check(d).unwrap_err().reason;
        assert_eq!(
            reason(r#"{"version":"1","status":"success","tenant_id":"acme"}"#),
            "missing_correlation_id"
        );
        assert_eq!(
            reason(r#"{"version":"1","assignment_id":"a","tenant_id":"acme"}"#),
            "missing_status"
        );
        assert_eq!(
            reason(r#"{"version":"1","assignment_id":"a","status":"done","tenant_id":"acme"}"#),
            "invalid_status"
        );
        assert_eq!(
            reason(r#"{"version":"1","assignment_id":"a","status":"success"}"#),
            "missing_tenant_id"
        );
        assert_eq!(
            reason(
                r#"{"version":"1","assignment_id":"a","status":"success","tenant_id":"acme","cost":-1}"#
            ),
            "invalid_cost"
        );
        assert_eq!(reason("[]"), "invalid_format");
    }

    #[test]
    fn acks() {
        let a = validate_ack(&[], br#"{"version":"1","assignment_id":"a","status":"rejected","tenant_id":"acme","message":"busy"}"#, &rules()).unwrap();
        assert_eq!(a.status, AckStatus::Rejected);
        let e = validate_ack(
            &[],
            br#"{"version":"1","status":"accepted","tenant_id":"acme"}"#,
            &rules(),
        )
        .unwrap_err();
        assert_eq!(e.reason, "missing_assignment_id");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = validate_result(&[], &bytes, &rules());
            let _ = validate_ack(&[], &bytes, &rules());
        }
    }
}
