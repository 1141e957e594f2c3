//! The settings sections: `sticky`, `rate_limit` and `circuit_breaker`. Each is validated
//! whether or not it is enabled (so that enabling it later cannot surprise), and kept only
//! when enabled.

use serde_json::Value;

use super::error::{refuse, PolicyError};
use super::fields::{fraction, Section};
use super::types::{CircuitBreaker, RateLimit, Sticky};

const STICKY_KEYS: &[&str] = &["enabled", "session_key", "ttl", "ttl_seconds"];
const RATE_LIMIT_KEYS: &[&str] = &["enabled", "requests_per_second", "burst"];
const BREAKER_KEYS: &[&str] = &[
    "enabled",
    "failure_threshold",
    "success_threshold",
    "timeout_ms",
    "half_open_max_calls",
    "error_rate_threshold",
    "error_rate_window_seconds",
    "min_requests",
    "latency_threshold_ms",
];

const DEFAULT_SESSION_KEY: &str = "session_id";
const DEFAULT_TTL_SECONDS: u64 = 3_600;
const MAX_TTL_SECONDS: u64 = 86_400;

/// `sticky {enabled, session_key, ttl | ttl_seconds}`. `enabled` is required (upstream's
/// validator). `ttl` ("90s", "10m", "1h") wins over `ttl_seconds`; if both are given they
/// must agree. The TTL is honoured, so a malformed one is refused (upstream fell back to
/// 3600 s and then ignored the TTL anyway).
pub(super) fn parse_sticky(
    path: &str,
    value: &Value,
    ignored: &mut Vec<String>,
) -> Result<Option<Sticky>, PolicyError> {
    let s = Section::new(path, value)?;
    s.note_unknown(STICKY_KEYS, ignored);
    let enabled = s.required_bool("enabled")?;
    let session_key = match s.get("session_key") {
        None => DEFAULT_SESSION_KEY.to_string(),
        Some(Value::String(k)) if (1..=255).contains(&k.chars().count()) => k.clone(),
        Some(_) => {
            return Err(refuse(
                s.field("session_key"),
                "must be a string of 1-255 characters",
            ))
        }
    };
    let ttl_seconds: Option<u64> = s.opt_uint("ttl_seconds", 1..=MAX_TTL_SECONDS)?;
    let ttl = match s.get("ttl") {
        None => None,
        Some(v) => Some(parse_ttl(v).ok_or_else(|| {
            refuse(
                s.field("ttl"),
                "must match ^[0-9]+[smh]$ and be within 1s-24h (e.g. \"10m\")",
            )
        })?),
    };
    let ttl_seconds = match (ttl, ttl_seconds) {
        (Some(a), Some(b)) if a != b => {
            return Err(refuse(
                s.field("ttl_seconds"),
                format!("disagrees with ttl ({a} s); give one or make them equal"),
            ))
        }
        (Some(t), _) | (None, Some(t)) => t,
        (None, None) => DEFAULT_TTL_SECONDS,
    };
    Ok(enabled.then_some(Sticky {
        session_key,
        ttl_seconds,
    }))
}

/// `"10m"` -> 600. `None` unless `^[0-9]+[smh]$` and within 1..=86400 seconds.
fn parse_ttl(value: &Value) -> Option<u64> {
    let text = value.as_str()?;
    let unit = text.chars().last()?;
    let digits = &text[..text.len() - unit.len_utf8()];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        _ => return None,
    };
    let seconds = digits.parse::<u64>().ok()?.checked_mul(scale)?;
    (1..=MAX_TTL_SECONDS).contains(&seconds).then_some(seconds)
}

/// `rate_limit {enabled, requests_per_second, burst}`. Out-of-range values are refused
/// (upstream clamped them).
pub(super) fn parse_rate_limit(
    path: &str,
    value: &Value,
    ignored: &mut Vec<String>,
) -> Result<Option<RateLimit>, PolicyError> {
    let r = Section::new(path, value)?;
    r.note_unknown(RATE_LIMIT_KEYS, ignored);
    let enabled = r.bool("enabled", false)?;
    let limit = RateLimit {
        requests_per_second: r.uint("requests_per_second", 1..=1_000_000, 100)?,
        burst: r.uint("burst", 1..=1_000_000, 50)?,
    };
    Ok(enabled.then_some(limit))
}

/// `circuit_breaker {...}` with upstream's JSON-schema ranges and defaults, plus our
/// `min_requests` volume floor. The error-rate threshold becomes per mille.
pub(super) fn parse_circuit_breaker(
    path: &str,
    value: &Value,
    ignored: &mut Vec<String>,
) -> Result<Option<CircuitBreaker>, PolicyError> {
    let c = Section::new(path, value)?;
    c.note_unknown(BREAKER_KEYS, ignored);
    let enabled = c.bool("enabled", false)?;
    let d = CircuitBreaker::DEFAULT;
    let error_rate_threshold_permille = match c.get("error_rate_threshold") {
        None => d.error_rate_threshold_permille,
        Some(v) => {
            let permille = fraction(v, &c.field("error_rate_threshold"), 1_000)?;
            u32::try_from(permille).unwrap_or(1_000)
        }
    };
    let breaker = CircuitBreaker {
        failure_threshold: c.uint("failure_threshold", 1..=100, d.failure_threshold)?,
        success_threshold: c.uint("success_threshold", 1..=10, d.success_threshold)?,
        timeout_ms: c.uint("timeout_ms", 1_000..=300_000, d.timeout_ms)?,
        half_open_max_calls: c.uint("half_open_max_calls", 1..=100, d.half_open_max_calls)?,
        error_rate_threshold_permille,
        error_rate_window_seconds: c.uint(
            "error_rate_window_seconds",
            1..=3_600,
            d.error_rate_window_seconds,
        )?,
        min_requests: c.uint("min_requests", 1..=10_000, d.min_requests)?,
        latency_threshold_ms: c.opt_uint("latency_threshold_ms", 1..=300_000)?,
    };
    Ok(enabled.then_some(breaker))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sticky(v: Value) -> Result<Option<Sticky>, PolicyError> {
        parse_sticky("sticky", &v, &mut Vec::new())
    }

    #[test]
    fn ttl_strings_become_seconds() {
        for (ttl, seconds) in [
            ("90s", 90),
            ("10m", 600),
            ("1h", 3_600),
            ("24h", 86_400),
            ("007m", 420),
        ] {
            assert_eq!(parse_ttl(&json!(ttl)), Some(seconds), "{ttl}");
        }
        for bad in [
            "",
            "m",
            "10",
            "10d",
            "1.5h",
            "-1m",
            "0s",
            "25h",
            "10 m",
            " 10m",
            "10M",
            "99999999999999999999h",
            "1é",
        ] {
            assert_eq!(parse_ttl(&json!(bad)), None, "{bad}");
        }
        assert_eq!(parse_ttl(&json!(600)), None);
    }

    #[test]
    fn sticky_defaults_and_precedence() {
        let s = sticky(json!({"enabled": true})).unwrap().unwrap();
        assert_eq!(
            (s.session_key.as_str(), s.ttl_seconds),
            ("session_id", 3_600)
        );
        let s = sticky(json!({"enabled": true, "ttl_seconds": 120}))
            .unwrap()
            .unwrap();
        assert_eq!(s.ttl_seconds, 120);
        let s = sticky(json!({"enabled": true, "ttl": "10m", "ttl_seconds": 600}))
            .unwrap()
            .unwrap();
        assert_eq!(s.ttl_seconds, 600);
        assert_eq!(
            sticky(json!({"enabled": false, "ttl": "5m"})).unwrap(),
            None
        );
    }

    #[test]
    fn sticky_refusals() {
        let cases = [
            (json!({}), "sticky.enabled"),
            (json!({"enabled": "yes"}), "sticky.enabled"),
            (json!({"enabled": true, "ttl": "10d"}), "sticky.ttl"),
            (json!({"enabled": false, "ttl": "soon"}), "sticky.ttl"),
            (
                json!({"enabled": true, "ttl_seconds": 0}),
                "sticky.ttl_seconds",
            ),
            (
                json!({"enabled": true, "ttl_seconds": 86_401}),
                "sticky.ttl_seconds",
            ),
            (
                json!({"enabled": true, "ttl": "10m", "ttl_seconds": 60}),
                "sticky.ttl_seconds",
            ),
            (
                json!({"enabled": true, "session_key": ""}),
                "sticky.session_key",
            ),
            (
                json!({"enabled": true, "session_key": "k".repeat(256)}),
                "sticky.session_key",
            ),
            (json!([]), "sticky"),
        ];
        for (v, field) in cases {
            let e = sticky(v.clone()).unwrap_err();
            assert_eq!(e.field, field, "{v}: {e}");
        }
    }

    #[test]
    fn rate_limit_is_kept_only_when_enabled() {
        let r = |v: Value| parse_rate_limit("rate_limit", &v, &mut Vec::new());
        assert_eq!(
            r(json!({"enabled": true})).unwrap(),
            Some(RateLimit {
                requests_per_second: 100,
                burst: 50
            })
        );
        assert_eq!(r(json!({"requests_per_second": 5})).unwrap(), None);
        assert_eq!(r(json!({"enabled": false, "burst": 7})).unwrap(), None);
        assert_eq!(
            r(json!({"enabled": true, "burst": 0})).unwrap_err().field,
            "rate_limit.burst"
        );
        assert_eq!(
            r(json!({"enabled": true, "requests_per_second": 1_000_001}))
                .unwrap_err()
                .field,
            "rate_limit.requests_per_second"
        );
        assert_eq!(
            r(json!({"enabled": true, "requests_per_second": 2.5}))
                .unwrap_err()
                .field,
            "rate_limit.requests_per_second"
        );
    }

    #[test]
    fn breaker_defaults_ranges_and_permille() {
        let c = |v: Value| parse_circuit_breaker("circuit_breaker", &v, &mut Vec::new());
        assert_eq!(
            c(json!({"enabled": true})).unwrap(),
            Some(CircuitBreaker::DEFAULT)
        );
        assert_eq!(c(json!({"enabled": false})).unwrap(), None);
        let b = c(
            json!({"enabled": true, "error_rate_threshold": 0.25, "min_requests": 20,
            "latency_threshold_ms": 2000}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(b.error_rate_threshold_permille, 250);
        assert_eq!(b.min_requests, 20);
        assert_eq!(b.latency_threshold_ms, Some(2_000));
        for (rate, permille) in [
            (json!(0), 0),
            (json!(1), 1_000),
            (json!(0.0005), 1),
            (json!(0.333), 333),
        ] {
            let b = c(json!({"enabled": true, "error_rate_threshold": rate}))
                .unwrap()
                .unwrap();
            assert_eq!(b.error_rate_threshold_permille, permille);
        }
        for (key, bad) in [
            ("failure_threshold", json!(0)),
            ("failure_threshold", json!(101)),
            ("success_threshold", json!(11)),
            ("timeout_ms", json!(999)),
            ("timeout_ms", json!(300_001)),
            ("half_open_max_calls", json!(0)),
            ("error_rate_threshold", json!(1.5)),
            ("error_rate_threshold", json!(-0.1)),
            ("error_rate_threshold", json!("0.5")),
            ("error_rate_window_seconds", json!(3_601)),
            ("min_requests", json!(0)),
            ("latency_threshold_ms", json!(0)),
        ] {
            // Refused even when disabled.
            let mut doc = json!({"enabled": false});
            doc[key] = bad.clone();
            let e = c(doc).unwrap_err();
            assert_eq!(
                e.field,
                format!("circuit_breaker.{key}"),
                "{key}={bad}: {e}"
            );
        }
    }
}
