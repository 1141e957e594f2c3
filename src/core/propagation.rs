//! The context an extension call carries in its headers (docs/API_CONTRACTS.md,
//! "Extensions"): whose request it is (`tenant_id`), which one (`request_id`), and the
//! trace it belongs to (`trace_id`, and a W3C `traceparent` whose span is the router's
//! call, with `span_id`), so that an extension can log, meter and trace it without
//! parsing the body.

use sha2::{Digest, Sha256};

use crate::contracts::subjects::{
    HEADER_REQUEST_ID, HEADER_SPAN_ID, HEADER_TENANT_ID, HEADER_TRACEPARENT, HEADER_TRACE_ID,
};
use crate::contracts::DecideRequest;

use super::assignment::w3c_trace_id;
use super::Headers;

/// The headers of a call to `extension_id` for `request` (received with `inbound`).
///
/// The span id is derived from the request and the extension, not drawn: an extension
/// call takes nothing from the core's entropy, so adding these headers changed no
/// decision of any replayed seed. A retry of the call keeps its span.
pub fn extension_headers(
    request: &DecideRequest,
    inbound: &Headers,
    extension_id: &str,
) -> Headers {
    let mut headers: Headers = vec![
        (HEADER_TENANT_ID.to_string(), request.tenant_id.clone()),
        (HEADER_REQUEST_ID.to_string(), request.request_id.clone()),
    ];
    if let Some(t) = &request.trace_id {
        headers.push((HEADER_TRACE_ID.to_string(), t.clone()));
    }
    if let Some(trace) = w3c_trace_id(inbound, request.trace_id.as_deref()) {
        let span = span_id(&request.request_id, extension_id);
        headers.push((
            HEADER_TRACEPARENT.to_string(),
            format!("00-{trace}-{span}-01"),
        ));
        headers.push((HEADER_SPAN_ID.to_string(), span));
    }
    headers
}

/// 16 hex digits from (request, extension), never all zero (W3C forbids it).
fn span_id(request_id: &str, extension_id: &str) -> String {
    let digest = Sha256::new()
        .chain_update(request_id.as_bytes())
        .chain_update([0u8])
        .chain_update(extension_id.as_bytes())
        .finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    format!("{:016x}", u64::from_be_bytes(bytes) | 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(trace_id: Option<&str>) -> DecideRequest {
        let mut v = serde_json::json!({"version": "1", "request_id": "r-1",
            "tenant_id": "acme", "task": {"type": "text.generate"}});
        if let Some(t) = trace_id {
            v["trace_id"] = t.into();
        }
        serde_json::from_value(v).unwrap()
    }

    fn get<'h>(h: &'h Headers, k: &str) -> Option<&'h str> {
        h.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_call_names_its_tenant_request_and_trace() {
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let h = extension_headers(&request(Some(trace)), &Vec::new(), "pii_guard");
        assert_eq!(get(&h, "tenant_id"), Some("acme"));
        assert_eq!(get(&h, "request_id"), Some("r-1"));
        assert_eq!(get(&h, "trace_id"), Some(trace));
        let parent = get(&h, "traceparent").unwrap();
        let span = get(&h, "span_id").unwrap();
        assert_eq!(parent, format!("00-{trace}-{span}-01"));
        // Another extension of the same request is another span of the same trace.
        let other = extension_headers(&request(Some(trace)), &Vec::new(), "mask_pii");
        assert_ne!(get(&other, "span_id"), Some(span));
        assert!(get(&other, "traceparent").unwrap().contains(trace));
    }

    #[test]
    fn the_inbound_traceparent_wins_and_a_plain_trace_id_gets_none() {
        let inbound = vec![(
            "traceparent".to_string(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_string(),
        )];
        let h = extension_headers(&request(Some("not-w3c")), &inbound, "x");
        assert!(get(&h, "traceparent")
            .unwrap()
            .starts_with("00-0af7651916cd43dd8448eb211c80319c-"));
        let h = extension_headers(&request(Some("not-w3c")), &Vec::new(), "x");
        assert_eq!(get(&h, "trace_id"), Some("not-w3c"));
        assert_eq!(get(&h, "traceparent"), None);
    }
}
