//! Requests addressed to the router itself (Part C INV-21; the admin contract): the
//! backpressure status is a pure function of the figures it reports, and admin answers
//! say `ok` exactly when the token was right.

use serde_json::Value;

use super::Checker;
use crate::actors::ops::Auth;

impl Checker {
    pub fn on_status_answer(&mut self, at: u64, payload: &[u8]) {
        self.counters.status_answers += 1;
        if let Some(problem) = status_problem(payload) {
            self.fail(at, "status_inconsistent", problem);
        }
    }

    pub fn on_admin_answer(&mut self, at: u64, op: &str, auth: Auth, payload: &[u8]) {
        self.counters.admin_answers += 1;
        if let Some(problem) = admin_problem(op, auth, payload) {
            self.fail(
                at,
                "admin_auth",
                format!("{op} with {auth:?} token: {problem}"),
            );
        }
    }
}

/// What is wrong with a backpressure status answer, if anything: two or more overloaded
/// signals are `active`, exactly one `warning`, none `inactive`.
pub fn status_problem(payload: &[u8]) -> Option<String> {
    let v: Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(e) => return Some(format!("status is not JSON: {e}")),
    };
    if v.get("success").and_then(Value::as_bool) != Some(true) {
        return Some(format!("status answer without success: {v}"));
    }
    let n = |p: &str| v.pointer(p).and_then(Value::as_u64);
    let (Some(pending), Some(p95), Some(inflight)) = (
        n("/data/metrics/pending_messages"),
        n("/data/metrics/latency_p95_ms"),
        n("/data/metrics/inflight_messages"),
    ) else {
        return Some(format!("status answer without metrics: {v}"));
    };
    let (Some(q), Some(l), Some(i)) = (
        n("/data/thresholds/queue_overload"),
        n("/data/thresholds/latency_overload_ms"),
        n("/data/thresholds/inflight_overload"),
    ) else {
        return Some(format!("status answer without thresholds: {v}"));
    };
    let over = u8::from(pending > q) + u8::from(p95 > l) + u8::from(inflight > i);
    let want = match over {
        0 => "inactive",
        1 => "warning",
        _ => "active",
    };
    let got = v.pointer("/data/status").and_then(Value::as_str);
    (got != Some(want))
        .then(|| format!("status {got:?} with {over} overloaded signals (want {want}): {v}"))
}

/// What is wrong with an admin answer, if anything.
pub fn admin_problem(op: &str, auth: Auth, payload: &[u8]) -> Option<String> {
    let v: Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(e) => return Some(format!("answer is not JSON: {e}")),
    };
    let code = v.pointer("/error/code").and_then(Value::as_str);
    match auth {
        Auth::Right => {
            (code == Some("unauthorized")).then(|| format!("refused with the right token: {v}"))
        }
        Auth::Wrong | Auth::Missing => {
            let refused =
                v.get("ok").and_then(Value::as_bool) == Some(false) && code == Some("unauthorized");
            (!refused).then(|| format!("{op} not refused: {v}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(s: &str, pending: u64, p95: u64, inflight: u64) -> Vec<u8> {
        serde_json::json!({"success": true, "data": {"status": s,
            "metrics": {"pending_messages": pending, "latency_p95_ms": p95, "inflight_messages": inflight},
            "thresholds": {"queue_overload": 10, "latency_overload_ms": 100, "inflight_overload": 5}}})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn the_status_must_follow_its_figures() {
        assert_eq!(status_problem(&status("inactive", 1, 1, 1)), None);
        assert_eq!(status_problem(&status("warning", 11, 1, 1)), None);
        assert_eq!(status_problem(&status("active", 11, 101, 1)), None);
        assert!(status_problem(&status("inactive", 11, 101, 1)).is_some());
        assert!(status_problem(&status("active", 11, 1, 1)).is_some());
        assert!(status_problem(b"{}").is_some());
    }

    #[test]
    fn admin_answers_follow_the_token() {
        let refused = br#"{"ok":false,"error":{"code":"unauthorized","message":"x"}}"#;
        let fine = br#"{"ok":true,"stats":{}}"#;
        assert_eq!(admin_problem("get_stats", Auth::Wrong, refused), None);
        assert_eq!(admin_problem("get_stats", Auth::Right, fine), None);
        assert!(admin_problem("get_stats", Auth::Missing, fine).is_some());
        assert!(admin_problem("get_stats", Auth::Right, refused).is_some());
    }
}
