//! The deterministic core: a sans-IO state machine that owns every routing decision and
//! every message fate. Shells hand it inputs (`Router::handle`) and execute the commands
//! it emits through the `Env` interfaces. It never blocks, spawns, reads the wall clock
//! or iterates a hash map.

mod answers;
mod config;
mod decide;
mod dlq;
mod env;
mod io;
mod router;

pub use config::RouterConfig;
pub use env::{Broker, Buggify, Clock, Entropy, Env, RecordingEnv, Time};
pub use io::{
    Command, ConnectionEvent, Delivery, DeliveryId, Headers, Input, Publish, PublishId,
    PublishKind, PublishOutcome, TimerKey,
};
pub use router::{Router, Stats};
