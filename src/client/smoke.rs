//! `beamline-router smoke`: a deployment checked from outside, after a deploy or a
//! rollback (docs/OPERATIONS.md, "Upgrades and rollback"): a decide round trip for a
//! known tenant (a decision or a typed refusal, through JetStream and the reply inbox),
//! the backpressure status subject, and `/readyz` when a metrics address is given. Each
//! check prints one line; the command exits 0 only when every check passed.

use std::time::Duration;

use serde_json::Value;

use super::{DecideClient, DecideOptions, DecideReply, DecideRequestBuilder};
use crate::contracts::subjects::{BACKPRESSURE_STATUS, DECIDE};

/// What to check, and against what.
pub struct Smoke {
    pub tenant: String,
    pub policy: Option<String>,
    /// `host:port` of the router's metrics listener, for `/readyz`.
    pub metrics: Option<String>,
    pub timeout: Duration,
}

/// Run every check; true when all passed. Prints `ok <check>: ...` or `FAIL <check>: ...`.
pub async fn run(client: async_nats::Client, smoke: &Smoke) -> bool {
    let mut passed = true;
    let mut report = |check: &str, outcome: Result<String, String>| match outcome {
        Ok(detail) => println!("ok   {check}: {detail}"),
        Err(why) => {
            passed = false;
            println!("FAIL {check}: {why}");
        }
    };
    report("decide", decide(&client, smoke).await);
    report("status", status(&client, smoke.timeout).await);
    if let Some(addr) = &smoke.metrics {
        report("readyz", readyz(addr, smoke.timeout).await);
    }
    passed
}

async fn decide(client: &async_nats::Client, smoke: &Smoke) -> Result<String, String> {
    let decider = DecideClient::connect(client.clone())
        .await
        .map_err(|e| e.to_string())?;
    let mut payload = serde_json::Map::new();
    payload.insert("prompt".into(), "smoke test".into());
    let mut request = DecideRequestBuilder::new(&smoke.tenant, "text.generate")
        .request_id(format!("smoke-{}", &client.new_inbox()[7..19]))
        .payload(payload);
    if let Some(p) = &smoke.policy {
        request = request.policy_id(p);
    }
    let opts = DecideOptions::default()
        .with_timeout(smoke.timeout)
        .with_max_attempts(2);
    match decider.decide(request, &opts).await {
        Ok(DecideReply::Decision(d)) => Ok(format!(
            "provider {} ({}, policy revision {})",
            d.decision.provider_id,
            d.decision.reason.as_str(),
            d.decision.policy_revision.as_deref().unwrap_or("-")
        )),
        Ok(DecideReply::Error(e)) => Err(format!(
            "an error reply {}: {} (is the tenant's policy deployed?)",
            e.error.code.as_str(),
            e.error.message
        )),
        Err(e) => Err(format!("{e} (no router answers {DECIDE}?)")),
    }
}

async fn status(client: &async_nats::Client, timeout: Duration) -> Result<String, String> {
    let body = format!(r#"{{"subject":"{DECIDE}"}}"#);
    let reply = tokio::time::timeout(timeout, client.request(BACKPRESSURE_STATUS, body.into()))
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
        .map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_slice(&reply.payload).map_err(|e| format!("not JSON: {e}"))?;
    match v.pointer("/data/status").and_then(Value::as_str) {
        Some(s) if v["success"] == true => Ok(format!(
            "{s} (node {})",
            v["node_id"].as_str().unwrap_or("?")
        )),
        _ => Err(format!("unexpected answer {v}")),
    }
}

async fn readyz(addr: &str, timeout: Duration) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(
            format!("GET /readyz HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut text = String::new();
        s.read_to_string(&mut text).await?;
        Ok::<_, std::io::Error>(text)
    };
    let text = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
        .map_err(|e| format!("{addr}: {e}"))?;
    let status = text.split_whitespace().nth(1).unwrap_or("?").to_string();
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string();
    if status == "200" {
        Ok(format!("200 {body}"))
    } else {
        Err(format!("{status} {body}"))
    }
}
