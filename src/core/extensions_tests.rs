use super::*;
use serde_json::json;

struct Gate {
    open: Vec<String>,
    records: Vec<(String, bool)>,
}

impl ExtensionGate for Gate {
    fn allow(&mut self, id: &str) -> bool {
        !self.open.iter().any(|o| o == id)
    }
    fn record(&mut self, id: &str, success: bool) {
        self.records.push((id.to_string(), success));
    }
}

fn gate() -> Gate {
    Gate {
        open: vec![],
        records: vec![],
    }
}

fn registry() -> ExtensionRegistry {
    ExtensionRegistry::parse(
        r#"[{"id":"norm","type":"pre","subject":"ext.pre.norm","timeout_ms":100,"retry":2},
            {"id":"guard","type":"validator","subject":"ext.val.guard","timeout_ms":200},
            {"id":"mask","type":"post","subject":"ext.post.mask","timeout_ms":150}]"#,
    )
    .unwrap()
}

fn item(stage: Stage, id: &str, on_failure: OnFailure) -> PipelineItem {
    PipelineItem {
        stage,
        id: id.into(),
        on_failure,
        when: None,
        config: Map::new(),
    }
}

fn pipeline(items: Vec<PipelineItem>) -> Pipeline {
    let mut ctx = Map::new();
    ctx.insert("user_id".into(), "u-1".into());
    Pipeline::new(
        items,
        "acme".into(),
        Some("t-1".into()),
        json!({"text":"Hi"}),
        ctx,
    )
}

fn expect_call(step: Step) -> Call {
    match step {
        Step::Call(c) => c,
        other => panic!("expected a call, got {other:?}"),
    }
}

#[test]
fn registry_parse_refuses_with_field_and_rule() {
    let e = ExtensionRegistry::parse(r#"[{"id":"a","type":"pre","subject":"s","timeout_ms":9}]"#)
        .unwrap_err();
    assert_eq!(e.field, "[0].timeout_ms");
    let e =
        ExtensionRegistry::parse(r#"{"id":"a","type":"pre","subject":"s","retry":4}"#).unwrap_err();
    assert_eq!(e.field, "[0].retry");
    let e = ExtensionRegistry::parse(r#"{"id":"a","type":"x","subject":"s"}"#).unwrap_err();
    assert_eq!(e.field, "[0].type");
    let e = ExtensionRegistry::parse(r#"{"id":"a","type":"pre","subject":"s.*"}"#).unwrap_err();
    assert_eq!(e.field, "[0].subject");
    assert_eq!(ExtensionRegistry::builtin().len(), 3);
}

#[test]
fn runs_pre_then_validators_then_select_then_post() {
    let reg = registry();
    let mut g = gate();
    let mut p = pipeline(vec![
        item(Stage::Pre, "norm", OnFailure::Abort),
        item(Stage::Validator, "guard", OnFailure::Abort),
        item(Stage::Post, "mask", OnFailure::Warn),
    ]);
    let call = expect_call(p.advance(&reg, &mut g));
    assert_eq!(call.subject, "ext.pre.norm");
    assert_eq!(call.timeout_ms, 100);
    let body: Value = serde_json::from_slice(&call.payload).unwrap();
    assert_eq!(body["tenant_id"], "acme");
    assert_eq!(body["payload"]["text"], "Hi");
    assert_eq!(body["metadata"]["user_id"], "u-1");

    let reply = json!({"payload":{"text":"hi"},"metadata":{"lang":"en"}}).to_string();
    assert_eq!(
        p.on_result(&reg, &mut g, CallResult::Reply(reply.into_bytes())),
        Ok(AfterCall::Continue)
    );
    assert_eq!(p.message, json!({"text":"hi"}));
    assert_eq!(p.context["lang"], "en");

    let call = expect_call(p.advance(&reg, &mut g));
    assert_eq!(call.subject, "ext.val.guard");
    let body: Value = serde_json::from_slice(&call.payload).unwrap();
    assert_eq!(
        body["payload"]["text"], "hi",
        "validators see the rewritten payload"
    );
    p.on_result(
        &reg,
        &mut g,
        CallResult::Reply(br#"{"valid":true}"#.to_vec()),
    )
    .unwrap();

    assert_eq!(p.advance(&reg, &mut g), Step::Select);
    p.selected(json!({"provider_id":"openai"}));
    let call = expect_call(p.advance(&reg, &mut g));
    let body: Value = serde_json::from_slice(&call.payload).unwrap();
    assert_eq!(body["payload"]["provider_id"], "openai");
    p.on_result(
        &reg,
        &mut g,
        CallResult::Reply(br#"{"metadata":{"masked":true}}"#.to_vec()),
    )
    .unwrap();
    assert_eq!(p.advance(&reg, &mut g), Step::Done);
    let statuses: Vec<_> = p
        .executed
        .iter()
        .map(|e| (e.id.as_str(), e.status))
        .collect();
    assert_eq!(statuses, [("norm", "ok"), ("guard", "ok"), ("mask", "ok")]);
    assert_eq!(g.records.len(), 3);
}

#[test]
fn only_timeouts_are_retried_with_doubling_delays() {
    let reg = registry();
    let mut g = gate();
    let mut p = pipeline(vec![item(Stage::Pre, "norm", OnFailure::Abort)]);
    expect_call(p.advance(&reg, &mut g));
    assert_eq!(
        p.on_result(&reg, &mut g, CallResult::Timeout),
        Ok(AfterCall::RetryAfter(100))
    );
    expect_call(p.advance(&reg, &mut g));
    assert_eq!(
        p.on_result(&reg, &mut g, CallResult::Timeout),
        Ok(AfterCall::RetryAfter(200))
    );
    expect_call(p.advance(&reg, &mut g));
    let err = p.on_result(&reg, &mut g, CallResult::Timeout).unwrap_err();
    assert_eq!(err.reason, "extension_timeout");
    assert!(err.detail.contains("3 attempts"), "{}", err.detail);

    let mut p = pipeline(vec![item(Stage::Pre, "norm", OnFailure::Abort)]);
    expect_call(p.advance(&reg, &mut g));
    let err = p
        .on_result(&reg, &mut g, CallResult::Error("no responders".into()))
        .unwrap_err();
    assert_eq!(err.reason, "pre_processor_failed");
}

#[test]
fn modes_decide_between_abort_warn_and_ignore() {
    let reg = registry();
    let mut g = gate();
    for (mode, expect) in [(OnFailure::Warn, "warn"), (OnFailure::Ignore, "ignore")] {
        let mut p = pipeline(vec![item(Stage::Validator, "guard", mode)]);
        expect_call(p.advance(&reg, &mut g));
        assert_eq!(
            p.on_result(
                &reg,
                &mut g,
                CallResult::Reply(br#"{"status":"reject"}"#.to_vec())
            ),
            Ok(AfterCall::Continue)
        );
        assert_eq!(p.executed[0].status, expect);
        assert_eq!(p.advance(&reg, &mut g), Step::Select);
    }
    let mut p = pipeline(vec![item(Stage::Validator, "guard", OnFailure::Abort)]);
    expect_call(p.advance(&reg, &mut g));
    let err = p
        .on_result(
            &reg,
            &mut g,
            CallResult::Reply(br#"{"valid":false,"reason":"pii"}"#.to_vec()),
        )
        .unwrap_err();
    assert_eq!(
        (err.reason, err.detail.as_str()),
        ("validator_blocked", "pii")
    );
}

#[test]
fn non_object_reply_is_a_failure() {
    let reg = registry();
    let mut g = gate();
    let mut p = pipeline(vec![item(Stage::Pre, "norm", OnFailure::Warn)]);
    expect_call(p.advance(&reg, &mut g));
    p.on_result(&reg, &mut g, CallResult::Reply(b"[1]".to_vec()))
        .unwrap();
    assert_eq!(p.executed[0].status, "warn");
    assert_eq!(p.message, json!({"text":"Hi"}), "payload unchanged");
}

#[test]
fn unknown_extension_and_open_breaker_fail_before_calling() {
    let reg = registry();
    let mut g = gate();
    let mut p = pipeline(vec![item(Stage::Pre, "nope", OnFailure::Abort)]);
    match p.advance(&reg, &mut g) {
        Step::Failed(e) => assert_eq!(e.reason, "extension_not_found"),
        other => panic!("{other:?}"),
    }
    g.open.push("guard".into());
    let mut p = pipeline(vec![item(Stage::Validator, "guard", OnFailure::Abort)]);
    match p.advance(&reg, &mut g) {
        Step::Failed(e) => assert_eq!(e.reason, "extension_circuit_open"),
        other => panic!("{other:?}"),
    }
    let mut p = pipeline(vec![item(Stage::Validator, "guard", OnFailure::Warn)]);
    assert_eq!(p.advance(&reg, &mut g), Step::Select);
    assert!(g.records.is_empty(), "no call was made");
}

#[test]
fn when_false_skips_the_item() {
    let reg = registry();
    let mut g = gate();
    let mut it = item(Stage::Pre, "norm", OnFailure::Abort);
    it.when = Some(json!({"user_id": "someone-else"}));
    let mut p = pipeline(vec![it]);
    assert_eq!(p.advance(&reg, &mut g), Step::Select);
    assert_eq!(p.executed[0].status, "skipped");
}

#[test]
fn an_oversized_reply_or_context_fails_its_item_typed() {
    let reg = registry();
    let mut g = gate();
    // Over the reply bound: the item aborts with its own reason, whatever the stage.
    let mut p = pipeline(vec![item(Stage::Pre, "norm", OnFailure::Abort)]);
    expect_call(p.advance(&reg, &mut g));
    let huge = format!(r#"{{"payload":"{}"}}"#, "x".repeat(REPLY_MAX_BYTES));
    let err = p
        .on_result(&reg, &mut g, CallResult::Reply(huge.into_bytes()))
        .unwrap_err();
    assert_eq!(err.reason, "extension_reply_too_large");
    // Metadata that would grow the context past its bound: refused, the context kept;
    // a `warn` item moves on without it.
    let mut p = pipeline(vec![item(Stage::Pre, "norm", OnFailure::Warn)]);
    expect_call(p.advance(&reg, &mut g));
    let chatty = json!({"metadata": {"blob": "x".repeat(METADATA_MAX_BYTES)}}).to_string();
    p.on_result(&reg, &mut g, CallResult::Reply(chatty.into_bytes()))
        .unwrap();
    assert_eq!(p.executed[0].status, "warn");
    assert!(!p.context.contains_key("blob"), "the context stays bounded");
    // Just under the bound merges.
    let mut p = pipeline(vec![item(Stage::Pre, "norm", OnFailure::Abort)]);
    expect_call(p.advance(&reg, &mut g));
    let fits = json!({"metadata": {"blob": "x".repeat(METADATA_MAX_BYTES / 2)}}).to_string();
    p.on_result(&reg, &mut g, CallResult::Reply(fits.into_bytes()))
        .unwrap();
    assert!(p.context.contains_key("blob"));
}
