//! Extensions: the registry of extension services and the per-request pipeline
//! pre -> validators -> (selection) -> post.
//!
//! The pipeline is a small state machine owned by one in-flight request. The router asks
//! it for the next `Step`, performs the call through the broker (`Command::Request`), and
//! hands the outcome back. Many requests' pipelines interleave; none blocks another.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::intake::encoded_len;

/// Limits of the wire contract (upstream's `extension_min/max_timeout_ms`, `max_retries`).
pub const MIN_TIMEOUT_MS: u64 = 10;
pub const MAX_TIMEOUT_MS: u64 = 5_000;
pub const MAX_RETRIES: u32 = 3;
/// Delay before retry `a` (1-based) of a timed-out call: 100 * 2^(a-1) ms.
pub const RETRY_BASE_MS: u64 = 100;
/// The largest extension reply the pipeline reads (the intake bound of a message):
/// beyond it the item fails with `extension_reply_too_large`.
pub const REPLY_MAX_BYTES: usize = 1_048_576;
/// The largest request context (metadata) extensions may build up, serialized: beyond
/// it the item fails with `extension_metadata_too_large`.
pub const METADATA_MAX_BYTES: usize = 65_536;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExtensionKind {
    Pre,
    Validator,
    Post,
    Provider,
}

impl ExtensionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExtensionKind::Pre => "pre",
            ExtensionKind::Validator => "validator",
            ExtensionKind::Post => "post",
            ExtensionKind::Provider => "provider",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtensionDef {
    pub id: String,
    pub kind: ExtensionKind,
    pub subject: String,
    pub timeout_ms: u64,
    /// Retries after a timeout; other failures are never retried.
    pub retry: u32,
    pub enabled: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid extension registry: field `{field}`: {rule}")]
pub struct RegistryError {
    pub field: String,
    pub rule: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtensionRegistry {
    defs: BTreeMap<String, ExtensionDef>,
}

impl ExtensionRegistry {
    /// Upstream's built-ins, used when no registry is configured.
    pub fn builtin() -> Self {
        let mut r = ExtensionRegistry::default();
        for (id, kind, subject, timeout_ms) in [
            (
                "normalize_text",
                ExtensionKind::Pre,
                "beamline.ext.pre.normalize_text.v1",
                100,
            ),
            (
                "pii_guard",
                ExtensionKind::Validator,
                "beamline.ext.validate.pii_guard.v1",
                200,
            ),
            (
                "mask_pii",
                ExtensionKind::Post,
                "beamline.ext.post.mask_pii.v1",
                150,
            ),
        ] {
            r.insert(ExtensionDef {
                id: id.into(),
                kind,
                subject: subject.into(),
                timeout_ms,
                retry: 0,
                enabled: true,
            });
        }
        r
    }

    pub fn insert(&mut self, def: ExtensionDef) {
        self.defs.insert(def.id.clone(), def);
    }

    pub fn get(&self, id: &str) -> Option<&ExtensionDef> {
        self.defs.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &ExtensionDef> {
        self.defs.values()
    }

    pub fn len(&self) -> usize {
        self.defs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }

    /// Parse a registry document: one definition object or a list of them.
    pub fn parse(text: &str) -> Result<Self, RegistryError> {
        let refuse = |field: String, rule: &str| RegistryError {
            field,
            rule: rule.to_string(),
        };
        let doc: Value = serde_json::from_str(text)
            .map_err(|e| refuse("$".into(), &format!("must be JSON: {e}")))?;
        let items = match doc {
            Value::Array(items) => items,
            obj @ Value::Object(_) => vec![obj],
            _ => return Err(refuse("$".into(), "must be an object or a list of objects")),
        };
        let mut registry = ExtensionRegistry::default();
        for (i, item) in items.iter().enumerate() {
            let f = |k: &str| format!("[{i}].{k}");
            let obj = item
                .as_object()
                .ok_or_else(|| refuse(format!("[{i}]"), "must be an object"))?;
            let text_field = |k: &str| -> Result<String, RegistryError> {
                match obj.get(k) {
                    Some(Value::String(s)) if !s.is_empty() && s.len() <= 255 => Ok(s.clone()),
                    _ => Err(refuse(f(k), "is required: a string of 1-255 characters")),
                }
            };
            let id = text_field("id")?;
            let kind = match text_field("type")?.as_str() {
                "pre" => ExtensionKind::Pre,
                "validator" | "validate" => ExtensionKind::Validator,
                "post" => ExtensionKind::Post,
                "provider" => ExtensionKind::Provider,
                _ => {
                    return Err(refuse(
                        f("type"),
                        "must be pre, validator, post or provider",
                    ))
                }
            };
            let subject = text_field("subject")?;
            if subject.contains(['*', '>', ' ']) {
                return Err(refuse(
                    f("subject"),
                    "must be a concrete subject (no wildcards)",
                ));
            }
            let timeout_ms = match obj.get("timeout_ms") {
                None => MAX_TIMEOUT_MS,
                Some(v) => v
                    .as_u64()
                    .filter(|t| (MIN_TIMEOUT_MS..=MAX_TIMEOUT_MS).contains(t))
                    .ok_or_else(|| refuse(f("timeout_ms"), "must be an integer in 10-5000"))?,
            };
            let retry = match obj.get("retry") {
                None => 0,
                Some(v) => v
                    .as_u64()
                    .filter(|r| *r <= u64::from(MAX_RETRIES))
                    .ok_or_else(|| refuse(f("retry"), "must be an integer in 0-3"))?
                    as u32,
            };
            let enabled = match obj.get("enabled") {
                None => true,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(refuse(f("enabled"), "must be a boolean")),
            };
            if registry.defs.contains_key(&id) {
                return Err(refuse(f("id"), "duplicate extension id"));
            }
            registry.insert(ExtensionDef {
                id,
                kind,
                subject,
                timeout_ms,
                retry,
                enabled,
            });
        }
        Ok(registry)
    }
}

/// Where an item sits in the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Pre,
    Validator,
    Post,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Pre => "pre",
            Stage::Validator => "validator",
            Stage::Post => "post",
        }
    }
}

/// What a failed item does to the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFailure {
    /// Abort the decision (pre/post `required`, validator `block`).
    Abort,
    /// Log and go on (pre/post `optional`, validator `warn`).
    Warn,
    /// Go on silently (validator `ignore`).
    Ignore,
}

/// One item of a policy's pipeline, as the core runs it.
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineItem {
    pub stage: Stage,
    pub id: String,
    pub on_failure: OnFailure,
    pub when: Option<Value>,
    pub config: Map<String, Value>,
}

/// The status of one item, reported in `decision.metadata.executed_extensions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Executed {
    #[serde(rename = "type")]
    pub stage: Stage,
    pub id: String,
    pub status: &'static str,
}

/// Why a pipeline aborted: an error code of the wire contract and the extension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineError {
    /// Internal reason, e.g. `validator_blocked`, `extension_timeout`.
    pub reason: &'static str,
    pub extension_id: String,
    pub detail: String,
}

/// A call the router must make now.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub extension_id: String,
    pub subject: String,
    pub payload: Vec<u8>,
    pub timeout_ms: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    Call(Call),
    /// Pre-processors and validators are done: choose a provider, then `selected`.
    Select,
    Done,
    Failed(PipelineError),
}

/// How a call ended, as the shell reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallResult {
    Reply(Vec<u8>),
    Timeout,
    Error(String),
}

/// After a call outcome: go on, or wait and retry the same call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterCall {
    Continue,
    RetryAfter(u64),
}

/// Whether an extension may be called now (its breaker), asked before each call.
pub trait ExtensionGate {
    fn allow(&mut self, extension_id: &str) -> bool;
    fn record(&mut self, extension_id: &str, success: bool);
}

#[derive(Debug)]
pub struct Pipeline {
    items: Vec<PipelineItem>,
    next: usize,
    attempt: u32,
    selected: bool,
    tenant_id: String,
    trace_id: Option<String>,
    /// The task payload, rewritten by pre-processors.
    pub message: Value,
    /// The request context (constraints + metadata), enriched by extensions.
    pub context: Map<String, Value>,
    /// The decision, once selected; post-processors see it.
    pub decision: Option<Value>,
    pub executed: Vec<Executed>,
}

impl Pipeline {
    pub fn new(
        items: Vec<PipelineItem>,
        tenant_id: String,
        trace_id: Option<String>,
        message: Value,
        context: Map<String, Value>,
    ) -> Self {
        Pipeline {
            items,
            next: 0,
            attempt: 0,
            selected: false,
            tenant_id,
            trace_id,
            message,
            context,
            decision: None,
            executed: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Where the pipeline stands: the stage of the next item, or `None` when no items remain.
    pub fn next_stage(&self) -> Option<Stage> {
        self.items.get(self.next).map(|i| i.stage)
    }

    /// The provider has been chosen; post-processors may run.
    pub fn selected(&mut self, decision: Value) {
        self.selected = true;
        self.decision = Some(decision);
    }

    /// The next thing to do. Skips items whose `when` is false, and items that fail
    /// before any call (unknown extension, open breaker) according to their mode.
    pub fn advance(&mut self, registry: &ExtensionRegistry, gate: &mut impl ExtensionGate) -> Step {
        loop {
            let Some(item) = self.items.get(self.next) else {
                return if self.selected {
                    Step::Done
                } else {
                    Step::Select
                };
            };
            if item.stage == Stage::Post && !self.selected {
                return Step::Select;
            }
            if let Some(when) = &item.when {
                if !crate::policy::when::matches(when, &self.context) {
                    self.finish_item("skipped");
                    continue;
                }
            }
            let def = match registry.get(&item.id) {
                Some(def) if def.enabled => def,
                _ => match self.fail(
                    "extension_not_found",
                    "not in the registry or disabled".into(),
                ) {
                    Some(err) => return Step::Failed(err),
                    None => continue,
                },
            };
            if !gate.allow(&def.id) {
                match self.fail("extension_circuit_open", "circuit breaker open".into()) {
                    Some(err) => return Step::Failed(err),
                    None => continue,
                }
            }
            self.attempt += 1;
            /// The call body, borrowed: serialized straight from the pipeline's state.
            #[derive(Serialize)]
            struct Body<'a> {
                #[serde(skip_serializing_if = "Option::is_none")]
                trace_id: Option<&'a str>,
                tenant_id: &'a str,
                payload: &'a Value,
                metadata: &'a Map<String, Value>,
                config: &'a Map<String, Value>,
            }
            const NULL: Value = Value::Null;
            let payload = match item.stage {
                Stage::Post => self.decision.as_ref().unwrap_or(&NULL),
                _ => &self.message,
            };
            let body = Body {
                trace_id: self.trace_id.as_deref(),
                tenant_id: &self.tenant_id,
                payload,
                metadata: &self.context,
                config: &item.config,
            };
            let payload = match serde_json::to_vec(&body) {
                Ok(payload) => payload,
                // Never call an extension with an empty body: the item fails as an
                // extension error would (required: the decision fails).
                Err(e) => match self.fail("extension_error", format!("call body: {e}")) {
                    Some(err) => return Step::Failed(err),
                    None => continue,
                },
            };
            return Step::Call(Call {
                extension_id: def.id.clone(),
                subject: def.subject.clone(),
                payload,
                timeout_ms: def.timeout_ms,
            });
        }
    }

    /// Fold a call's outcome into the pipeline. A timeout with retries left asks for a
    /// retry after a delay; every other outcome moves to the next item (or aborts, which
    /// the next `advance` reports).
    pub fn on_result(
        &mut self,
        registry: &ExtensionRegistry,
        gate: &mut impl ExtensionGate,
        result: CallResult,
    ) -> Result<AfterCall, PipelineError> {
        let Some(item) = self.items.get(self.next).cloned() else {
            return Ok(AfterCall::Continue);
        };
        let retries = registry.get(&item.id).map_or(0, |d| d.retry);
        let reply = match result {
            CallResult::Timeout => {
                gate.record(&item.id, false);
                if self.attempt <= retries {
                    let delay = RETRY_BASE_MS << (self.attempt - 1).min(16);
                    return Ok(AfterCall::RetryAfter(delay));
                }
                let detail = format!("timed out after {} attempts", self.attempt);
                return self.fail_or_continue("extension_timeout", detail);
            }
            CallResult::Error(reason) => {
                gate.record(&item.id, false);
                return self.fail_or_continue("extension_invocation_error", reason);
            }
            CallResult::Reply(bytes) => bytes,
        };
        gate.record(&item.id, true);
        if reply.len() > REPLY_MAX_BYTES {
            let detail = format!(
                "reply of {} bytes, over the {REPLY_MAX_BYTES}-byte bound",
                reply.len()
            );
            return self.fail_or_continue("extension_reply_too_large", detail);
        }
        let Ok(Value::Object(reply)) = serde_json::from_slice::<Value>(&reply) else {
            return self.fail_or_continue(
                "invalid_response_format",
                "reply is not a JSON object".into(),
            );
        };
        match item.stage {
            Stage::Pre => {
                if let Some(payload) = reply.get("payload") {
                    self.message = payload.clone();
                }
                if let Some(err) = self.merge_metadata(&reply) {
                    return err;
                }
            }
            Stage::Validator => {
                // Both reply shapes exist in the platform: `{"valid": bool}` and
                // `{"status": "ok"|"reject"}`. Missing means valid.
                let valid = match (reply.get("valid"), reply.get("status")) {
                    (Some(Value::Bool(v)), _) => *v,
                    (_, Some(Value::String(s))) => s != "reject",
                    _ => true,
                };
                if !valid {
                    let reason = reply
                        .get("reason")
                        .and_then(Value::as_str)
                        .unwrap_or("rejected")
                        .to_string();
                    return self.fail_or_continue("validator_blocked", reason);
                }
            }
            Stage::Post => {
                if let Some(err) = self.merge_metadata(&reply) {
                    return err;
                }
            }
        }
        self.finish_item("ok");
        Ok(AfterCall::Continue)
    }

    /// Merge a reply's metadata into the context, unless the context would outgrow its
    /// bound: every later call and the decision carry it, so one chatty extension must
    /// not grow them without limit. The size checked is the context's plus the reply's
    /// metadata (an upper bound of the merge, measured without building it). Returns the
    /// item's outcome when over.
    fn merge_metadata(
        &mut self,
        reply: &Map<String, Value>,
    ) -> Option<Result<AfterCall, PipelineError>> {
        let Some(Value::Object(meta)) = reply.get("metadata") else {
            return None;
        };
        let size = encoded_len(&self.context).saturating_add(encoded_len(meta));
        if size > METADATA_MAX_BYTES {
            let detail = format!(
                "metadata of up to {size} bytes once merged, over the {METADATA_MAX_BYTES}-byte bound"
            );
            return Some(self.fail_or_continue("extension_metadata_too_large", detail));
        }
        for (k, v) in meta {
            self.context.insert(k.clone(), v.clone());
        }
        None
    }

    fn fail_or_continue(
        &mut self,
        reason: &'static str,
        detail: String,
    ) -> Result<AfterCall, PipelineError> {
        match self.fail(reason, detail) {
            Some(err) => Err(err),
            None => Ok(AfterCall::Continue),
        }
    }

    /// The current item failed: abort (returns the error) or record and move on.
    fn fail(&mut self, reason: &'static str, detail: String) -> Option<PipelineError> {
        let item = &self.items[self.next];
        let (stage, id, on_failure) = (item.stage, item.id.clone(), item.on_failure);
        match on_failure {
            OnFailure::Abort => {
                self.finish_item("error");
                // Pre/post failures surface as their stage's error; validators block.
                let reason = match (stage, reason) {
                    (
                        _,
                        "extension_timeout"
                        | "extension_not_found"
                        | "extension_circuit_open"
                        | "extension_reply_too_large"
                        | "extension_metadata_too_large",
                    ) => reason,
                    (Stage::Validator, _) => "validator_blocked",
                    (Stage::Pre, _) => "pre_processor_failed",
                    (Stage::Post, _) => "post_processor_failed",
                };
                Some(PipelineError {
                    reason,
                    extension_id: id,
                    detail,
                })
            }
            OnFailure::Warn => {
                self.finish_item("warn");
                None
            }
            OnFailure::Ignore => {
                self.finish_item("ignore");
                None
            }
        }
    }

    fn finish_item(&mut self, status: &'static str) {
        let item = &self.items[self.next];
        self.executed.push(Executed {
            stage: item.stage,
            id: item.id.clone(),
            status,
        });
        self.next += 1;
        self.attempt = 0;
    }
}

#[cfg(test)]
#[path = "extensions_tests.rs"]
mod tests;
