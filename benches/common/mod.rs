//! What the core and memory benches share: the fixture policies, an extension registry
//! that knows every id the fixtures name, and the extensions' canned replies.

use std::path::Path;

use beamline_router::core::extensions::{ExtensionDef, ExtensionKind, ExtensionRegistry};
use beamline_router::policy::{load_dir, PolicyStore};

pub fn policies() -> PolicyStore {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/policies");
    load_dir(&dir).expect("policy fixtures load")
}

/// The built-in extensions plus every other id the fixtures name, so that each item of
/// each fixture's pipeline is a real call (none is skipped as "not found").
pub fn registry() -> ExtensionRegistry {
    let mut r = ExtensionRegistry::builtin();
    for (id, kind, subject) in [
        (
            "add_context",
            ExtensionKind::Pre,
            "beamline.ext.pre.add_context.v1",
        ),
        (
            "translate_to_en",
            ExtensionKind::Pre,
            "beamline.ext.pre.translate_to_en.v1",
        ),
        (
            "content_filter",
            ExtensionKind::Validator,
            "beamline.ext.validate.content_filter.v1",
        ),
        (
            "rate_limit_check",
            ExtensionKind::Validator,
            "beamline.ext.validate.rate_limit_check.v1",
        ),
        (
            "toxicity_score",
            ExtensionKind::Validator,
            "beamline.ext.validate.toxicity_score.v1",
        ),
        (
            "format_response",
            ExtensionKind::Post,
            "beamline.ext.post.format_response.v1",
        ),
    ] {
        r.insert(ExtensionDef {
            id: id.into(),
            kind,
            subject: subject.into(),
            timeout_ms: 200,
            retry: 0,
            enabled: true,
        });
    }
    r
}

/// The canned reply of an extension, by the stage its subject names.
pub fn canned_reply(subject: &str) -> Vec<u8> {
    let body: &[u8] = if subject.contains(".pre.") {
        br#"{"payload":{"text":"summarise the quarterly report in three bullet points."},"metadata":{"lang":"en"}}"#
    } else if subject.contains(".validate.") {
        br#"{"valid":true}"#
    } else {
        br#"{"metadata":{"masked":true}}"#
    };
    body.to_vec()
}
