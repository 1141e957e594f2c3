//! Validation rules, named by the key declarations in `settings.rs`.
//!
//! A rule is `fn(key, value, settings) -> Result<(), ConfigError>`: `key` is the
//! `section.key` it is declared on, `value` that key's value, and `settings` the whole
//! configuration, for the rules that relate keys. Every error names the key, the value
//! and the rule it breaks; the texts are part of the interface (scripts and people read
//! `check-config`'s output), so they do not change lightly.

// A rule takes a reference to its key's field as declared (`&String`, `&Vec<u64>`): the
// declaring macro passes `&settings.<section>.<key>` to whatever rule is named.
#![allow(clippy::ptr_arg)]

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{err, ConfigError, Settings};

type Outcome = Result<(), ConfigError>;

pub(super) fn positive(key: &str, value: &u64, _: &Settings) -> Outcome {
    if *value == 0 {
        return Err(err(key, 0, "must be greater than 0"));
    }
    Ok(())
}

/// At least `min`.
pub(super) fn at_least(min: u64) -> impl Fn(&str, &u64, &Settings) -> Outcome {
    move |key, value, _| {
        if *value < min {
            return Err(err(key, value, format!("must be at least {min}")));
        }
        Ok(())
    }
}

pub(super) fn at_most(max: u64) -> impl Fn(&str, &u64, &Settings) -> Outcome {
    move |key, value, _| {
        if *value > max {
            return Err(err(key, value, format!("must be at most {max}")));
        }
        Ok(())
    }
}

pub(super) fn file_exists(key: &str, path: &Option<PathBuf>, _: &Settings) -> Outcome {
    match path {
        Some(p) if !p.is_file() => Err(err(key, p.display(), "must name an existing file")),
        _ => Ok(()),
    }
}

/// A literal subject: dot-separated non-empty tokens, no wildcards, no whitespace.
pub(super) fn subject(key: &str, value: &String, _: &Settings) -> Outcome {
    literal_subject(key, value)
}

fn literal_subject(key: &str, value: &str) -> Outcome {
    let ok = !value.is_empty()
        && value.split('.').all(|t| {
            !t.is_empty() && t != "*" && t != ">" && !t.contains(|c: char| c.is_whitespace())
        });
    if !ok {
        return Err(err(
            key,
            format!("{value:?}"),
            "must be a literal subject: non-empty dot-separated tokens, no wildcards or spaces",
        ));
    }
    Ok(())
}

/// A stream, consumer, bucket or node name: no dots, wildcards, path separators or
/// whitespace.
pub(super) fn name(key: &str, value: &String, _: &Settings) -> Outcome {
    let ok = !value.is_empty()
        && value.len() <= 255
        && !value.contains(|c: char| c.is_whitespace() || ".*>/\\".contains(c));
    if !ok {
        return Err(err(
            key,
            format!("{value:?}"),
            "must be 1 to 255 characters without spaces, '.', '*', '>', '/' or '\\'",
        ));
    }
    Ok(())
}

/// One of `choices`, spelled as the error shows them (`"a" or "b"`).
pub(super) fn one_of(
    choices: &'static [&'static str],
) -> impl Fn(&str, &String, &Settings) -> Outcome {
    move |key, value, _| {
        if !choices.contains(&value.as_str()) {
            let spelled: Vec<String> = choices.iter().map(|c| format!("{c:?}")).collect();
            return Err(err(
                key,
                format!("{value:?}"),
                format!("must be {}", spelled.join(" or ")),
            ));
        }
        Ok(())
    }
}

pub(super) fn nats_urls(key: &str, urls: &Vec<String>, _: &Settings) -> Outcome {
    if urls.is_empty() {
        return Err(err(key, "[]", "must list at least one server"));
    }
    for url in urls {
        if url.starts_with("ws://") || url.starts_with("wss://") {
            // The client is built without NATS WebSocket support: such a URL would pass
            // here and then fail at connect with an obscure error.
            return Err(err(
                key,
                format!("{url:?}"),
                "ws:// and wss:// are not supported by this build: use the server's NATS port (nats:// or tls://)",
            ));
        }
        let scheme_ok = ["nats://", "tls://"].iter().any(|s| url.starts_with(s));
        if !scheme_ok || url.contains(char::is_whitespace) {
            return Err(err(
                key,
                format!("{url:?}"),
                "each URL must start with nats:// or tls:// and hold no spaces",
            ));
        }
    }
    Ok(())
}

/// `nats.user`: comes with `nats.password`, is not empty, and is the only authentication
/// method (of user/password, token, nkey seed, creds file).
pub(super) fn nats_user(_: &str, user: &Option<String>, s: &Settings) -> Outcome {
    let n = &s.nats;
    match (user, &n.password) {
        (Some(_), None) => {
            return Err(err(
                "nats.password",
                "(unset)",
                "is required when nats.user is set",
            ))
        }
        (None, Some(_)) => {
            return Err(err(
                "nats.user",
                "(unset)",
                "is required when nats.password is set",
            ))
        }
        _ => {}
    }
    let methods = [
        n.user.is_some(),
        n.token.is_some(),
        n.nkey_seed_file.is_some(),
        n.creds_file.is_some(),
    ];
    if methods.iter().filter(|m| **m).count() > 1 {
        return Err(err(
            "nats",
            "user/password, token, nkey_seed_file, creds_file",
            "set at most one authentication method",
        ));
    }
    not_empty("nats.token", &n.token, s)?;
    not_empty("nats.user", user, s)
}

pub(super) fn not_empty(key: &str, value: &Option<String>, _: &Settings) -> Outcome {
    if value.as_deref() == Some("") {
        return Err(err(key, "\"\"", "must not be empty"));
    }
    Ok(())
}

/// `tls.key_file`: an existing file, given together with `tls.cert_file`.
pub(super) fn tls_key_file(key: &str, path: &Option<PathBuf>, s: &Settings) -> Outcome {
    file_exists(key, path, s)?;
    match (&s.tls.cert_file, path) {
        (Some(_), None) => Err(err(
            "tls.key_file",
            "(unset)",
            "is required when tls.cert_file is set",
        )),
        (None, Some(_)) => Err(err(
            "tls.cert_file",
            "(unset)",
            "is required when tls.key_file is set",
        )),
        _ => Ok(()),
    }
}

pub(super) fn dlq_suffix(key: &str, suffix: &String, _: &Settings) -> Outcome {
    if !suffix.starts_with('.') || literal_subject(key, &suffix[1..]).is_err() {
        return Err(err(
            key,
            format!("{suffix:?}"),
            "must be a dot followed by subject tokens, like \".dlq\"",
        ));
    }
    Ok(())
}

/// `subjects.usage` is a literal subject, and the subjects the router consumes or
/// publishes into streams all differ (else one stream would capture another's messages).
pub(super) fn usage_subject_and_distinct(key: &str, value: &String, s: &Settings) -> Outcome {
    subject(key, value, s)?;
    let s = &s.subjects;
    let inbound = [
        ("subjects.decide", &s.decide),
        ("subjects.result", &s.result),
        ("subjects.assignment_ack", &s.assignment_ack),
        ("subjects.assignment", &s.assignment),
        ("subjects.usage", &s.usage),
    ];
    for (i, (key, value)) in inbound.iter().enumerate() {
        if let Some((other, _)) = inbound[..i].iter().find(|(_, v)| v == value) {
            return Err(err(
                key,
                format!("{value:?}"),
                format!("must differ from {other}"),
            ));
        }
    }
    Ok(())
}

/// A consumer's `ack_wait_ms`.
pub(super) fn ack_wait(key: &str, value: &u64, _: &Settings) -> Outcome {
    if *value < 1_000 {
        return Err(err(key, value, "must be at least 1000"));
    }
    Ok(())
}

/// A consumer's `backoff_ms`, given the section's `max_deliver`.
pub(super) fn backoff(
    max_deliver: fn(&Settings) -> u64,
) -> impl Fn(&str, &Vec<u64>, &Settings) -> Outcome {
    move |key, delays, s| {
        let max_deliver = max_deliver(s);
        if delays.len() as u64 > max_deliver {
            return Err(err(
                key,
                format!("{delays:?}"),
                format!("must have at most max_deliver ({max_deliver}) entries"),
            ));
        }
        if delays.iter().any(|&d| d < 100) {
            return Err(err(
                key,
                format!("{delays:?}"),
                "every delay must be at least 100 ms",
            ));
        }
        Ok(())
    }
}

pub(super) fn duplicate_window(key: &str, value: &u64, _: &Settings) -> Outcome {
    if *value < 1_000 {
        return Err(err(
            key,
            value,
            "must be at least 1000 (publish retries rely on the window)",
        ));
    }
    Ok(())
}

/// `router.policies_dir`: required, an existing directory; the error names the key's flag.
pub(super) fn policies_dir(key: &str, dir: &Option<PathBuf>, _: &Settings) -> Outcome {
    match dir {
        None => Err(err(
            key,
            "(unset)",
            format!("is required (or pass --{})", super::flag_of(key)),
        )),
        Some(dir) if !dir.is_dir() => Err(err(key, dir.display(), "must be an existing directory")),
        Some(_) => Ok(()),
    }
}

/// `router.extensions_file`: an existing file holding a registry that parses.
pub(super) fn extensions_file(key: &str, path: &Option<PathBuf>, s: &Settings) -> Outcome {
    file_exists(key, path, s)?;
    s.extension_registry().map(|_| ())
}

pub(super) fn admin_token(key: &str, token: &Option<String>, _: &Settings) -> Outcome {
    if let Some(token) = token {
        if token.len() < 16 {
            // The value of a secret is never echoed.
            return Err(err(key, "(hidden)", "must be at least 16 characters"));
        }
    }
    Ok(())
}

pub(super) fn tenant_ids(key: &str, tenants: &Option<Vec<String>>, _: &Settings) -> Outcome {
    if let Some(bad) = tenants
        .iter()
        .flatten()
        .find(|t| t.is_empty() || t.len() > 255)
    {
        return Err(err(
            key,
            format!("{bad:?}"),
            "tenant ids must be 1 to 255 characters",
        ));
    }
    Ok(())
}

pub(super) fn worker_threads(key: &str, value: &u64, _: &Settings) -> Outcome {
    if *value > 256 {
        return Err(err(
            key,
            value.to_string(),
            "at most 256 (0 is one per core)",
        ));
    }
    Ok(())
}

pub(super) fn deadline_max(key: &str, max: &u64, s: &Settings) -> Outcome {
    let min = s.assignment.deadline_min_ms;
    if *max < min {
        return Err(err(
            key,
            max,
            format!("must be at least assignment.deadline_min_ms ({min})"),
        ));
    }
    Ok(())
}

/// `streams.replicas`, `state.kv_replicas`: JetStream allows 1 to 5; 0 chooses.
pub(super) fn replicas(key: &str, value: &u64, _: &Settings) -> Outcome {
    if *value > 5 {
        return Err(err(
            key,
            value,
            "must be 0 (chosen from the cluster) or 1 to 5",
        ));
    }
    Ok(())
}

/// `router.pull_heartbeat_ms`: nats-server wants an idle heartbeat of at least 100 ms
/// (and under half the pull request's 30 s expiry).
pub(super) fn pull_heartbeat(key: &str, value: &u64, _: &Settings) -> Outcome {
    if !(100..=10_000).contains(value) {
        return Err(err(key, value, "must be 100 to 10000"));
    }
    Ok(())
}

/// `state.kv_timeout_ms`: positive, and with a shared bucket under half the decide
/// consumer's ack wait, or a claim outlives the delivery it was made for.
pub(super) fn kv_timeout(key: &str, value: &u64, s: &Settings) -> Outcome {
    positive(key, value, s)?;
    let ack_wait = s.decide.ack_wait_ms;
    if s.state.shared() && *value >= ack_wait / 2 {
        return Err(err(
            key,
            value,
            format!(
                "must be under half of decide.ack_wait_ms ({ack_wait}), or a claim outlives the delivery"
            ),
        ));
    }
    Ok(())
}

pub(super) fn metrics_listen(key: &str, listen: &String, _: &Settings) -> Outcome {
    if !listen.is_empty() && listen.parse::<SocketAddr>().is_err() {
        return Err(err(
            key,
            format!("{listen:?}"),
            "must be host:port with an IP address (e.g. 0.0.0.0:9464), or empty to disable",
        ));
    }
    Ok(())
}

pub(super) fn log_level(key: &str, level: &String, _: &Settings) -> Outcome {
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(level) {
        return Err(err(
            key,
            format!("{level:?}"),
            format!("must be a tracing filter like \"info\" or \"info,async_nats=warn\": {e}"),
        ));
    }
    Ok(())
}
