//! The pure parts of the client: defaults, backoff, message ids, reply decoding.

use super::*;
use crate::contracts::{DecisionReason, ErrorCode};

#[test]
fn the_idempotency_key_defaults_to_the_request_id() {
    let mut request = DecideRequestBuilder::new("acme", "text.generate")
        .request_id("r-1")
        .build();
    prepare(&mut request).unwrap();
    assert_eq!(request.idempotency_key.as_deref(), Some("r-1"));
    assert_eq!(request.version, "1");

    let mut keyed = DecideRequestBuilder::new("acme", "text.generate")
        .request_id("r-2")
        .idempotency_key("order-7")
        .build();
    prepare(&mut keyed).unwrap();
    assert_eq!(keyed.idempotency_key.as_deref(), Some("order-7"));
}

#[test]
fn requests_the_router_would_refuse_are_refused_locally() {
    let mut no_tenant = DecideRequestBuilder::new("", "t").request_id("r").build();
    assert!(matches!(
        prepare(&mut no_tenant),
        Err(ClientError::InvalidRequest(_))
    ));
    let mut long_key = DecideRequestBuilder::new("acme", "t")
        .request_id("r")
        .idempotency_key("k".repeat(257))
        .build();
    assert!(matches!(
        prepare(&mut long_key),
        Err(ClientError::InvalidRequest(_))
    ));
    let mut long_id = DecideRequestBuilder::new("acme", "t")
        .request_id("r".repeat(256))
        .build();
    assert!(prepare(&mut long_id).is_err());
}

#[test]
fn the_builder_writes_the_wire_shape() {
    let mut payload = Map::new();
    payload.insert("prompt".into(), "hello world".into());
    let request = DecideRequestBuilder::new("acme", "text.generate")
        .request_id("r-1")
        .policy_id("premium")
        .payload(payload)
        .metadata("user_id", "u-1")
        .build();
    let v = serde_json::to_value(&request).unwrap();
    assert_eq!(v["version"], "1");
    assert_eq!(v["tenant_id"], "acme");
    assert_eq!(v["task"]["type"], "text.generate");
    assert_eq!(v["task"]["payload"]["prompt"], "hello world");
    assert_eq!(v["policy_id"], "premium");
    assert_eq!(v["metadata"]["user_id"], "u-1");
    assert!(v.get("constraints").is_none());
}

#[test]
fn backoff_doubles_and_is_capped() {
    let opts = DecideOptions {
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_millis(700),
        ..DecideOptions::default()
    };
    let pauses: Vec<u64> = (1..=6)
        .map(|a| opts.backoff(a).as_millis() as u64)
        .collect();
    assert_eq!(pauses, [100, 200, 400, 700, 700, 700]);
    // Huge attempt numbers neither overflow nor panic.
    assert_eq!(opts.backoff(u32::MAX), Duration::from_millis(700));
    assert_eq!(
        DecideOptions::default().with_max_attempts(0).max_attempts,
        1
    );
}

#[test]
fn every_publish_gets_its_own_message_id() {
    let a = message_id("n", "r-1", 1, 0);
    let b = message_id("n", "r-1", 2, 1);
    let c = message_id("n", "r-1", 1, 2);
    assert_ne!(a, b);
    assert_ne!(a, c);
    assert!(a.contains("r-1"));
}

#[test]
fn replies_are_matched_by_context_request_id() {
    assert_eq!(
        request_id_of(br#"{"ok":true,"context":{"request_id":"r-9"}}"#).as_deref(),
        Some("r-9")
    );
    assert_eq!(request_id_of(br#"{"ok":false,"context":{}}"#), None);
    assert_eq!(request_id_of(b"not json"), None);
}

#[test]
fn replies_decode_by_their_ok_field() {
    let ok = br#"{"ok":true,"decision":{"provider_id":"openai","priority":50,
        "expected_latency_ms":500,"expected_cost":0.01,"reason":"weighted"},
        "context":{"request_id":"r-1"}}"#;
    match decode_reply(ok).unwrap() {
        DecideReply::Decision(d) => {
            assert_eq!(d.decision.provider_id, "openai");
            assert_eq!(d.decision.reason, DecisionReason::Weighted);
        }
        other => panic!("{other:?}"),
    }
    let err = br#"{"ok":false,"error":{"code":"policy_not_found","message":"no policy"},
        "context":{"request_id":"r-1"}}"#;
    match decode_reply(err).unwrap() {
        DecideReply::Error(e) => assert_eq!(e.error.code, ErrorCode::PolicyNotFound),
        other => panic!("{other:?}"),
    }
    for bad in [&b"{}"[..], &b"[1]"[..], &b"{\"ok\":true}"[..], &b"\xff"[..]] {
        assert!(
            matches!(decode_reply(bad), Err(ClientError::Decode { .. })),
            "{bad:?}"
        );
    }
}
