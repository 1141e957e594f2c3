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

/// The fast path and the full rules agree: whatever the fast path accepts, the full
/// rules accept as the same request, byte for byte once serialised; and the typical
/// request takes the fast path (or the speed-up would be silently gone).
mod fast_path {
    use super::*;
    use proptest::prelude::*;

    /// Values a field may take: absent (`None`), null, strings that pass or fail the
    /// rules, and other JSON types.
    fn field() -> impl Strategy<Value = Option<Value>> {
        prop_oneof![
            3 => Just(None),
            1 => Just(Some(Value::Null)),
            3 => prop::sample::select(vec![
                "1", "2", "acme", "r-1", "", "default", "bad policy!", "a.b.c", "a.*",
                "01ARZ3NDEKTSV4RRFFQ69G5FAV", "4bf92f3577b34da6a3ce929d0e0e4736",
                "6e1f4b1e-3c4b-4f5e-9a1b-2c3d4e5f6a7b", "x y", "caf.exec.assign.v1",
            ])
            .prop_map(|s| Some(Value::String(s.to_string()))),
            1 => Just(Some(Value::String("k".repeat(300)))),
            1 => Just(Some(serde_json::json!(1))),
            1 => Just(Some(serde_json::json!(true))),
            1 => Just(Some(serde_json::json!({"policy_id": "default", "k": 1}))),
            1 => Just(Some(serde_json::json!(["x"]))),
        ]
    }

    fn task() -> impl Strategy<Value = Option<Value>> {
        let payload = prop_oneof![
            Just(None),
            Just(Some(Value::Null)),
            Just(Some(
                serde_json::json!({"text": "hello world, long enough"})
            )),
            Just(Some(serde_json::json!({"t": 1}))),
            Just(Some(serde_json::json!("not an object"))),
        ];
        prop_oneof![
            1 => field(),
            4 => (field(), field(), payload).prop_map(|(t, r, p)| {
                let mut m = Map::new();
                for (k, v) in [("type", t), ("payload_ref", r), ("payload", p)] {
                    if let Some(v) = v {
                        m.insert(k.to_string(), v);
                    }
                }
                Some(Value::Object(m))
            }),
        ]
    }

    const KEYS: [&str; 15] = [
        "version",
        "request_id",
        "tenant_id",
        "trace_id",
        "run_id",
        "flow_id",
        "step_id",
        "idempotency_key",
        "policy_id",
        "assignment_subject",
        "constraints",
        "metadata",
        "options",
        "push_assignment",
        "extra",
    ];

    fn doc() -> impl Strategy<Value = Value> {
        (
            prop::collection::vec((prop::bool::weighted(0.12), field()), KEYS.len()),
            task(),
            prop::bool::weighted(0.2),
        )
            .prop_map(|(values, task, change_task)| {
                // Bias towards valid requests: start from one and change a few keys.
                let mut m = match valid() {
                    Value::Object(m) => m,
                    _ => unreachable!(),
                };
                for (key, (change, value)) in KEYS.iter().zip(values) {
                    if !change {
                        continue;
                    }
                    match value {
                        Some(v) => m.insert(key.to_string(), v),
                        None => m.remove(*key),
                    };
                }
                if change_task {
                    match task {
                        Some(t) => m.insert("task".to_string(), t),
                        None => m.remove("task"),
                    };
                }
                Value::Object(m)
            })
    }

    fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
        prop::collection::vec(
            prop::sample::select(vec![
                ("tenant_id", "acme"),
                ("tenant_id", ""),
                ("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"),
                ("trace_id", "nope"),
                ("version", "1"),
                ("version", "2"),
            ]),
            0..3,
        )
        .prop_map(|v| {
            v.into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn what_the_fast_path_accepts_the_full_rules_accept_identically(
            doc in doc(),
            headers in headers(),
            subject in prop::sample::select(vec![SUBJECT, "beamline.router.decide"]),
            allow in any::<bool>(),
        ) {
            let allowlist = vec!["acme".to_string()];
            let rules = IntakeRules {
                tenant_allowlist: allow.then_some(allowlist.as_slice()),
                ..rules()
            };
            let bytes = doc.to_string().into_bytes();
            if let Some(fast) = fast::accept(subject, &headers, &bytes, &rules) {
                let full = validate_full(subject, &headers, &bytes, &rules);
                prop_assert!(full.is_ok(), "fast accepted, full refused {:?}: {doc}", full.err());
                let full = full.unwrap();
                prop_assert_eq!(
                    serde_json::to_string(&fast).unwrap(),
                    serde_json::to_string(&full).unwrap()
                );
                prop_assert_eq!(fast, full);
            }
        }
    }

    /// The property above is only worth something if the generator reaches both sides:
    /// requests the fast path accepts, and requests it leaves to the full rules.
    #[test]
    fn the_generator_reaches_both_paths() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let (mut accepted, mut left) = (0, 0);
        for _ in 0..2000 {
            let doc = doc().new_tree(&mut runner).unwrap().current();
            let bytes = doc.to_string().into_bytes();
            match fast::accept(SUBJECT, &[], &bytes, &rules()) {
                Some(_) => accepted += 1,
                None => left += 1,
            }
        }
        assert!(
            accepted > 200 && left > 200,
            "accepted {accepted}, left {left}"
        );
    }

    #[test]
    fn typical_requests_take_the_fast_path() {
        let doc = serde_json::json!({
            "version": "1", "request_id": "r-1", "tenant_id": "acme",
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "idempotency_key": "k-1",
            "task": {"type": "text.generate", "payload": {"text": "hello world"}},
            "metadata": {"user_id": "u1"}, "constraints": {"max_cost": 2},
            "policy_id": "default", "push_assignment": true
        });
        let bytes = doc.to_string().into_bytes();
        assert!(fast::accept(SUBJECT, &[], &bytes, &rules()).is_some());
        // A null version is refused by the full rules; the fast path must not accept it.
        let null_version = with(valid(), &["version"], Value::Null).to_string();
        assert!(fast::accept(SUBJECT, &[], null_version.as_bytes(), &rules()).is_none());
        assert!(check(&with(valid(), &["version"], Value::Null)).is_err());
        // Escaped strings are owned, not borrowed, and still accepted.
        let escaped = with(valid(), &["request_id"], Value::String("r-\"1\"".into()));
        assert!(fast::accept(SUBJECT, &[], escaped.to_string().as_bytes(), &rules()).is_some());
    }
}
