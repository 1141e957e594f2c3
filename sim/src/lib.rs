//! Beamline Router's deterministic simulator. One seed drives everything: a virtual clock
//! that jumps from event to event, a simulated NATS server with JetStream, the actors
//! around the router (gateways, CAF workers, extension services, a usage consumer, an
//! operator), one or more router processes running the real core, and a fault injector.
//! Same seed, same commit: the same trace, byte for byte. See docs/SIMULATION.md.
//!
//! Code map:
//! - [`world`]: the event loop and the wiring between actors; the one place that
//!   schedules events.
//! - [`queue`]: the (time, insertion order) event heap.
//! - [`rng`]: the seeded ChaCha8 generator and its named streams.
//! - [`jetstream`]: the broker model (streams, dedupe, pull consumers, acks, advisories).
//! - [`net`], [`wire`]: connections, partitions, latency; what travels on them.
//! - [`topology`]: who is in the world.
//! - [`host`]: a router process around the core (`Env`, delivery ids, timers, advisories).
//! - [`actors`]: gateways, CAF workers, extensions, the usage consumer, the operator.
//! - [`profile`], [`faults`], [`buggify`]: the per-seed swarm of settings, faults and the
//!   fault schedule; BUGGIFY.
//! - [`invariants`]: the safety and liveness checkers; [`models`]: the reference models
//!   of the routing semantics; [`history`]: the history a router's clients observe and
//!   its rules, shared with the real-server tests.
//! - [`trace`], [`timeline`]: the JSON-lines trace and its hash; the HTML timeline.
//! - [`sweep`], [`seedfile`], [`shrink`]: many seeds at once, the failing-seed file, and
//!   making a failing run smaller.
//! - [`scenario`]: named fault scenarios (`scenarios/*.toml`) over a seed's draw, and
//!   their expectations.

pub mod actors;
pub mod buggify;
pub mod faults;
pub mod history;
pub mod host;
pub mod invariants;
pub mod jetstream;
pub mod models;
pub mod net;
pub mod options;
pub mod policies;
pub mod probes;
pub mod profile;
pub mod queue;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod seedfile;
pub mod shrink;
pub mod sweep;
pub mod timeline;
pub mod topology;
pub mod trace;
pub mod wire;
pub mod world;

pub use options::{Bug, Reductions, SimOptions};
pub use report::{RunReport, Verdict};
pub use world::run;
