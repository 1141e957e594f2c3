//! The service's configuration: one TOML file, then `BEAMLINE_<SECTION>_<KEY>` environment
//! overrides, then command-line flags (applied by `main`), then validation.
//!
//! Every key is declared once in [`KEYS`] with its type: that table drives the type check
//! of the file, the environment overrides and the error messages. An invalid setting is
//! reported as [`ConfigError`]: the key, the value and the rule it breaks.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::contracts::subjects;
use crate::core::assignment::AssignmentConfig;
use crate::core::backpressure::BackpressureConfig;
use crate::core::extensions::ExtensionRegistry;
use crate::core::RouterConfig;

/// A setting that breaks a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// `section.key`, or `$file` for the file as a whole.
    pub key: String,
    pub value: String,
    pub rule: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invalid configuration: `{}` = {}: {}",
            self.key, self.value, self.rule
        )
    }
}

impl std::error::Error for ConfigError {}

fn err(key: &str, value: impl std::fmt::Display, rule: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        value: value.to_string(),
        rule: rule.into(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Str,
    Int,
    Bool,
    StrList,
    IntList,
}

/// Every key of the file: `(section, key, type)`. The environment variable of a key is
/// `BEAMLINE_<SECTION>_<KEY>` upper-cased; lists are comma-separated there.
pub const KEYS: &[(&str, &str, Kind)] = &[
    ("nats", "urls", Kind::StrList),
    ("nats", "user", Kind::Str),
    ("nats", "password", Kind::Str),
    ("nats", "token", Kind::Str),
    ("nats", "nkey_seed_file", Kind::Str),
    ("nats", "creds_file", Kind::Str),
    ("nats", "connect_timeout_ms", Kind::Int),
    ("nats", "publish_timeout_ms", Kind::Int),
    ("tls", "ca_file", Kind::Str),
    ("tls", "cert_file", Kind::Str),
    ("tls", "key_file", Kind::Str),
    ("tls", "require", Kind::Bool),
    ("subjects", "decide", Kind::Str),
    ("subjects", "decide_reply", Kind::Str),
    ("subjects", "decide_dlq", Kind::Str),
    ("subjects", "result", Kind::Str),
    ("subjects", "assignment", Kind::Str),
    ("subjects", "assignment_ack", Kind::Str),
    ("subjects", "usage", Kind::Str),
    ("subjects", "dlq_suffix", Kind::Str),
    ("streams", "decide", Kind::Str),
    ("streams", "results", Kind::Str),
    ("streams", "acks", Kind::Str),
    ("streams", "usage", Kind::Str),
    ("streams", "assignments", Kind::Str),
    ("streams", "dlq", Kind::Str),
    ("streams", "advisories", Kind::Str),
    ("streams", "duplicate_window_ms", Kind::Int),
    ("streams", "output_duplicate_window_ms", Kind::Int),
    ("decide", "consumer", Kind::Str),
    ("decide", "max_deliver", Kind::Int),
    ("decide", "ack_wait_ms", Kind::Int),
    ("decide", "max_ack_pending", Kind::Int),
    ("decide", "backoff_ms", Kind::IntList),
    ("results", "consumer", Kind::Str),
    ("results", "max_deliver", Kind::Int),
    ("results", "ack_wait_ms", Kind::Int),
    ("results", "max_ack_pending", Kind::Int),
    ("results", "backoff_ms", Kind::IntList),
    ("acks", "enabled", Kind::Bool),
    ("acks", "consumer", Kind::Str),
    ("acks", "max_deliver", Kind::Int),
    ("acks", "ack_wait_ms", Kind::Int),
    ("acks", "max_ack_pending", Kind::Int),
    ("acks", "backoff_ms", Kind::IntList),
    ("router", "node_id", Kind::Str),
    ("router", "policies_dir", Kind::Str),
    ("router", "extensions_file", Kind::Str),
    ("router", "admin_token", Kind::Str),
    ("router", "tenant_allowlist", Kind::StrList),
    ("router", "pull_batch", Kind::Int),
    ("router", "worker_threads", Kind::Int),
    ("router", "shutdown_grace_ms", Kind::Int),
    ("router", "max_payload_bytes", Kind::Int),
    ("router", "idempotency_ttl_ms", Kind::Int),
    ("assignment", "enabled", Kind::Bool),
    ("assignment", "allowed_tenants", Kind::StrList),
    ("assignment", "deadline_min_ms", Kind::Int),
    ("assignment", "deadline_max_ms", Kind::Int),
    ("assignment", "deadline_multiplier", Kind::Int),
    ("assignment", "retry_max_attempts", Kind::Int),
    ("assignment", "retry_backoff_ms", Kind::Int),
    ("backpressure", "queue_overload", Kind::Int),
    ("backpressure", "latency_overload_ms", Kind::Int),
    ("backpressure", "inflight_overload", Kind::Int),
    ("backpressure", "retry_after_seconds", Kind::Int),
    ("backpressure", "latency_window", Kind::Int),
    ("backpressure", "latency_max_age_ms", Kind::Int),
    ("state", "backend", Kind::Str),
    ("state", "kv_bucket", Kind::Str),
    ("state", "kv_replicas", Kind::Int),
    ("state", "kv_timeout_ms", Kind::Int),
    ("metrics", "listen", Kind::Str),
    ("log", "format", Kind::Str),
    ("log", "level", Kind::Str),
];

pub fn env_name(section: &str, key: &str) -> String {
    format!("BEAMLINE_{section}_{key}").to_ascii_uppercase()
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub nats: NatsSettings,
    pub tls: TlsSettings,
    pub subjects: SubjectSettings,
    pub streams: StreamSettings,
    pub decide: DecideSettings,
    pub results: ResultsSettings,
    pub acks: AckSettings,
    pub router: RouterSettings,
    pub assignment: AssignmentSettings,
    pub backpressure: BackpressureSettings,
    pub state: StateSettings,
    pub metrics: MetricsSettings,
    pub log: LogSettings,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsSettings {
    pub urls: Vec<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub nkey_seed_file: Option<PathBuf>,
    pub creds_file: Option<PathBuf>,
    pub connect_timeout_ms: u64,
    pub publish_timeout_ms: u64,
}

impl Default for NatsSettings {
    fn default() -> Self {
        NatsSettings {
            urls: vec!["nats://127.0.0.1:4222".to_string()],
            user: None,
            password: None,
            token: None,
            nkey_seed_file: None,
            creds_file: None,
            connect_timeout_ms: 5_000,
            publish_timeout_ms: 5_000,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub require: bool,
}

impl TlsSettings {
    pub fn enabled(&self) -> bool {
        self.require || self.ca_file.is_some() || self.cert_file.is_some()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubjectSettings {
    pub decide: String,
    pub decide_reply: String,
    pub decide_dlq: String,
    pub result: String,
    pub assignment: String,
    pub assignment_ack: String,
    pub usage: String,
    pub dlq_suffix: String,
}

impl Default for SubjectSettings {
    fn default() -> Self {
        SubjectSettings {
            decide: subjects::DECIDE.into(),
            decide_reply: subjects::DECIDE_REPLY.into(),
            decide_dlq: subjects::DECIDE_DLQ.into(),
            result: subjects::RESULT.into(),
            assignment: subjects::ASSIGNMENT.into(),
            assignment_ack: subjects::ASSIGNMENT_ACK.into(),
            usage: subjects::USAGE.into(),
            dlq_suffix: ".dlq".into(),
        }
    }
}

impl SubjectSettings {
    pub fn result_dlq(&self) -> String {
        format!("{}{}", self.result, self.dlq_suffix)
    }
    pub fn ack_dlq(&self) -> String {
        format!("{}{}", self.assignment_ack, self.dlq_suffix)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamSettings {
    pub decide: String,
    pub results: String,
    pub acks: String,
    pub usage: String,
    pub assignments: String,
    pub dlq: String,
    /// The server's MAX_DELIVERIES advisories for the router's consumers, pulled by the
    /// durable `<decide.consumer>-advisories`.
    pub advisories: String,
    pub duplicate_window_ms: u64,
    /// The duplicate window of the streams the router writes (assignments, usage, DLQ);
    /// 0 derives it from the consumers (`Settings::output_duplicate_window`).
    pub output_duplicate_window_ms: u64,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            decide: "BEAMLINE_DECIDE".into(),
            results: "BEAMLINE_RESULTS".into(),
            acks: "BEAMLINE_ASSIGN_ACKS".into(),
            usage: "BEAMLINE_USAGE".into(),
            assignments: "BEAMLINE_ASSIGNMENTS".into(),
            dlq: "BEAMLINE_DLQ".into(),
            advisories: "BEAMLINE_ADVISORIES".into(),
            duplicate_window_ms: 120_000,
            output_duplicate_window_ms: 0,
        }
    }
}

/// A durable pull consumer's settings, whichever section they came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerSettings {
    pub consumer: String,
    pub max_deliver: u64,
    pub ack_wait_ms: u64,
    pub max_ack_pending: u64,
    pub backoff_ms: Vec<u64>,
}

macro_rules! consumer_section {
    ($name:ident, $consumer:expr, $max_deliver:expr) => {
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            pub consumer: String,
            pub max_deliver: u64,
            pub ack_wait_ms: u64,
            pub max_ack_pending: u64,
            pub backoff_ms: Vec<u64>,
        }

        impl Default for $name {
            fn default() -> Self {
                $name {
                    consumer: $consumer.into(),
                    max_deliver: $max_deliver,
                    ack_wait_ms: 30_000,
                    max_ack_pending: 256,
                    backoff_ms: Vec::new(),
                }
            }
        }

        impl $name {
            pub fn consumer_settings(&self) -> ConsumerSettings {
                ConsumerSettings {
                    consumer: self.consumer.clone(),
                    max_deliver: self.max_deliver,
                    ack_wait_ms: self.ack_wait_ms,
                    max_ack_pending: self.max_ack_pending,
                    backoff_ms: self.backoff_ms.clone(),
                }
            }
        }
    };
}

consumer_section!(DecideSettings, "router-decide", 5);
consumer_section!(ResultsSettings, "router-results", 10);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AckSettings {
    /// Consume assignment acks at all (they are informational).
    pub enabled: bool,
    pub consumer: String,
    pub max_deliver: u64,
    pub ack_wait_ms: u64,
    pub max_ack_pending: u64,
    pub backoff_ms: Vec<u64>,
}

impl Default for AckSettings {
    fn default() -> Self {
        AckSettings {
            enabled: false,
            consumer: "router-assign-acks".into(),
            max_deliver: 3,
            ack_wait_ms: 30_000,
            max_ack_pending: 256,
            backoff_ms: Vec::new(),
        }
    }
}

impl AckSettings {
    pub fn consumer_settings(&self) -> ConsumerSettings {
        ConsumerSettings {
            consumer: self.consumer.clone(),
            max_deliver: self.max_deliver,
            ack_wait_ms: self.ack_wait_ms,
            max_ack_pending: self.max_ack_pending,
            backoff_ms: self.backoff_ms.clone(),
        }
    }
}

/// One worker thread by default. The core is one loop on one thread whatever the count;
/// more threads only run the client's I/O beside it. On the 2-core bench machine one
/// thread costs less CPU per request for the same throughput, and it rules out the
/// async-nats race that made pull streams stall (docs/PERFORMANCE.md, "A stall of the
/// pull"): its pull task and its stream can then not run at the same time.
pub const DEFAULT_WORKER_THREADS: u64 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterSettings {
    pub node_id: String,
    pub policies_dir: Option<PathBuf>,
    pub extensions_file: Option<PathBuf>,
    pub admin_token: Option<String>,
    pub tenant_allowlist: Option<Vec<String>>,
    pub pull_batch: u64,
    /// Threads of the tokio runtime; 0 is one per core. See `DEFAULT_WORKER_THREADS`.
    pub worker_threads: u64,
    pub shutdown_grace_ms: u64,
    pub max_payload_bytes: u64,
    pub idempotency_ttl_ms: u64,
}

impl Default for RouterSettings {
    fn default() -> Self {
        let core = RouterConfig::default();
        RouterSettings {
            node_id: "router-1".into(),
            policies_dir: None,
            extensions_file: None,
            admin_token: None,
            tenant_allowlist: None,
            pull_batch: 64,
            worker_threads: DEFAULT_WORKER_THREADS,
            shutdown_grace_ms: 5_000,
            max_payload_bytes: core.max_payload_bytes as u64,
            idempotency_ttl_ms: core.idempotency_ttl_ms,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AssignmentSettings {
    pub enabled: bool,
    pub allowed_tenants: Option<Vec<String>>,
    pub deadline_min_ms: u64,
    pub deadline_max_ms: u64,
    pub deadline_multiplier: u64,
    pub retry_max_attempts: u64,
    pub retry_backoff_ms: u64,
}

impl Default for AssignmentSettings {
    fn default() -> Self {
        let a = AssignmentConfig::default();
        AssignmentSettings {
            enabled: a.enabled,
            allowed_tenants: a.allowed_tenants,
            deadline_min_ms: a.deadline_min_ms,
            deadline_max_ms: a.deadline_max_ms,
            deadline_multiplier: a.deadline_multiplier,
            retry_max_attempts: u64::from(a.retry_max_attempts),
            retry_backoff_ms: a.retry_backoff_ms,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackpressureSettings {
    pub queue_overload: u64,
    pub latency_overload_ms: u64,
    pub inflight_overload: u64,
    pub retry_after_seconds: u64,
    pub latency_window: u64,
    pub latency_max_age_ms: u64,
}

impl Default for BackpressureSettings {
    fn default() -> Self {
        let b = BackpressureConfig::default();
        BackpressureSettings {
            queue_overload: b.queue_overload,
            latency_overload_ms: b.latency_overload_ms,
            inflight_overload: b.inflight_overload,
            retry_after_seconds: b.retry_after_seconds,
            latency_window: b.latency_window as u64,
            latency_max_age_ms: b.latency_max_age_ms,
        }
    }
}

/// Where idempotency answers live: `memory` (one instance) or `kv`, a NATS KV bucket
/// shared by every instance (`core/shared.rs`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateSettings {
    pub backend: String,
    pub kv_bucket: String,
    pub kv_replicas: u64,
    /// A create the bucket has not confirmed in this time counts as failed (ambiguous):
    /// the message is given back and claimed again on redelivery.
    pub kv_timeout_ms: u64,
}

impl Default for StateSettings {
    fn default() -> Self {
        StateSettings {
            backend: "memory".into(),
            kv_bucket: "beamline-router-answers".into(),
            kv_replicas: 1,
            kv_timeout_ms: 2_000,
        }
    }
}

impl StateSettings {
    pub fn shared(&self) -> bool {
        self.backend == "kv"
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// `host:port` of the HTTP server for `/metrics`, `/healthz`, `/readyz`; empty disables it.
    pub listen: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub format: String,
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: "pretty".into(),
            level: "info,async_nats=warn".into(),
        }
    }
}

fn kind_of(section: &str, key: &str) -> Option<Kind> {
    KEYS.iter()
        .find(|(s, k, _)| *s == section && *k == key)
        .map(|(_, _, kind)| *kind)
}

fn type_rule(kind: Kind) -> &'static str {
    match kind {
        Kind::Str => "must be a string",
        Kind::Int => "must be a non-negative integer",
        Kind::Bool => "must be true or false",
        Kind::StrList => "must be a list of strings",
        Kind::IntList => "must be a list of non-negative integers",
    }
}

fn value_fits(kind: Kind, value: &toml::Value) -> bool {
    use toml::Value as V;
    match (kind, value) {
        (Kind::Str, V::String(_)) | (Kind::Bool, V::Boolean(_)) => true,
        (Kind::Int, V::Integer(i)) => *i >= 0,
        (Kind::StrList, V::Array(items)) => items.iter().all(|v| v.is_str()),
        (Kind::IntList, V::Array(items)) => {
            items.iter().all(|v| v.as_integer().is_some_and(|i| i >= 0))
        }
        _ => false,
    }
}

/// Parse an environment variable's text as a value of `kind`.
fn env_value(name: &str, kind: Kind, text: &str) -> Result<toml::Value, ConfigError> {
    use toml::Value as V;
    let bad = || err(name, format!("{text:?}"), type_rule(kind));
    let list = || {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
    };
    Ok(match kind {
        Kind::Str => V::String(text.to_string()),
        Kind::Int => V::Integer(text.trim().parse::<u32>().map_err(|_| bad())?.into()),
        Kind::Bool => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => V::Boolean(true),
            "false" | "0" | "no" => V::Boolean(false),
            _ => return Err(bad()),
        },
        Kind::StrList => V::Array(list().into_iter().map(|s| V::String(s.into())).collect()),
        Kind::IntList => V::Array(
            list()
                .into_iter()
                .map(|s| s.parse::<u32>().map(|n| V::Integer(n.into())))
                .collect::<Result<_, _>>()
                .map_err(|_| bad())?,
        ),
    })
}

impl Settings {
    /// Read `file` (if any) and apply the environment overrides given by `env`
    /// (`std::env::var` in production; a map in tests). Not yet validated.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let text = match file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| err("$file", path.display(), format!("cannot be read: {e}")))?,
            None => String::new(),
        };
        Settings::parse(&text, env)
    }

    pub fn parse(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            err("$file", "(TOML)", format!("is not valid TOML: {e}"))
        })?;
        // Type-check what the file says, so that a wrong type names its key.
        for (section, body) in &table {
            let Some(body) = body.as_table() else {
                return Err(err(section, body, "must be a [section]"));
            };
            for (key, value) in body {
                let name = format!("{section}.{key}");
                let Some(kind) = kind_of(section, key) else {
                    return Err(err(&name, value, "unknown key (see docs/CONFIG.md)"));
                };
                if !value_fits(kind, value) {
                    return Err(err(&name, value, type_rule(kind)));
                }
            }
        }
        for (section, key, kind) in KEYS {
            let name = env_name(section, key);
            if let Some(text) = env(&name) {
                let value = env_value(&name, *kind, &text)?;
                table
                    .entry(section.to_string())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                    .as_table_mut()
                    .expect("sections are tables")
                    .insert(key.to_string(), value);
            }
        }
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| err("$file", "(TOML)", e.to_string()))
    }

    /// Check every rule; the first broken one is returned. Files named by the config must
    /// exist; the extension registry must parse.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let n = &self.nats;
        if n.urls.is_empty() {
            return Err(err("nats.urls", "[]", "must list at least one server"));
        }
        for url in &n.urls {
            let scheme_ok = ["nats://", "tls://", "ws://", "wss://"]
                .iter()
                .any(|s| url.starts_with(s));
            if !scheme_ok || url.contains(char::is_whitespace) {
                return Err(err(
                    "nats.urls",
                    format!("{url:?}"),
                    "each URL must start with nats://, tls://, ws:// or wss:// and hold no spaces",
                ));
            }
            if self.tls.require && url.starts_with("ws://") {
                return Err(err(
                    "nats.urls",
                    format!("{url:?}"),
                    "plain ws:// cannot be used when tls.require = true",
                ));
            }
        }
        match (&n.user, &n.password) {
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
        for (key, value) in [("nats.token", &n.token), ("nats.user", &n.user)] {
            if value.as_deref() == Some("") {
                return Err(err(key, "\"\"", "must not be empty"));
            }
        }
        file_exists("nats.nkey_seed_file", n.nkey_seed_file.as_deref())?;
        file_exists("nats.creds_file", n.creds_file.as_deref())?;
        positive("nats.connect_timeout_ms", n.connect_timeout_ms)?;
        positive("nats.publish_timeout_ms", n.publish_timeout_ms)?;

        let t = &self.tls;
        file_exists("tls.ca_file", t.ca_file.as_deref())?;
        file_exists("tls.cert_file", t.cert_file.as_deref())?;
        file_exists("tls.key_file", t.key_file.as_deref())?;
        match (&t.cert_file, &t.key_file) {
            (Some(_), None) => {
                return Err(err(
                    "tls.key_file",
                    "(unset)",
                    "is required when tls.cert_file is set",
                ))
            }
            (None, Some(_)) => {
                return Err(err(
                    "tls.cert_file",
                    "(unset)",
                    "is required when tls.key_file is set",
                ))
            }
            _ => {}
        }

        let s = &self.subjects;
        for (key, value) in [
            ("subjects.decide", &s.decide),
            ("subjects.decide_reply", &s.decide_reply),
            ("subjects.decide_dlq", &s.decide_dlq),
            ("subjects.result", &s.result),
            ("subjects.assignment", &s.assignment),
            ("subjects.assignment_ack", &s.assignment_ack),
            ("subjects.usage", &s.usage),
        ] {
            subject(key, value)?;
        }
        if !s.dlq_suffix.starts_with('.')
            || subject("subjects.dlq_suffix", &s.dlq_suffix[1..]).is_err()
        {
            return Err(err(
                "subjects.dlq_suffix",
                format!("{:?}", s.dlq_suffix),
                "must be a dot followed by subject tokens, like \".dlq\"",
            ));
        }
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

        let st = &self.streams;
        for (key, value) in [
            ("streams.decide", &st.decide),
            ("streams.results", &st.results),
            ("streams.acks", &st.acks),
            ("streams.usage", &st.usage),
            ("streams.assignments", &st.assignments),
            ("streams.dlq", &st.dlq),
            ("streams.advisories", &st.advisories),
        ] {
            name(key, value)?;
        }
        if st.duplicate_window_ms < 1_000 {
            return Err(err(
                "streams.duplicate_window_ms",
                st.duplicate_window_ms,
                "must be at least 1000 (publish retries rely on the window)",
            ));
        }

        consumer("decide", &self.decide.consumer_settings(), 2)?;
        consumer("results", &self.results.consumer_settings(), 1)?;
        consumer("acks", &self.acks.consumer_settings(), 1)?;

        let r = &self.router;
        name("router.node_id", &r.node_id)?;
        match &r.policies_dir {
            None => {
                return Err(err(
                    "router.policies_dir",
                    "(unset)",
                    "is required (or pass --policies)",
                ))
            }
            Some(dir) if !dir.is_dir() => {
                return Err(err(
                    "router.policies_dir",
                    dir.display(),
                    "must be an existing directory",
                ))
            }
            Some(_) => {}
        }
        file_exists("router.extensions_file", r.extensions_file.as_deref())?;
        self.extension_registry()?;
        if let Some(token) = &r.admin_token {
            if token.len() < 16 {
                return Err(err(
                    "router.admin_token",
                    "(hidden)",
                    "must be at least 16 characters",
                ));
            }
        }
        for (key, list) in [
            ("router.tenant_allowlist", &r.tenant_allowlist),
            (
                "assignment.allowed_tenants",
                &self.assignment.allowed_tenants,
            ),
        ] {
            if let Some(bad) = list
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
        }
        positive("router.pull_batch", r.pull_batch)?;
        if r.worker_threads > 256 {
            return Err(err(
                "router.worker_threads",
                r.worker_threads.to_string(),
                "at most 256 (0 is one per core)",
            ));
        }
        positive("router.max_payload_bytes", r.max_payload_bytes)?;
        positive("router.idempotency_ttl_ms", r.idempotency_ttl_ms)?;

        let a = &self.assignment;
        positive("assignment.deadline_min_ms", a.deadline_min_ms)?;
        if a.deadline_max_ms < a.deadline_min_ms {
            return Err(err(
                "assignment.deadline_max_ms",
                a.deadline_max_ms,
                format!(
                    "must be at least assignment.deadline_min_ms ({})",
                    a.deadline_min_ms
                ),
            ));
        }
        positive("assignment.deadline_multiplier", a.deadline_multiplier)?;
        if a.retry_max_attempts > 100 {
            return Err(err(
                "assignment.retry_max_attempts",
                a.retry_max_attempts,
                "must be at most 100",
            ));
        }

        let b = &self.backpressure;
        positive("backpressure.queue_overload", b.queue_overload)?;
        positive("backpressure.latency_overload_ms", b.latency_overload_ms)?;
        positive("backpressure.inflight_overload", b.inflight_overload)?;
        positive("backpressure.retry_after_seconds", b.retry_after_seconds)?;
        positive("backpressure.latency_window", b.latency_window)?;
        positive("backpressure.latency_max_age_ms", b.latency_max_age_ms)?;

        if !self.metrics.listen.is_empty() && self.metrics.listen.parse::<SocketAddr>().is_err() {
            return Err(err(
                "metrics.listen",
                format!("{:?}", self.metrics.listen),
                "must be host:port with an IP address (e.g. 0.0.0.0:9464), or empty to disable",
            ));
        }
        let st = &self.state;
        if !["memory", "kv"].contains(&st.backend.as_str()) {
            return Err(err(
                "state.backend",
                format!("{:?}", st.backend),
                "must be \"memory\" or \"kv\"",
            ));
        }
        name("state.kv_bucket", &st.kv_bucket)?;
        if !(1..=5).contains(&st.kv_replicas) {
            return Err(err("state.kv_replicas", st.kv_replicas, "must be 1 to 5"));
        }
        positive("state.kv_timeout_ms", st.kv_timeout_ms)?;
        if st.shared() {
            let ack_wait = self.decide.ack_wait_ms;
            if st.kv_timeout_ms >= ack_wait / 2 {
                return Err(err(
                    "state.kv_timeout_ms",
                    st.kv_timeout_ms,
                    format!(
                        "must be under half of decide.ack_wait_ms ({ack_wait}), or a claim outlives the delivery"
                    ),
                ));
            }
        }
        if !["json", "pretty"].contains(&self.log.format.as_str()) {
            return Err(err(
                "log.format",
                format!("{:?}", self.log.format),
                "must be \"json\" or \"pretty\"",
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(err(
                "log.level",
                format!("{:?}", self.log.level),
                format!("must be a tracing filter like \"info\" or \"info,async_nats=warn\": {e}"),
            ));
        }
        Ok(())
    }

    /// The extension registry: the file's, or the built-ins when none is configured.
    pub fn extension_registry(&self) -> Result<ExtensionRegistry, ConfigError> {
        let Some(path) = &self.router.extensions_file else {
            return Ok(ExtensionRegistry::builtin());
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            err(
                "router.extensions_file",
                path.display(),
                format!("cannot be read: {e}"),
            )
        })?;
        ExtensionRegistry::parse(&text).map_err(|e| {
            err(
                "router.extensions_file",
                path.display(),
                format!("field {}: {}", e.field, e.rule),
            )
        })
    }

    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.nats.publish_timeout_ms)
    }

    /// The duplicate window of the assignment, usage and DLQ streams. A message the core
    /// published (an assignment, a usage event, a DLQ record) is published again with the
    /// same `Nats-Msg-Id` when its PubAck was lost and the message that caused it comes
    /// back; that can be as late as `max_deliver` deliveries, each after `ack_wait` plus
    /// the longest nak delay. Twice the longest such span of the decide and results
    /// consumers, and never less than `duplicate_window_ms`, unless set explicitly.
    /// The advisory consumer: named after the decide consumer (one advisory stream per
    /// deployment). An advisory waits while its message's DLQ record is retried, and is
    /// nak'ed when its message cannot be read back; 100 deliveries of 30 s each outlast
    /// any outage the router is meant to ride out.
    pub fn advisory_consumer_settings(&self) -> ConsumerSettings {
        ConsumerSettings {
            consumer: format!("{}-advisories", self.decide.consumer),
            max_deliver: 100,
            ack_wait_ms: 30_000,
            max_ack_pending: 256,
            backoff_ms: Vec::new(),
        }
    }

    pub fn output_duplicate_window(&self) -> Duration {
        let st = &self.streams;
        if st.output_duplicate_window_ms > 0 {
            return Duration::from_millis(st.output_duplicate_window_ms);
        }
        let longest_nak = RouterConfig::default()
            .nak_backoff_ms
            .into_iter()
            .max()
            .unwrap_or(0)
            .max(self.backpressure.retry_after_seconds.saturating_mul(1_000));
        let span = |c: ConsumerSettings| {
            let step = c
                .backoff_ms
                .iter()
                .copied()
                .max()
                .unwrap_or(0)
                .max(c.ack_wait_ms)
                .saturating_add(longest_nak);
            c.max_deliver.saturating_mul(step)
        };
        let longest =
            span(self.decide.consumer_settings()).max(span(self.results.consumer_settings()));
        Duration::from_millis(longest.saturating_mul(2).max(st.duplicate_window_ms))
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.router.shutdown_grace_ms)
    }

    /// The core's settings, given the `max_deliver` and `ack_wait` the decide consumer on
    /// the server actually has.
    pub fn router_config(
        &self,
        max_deliver: u64,
        ack_wait: Duration,
    ) -> Result<RouterConfig, ConfigError> {
        let s = &self.subjects;
        let a = &self.assignment;
        let b = &self.backpressure;
        Ok(RouterConfig {
            max_deliver,
            results_max_deliver: self.results.max_deliver,
            acks_max_deliver: self.acks.max_deliver,
            ack_wait_ms: u64::try_from(ack_wait.as_millis()).unwrap_or(u64::MAX),
            max_payload_bytes: usize::try_from(self.router.max_payload_bytes).unwrap_or(usize::MAX),
            decide_subject: s.decide.clone(),
            result_subject: s.result.clone(),
            ack_subject: s.assignment_ack.clone(),
            usage_subject: s.usage.clone(),
            default_reply_subject: s.decide_reply.clone(),
            dlq_subject: s.decide_dlq.clone(),
            dlq_suffix: s.dlq_suffix.clone(),
            node_id: self.router.node_id.clone(),
            // The consumer never hands out more than max_ack_pending unsettled messages,
            // so with equal bounds the core never has to push back on the server.
            max_in_flight: usize::try_from(self.decide.max_ack_pending).unwrap_or(usize::MAX),
            idempotency_ttl_ms: self.router.idempotency_ttl_ms,
            tenant_allowlist: self.router.tenant_allowlist.clone(),
            backpressure: BackpressureConfig {
                queue_overload: b.queue_overload,
                latency_overload_ms: b.latency_overload_ms,
                inflight_overload: b.inflight_overload,
                retry_after_seconds: b.retry_after_seconds,
                latency_window: usize::try_from(b.latency_window).unwrap_or(usize::MAX),
                latency_max_age_ms: b.latency_max_age_ms,
            },
            assignment: AssignmentConfig {
                enabled: a.enabled,
                allowed_tenants: a.allowed_tenants.clone(),
                subject: s.assignment.clone(),
                deadline_min_ms: a.deadline_min_ms,
                deadline_max_ms: a.deadline_max_ms,
                deadline_multiplier: a.deadline_multiplier,
                retry_max_attempts: u32::try_from(a.retry_max_attempts).unwrap_or(u32::MAX),
                retry_backoff_ms: a.retry_backoff_ms,
            },
            extensions: self.extension_registry()?,
            admin_token: self.router.admin_token.clone(),
            shared_idempotency: self.state.shared(),
            shared_sticky: self.state.shared(),
            ..RouterConfig::default()
        })
    }
}

fn positive(key: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(err(key, 0, "must be greater than 0"));
    }
    Ok(())
}

fn file_exists(key: &str, path: Option<&Path>) -> Result<(), ConfigError> {
    match path {
        Some(p) if !p.is_file() => Err(err(key, p.display(), "must name an existing file")),
        _ => Ok(()),
    }
}

/// A literal subject: dot-separated non-empty tokens, no wildcards, no whitespace.
fn subject(key: &str, value: &str) -> Result<(), ConfigError> {
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

/// A stream, consumer or node name: no dots, wildcards, path separators or whitespace.
fn name(key: &str, value: &str) -> Result<(), ConfigError> {
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

fn consumer(section: &str, c: &ConsumerSettings, min_deliver: u64) -> Result<(), ConfigError> {
    name(&format!("{section}.consumer"), &c.consumer)?;
    if c.max_deliver < min_deliver {
        return Err(err(
            &format!("{section}.max_deliver"),
            c.max_deliver,
            format!("must be at least {min_deliver}"),
        ));
    }
    if c.ack_wait_ms < 1_000 {
        return Err(err(
            &format!("{section}.ack_wait_ms"),
            c.ack_wait_ms,
            "must be at least 1000",
        ));
    }
    positive(&format!("{section}.max_ack_pending"), c.max_ack_pending)?;
    if c.backoff_ms.len() as u64 > c.max_deliver {
        return Err(err(
            &format!("{section}.backoff_ms"),
            format!("{:?}", c.backoff_ms),
            format!("must have at most max_deliver ({}) entries", c.max_deliver),
        ));
    }
    if c.backoff_ms.iter().any(|&d| d < 100) {
        return Err(err(
            &format!("{section}.backoff_ms"),
            format!("{:?}", c.backoff_ms),
            "every delay must be at least 100 ms",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    /// A valid config around `extra` (TOML appended after a [router] with a real dir).
    fn settings(extra: &str) -> Result<Settings, ConfigError> {
        let dir = std::env::temp_dir();
        let text = format!(
            "[router]\npolicies_dir = {:?}\n{extra}",
            dir.display().to_string()
        );
        let s = Settings::parse(&text, no_env)?;
        s.validate()?;
        Ok(s)
    }

    fn refusal(extra: &str) -> ConfigError {
        settings(extra).expect_err("must be refused")
    }

    #[test]
    fn defaults_with_a_policies_dir_are_valid() {
        let s = settings("").unwrap();
        assert_eq!(s.nats.urls, vec!["nats://127.0.0.1:4222"]);
        assert_eq!(s.results.max_deliver, 10);
        assert!(!s.acks.enabled);
    }

    #[test]
    fn the_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/router.example.toml");
        let mut s = Settings::load(Some(&path), no_env).unwrap();
        s.router.policies_dir = Some(std::env::temp_dir());
        s.validate().unwrap();
    }

    #[test]
    fn output_streams_dedupe_over_the_longest_redelivery_span() {
        let s = settings("").unwrap();
        // results: 10 deliveries x (ack_wait 30 s + longest nak 30 s), twice.
        assert_eq!(s.output_duplicate_window(), Duration::from_secs(1_200));
        let s = settings("[results]\nmax_deliver = 2\n[decide]\nmax_deliver = 2\n").unwrap();
        assert_eq!(s.output_duplicate_window(), Duration::from_secs(240));
        let s = settings("[streams]\noutput_duplicate_window_ms = 5000\n").unwrap();
        assert_eq!(s.output_duplicate_window(), Duration::from_secs(5));
        let topology = crate::shell::nats::Topology::from_settings(&settings("").unwrap());
        let window = |name: &str| topology.streams.iter().find(|t| t.0 == name).unwrap().3;
        assert_eq!(window("BEAMLINE_DECIDE"), Duration::from_secs(120));
        assert_eq!(window("BEAMLINE_ASSIGNMENTS"), Duration::from_secs(1_200));
        assert_eq!(window("BEAMLINE_USAGE"), Duration::from_secs(1_200));
        assert_eq!(window("BEAMLINE_DLQ"), Duration::from_secs(1_200));
    }

    #[test]
    fn every_key_is_documented() {
        let doc =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/CONFIG.md"))
                .unwrap();
        for (section, key, _) in KEYS {
            let env = env_name(section, key);
            assert!(
                doc.contains(&format!("`{section}.{key}`")),
                "{section}.{key} undocumented"
            );
            assert!(doc.contains(&env), "{env} undocumented");
        }
    }

    #[test]
    fn worker_threads_default_to_one_and_are_bounded() {
        assert_eq!(settings("").unwrap().router.worker_threads, 1);
        let per_core = settings("worker_threads = 0\n").unwrap();
        assert_eq!(per_core.router.worker_threads, 0);
        let e = refusal("worker_threads = 257\n");
        assert_eq!(
            (e.key.as_str(), e.value.as_str()),
            ("router.worker_threads", "257")
        );
    }

    #[test]
    fn messages_name_key_value_and_rule() {
        let e = refusal("[decide]\nmax_deliver = 1\n");
        assert_eq!(e.key, "decide.max_deliver");
        assert_eq!(e.value, "1");
        assert_eq!(e.rule, "must be at least 2");
        assert_eq!(
            e.to_string(),
            "invalid configuration: `decide.max_deliver` = 1: must be at least 2"
        );

        let e = refusal("[nats]\nurls = [\"http://x:4222\"]\n");
        assert_eq!(e.key, "nats.urls");
        assert!(e.value.contains("http://x:4222"), "{e}");
        assert!(e.rule.contains("nats://"), "{e}");

        let e = refusal("[nats]\nurls = []\n");
        assert_eq!(
            (e.key.as_str(), e.rule.as_str()),
            ("nats.urls", "must list at least one server")
        );

        let e = refusal("[nats]\npublish_timeout_ms = \"fast\"\n");
        assert_eq!(e.key, "nats.publish_timeout_ms");
        assert_eq!(e.rule, "must be a non-negative integer");

        let e = refusal("[nats]\nusr = \"a\"\n");
        assert_eq!(e.key, "nats.usr");
        assert!(e.rule.starts_with("unknown key"), "{e}");

        let e = refusal("[nats]\nuser = \"a\"\n");
        assert_eq!(e.key, "nats.password");

        let e = refusal("[nats]\ntoken = \"t\"\ncreds_file = \"/etc/hostname\"\n");
        assert_eq!(e.rule, "set at most one authentication method");

        let e = refusal("[tls]\nca_file = \"/does/not/exist.pem\"\n");
        assert_eq!(e.key, "tls.ca_file");
        assert_eq!(e.value, "/does/not/exist.pem");
        assert_eq!(e.rule, "must name an existing file");

        let e = refusal("[subjects]\ndecide = \"beamline.>\"\n");
        assert_eq!(e.key, "subjects.decide");
        assert!(e.rule.contains("no wildcards"), "{e}");

        let e = refusal("[subjects]\nresult = \"beamline.router.v1.decide\"\n");
        assert_eq!(e.key, "subjects.result");
        assert_eq!(e.rule, "must differ from subjects.decide");

        let e = refusal("[state]\nbackend = \"redis\"\n");
        assert_eq!(
            (e.key.as_str(), e.value.as_str()),
            ("state.backend", "\"redis\"")
        );
        let e = refusal("[state]\nbackend = \"kv\"\nkv_timeout_ms = 20000\n");
        assert_eq!(e.key, "state.kv_timeout_ms");
        assert!(e.rule.contains("half of decide.ack_wait_ms"), "{e}");
        let e = refusal("[state]\nkv_replicas = 7\n");
        assert_eq!(e.key, "state.kv_replicas");

        let e = refusal("[streams]\nusage = \"USAGE.X\"\n");
        assert_eq!(e.key, "streams.usage");

        let e = refusal("[results]\nmax_deliver = 2\nbackoff_ms = [1000, 2000, 3000]\n");
        assert_eq!(e.key, "results.backoff_ms");
        assert_eq!(e.rule, "must have at most max_deliver (2) entries");

        let e = refusal("[assignment]\ndeadline_min_ms = 500\ndeadline_max_ms = 100\n");
        assert_eq!(e.key, "assignment.deadline_max_ms");
        assert_eq!(e.rule, "must be at least assignment.deadline_min_ms (500)");

        let e = refusal("[metrics]\nlisten = \"localhost\"\n");
        assert_eq!(e.key, "metrics.listen");

        let e = refusal("[log]\nformat = \"xml\"\n");
        assert_eq!(
            (e.key.as_str(), e.value.as_str()),
            ("log.format", "\"xml\"")
        );

        let e = refusal("admin_token = \"short\"\n");
        assert_eq!(e.key, "router.admin_token");
        assert_eq!(e.value, "(hidden)", "secrets are never echoed");

        let e = Settings::parse("[router]\n", no_env)
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(e.key, "router.policies_dir");

        let e = Settings::parse("[nats\n", no_env).unwrap_err();
        assert_eq!(e.key, "$file");
        assert!(e.rule.contains("TOML"), "{e}");
    }

    #[test]
    fn a_bad_extension_registry_names_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ext.json");
        std::fs::write(&path, r#"[{"id":""}]"#).unwrap();
        let e = refusal(&format!(
            "extensions_file = {:?}\n",
            path.display().to_string()
        ));
        assert_eq!(e.key, "router.extensions_file");
        assert!(e.rule.starts_with("field "), "{e}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let env: BTreeMap<&str, &str> = [
            ("BEAMLINE_NATS_URLS", "tls://a:4222, tls://b:4222"),
            ("BEAMLINE_DECIDE_MAX_DELIVER", "7"),
            ("BEAMLINE_ACKS_ENABLED", "true"),
            ("BEAMLINE_RESULTS_BACKOFF_MS", "1000,5000"),
            ("BEAMLINE_LOG_FORMAT", "json"),
        ]
        .into_iter()
        .collect();
        let get = |k: &str| env.get(k).map(|v| v.to_string());
        let s = Settings::parse(
            "[decide]\nmax_deliver = 3\n[log]\nformat = \"pretty\"\n",
            get,
        )
        .unwrap();
        assert_eq!(s.nats.urls, vec!["tls://a:4222", "tls://b:4222"]);
        assert_eq!(s.decide.max_deliver, 7);
        assert!(s.acks.enabled);
        assert_eq!(s.results.backoff_ms, vec![1000, 5000]);
        assert_eq!(s.log.format, "json");

        let bad = |k: &str| (k == "BEAMLINE_DECIDE_MAX_DELIVER").then(|| "many".to_string());
        let e = Settings::parse("", bad).unwrap_err();
        assert_eq!(e.key, "BEAMLINE_DECIDE_MAX_DELIVER");
        assert_eq!(e.value, "\"many\"");
        assert_eq!(e.rule, "must be a non-negative integer");
    }
}
