//! The service's configuration: one TOML file, then `BEAMLINE_<SECTION>_<KEY>` environment
//! overrides, then command-line flags, then validation.
//!
//! Every key is declared once, in [`settings`] (name, type, default, flag, rule): from
//! that declaration come the file's type check, the environment overrides, the flags of
//! `serve` ([`Flags`]), the order and rules of validation, and the documentation test.
//! An invalid setting is reported as [`ConfigError`]: the key, the value and the rule it
//! breaks.
//!
//! - [`keys`]: what a key is ([`Key`], [`Kind`], [`Flag`]) and the declaring macro;
//! - [`settings`]: the declarations, the section structs they generate, and [`KEYS`];
//! - `rules`: the validation rules the declarations name;
//! - [`flags`]: the keys' command-line flags, for clap.

use std::path::Path;
use std::time::Duration;

use crate::core::assignment::AssignmentConfig;
use crate::core::backpressure::BackpressureConfig;
use crate::core::extensions::ExtensionRegistry;
use crate::core::RouterConfig;

pub mod flags;
pub mod keys;
mod rules;
pub mod settings;
#[cfg(test)]
mod tests;

pub use flags::Flags;
pub use keys::{env_name, Flag, Key, Kind};
pub use settings::*;

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

/// The declaration of `section.key`.
fn key_of(section: &str, key: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.section == section && k.name == key)
}

/// Set `key` in the file's table, its section created if missing.
fn set(table: &mut toml::Table, key: &Key, value: toml::Value) {
    table
        .entry(key.section.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .expect("sections are type-checked to be tables")
        .insert(key.name.to_string(), value);
}

/// The flag of the key at `path` (`section.key`); empty when it has none.
fn flag_of(path: &str) -> &'static str {
    KEYS.iter()
        .find(|k| k.path() == path)
        .and_then(|k| k.flag)
        .map_or("", |f| f.long)
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

/// An environment variable's (or a flag's) text as a value of `kind`; `name` is what
/// an error names.
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
    /// Read `file` (if any), apply the environment overrides given by `env`
    /// (`std::env::var` in production; a map in tests), then `flags`. Not yet validated.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        flags: &Flags,
    ) -> Result<Settings, ConfigError> {
        let text = match file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| err("$file", path.display(), format!("cannot be read: {e}")))?,
            None => String::new(),
        };
        Settings::parse_with_flags(&text, env, flags)
    }

    /// The file's `text` with the environment overrides; no flags.
    pub fn parse(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        Settings::parse_with_flags(text, env, &Flags::default())
    }

    /// File, environment, flags: each layer sets keys in one TOML table, which is then
    /// read into the structs (the declared defaults fill whatever no layer set).
    pub fn parse_with_flags(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
        flags: &Flags,
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
                let Some(declared) = key_of(section, key) else {
                    return Err(err(&name, value, "unknown key (see docs/CONFIG.md)"));
                };
                if !value_fits(declared.kind, value) {
                    return Err(err(&name, value, type_rule(declared.kind)));
                }
            }
        }
        for key in KEYS {
            let name = key.env();
            if let Some(text) = env(&name) {
                set(&mut table, key, env_value(&name, key.kind, &text)?);
            }
        }
        for (key, value) in flags.values() {
            set(&mut table, key, value.clone());
        }
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| err("$file", "(TOML)", e.to_string()))
    }

    /// Check every key's rule, in the order of the declarations; the first broken one
    /// is returned. Files named by the config must exist; the extension registry must
    /// parse.
    pub fn validate(&self) -> Result<(), ConfigError> {
        KEYS.iter().try_for_each(|key| (key.check)(self))
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
