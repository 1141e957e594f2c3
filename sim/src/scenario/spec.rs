//! The file format of a scenario (`scenarios/<name>.toml`), as serde types. Every table
//! refuses unknown keys, so a typo is an error naming the key rather than a silently
//! ignored setting. `mod.rs` turns these into a checked `Scenario`.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// One of `FAMILIES`.
    pub family: String,
    /// One line: what the scenario does.
    pub title: String,
    /// Upstream test cases it stands for, `suite:case` (the Erlang CT suites).
    #[serde(default)]
    pub covers: Vec<String>,
    /// Part B catalogue ids (`CONN-01`, ...).
    #[serde(default)]
    pub catalogue: Vec<String>,
    /// Where this router deliberately behaves differently from upstream, and why.
    #[serde(default)]
    pub differs: Option<String>,
    /// The seeds `tests/sim_scenarios.rs` runs (default `[1, 2, 3]`).
    #[serde(default)]
    pub seeds: Option<Vec<u64>>,
    /// `pass` (default), `known` (may end with a known open core issue, `known_issue`),
    /// or `expect_failure` (exposes an unfixed bug: its expectations must fail).
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub known_issue: Option<String>,
    /// The invariants this scenario is about (documentation, checked to be real names):
    /// every invariant is checked in every run regardless.
    #[serde(default)]
    pub invariants: Vec<String>,
    /// Deliberately broken hosts (`--bug NAME`) that must make this scenario fail on
    /// at least one of its seeds.
    #[serde(default)]
    pub catches_bugs: Vec<String>,
    #[serde(default)]
    pub workload: WorkloadSpec,
    #[serde(default)]
    pub settings: SettingsSpec,
    #[serde(default)]
    pub faults: FaultsSpec,
    #[serde(default)]
    pub expect: Vec<ExpectSpec>,
}

/// The traffic and the topology. Unset: drawn from the seed (requests: 100).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    /// Decide requests planned (overload bursts add more).
    pub requests: Option<u64>,
    /// Requests are published uniformly within `[0, duration_ms)`.
    pub duration_ms: Option<u64>,
    /// When the faults heal. Default: `duration_ms` if set, else drawn (60..120 s).
    pub chaos_ms: Option<u64>,
    pub routers: Option<usize>,
    pub gateways: Option<usize>,
    pub caf_workers: Option<usize>,
    /// Relative weights of the request kinds. Setting any of them sets the unset
    /// ones to 0.
    pub valid: Option<u64>,
    pub ext: Option<u64>,
    pub limited: Option<u64>,
    pub no_policy: Option<u64>,
    pub invalid: Option<u64>,
    pub idempotency_permille: Option<u64>,
    pub assignment_permille: Option<u64>,
    pub pii_permille: Option<u64>,
    pub trace_header_permille: Option<u64>,
    /// Gateway attempts per keyed request, and how long one waits for its reply.
    pub max_attempts: Option<u64>,
    pub reply_timeout_ms: Option<u64>,
    pub status_poll_ms: Option<u64>,
}

/// Consumer and core settings. Unset: drawn from the seed, except the swarm's stress
/// settings (small `max_ack_pending`, `max_in_flight` and backpressure thresholds) and
/// the shared answer bucket, which are reset to production defaults (bucket off: the
/// `memory` backend) unless `swarm_settings = true`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsSpec {
    #[serde(default)]
    pub swarm_settings: bool,
    pub ack_wait_ms: Option<u64>,
    pub backoff_ms: Option<Vec<u64>>,
    pub max_deliver: Option<u64>,
    pub max_ack_pending: Option<usize>,
    pub pull_batch: Option<u64>,
    pub pull_expires_ms: Option<u64>,
    pub publish_timeout_ms: Option<u64>,
    pub nak_backoff_ms: Option<Vec<u64>>,
    pub dlq_retry_ms: Option<u64>,
    pub max_in_flight: Option<usize>,
    pub queue_overload: Option<u64>,
    pub inflight_overload: Option<u64>,
    pub latency_overload_ms: Option<u64>,
    pub retry_after_seconds: Option<u64>,
    pub extension_retry: Option<[u32; 3]>,
    pub caf_latency_max_ms: Option<u64>,
    pub caf_msg_id: Option<bool>,
    /// How often the operator calls an admin or status operation.
    pub ops_every_ms: Option<u64>,
    /// Routers share keyed answers through the KV bucket (`state.backend = "kv"`).
    pub shared_answers: Option<bool>,
    /// JetStream cluster nodes: 1, 3 or 5.
    pub cluster_nodes: Option<usize>,
}

/// The fault menu (`faults::Faults`, field by field) and timed faults. Unset fields
/// are healthy, unless `swarm = true`: then the seed draws the whole menu first.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsSpec {
    #[serde(default)]
    pub swarm: bool,
    pub drop_routers: Option<bool>,
    pub drop_clients: Option<bool>,
    pub mean_uptime_ms: Option<u64>,
    pub down_min_ms: Option<u64>,
    pub down_max_ms: Option<u64>,
    pub detect_max_ms: Option<u64>,
    pub server_notices_permille: Option<u64>,
    pub ack_loss_permille: Option<u64>,
    pub publish_error_permille: Option<u64>,
    pub publish_error_routers_only: Option<bool>,
    pub slow_permille: Option<u64>,
    pub slow_max_ms: Option<u64>,
    pub reply_loss_permille: Option<u64>,
    pub reply_dup_permille: Option<u64>,
    pub delivery_dup_permille: Option<u64>,
    pub partitions: Option<u64>,
    pub partition_max_ms: Option<u64>,
    pub spikes: Option<u64>,
    pub spike_max_ms: Option<u64>,
    pub spike_extra_ms: Option<u64>,
    pub storms: Option<u64>,
    pub bursts: Option<u64>,
    pub burst_size: Option<u64>,
    pub crashes: Option<u64>,
    pub crash_down_max_ms: Option<u64>,
    pub broker_restarts: Option<u64>,
    pub broker_down_max_ms: Option<u64>,
    pub clock_skew_ms: Option<u64>,
    pub skew_jumps: Option<u64>,
    /// A publish to a stream without a leader is stored anyway this often (no PubAck).
    pub ambiguous_permille: Option<u64>,
    /// Elections after a cluster node comes back last up to this long.
    pub elect_max_ms: Option<u64>,
    /// normalize_text, pii_guard, mask_pii: `healthy`, `slow`, `flapping` or `dead`.
    pub extensions: Option<[String; 3]>,
    pub caf_error_permille: Option<u64>,
    pub caf_timeout_permille: Option<u64>,
    pub caf_dup_permille: Option<u64>,
    pub caf_malformed_permille: Option<u64>,
    pub buggify: Option<bool>,
    /// Timed faults at fixed virtual times.
    #[serde(default)]
    pub at: Vec<AtSpec>,
}

/// One timed fault (`faults::FaultKind`), optionally repeated every `every_ms`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AtSpec {
    pub at_ms: u64,
    /// `link_drop`, `partition`, `spike`, `storm`, `burst`, `crash`, `stop`,
    /// `broker_restart`, `skew_jump`, `leader_move`, `node_crash`.
    pub kind: String,
    /// `router-1`, `gw-1`, `caf-1`, `ext-pii_guard`, `usage`, `ops` (`all` for a spike).
    pub node: Option<String>,
    pub a: Option<String>,
    pub b: Option<String>,
    pub down_ms: Option<u64>,
    pub detect_ms: Option<u64>,
    pub server_notices: Option<bool>,
    pub ms: Option<u64>,
    pub extra_ms: Option<u64>,
    /// `decide`, `results`, `assign`.
    pub consumer: Option<String>,
    /// 1-based.
    pub gateway: Option<usize>,
    pub count: Option<u64>,
    /// 1-based.
    pub router: Option<usize>,
    pub delta_ms: Option<i64>,
    /// `stop`: how long the router may drain before it exits anyway.
    pub grace_ms: Option<u64>,
    /// `leader_move`: whether the new leader's LEADER_ELECTED advisory reaches the
    /// routers (default true); `ms` is the election's length.
    pub advisory: Option<bool>,
    /// `node_crash`: kill the node that leads this group (a stream such as `DECIDE`, a
    /// durable such as `router`, or `KV`) when the fault lands...
    pub leader_of: Option<String>,
    /// ... or cluster node `nats-N` (1-based). `down_ms` is how long it stays down,
    /// `ms` the elections' length.
    pub cluster_node: Option<usize>,
    pub repeat: Option<u64>,
    pub every_ms: Option<u64>,
}

/// `metric op value`, e.g. `{ metric = "dlq", op = "==", value = 40 }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectSpec {
    pub metric: String,
    pub op: String,
    pub value: f64,
    /// The upstream assertion (or the reason) behind the threshold.
    #[serde(default)]
    pub why: Option<String>,
}
