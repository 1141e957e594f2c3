//! Every key of the configuration, declared once: its name, type, default, flag and rule
//! (see `keys.rs` for the syntax). docs/CONFIG.md documents each one; the tests hold the
//! page to these declarations.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::keys::{declare_settings, Flag};
use super::rules::*;
use crate::contracts::subjects;
use crate::core::assignment::AssignmentConfig;
use crate::core::backpressure::BackpressureConfig;
use crate::core::RouterConfig;

/// One worker thread by default. The core is one loop on one thread whatever the count;
/// more threads only run the client's I/O beside it. On the 2-core bench machine one
/// thread costs less CPU per request for the same throughput, and it rules out the
/// async-nats race that made pull streams stall (docs/PERFORMANCE.md, "A stall of the
/// pull"): its pull task and its stream can then not run at the same time.
pub const DEFAULT_WORKER_THREADS: u64 = 1;

/// A consumer's ack wait, unless configured.
const ACK_WAIT_MS: u64 = 30_000;
/// Unsettled messages per consumer, unless configured.
const MAX_ACK_PENDING: u64 = 256;

declare_settings! {
    /// Connecting to NATS.
    nats: NatsSettings {
        /// NATS server URLs; comma-separated on the command line and in the environment.
        urls: Vec<String> = vec!["nats://127.0.0.1:4222".to_string()],
            flag(Flag::new("nats-url").env("NATS_URL")), rule(nats_urls);
        /// User name; with `password`.
        user: Option<String> = None, rule(nats_user);
        /// Password; with `user`.
        password: Option<String> = None;
        /// Token authentication.
        token: Option<String> = None;
        /// A file holding an NKey seed.
        nkey_seed_file: Option<PathBuf> = None, rule(file_exists);
        /// A `.creds` file (JWT and seed).
        creds_file: Option<PathBuf> = None, rule(file_exists);
        /// Time allowed for connecting.
        connect_timeout_ms: u64 = 5_000, rule(positive);
        /// How long the first connection is retried while no server answers (an
        /// orchestrator may start the router before NATS); 0 tries once.
        initial_connect_wait_ms: u64 = 60_000;
        /// How long a flush or a PubAck is waited for.
        publish_timeout_ms: u64 = 5_000,
            flag(Flag::new("publish-timeout-ms")), rule(positive);
    }

    /// TLS to NATS.
    tls: TlsSettings {
        /// CA certificates (PEM); unset: the system roots.
        ca_file: Option<PathBuf> = None, rule(file_exists);
        /// Client certificate (PEM) for mutual TLS; with `key_file`.
        cert_file: Option<PathBuf> = None, rule(file_exists);
        /// The client certificate's key (PEM); with `cert_file`.
        key_file: Option<PathBuf> = None, rule(tls_key_file);
        /// Never talk plain text.
        require: bool = false;
    }

    /// Subjects the router consumes and publishes.
    subjects: SubjectSettings {
        /// Decide requests.
        decide: String = subjects::DECIDE.into(), rule(subject);
        /// Where replies go when a request names no `Reply-To`.
        decide_reply: String = subjects::DECIDE_REPLY.into(), rule(subject);
        /// Dead-lettered decide requests.
        decide_dlq: String = subjects::DECIDE_DLQ.into(), rule(subject);
        /// Execution results from CAF.
        result: String = subjects::RESULT.into(), rule(subject);
        /// Assignments to CAF.
        assignment: String = subjects::ASSIGNMENT.into(), rule(subject);
        /// Assignment acks from CAF.
        assignment_ack: String = subjects::ASSIGNMENT_ACK.into(), rule(subject);
        /// Usage events.
        usage: String = subjects::USAGE.into(), rule(usage_subject_and_distinct);
        /// Appended to the result and ack subjects for their DLQ subjects.
        dlq_suffix: String = ".dlq".into(), rule(dlq_suffix);
    }

    /// Streams, created when missing.
    streams: StreamSettings {
        /// The decide stream.
        decide: String = "BEAMLINE_DECIDE".into(), flag(Flag::new("stream")), rule(name);
        /// The results stream.
        results: String = "BEAMLINE_RESULTS".into(), rule(name);
        /// The assignment acks stream (created only with `acks.enabled`).
        acks: String = "BEAMLINE_ASSIGN_ACKS".into(), rule(name);
        /// The usage stream.
        usage: String = "BEAMLINE_USAGE".into(), rule(name);
        /// The assignments stream.
        assignments: String = "BEAMLINE_ASSIGNMENTS".into(), rule(name);
        /// The DLQ stream.
        dlq: String = "BEAMLINE_DLQ".into(), flag(Flag::new("dlq-stream")), rule(name);
        /// The server's MAX_DELIVERIES advisories for the router's consumers, pulled by
        /// the durable `<decide.consumer>-advisories`.
        advisories: String = "BEAMLINE_ADVISORIES".into(), rule(name);
        /// The duplicate window of the streams the router reads.
        duplicate_window_ms: u64 = 120_000, rule(duplicate_window);
        /// The duplicate window of the streams the router writes (assignments, usage,
        /// DLQ); 0 derives it from the consumers (`Settings::output_duplicate_window`).
        output_duplicate_window_ms: u64 = 0;
        /// Replicas of every stream the router creates (and of the KV bucket, unless
        /// `state.kv_replicas` says otherwise); 0 chooses: 3 when the server reports a
        /// cluster of at least 3 servers, else 1 (`shell/cluster.rs`).
        replicas: u64 = 0, flag(Flag::new("stream-replicas")), rule(replicas);
    }

    /// The decide consumer.
    decide: DecideSettings {
        /// Durable pull consumer on the decide stream.
        consumer: String = "router-decide".into(), flag(Flag::new("consumer")), rule(name);
        /// Deliveries per decide message before it is dead-lettered.
        max_deliver: u64 = 5, flag(Flag::new("max-deliver")), rule(at_least(2));
        /// The server's ack wait.
        ack_wait_ms: u64 = ACK_WAIT_MS,
            flag(Flag::new("ack-wait-secs").scaled(1_000, "seconds")), rule(ack_wait);
        /// Unsettled decide messages at once; also the core's in-flight bound.
        max_ack_pending: u64 = MAX_ACK_PENDING,
            flag(Flag::new("max-ack-pending")), rule(positive);
        /// The consumer's backoff list; keep it empty (the core picks nak delays).
        backoff_ms: Vec<u64> = Vec::new(), rule(backoff(|s| s.decide.max_deliver));
    }

    /// The results consumer.
    results: ResultsSettings {
        /// Durable pull consumer on the results stream.
        consumer: String = "router-results".into(), rule(name);
        /// Deliveries per result before it is dead-lettered.
        max_deliver: u64 = 10, rule(at_least(1));
        /// The server's ack wait.
        ack_wait_ms: u64 = ACK_WAIT_MS, rule(ack_wait);
        /// Unsettled results at once.
        max_ack_pending: u64 = MAX_ACK_PENDING, rule(positive);
        /// The consumer's backoff list.
        backoff_ms: Vec<u64> = Vec::new(), rule(backoff(|s| s.results.max_deliver));
    }

    /// The assignment acks consumer.
    acks: AckSettings {
        /// Consume assignment acks at all (they are informational).
        enabled: bool = false;
        /// Durable pull consumer on the acks stream.
        consumer: String = "router-assign-acks".into(), rule(name);
        /// Deliveries per ack before it is dead-lettered.
        max_deliver: u64 = 3, rule(at_least(1));
        /// The server's ack wait.
        ack_wait_ms: u64 = ACK_WAIT_MS, rule(ack_wait);
        /// Unsettled acks at once.
        max_ack_pending: u64 = MAX_ACK_PENDING, rule(positive);
        /// The consumer's backoff list.
        backoff_ms: Vec<u64> = Vec::new(), rule(backoff(|s| s.acks.max_deliver));
    }

    /// The router process.
    router: RouterSettings {
        /// Written into DLQ records and the NATS connection name.
        node_id: String = "router-1".into(), flag(Flag::new("node-id")), rule(name);
        /// Directory of `<tenant>/<policy_id>.json` files; required.
        policies_dir: Option<PathBuf> = None, flag(Flag::new("policies")), rule(policies_dir);
        /// The extension registry (JSON); unset: the built-ins.
        extensions_file: Option<PathBuf> = None, rule(extensions_file);
        /// Token admin requests must carry; unset disables admin.
        admin_token: Option<String> = None,
            flag(Flag::new("admin-token").env("BEAMLINE_ADMIN_TOKEN").secret()),
            rule(admin_token);
        /// Tenants whose requests are accepted; unset: all.
        tenant_allowlist: Option<Vec<String>> = None, rule(tenant_ids);
        /// Messages per pull request.
        pull_batch: u64 = 64, rule(positive);
        /// The idle heartbeat asked of each pull: a pull that hears neither a message nor
        /// a heartbeat for twice this is replaced (a consumer leader that died holds the
        /// pull request with it).
        pull_heartbeat_ms: u64 = crate::host::pulls::DEFAULT_PULL_HEARTBEAT_MS,
            rule(pull_heartbeat);
        /// Threads of the tokio runtime; 0 is one per core. See `DEFAULT_WORKER_THREADS`.
        worker_threads: u64 = DEFAULT_WORKER_THREADS, rule(worker_threads);
        /// How long in-flight messages may take to finish at SIGTERM.
        shutdown_grace_ms: u64 = 5_000, flag(Flag::new("shutdown-grace-ms"));
        /// The largest decide payload accepted.
        max_payload_bytes: u64 = RouterConfig::default().max_payload_bytes as u64,
            rule(positive);
        /// How long an answer is replayed for its idempotency key.
        idempotency_ttl_ms: u64 = RouterConfig::default().idempotency_ttl_ms, rule(positive);
    }

    /// Assignments pushed to CAF.
    assignment: AssignmentSettings {
        /// The kill switch.
        enabled: bool = AssignmentConfig::default().enabled;
        /// Tenants allowed assignments; unset: all.
        allowed_tenants: Option<Vec<String>> = AssignmentConfig::default().allowed_tenants,
            rule(tenant_ids);
        /// The shortest assignment deadline.
        deadline_min_ms: u64 = AssignmentConfig::default().deadline_min_ms, rule(positive);
        /// The longest assignment deadline.
        deadline_max_ms: u64 = AssignmentConfig::default().deadline_max_ms, rule(deadline_max);
        /// Deadline = expected latency times this, within the bounds.
        deadline_multiplier: u64 = AssignmentConfig::default().deadline_multiplier,
            rule(positive);
        /// Publish attempts of an assignment after the first.
        retry_max_attempts: u64 = u64::from(AssignmentConfig::default().retry_max_attempts),
            rule(at_most(100));
        /// Delay between assignment publish attempts.
        retry_backoff_ms: u64 = AssignmentConfig::default().retry_backoff_ms;
    }

    /// When intake reports overload.
    backpressure: BackpressureSettings {
        /// Pending decide messages that count as overload.
        queue_overload: u64 = BackpressureConfig::default().queue_overload, rule(positive);
        /// p95 latency that counts as overload.
        latency_overload_ms: u64 = BackpressureConfig::default().latency_overload_ms,
            rule(positive);
        /// Messages in flight that count as overload.
        inflight_overload: u64 = BackpressureConfig::default().inflight_overload,
            rule(positive);
        /// The retry-after of an active status, and the delay of a backpressure nak.
        retry_after_seconds: u64 = BackpressureConfig::default().retry_after_seconds,
            rule(positive);
        /// Latency samples kept for the p95.
        latency_window: u64 = BackpressureConfig::default().latency_window as u64,
            rule(positive);
        /// Latency samples older than this no longer count.
        latency_max_age_ms: u64 = BackpressureConfig::default().latency_max_age_ms,
            rule(positive);
    }

    /// Where idempotency answers live: `memory` (one instance) or `kv`, a NATS KV bucket
    /// shared by every instance (`core/shared.rs`).
    state: StateSettings {
        /// `memory` or `kv`.
        backend: String = "memory".into(), rule(one_of(&["memory", "kv"]));
        /// The shared bucket.
        kv_bucket: String = "beamline-router-answers".into(), rule(name);
        /// Replicas of the shared bucket; 0 follows `streams.replicas`.
        kv_replicas: u64 = 0, rule(replicas);
        /// A create the bucket has not confirmed in this time counts as failed
        /// (ambiguous): the message is given back and claimed again on redelivery.
        kv_timeout_ms: u64 = 2_000, rule(kv_timeout);
    }

    /// The HTTP endpoints.
    metrics: MetricsSettings {
        /// `host:port` of the HTTP server for `/metrics`, `/healthz`, `/readyz`; empty
        /// disables it.
        listen: String = String::new(), flag(Flag::new("metrics-listen")), rule(metrics_listen);
    }

    /// Logs.
    log: LogSettings {
        /// `json` or `pretty`.
        format: String = "pretty".into(), flag(Flag::new("log-format")),
            rule(one_of(&["json", "pretty"]));
        /// A tracing filter; `RUST_LOG`, when set, wins.
        level: String = "info,async_nats=warn".into(), rule(log_level);
    }
}

impl TlsSettings {
    pub fn enabled(&self) -> bool {
        self.require || self.ca_file.is_some() || self.cert_file.is_some()
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

impl StateSettings {
    pub fn shared(&self) -> bool {
        self.backend == "kv"
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

macro_rules! consumer_settings {
    ($($section:ident),+) => {$(
        impl $section {
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
    )+};
}

consumer_settings!(DecideSettings, ResultsSettings, AckSettings);
