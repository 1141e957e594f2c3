//! The core's counters and table sizes as Prometheus metrics, each under a name written
//! out here.
//!
//! A metric name is public: dashboards and alerts depend on it. So it is never derived
//! from a `core::Stats` or `core::TableSizes` field name: renaming a field must not rename
//! a metric. Every `Stats` field is exported by exactly one series below, and every
//! `TableSizes` field by one `table` label; the tests hold both to the structs.

use crate::core::{Stats, TableSizes};

/// A counter family read from `core::Stats`.
pub(super) struct CoreCounter {
    pub name: &'static str,
    /// What one increment is, and when it happens.
    pub help: &'static str,
    /// The label that tells the series apart, when the family has more than one.
    pub label: Option<&'static str>,
    pub series: &'static [StatsSeries],
}

/// One series of a [`CoreCounter`].
pub(super) struct StatsSeries {
    /// The label's value; empty in an unlabelled family.
    pub label_value: &'static str,
    /// The `Stats` field read: for the tests only, never part of a name.
    #[cfg_attr(not(test), allow(dead_code))]
    pub field: &'static str,
    pub read: fn(&Stats) -> u64,
}

/// A series reading `Stats::$field`; the field's name is kept beside the accessor so
/// that the tests can check that every field is read.
macro_rules! stat {
    ($field:ident) => {
        stat!("", $field)
    };
    ($label_value:literal, $field:ident) => {
        StatsSeries {
            label_value: $label_value,
            field: stringify!($field),
            read: |s: &Stats| s.$field,
        }
    };
}

/// A family of one unlabelled series.
macro_rules! counter {
    ($name:literal, $field:ident, $help:literal) => {
        CoreCounter {
            name: $name,
            help: $help,
            label: None,
            series: &[stat!($field)],
        }
    };
}

/// In the order they are rendered.
pub(super) const CORE_COUNTERS: &[CoreCounter] = &[
    CoreCounter {
        name: "router_decisions_total",
        help: "Decide replies the core sent, by result: ok names a provider, error is an \
               ErrorResponse (refused at intake, no policy, rate limited, pipeline failure). \
               Answers replayed from the answer book are counted in \
               router_idempotent_replays_total instead.",
        label: Some("result"),
        series: &[stat!("ok", replies_ok), stat!("error", replies_error)],
    },
    counter!(
        "router_dlq_total",
        dlq_records,
        "DLQ records whose publish the stream confirmed (refused or exhausted messages)."
    ),
    CoreCounter {
        name: "router_jetstream_acks_total",
        help: "Settles sent to JetStream, one per delivery, by kind: ack (done), nak \
               (redeliver after a delay), term (never redeliver), in_progress (+WPI, \
               restarts the server's ack_wait).",
        label: Some("kind"),
        series: &[
            stat!("ack", acks),
            stat!("nak", naks),
            stat!("term", terms),
            stat!("in_progress", in_progress),
        ],
    },
    counter!(
        "router_deliveries_total",
        deliveries,
        "JetStream deliveries the core received on any consumer, redeliveries included."
    ),
    counter!(
        "router_rejected_total",
        rejected,
        "Messages refused at intake (size, schema, version, correlation, decide fields, \
         tenant allowlist) on any consumer; each is dead-lettered."
    ),
    counter!(
        "router_publish_failures_total",
        publish_failures,
        "Publishes (replies, assignments, usage events, DLQ records) that failed or were \
         not confirmed before their deadline."
    ),
    counter!(
        "router_redelivered_after_settle_total",
        redelivered_after_settle,
        "Redeliveries of a message already settled (the server never saw its ack or \
         term): settled again with the same fate, never answered twice."
    ),
    counter!(
        "router_idempotent_replays_total",
        idempotent_replays,
        "Decide requests answered with an answer already recorded (an earlier delivery, \
         the same idempotency key, or the shared bucket) instead of a new decision."
    ),
    counter!(
        "router_overload_naks_total",
        overload_naks,
        "Deliveries nak'ed on arrival because the core already held max_in_flight \
         messages."
    ),
    counter!(
        "router_overload_dead_letters_total",
        overload_dead_letters,
        "Last deliveries (delivered = max_deliver) that arrived while the router was \
         overloaded: dead-lettered with a delivery_exhausted reply instead of nak'ed."
    ),
    counter!(
        "router_backpressure_naks_total",
        backpressure_naks,
        "Decide messages nak'ed unparsed, with the retry-after delay, while backpressure \
         was active."
    ),
    counter!(
        "router_rate_limited_total",
        rate_limited,
        "Decide requests refused by their policy's rate limit (an error reply, not \
         recorded under the idempotency key)."
    ),
    counter!(
        "router_rate_admitted_total",
        rate_admitted,
        "Decide requests of a rate-limited policy that took a token (the others got \
         rate_limited)."
    ),
    counter!(
        "router_breaker_records_total",
        breaker_records,
        "Worker results fed to a provider's circuit breaker: once per correlation key, \
         however often the result is redelivered."
    ),
    counter!(
        "router_assignments_published_total",
        assignments_published,
        "ExecAssignments whose publish the assignment stream confirmed."
    ),
    counter!(
        "router_assignments_skipped_total",
        assignments_skipped,
        "Decisions that asked for an assignment while assignments were disabled or the \
         tenant was not allowed one: answered without an assignment."
    ),
    counter!(
        "router_extension_calls_total",
        extension_calls,
        "Requests sent to extensions (pre, validators, post), retries included."
    ),
    counter!(
        "router_extension_failures_total",
        extension_failures,
        "Extension requests that timed out or failed instead of replying."
    ),
    counter!(
        "router_results_total",
        results,
        "ExecResults that passed intake, duplicates included."
    ),
    counter!(
        "router_results_duplicate_total",
        results_duplicate,
        "ExecResults for a correlation key already handled or being handled: no second \
         breaker record or usage event."
    ),
    counter!(
        "router_usage_emitted_total",
        usage_emitted,
        "Usage events whose publish the usage stream confirmed, one per correlation key."
    ),
    counter!(
        "router_assignment_acks_total",
        assignment_acks,
        "Assignment acks from workers that passed intake."
    ),
    counter!(
        "router_inbound_requests_total",
        inbound_requests,
        "Requests to the router itself (backpressure status, admin), answered or refused."
    ),
    counter!(
        "router_admin_refused_total",
        admin_refused,
        "Admin requests refused: no admin token configured, or a wrong or missing token."
    ),
    counter!(
        "router_disconnects_total",
        disconnects,
        "Connection losses the core was told of (see also router_nats_disconnects_total, \
         counted by the client's event callback)."
    ),
    counter!(
        "router_exhausted_unseen_total",
        exhausted_unseen,
        "Messages the server gave up on (MAX_DELIVERIES advisory) whose last delivery \
         never reached the core: dead-lettered from the advisory."
    ),
    counter!(
        "router_shared_claims_total",
        shared_claims,
        "Keyed answers claimed in the shared KV bucket (creates sent)."
    ),
    counter!(
        "router_shared_adopted_total",
        shared_adopted,
        "Claims that found an answer already in the shared bucket (another instance or \
         an earlier delivery): its bytes were published instead of ours."
    ),
    counter!(
        "router_shared_failures_total",
        shared_failures,
        "Shared bucket operations that failed or were not confirmed in time; a failed \
         claim gives its message back for redelivery."
    ),
    counter!(
        "router_shared_unreadable_total",
        shared_unreadable,
        "Shared bucket answers this version could not decode; our own answer was \
         published."
    ),
    counter!(
        "router_shared_sessions_adopted_total",
        shared_sessions_adopted,
        "Sticky sessions another instance had pinned, adopted from the shared bucket."
    ),
];

/// The family of the core's table sizes.
pub(super) const TABLE_ENTRIES: &str = "router_table_entries";
pub(super) const TABLE_ENTRIES_HELP: &str =
    "Entries in each bounded table of the core, by table: in_flight (messages held), \
     answers_by_seq and answers_by_key (the answer book), results (result correlation \
     keys), breakers, rate_buckets, sticky_sessions, latency_samples (the backpressure \
     latency window).";

/// One `table` label per `TableSizes` field: `(label, field, read)`. The field's name
/// is for the tests only.
pub(super) type TableSeries = (&'static str, &'static str, fn(&TableSizes) -> usize);

macro_rules! table {
    ($label:literal, $field:ident) => {
        ($label, stringify!($field), |t: &TableSizes| t.$field)
    };
}

pub(super) const CORE_TABLES: &[TableSeries] = &[
    table!("in_flight", in_flight),
    table!("answers_by_seq", answers_by_seq),
    table!("answers_by_key", answers_by_key),
    table!("results", results),
    table!("breakers", breakers),
    table!("rate_buckets", rate_buckets),
    table!("sticky_sessions", sticky_sessions),
    table!("latency_samples", latency_samples),
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The field names of a struct, as serde sees them (the structs derive `Serialize`).
    fn fields_of(value: impl serde::Serialize) -> Vec<String> {
        match serde_json::to_value(value).unwrap() {
            serde_json::Value::Object(fields) => fields.keys().cloned().collect(),
            other => panic!("not a struct: {other}"),
        }
    }

    #[test]
    fn every_stats_field_is_exported_exactly_once() {
        let declared: Vec<&str> = CORE_COUNTERS
            .iter()
            .flat_map(|c| c.series.iter().map(|s| s.field))
            .collect();
        let unique: BTreeSet<&str> = declared.iter().copied().collect();
        assert_eq!(unique.len(), declared.len(), "a field read twice");
        let fields = fields_of(Stats::default());
        let fields: BTreeSet<&str> = fields.iter().map(String::as_str).collect();
        let missing: Vec<_> = fields.difference(&unique).collect();
        assert!(
            missing.is_empty(),
            "core::Stats fields without a metric (declare one in CORE_COUNTERS, and in \
             docs/CONFIG.md): {missing:?}"
        );
        assert_eq!(fields, unique);
    }

    #[test]
    fn every_table_is_exported_exactly_once() {
        let declared: BTreeSet<&str> = CORE_TABLES.iter().map(|t| t.1).collect();
        assert_eq!(declared.len(), CORE_TABLES.len(), "a table read twice");
        let fields = fields_of(TableSizes::default());
        let fields: BTreeSet<&str> = fields.iter().map(String::as_str).collect();
        assert_eq!(
            fields, declared,
            "core::TableSizes fields and CORE_TABLES differ"
        );
        let labels: BTreeSet<&str> = CORE_TABLES.iter().map(|t| t.0).collect();
        assert_eq!(labels.len(), CORE_TABLES.len(), "a table label used twice");
    }

    #[test]
    fn labelled_families_have_a_label_and_distinct_values() {
        for c in CORE_COUNTERS {
            let values: BTreeSet<&str> = c.series.iter().map(|s| s.label_value).collect();
            assert_eq!(values.len(), c.series.len(), "{}", c.name);
            match c.label {
                None => assert_eq!(c.series.len(), 1, "{}", c.name),
                Some(_) => assert!(!values.contains(""), "{}", c.name),
            }
        }
    }
}
