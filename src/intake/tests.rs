use super::*;

const SUBJECT: &str = "beamline.router.v1.decide";

fn rules() -> IntakeRules<'static> {
    IntakeRules {
        max_payload_bytes: 1024,
        min_payload_bytes: 10,
        tenant_allowlist: None,
    }
}

fn valid() -> Value {
    serde_json::json!({
        "version": "1",
        "request_id": "r-1",
        "tenant_id": "acme",
        "task": {"type": "text.generate", "payload": {"text": "hello world"}}
    })
}

fn check(doc: &Value) -> Result<DecideRequest, Box<Rejection>> {
    validate_decide(SUBJECT, &[], doc.to_string().as_bytes(), &rules())
}

fn reason_of(doc: Value) -> (IntakeErrorCode, String) {
    let r = check(&doc).expect_err("must be rejected");
    (r.code, r.reason)
}

fn with(mut doc: Value, path: &[&str], value: Value) -> Value {
    let (last, parents) = path.split_last().unwrap();
    let mut cur = &mut doc;
    for p in parents {
        cur = cur.get_mut(*p).unwrap();
    }
    cur.as_object_mut().unwrap().insert(last.to_string(), value);
    doc
}

fn without(mut doc: Value, path: &[&str]) -> Value {
    let (last, parents) = path.split_last().unwrap();
    let mut cur = &mut doc;
    for p in parents {
        cur = cur.get_mut(*p).unwrap();
    }
    cur.as_object_mut().unwrap().remove(*last);
    doc
}

#[test]
fn a_valid_request_passes_with_its_fields() {
    let req = check(&valid()).unwrap();
    assert_eq!(req.request_id, "r-1");
    assert_eq!(req.tenant_id, "acme");
    assert_eq!(req.task.task_type, "text.generate");
    assert_eq!(req.policy_id, None);
}

#[test]
fn size_is_checked_before_json() {
    let big = vec![b'x'; 2000];
    let r = validate_decide(SUBJECT, &[], &big, &rules()).unwrap_err();
    assert_eq!(r.code, IntakeErrorCode::SchemaValidationFailed);
    assert_eq!(r.reason, "payload_too_large");
}

#[test]
fn schema_errors() {
    let r = validate_decide(SUBJECT, &[], b"{not json", &rules()).unwrap_err();
    assert_eq!(
        (r.code, r.reason.as_str()),
        (
            IntakeErrorCode::SchemaValidationFailed,
            "invalid_json_format"
        )
    );
    let r = validate_decide(SUBJECT, &[], b"[1,2]", &rules()).unwrap_err();
    assert_eq!(r.reason, "invalid_format");
}

#[test]
fn version_resolution_header_then_payload_then_subject() {
    // Missing in payload: the subject's .v1. infix supplies it.
    assert!(check(&without(valid(), &["version"])).is_ok());
    let r = validate_decide(
        "beamline.router.decide",
        &[],
        without(valid(), &["version"]).to_string().as_bytes(),
        &rules(),
    )
    .unwrap_err();
    assert_eq!(
        (r.code, r.reason.as_str()),
        (IntakeErrorCode::VersionUnsupported, "missing_version")
    );
    assert_eq!(
        reason_of(with(valid(), &["version"], "2".into())).1,
        "unsupported_version"
    );
    // The header wins over the payload.
    let hdr = vec![("version".to_string(), "2".to_string())];
    let r = validate_decide(SUBJECT, &hdr, valid().to_string().as_bytes(), &rules()).unwrap_err();
    assert_eq!(r.code, IntakeErrorCode::VersionUnsupported);
    assert!(
        r.message.contains("Unsupported schema version: 2"),
        "{}",
        r.message
    );
}

#[test]
fn version_is_checked_before_correlation() {
    let doc = without(with(valid(), &["version"], "9".into()), &["tenant_id"]);
    assert_eq!(reason_of(doc).0, IntakeErrorCode::VersionUnsupported);
}

#[test]
fn tenant_rules_and_header_priority() {
    assert_eq!(
        reason_of(without(valid(), &["tenant_id"])).1,
        "missing_tenant_id"
    );
    assert_eq!(
        reason_of(with(valid(), &["tenant_id"], "".into())).1,
        "empty_tenant_id"
    );
    assert_eq!(
        reason_of(with(valid(), &["tenant_id"], 5.into())).1,
        "invalid_tenant_id_format"
    );
    let hdr = vec![("tenant_id".to_string(), "globex".to_string())];
    let req = validate_decide(SUBJECT, &hdr, valid().to_string().as_bytes(), &rules()).unwrap();
    assert_eq!(req.tenant_id, "globex");
}

#[test]
fn run_flow_step_dependencies_and_formats() {
    let uuid = "e3b0c442-98fc-4c14-9afb-4c8996fb9242";
    let ulid = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
    assert_eq!(
        reason_of(with(valid(), &["run_id"], uuid.into())).1,
        "flow_id_required_when_run_id_present"
    );
    assert_eq!(
        reason_of(with(valid(), &["flow_id"], uuid.into())).1,
        "run_id_required_when_flow_id_present"
    );
    assert_eq!(
        reason_of(with(valid(), &["step_id"], uuid.into())).1,
        "run_id_required_when_step_id_present"
    );
    let all = with(
        with(
            with(valid(), &["run_id"], uuid.into()),
            &["flow_id"],
            ulid.into(),
        ),
        &["step_id"],
        uuid.into(),
    );
    assert!(check(&all).is_ok());
    assert_eq!(
        reason_of(with(all, &["run_id"], "nope".into())).1,
        "invalid_run_id_format"
    );
}

#[test]
fn trace_and_idempotency_rules() {
    assert_eq!(
        reason_of(with(valid(), &["trace_id"], "bad trace".into())).1,
        "invalid_trace_id_format"
    );
    assert_eq!(
        reason_of(with(valid(), &["idempotency_key"], "".into())).1,
        "empty_idempotency_key"
    );
    assert_eq!(
        reason_of(with(valid(), &["idempotency_key"], "k".repeat(257).into())).1,
        "idempotency_key_too_long"
    );
    assert_eq!(
        reason_of(with(valid(), &["idempotency_key"], 7.into())).1,
        "invalid_idempotency_key_format"
    );
    let ok = check(&with(valid(), &["idempotency_key"], "k-1".into())).unwrap();
    assert_eq!(ok.idempotency_key.as_deref(), Some("k-1"));
}

#[test]
fn decide_specific_rules() {
    assert_eq!(
        reason_of(without(valid(), &["request_id"])).1,
        "missing_request_id"
    );
    assert_eq!(
        reason_of(with(valid(), &["request_id"], "".into())).1,
        "empty_request_id"
    );
    assert_eq!(
        reason_of(with(valid(), &["request_id"], 1.into())).1,
        "invalid_request_id_format"
    );
    assert_eq!(reason_of(without(valid(), &["task"])).1, "missing_task");
    assert_eq!(
        reason_of(with(valid(), &["task"], "x".into())).1,
        "invalid_task_format"
    );
    assert_eq!(
        reason_of(without(valid(), &["task", "type"])).1,
        "missing_task_type"
    );
    assert_eq!(
        reason_of(with(valid(), &["task", "type"], "".into())).1,
        "empty_task_type"
    );
    assert_eq!(
        reason_of(without(valid(), &["task", "payload"])).1,
        "missing_task_payload"
    );
    assert_eq!(
        reason_of(with(valid(), &["task", "payload"], "s".into())).1,
        "invalid_payload_format"
    );
    let small = reason_of(with(
        valid(),
        &["task", "payload"],
        serde_json::json!({"a": 1}),
    ));
    assert_eq!(
        small,
        (
            IntakeErrorCode::PayloadTooSmall,
            "payload_too_small".to_string()
        )
    );
    let by_ref = with(
        without(valid(), &["task", "payload"]),
        &["task", "payload_ref"],
        "s3://b/k".into(),
    );
    assert!(check(&by_ref).is_ok());
}

#[test]
fn policy_id_from_metadata_when_absent() {
    let doc = with(
        valid(),
        &["metadata"],
        serde_json::json!({"policy_id": "gold"}),
    );
    assert_eq!(check(&doc).unwrap().policy_id.as_deref(), Some("gold"));
    let doc = with(doc, &["policy_id"], "silver".into());
    assert_eq!(check(&doc).unwrap().policy_id.as_deref(), Some("silver"));
    assert_eq!(
        reason_of(with(valid(), &["policy_id"], "a b".into())).1,
        "invalid_policy_id_format"
    );
}

#[test]
fn tenant_allowlist_forbids_others() {
    let allow = vec!["globex".to_string()];
    let rules = IntakeRules {
        tenant_allowlist: Some(&allow),
        ..rules()
    };
    let r = validate_decide(SUBJECT, &[], valid().to_string().as_bytes(), &rules).unwrap_err();
    assert_eq!(r.code, IntakeErrorCode::TenantForbidden);
    assert_eq!(r.code.gateway_code().as_str(), "unauthorized");
}

#[test]
fn rejection_keeps_correlation_for_the_reply() {
    let doc = without(with(valid(), &["trace_id"], "t-9".into()), &["task"]);
    let r = check(&doc).unwrap_err();
    assert_eq!(r.request_id.as_deref(), Some("r-1"));
    assert_eq!(r.tenant_id.as_deref(), Some("acme"));
    assert_eq!(r.trace_id.as_deref(), Some("t-9"));
}

#[test]
fn push_assignment_truthiness() {
    for (v, expect) in [
        (Value::from(true), true),
        ("true".into(), true),
        (1.into(), true),
        ("yes".into(), false),
        (0.into(), false),
    ] {
        assert_eq!(
            check(&with(valid(), &["push_assignment"], v))
                .unwrap()
                .push_assignment,
            expect
        );
    }
}

proptest::proptest! {
    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let _ = validate_decide(SUBJECT, &[], &bytes, &rules());
    }

    #[test]
    fn never_panics_on_arbitrary_json(doc in arb_json()) {
        let _ = validate_decide(SUBJECT, &[], doc.to_string().as_bytes(), &rules());
    }
}

fn arb_json() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[a-z0-9-]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        let keys = prop_oneof![
            Just("version".to_string()),
            Just("request_id".to_string()),
            Just("tenant_id".to_string()),
            Just("task".to_string()),
            Just("type".to_string()),
            Just("payload".to_string()),
            Just("run_id".to_string()),
            Just("trace_id".to_string()),
            Just("idempotency_key".to_string()),
            "[a-z]{1,6}",
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map(keys, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn a_numeric_version_is_refused_everywhere() {
    assert_eq!(
        reason_of(with(valid(), &["version"], 1.into())).1,
        "unsupported_version"
    );
    let r = super::validate_result(
        &[],
        br#"{"version":1,"assignment_id":"a","status":"success","tenant_id":"acme"}"#,
        &rules(),
    )
    .unwrap_err();
    assert_eq!(r.reason, "unsupported_version");
}
