//! The deterministic core: a sans-IO state machine that owns every routing decision and
//! every message fate. Shells hand it inputs (`Router::handle`) and execute the commands
//! it emits through the `Env` interfaces. It never blocks, spawns, reads the wall clock
//! or iterates a hash map.

mod answers;
pub mod assignment;
pub mod backpressure;
pub mod breaker;
mod config;
pub mod decider;
mod digest;
mod dlq;
mod env;
pub mod extensions;
mod fate;
mod flight;
mod flow_decide;
mod flow_results;
mod inbound;
pub use inbound::reload_answer;
mod io;
mod outputs;
pub mod probes;
mod propagation;
pub mod provider_stats;
pub mod rate_limit;
mod reply;
mod router;
mod services;
pub mod shared;
mod stats;
pub mod sticky;
mod timers;

pub use config::RouterConfig;
pub use digest::{sha256_hex, PayloadDigest};
pub use dlq::msg_id as dlq_msg_id;
pub use env::{Broker, Buggify, Clock, Entropy, Env, Probe, RecordingEnv, Time};
pub use io::{
    Command, ConnectionEvent, Delivery, DeliveryId, Exhausted, Headers, InboundId, InboundRequest,
    Input, KvOp, KvOutcome, Publish, PublishId, PublishKind, PublishOutcome, RequestId,
    RequestOutcome, Settle, Source, TimerKey,
};
pub use router::{BreakerViews, Router, Stats, TableSizes};
