//! Intake validation under arbitrary input.
//!
//! The input is split by `arbitrary` into a subject choice, up to three headers, the
//! intake limits and, as everything that is left, the raw payload. Every field before the
//! payload is fixed-size (enums, integers, `Option` of those), so a seed is a short
//! prefix followed by a JSON document (`make_seeds.py` writes them), and a 16-byte prefix
//! of zeros means: the decide subject, no headers, a 1 MiB limit, no minimum, no allowlist.
//!
//! Properties, on each of `validate_decide`, `validate_result` and `validate_ack`:
//! - no panic, whatever the bytes;
//! - on `Err`, the code is one of the seven documented intake codes, the reason is
//!   non-empty snake_case and the message is non-empty;
//! - on `Ok`, the documented field rules hold; for decide, serialising the request with
//!   serde_json and validating that document again (no headers) gives `Ok` with equal
//!   fields (the round trip; floats may move by a few ulps unless the feature
//!   `strict-float-roundtrip` is on, see `same_request`).

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

use beamline_router::contracts::{DecideRequest, IntakeErrorCode};
use beamline_router::intake::{
    is_ulid, is_uuid_v4, validate_ack, validate_decide, validate_result, IntakeRules, Rejection,
};

#[derive(Arbitrary, Debug, Clone, Copy)]
enum SubjectChoice {
    Decide,
    DecideV2,
    NoVersion,
    Result,
    VersionOnly,
    Empty,
}

impl SubjectChoice {
    fn as_str(self) -> &'static str {
        match self {
            SubjectChoice::Decide => "beamline.router.v1.decide",
            SubjectChoice::DecideV2 => "beamline.router.v2.decide",
            SubjectChoice::NoVersion => "beamline.router.decide",
            SubjectChoice::Result => "caf.exec.result.v1",
            SubjectChoice::VersionOnly => "v1",
            SubjectChoice::Empty => "",
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum HeaderName {
    Version,
    TenantId,
    TraceId,
    /// Header names match case-insensitively.
    VersionUpper,
    TenantIdMixed,
    ReplyTo,
    Other,
}

impl HeaderName {
    fn as_str(self) -> &'static str {
        match self {
            HeaderName::Version => "version",
            HeaderName::TenantId => "tenant_id",
            HeaderName::TraceId => "trace_id",
            HeaderName::VersionUpper => "VERSION",
            HeaderName::TenantIdMixed => "Tenant_Id",
            HeaderName::ReplyTo => "Reply-To",
            HeaderName::Other => "x-other",
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum HeaderValue {
    One,
    Two,
    Empty,
    Acme,
    W3cTrace,
    BadTrace,
    Long,
    /// Bytes `start..start+len` of the payload, lossily decoded: arbitrary text without
    /// a variable-length field ahead of the payload.
    Slice {
        start: u8,
        len: u8,
    },
}

impl HeaderValue {
    fn render(self, payload: &[u8]) -> String {
        match self {
            HeaderValue::One => "1".into(),
            HeaderValue::Two => "2".into(),
            HeaderValue::Empty => String::new(),
            HeaderValue::Acme => "acme".into(),
            HeaderValue::W3cTrace => "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            HeaderValue::BadTrace => "has space".into(),
            HeaderValue::Long => "a".repeat(300),
            HeaderValue::Slice { start, len } => {
                let start = usize::from(start).min(payload.len());
                let end = start.saturating_add(usize::from(len)).min(payload.len());
                String::from_utf8_lossy(&payload[start..end]).into_owned()
            }
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
struct Header {
    name: HeaderName,
    value: HeaderValue,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum MaxPayload {
    /// The production default, 1 MiB.
    Default,
    /// A tiny limit, so that `payload_too_large` is reachable.
    Tiny(u8),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Allowlist {
    None,
    Acme,
    Empty,
}

#[derive(Arbitrary, Debug)]
struct IntakeInput<'a> {
    subject: SubjectChoice,
    headers: [Option<Header>; 3],
    max_payload: MaxPayload,
    min_payload: u8,
    allowlist: Allowlist,
    /// The rest of the input (a slice: `arbitrary` gives it every remaining byte).
    payload: &'a [u8],
}

const INTAKE_CODES: [&str; 7] = [
    "SCHEMA_VALIDATION_FAILED",
    "VERSION_UNSUPPORTED",
    "CORRELATION_FIELDS_INVALID",
    "TENANT_FORBIDDEN",
    "IDEMPOTENCY_VIOLATION",
    "PAYLOAD_TOO_SMALL",
    "INTERNAL_VALIDATION_ERROR",
];

fn is_snake_case(s: &str) -> bool {
    !s.is_empty()
        && s.as_bytes()[0].is_ascii_lowercase()
        && !s.ends_with('_')
        && !s.contains("__")
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn check_rejection(what: &str, r: &Rejection) {
    let code: IntakeErrorCode = r.code;
    assert!(
        INTAKE_CODES.contains(&code.as_str()),
        "{what}: undocumented intake code {:?}",
        code.as_str()
    );
    assert!(
        is_snake_case(&r.reason),
        "{what}: reason {:?} is not non-empty snake_case",
        r.reason
    );
    assert!(
        !r.message.is_empty(),
        "{what}: empty message for {:?}",
        r.reason
    );
}

fn valid_trace(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'))
}

/// The documented field rules of an accepted decide request (docs/API_CONTRACTS.md).
fn check_decide_fields(req: &DecideRequest, rules: &IntakeRules<'_>) {
    assert_eq!(req.version, "1");
    assert!(!req.request_id.is_empty() && req.request_id.len() <= 255);
    assert!(!req.tenant_id.is_empty() && req.tenant_id.len() <= 255);
    if let Some(t) = &req.trace_id {
        assert!(valid_trace(t), "accepted trace_id {t:?}");
    }
    match (&req.run_id, &req.flow_id, &req.step_id) {
        (None, None, None) => {}
        (Some(r), Some(f), Some(s)) => {
            for id in [r, f, s] {
                assert!(
                    is_uuid_v4(id) || is_ulid(id),
                    "accepted run/flow/step id {id:?}"
                );
            }
        }
        other => panic!("run/flow/step must be all or none, got {other:?}"),
    }
    if let Some(k) = &req.idempotency_key {
        assert!(!k.is_empty() && k.len() <= 256);
    }
    assert!(!req.task.task_type.is_empty() && req.task.task_type.len() <= 255);
    assert!(req.task.payload.is_some() || req.task.payload_ref.is_some());
    if let Some(p) = &req.task.payload {
        let len = serde_json::to_vec(p).expect("a JSON map serialises").len();
        assert!(len >= rules.min_payload_bytes);
    }
    if let Some(p) = &req.policy_id {
        assert!(
            beamline_router::policy::valid_policy_id(p),
            "accepted policy_id {p:?}"
        );
    }
    if let Some(allow) = rules.tenant_allowlist {
        assert!(allow.contains(&req.tenant_id));
    }
}

/// How far (in units in the last place) a float may move through the round trip unless
/// `strict-float-roundtrip` is on. serde_json's default float reader is best-effort and
/// was seen 1 and 2 ulps off the correctly rounded value.
const MAX_FLOAT_DRIFT_ULPS: u64 = 16;

/// Whether the round trip kept the request. Exact equality with the feature
/// `strict-float-roundtrip`; by default a JSON float may move by a few units in the last
/// place, because serde_json (without its `float_roundtrip` feature) does not always read
/// back the text it wrote for a float (docs/FUZZING.md, finding 2). Everything else must
/// be equal.
fn same_request(a: &DecideRequest, b: &DecideRequest) -> bool {
    if cfg!(feature = "strict-float-roundtrip") || a == b {
        return a == b;
    }
    let a = serde_json::to_value(a).expect("serialises");
    let b = serde_json::to_value(b).expect("serialises");
    same_modulo_ulp(&a, &b)
}

fn has_float(v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Number(n) => n.is_f64(),
        Value::Array(a) => a.iter().any(has_float),
        Value::Object(o) => o.values().any(has_float),
        _ => false,
    }
}

fn same_modulo_ulp(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() && y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            x == y
                || (x.is_sign_negative() == y.is_sign_negative()
                    && x.to_bits().abs_diff(y.to_bits()) <= MAX_FLOAT_DRIFT_ULPS)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_modulo_ulp(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kx, vx), (ky, vy))| kx == ky && same_modulo_ulp(vx, vy))
        }
        _ => a == b,
    }
}

fuzz_target!(|input: IntakeInput<'_>| {
    let payload = input.payload;
    let headers: Vec<(String, String)> = input
        .headers
        .iter()
        .flatten()
        .map(|h| (h.name.as_str().to_string(), h.value.render(payload)))
        .collect();
    let acme = ["acme".to_string()];
    let rules = IntakeRules {
        max_payload_bytes: match input.max_payload {
            MaxPayload::Default => 1_048_576,
            MaxPayload::Tiny(n) => usize::from(n),
        },
        min_payload_bytes: usize::from(input.min_payload),
        tenant_allowlist: match input.allowlist {
            Allowlist::None => None,
            Allowlist::Acme => Some(&acme[..]),
            Allowlist::Empty => Some(&[][..]),
        },
    };
    let subject = input.subject.as_str();

    match validate_decide(subject, &headers, payload, &rules) {
        Ok(req) => {
            check_decide_fields(&req, &rules);
            // Round trip: the request as JSON, without the headers, is accepted again as
            // the same request. The document grows (header values move into it), so the
            // size limit is lifted for the second pass; every other rule stays, except
            // (by default) the minimum size of a task payload that holds a float: that
            // size is measured on the re-encoded payload, whose floats may have drifted to
            // a shorter text (finding 2).
            let doc = serde_json::to_vec(&req).expect("a DecideRequest serialises");
            let relax_min = !cfg!(feature = "strict-float-roundtrip")
                && req
                    .task
                    .payload
                    .as_ref()
                    .is_some_and(|p| p.values().any(has_float));
            let again_rules = IntakeRules {
                max_payload_bytes: usize::MAX,
                min_payload_bytes: if relax_min {
                    0
                } else {
                    rules.min_payload_bytes
                },
                ..rules.clone()
            };
            match validate_decide(subject, &[], &doc, &again_rules) {
                Ok(again) => assert!(
                    same_request(&again, &req),
                    "round trip changed the request; document: {}\n first: {req:?}\n again: {again:?}",
                    String::from_utf8_lossy(&doc)
                ),
                Err(r) => panic!(
                    "round trip refused ({} / {}): document: {}",
                    r.code.as_str(),
                    r.reason,
                    String::from_utf8_lossy(&doc)
                ),
            }
        }
        Err(r) => check_rejection("decide", &r),
    }

    match validate_result(&headers, payload, &rules) {
        Ok(res) => {
            assert!(res.assignment_id.is_some() || res.request_id.is_some());
            assert!(!res.correlation_key().is_empty());
            assert!(res.cost.is_finite() && res.cost >= 0.0);
            assert!(!res.tenant_id.is_empty());
            if let Some(t) = &res.trace_id {
                assert!(valid_trace(t), "accepted result trace_id {t:?}");
            }
            if let Some(allow) = rules.tenant_allowlist {
                assert!(allow.contains(&res.tenant_id));
            }
        }
        Err(r) => check_rejection("result", &r),
    }

    match validate_ack(&headers, payload, &rules) {
        Ok(ack) => {
            assert!(!ack.assignment_id.is_empty() && ack.assignment_id.len() <= 255);
            assert!(!ack.tenant_id.is_empty());
            if let Some(allow) = rules.tenant_allowlist {
                assert!(allow.contains(&ack.tenant_id));
            }
        }
        Err(r) => check_rejection("ack", &r),
    }
});
