//! Building the `ExecAssignment` for a decision (spec 3.6), and the W3C trace context
//! it carries. Identifiers come from the core's entropy, so a seed reproduces them.

use serde_json::{Map, Value};

use crate::contracts::subjects::{
    HEADER_MSG_ID, HEADER_SPAN_ID, HEADER_TENANT_ID, HEADER_TRACEPARENT, HEADER_TRACE_ID,
    HEADER_VERSION,
};
use crate::contracts::{
    AssignmentOptions, Correlation, DecideRequest, Decision, ExecAssignment, Executor,
    RetryOptions, VERSION,
};

use super::env::Entropy;
use super::io::Headers;

/// Assignment limits and defaults (upstream's `caf_*` keys).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssignmentConfig {
    /// Kill switch: when false no assignment is ever published.
    pub enabled: bool,
    /// Tenants allowed to push assignments; `None` allows all.
    pub allowed_tenants: Option<Vec<String>>,
    pub subject: String,
    pub deadline_min_ms: u64,
    pub deadline_max_ms: u64,
    pub deadline_multiplier: u64,
    pub retry_max_attempts: u32,
    pub retry_backoff_ms: u64,
}

impl Default for AssignmentConfig {
    fn default() -> Self {
        AssignmentConfig {
            enabled: true,
            allowed_tenants: None,
            subject: crate::contracts::subjects::ASSIGNMENT.to_string(),
            deadline_min_ms: 5_000,
            deadline_max_ms: 60_000,
            deadline_multiplier: 5,
            retry_max_attempts: 2,
            retry_backoff_ms: 200,
        }
    }
}

/// Why a requested assignment is not published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    GloballyDisabled,
    TenantNotAllowed,
}

impl AssignmentConfig {
    pub fn gate(&self, tenant_id: &str) -> Result<(), Skip> {
        if !self.enabled {
            return Err(Skip::GloballyDisabled);
        }
        match &self.allowed_tenants {
            Some(list) if !list.iter().any(|t| t == tenant_id) => Err(Skip::TenantNotAllowed),
            _ => Ok(()),
        }
    }

    /// `min(max, max(min, expected_latency * multiplier))`.
    pub fn deadline_ms(&self, expected_latency_ms: u64) -> u64 {
        expected_latency_ms
            .saturating_mul(self.deadline_multiplier)
            .clamp(
                self.deadline_min_ms,
                self.deadline_max_ms.max(self.deadline_min_ms),
            )
    }
}

/// A UUID v4 drawn from the entropy source.
pub fn uuid_v4(entropy: &mut impl Entropy) -> String {
    let (hi, lo) = (entropy.next_u64(), entropy.next_u64());
    let hi = (hi & 0xFFFF_FFFF_FFFF_0FFF) | 0x0000_0000_0000_4000;
    let lo = (lo & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xFFFF,
        hi & 0xFFFF,
        lo >> 48,
        lo & 0xFFFF_FFFF_FFFF
    )
}

/// The trace id to propagate: the inbound `traceparent`'s, else a W3C-shaped `trace_id`.
pub fn w3c_trace_id(inbound: &Headers, trace_id: Option<&str>) -> Option<String> {
    let from_header = inbound
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(HEADER_TRACEPARENT))
        .and_then(|(_, v)| parse_traceparent(v));
    from_header.or_else(|| {
        trace_id
            .filter(|t| {
                t.len() == 32
                    && t.bytes().all(|b| b.is_ascii_hexdigit())
                    && !t.bytes().all(|b| b == b'0')
            })
            .map(str::to_ascii_lowercase)
    })
}

/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`; returns the trace id.
pub fn parse_traceparent(v: &str) -> Option<String> {
    let parts: Vec<&str> = v.trim().split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    match parts[..] {
        [ver, trace, parent, flags]
            if hex(ver, 2)
                && ver != "ff"
                && hex(trace, 32)
                && hex(parent, 16)
                && hex(flags, 2)
                && trace.bytes().any(|b| b != b'0') =>
        {
            Some(trace.to_ascii_lowercase())
        }
        _ => None,
    }
}

/// The assignment and its headers. `Nats-Msg-Id` is the assignment id.
pub fn build(
    config: &AssignmentConfig,
    request: &DecideRequest,
    decision: &Decision,
    inbound: &Headers,
    entropy: &mut impl Entropy,
) -> (ExecAssignment, Headers) {
    let assignment_id = uuid_v4(entropy);
    let mut extra = Map::new();
    let mut retry = RetryOptions {
        max_attempts: config.retry_max_attempts,
        backoff_ms: config.retry_backoff_ms,
    };
    let mut deadline_ms = config.deadline_ms(decision.expected_latency_ms);
    let mut priority = decision.priority;
    if let Some(Value::Object(opts)) = request_options(request) {
        for (k, v) in opts {
            match (k.as_str(), v) {
                ("deadline_ms", Value::Number(n)) if n.as_u64().is_some() => {
                    deadline_ms = n
                        .as_u64()
                        .unwrap_or(deadline_ms)
                        .min(config.deadline_max_ms)
                }
                ("priority", Value::Number(n)) if n.as_u64().is_some() => {
                    priority = n.as_u64().unwrap_or(0).min(1_000) as u32
                }
                ("retry", Value::Object(r)) => {
                    if let Some(m) = r.get("max_attempts").and_then(Value::as_u64) {
                        retry.max_attempts = m.min(10) as u32;
                    }
                    if let Some(b) = r.get("backoff_ms").and_then(Value::as_u64) {
                        retry.backoff_ms = b.min(60_000);
                    }
                }
                _ => {
                    extra.insert(k.clone(), v.clone());
                }
            }
        }
    }
    let assignment = ExecAssignment {
        version: VERSION.to_string(),
        assignment_id: assignment_id.clone(),
        request_id: request.request_id.clone(),
        tenant_id: request.tenant_id.clone(),
        executor: Executor {
            provider_id: decision.provider_id.clone(),
            channel: "nats".to_string(),
        },
        job: serde_json::to_value(&request.task).unwrap_or(Value::Null),
        options: AssignmentOptions {
            priority,
            deadline_ms,
            retry,
            extra,
        },
        correlation: Correlation {
            trace_id: request.trace_id.clone(),
        },
        decision: decision.clone(),
        metadata: request.metadata.clone(),
    };
    let mut headers: Headers = vec![
        (HEADER_MSG_ID.to_string(), assignment_id),
        (HEADER_TENANT_ID.to_string(), request.tenant_id.clone()),
        (HEADER_VERSION.to_string(), VERSION.to_string()),
    ];
    if let Some(t) = &request.trace_id {
        headers.push((HEADER_TRACE_ID.to_string(), t.clone()));
    }
    if let Some(trace) = w3c_trace_id(inbound, request.trace_id.as_deref()) {
        // A new span for the router's hop, parented on the caller's trace.
        let span = format!("{:016x}", entropy.next_u64() | 1);
        headers.push((
            HEADER_TRACEPARENT.to_string(),
            format!("00-{trace}-{span}-01"),
        ));
        headers.push((HEADER_SPAN_ID.to_string(), span));
    }
    (assignment, headers)
}

fn request_options(request: &DecideRequest) -> Option<&Value> {
    request.options.as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Seq(u64);
    impl Entropy for Seq {
        fn next_u64(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0
        }
    }

    #[test]
    fn uuid_is_version_4() {
        let id = uuid_v4(&mut Seq(1));
        assert!(crate::intake::is_uuid_v4(&id), "{id}");
    }

    #[test]
    fn deadline_is_clamped() {
        let c = AssignmentConfig::default();
        assert_eq!(c.deadline_ms(100), 5_000);
        assert_eq!(c.deadline_ms(2_000), 10_000);
        assert_eq!(c.deadline_ms(100_000), 60_000);
    }

    #[test]
    fn gate_respects_kill_switch_and_allowlist() {
        let mut c = AssignmentConfig::default();
        assert_eq!(c.gate("acme"), Ok(()));
        c.allowed_tenants = Some(vec!["globex".into()]);
        assert_eq!(c.gate("acme"), Err(Skip::TenantNotAllowed));
        c.enabled = false;
        assert_eq!(c.gate("globex"), Err(Skip::GloballyDisabled));
    }

    #[test]
    fn traceparent_is_propagated_with_a_new_span() {
        let inbound = vec![(
            "traceparent".to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
        )];
        assert_eq!(
            w3c_trace_id(&inbound, None).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            parse_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(parse_traceparent("garbage"), None);
        assert_eq!(w3c_trace_id(&vec![], Some("tr-123")), None);
        assert!(w3c_trace_id(&vec![], Some("4BF92F3577B34DA6A3CE929D0E0E4736")).is_some());
    }
}
