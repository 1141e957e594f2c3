//! `beamline-router decide`: one request from a terminal, the reply printed as JSON,
//! as `nats req` would print it. For operators checking a tenant's policy by hand.

use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Map, Value};

use super::{DecideClient, DecideOptions, DecideReply, DecideRequestBuilder};

/// The payload sent when none is given: an object that passes the router's minimum size.
const DEFAULT_PAYLOAD: &str = r#"{"prompt":"hello from beamline-router decide"}"#;

/// Send one decide request and print the router's reply (the raw JSON) on stdout.
/// Returns the process exit code: 0 for a decision, 1 for an error reply. Transport
/// failures (no connection, no reply after the retries) are `Err`.
pub async fn decide_command(
    nats_url: &str,
    tenant: &str,
    task_type: &str,
    policy: Option<&str>,
    payload_json: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<i32> {
    let client = crate::shell::nats::connect_tool(None, nats_url).await?;
    decide_with(client, tenant, task_type, policy, payload_json, timeout).await
}

/// [`decide_command`] over a client already connected (`decide --config`: the URLs,
/// authentication and TLS of a router configuration file).
pub async fn decide_with(
    client: async_nats::Client,
    tenant: &str,
    task_type: &str,
    policy: Option<&str>,
    payload_json: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<i32> {
    let payload = parse_payload(payload_json.unwrap_or(DEFAULT_PAYLOAD))?;
    let decider = DecideClient::connect(client).await?;
    let mut request = DecideRequestBuilder::new(tenant, task_type).payload(payload);
    if let Some(policy) = policy {
        request = request.policy_id(policy);
    }
    let opts = options_for(timeout);
    let answer = decider.decide_raw(request, &opts).await?;
    println!("{}", String::from_utf8_lossy(&answer.raw));
    if answer.attempts > 1 {
        eprintln!("answered after {} attempts", answer.attempts);
    }
    Ok(match answer.reply {
        DecideReply::Decision(_) => 0,
        DecideReply::Error(_) => 1,
    })
}

/// `--payload` must be a JSON object: the contract's `task.payload`.
pub fn parse_payload(json: &str) -> anyhow::Result<Map<String, Value>> {
    match serde_json::from_str::<Value>(json).context("--payload is not valid JSON")? {
        Value::Object(map) => Ok(map),
        other => anyhow::bail!("--payload must be a JSON object, got {other}"),
    }
}

/// The whole command gets `timeout`: three attempts share it.
pub fn options_for(timeout: Duration) -> DecideOptions {
    let attempts = 3;
    let per_attempt = (timeout / attempts).max(Duration::from_millis(100));
    DecideOptions {
        timeout: per_attempt,
        max_attempts: attempts,
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
        publish_timeout: per_attempt,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_must_be_an_object() {
        assert_eq!(parse_payload(r#"{"a":1}"#).unwrap()["a"], 1);
        assert!(parse_payload("[1]").is_err());
        assert!(parse_payload("{").is_err());
        assert!(parse_payload(DEFAULT_PAYLOAD).is_ok());
    }

    #[test]
    fn attempts_share_the_timeout() {
        let opts = options_for(Duration::from_secs(9));
        assert_eq!(opts.max_attempts, 3);
        assert_eq!(opts.timeout, Duration::from_secs(3));
    }
}
