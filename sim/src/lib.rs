//! Beamline Router's deterministic simulator. One seed drives everything: a virtual clock
//! that jumps from event to event, a simulated JetStream, a gateway that sends decide
//! requests, the router host that runs the real core, and a fault injector. Same seed,
//! same commit: the same trace, byte for byte. See docs/SIMULATION.md.
//!
//! Code map:
//! - [`world`]: the event loop and the wiring between actors; the one place that
//!   schedules events.
//! - [`queue`]: the (time, insertion order) event heap.
//! - [`rng`]: the seeded ChaCha8 generator and its named streams.
//! - [`jetstream`]: the broker model (streams, dedupe, pull consumers, acks).
//! - [`network`]: the router's connection: transit times, drops, epochs.
//! - [`gateway`]: the workload and the reply collector.
//! - [`host`]: the router process around the core (`Env`, delivery ids, timers).
//! - [`profile`], [`buggify`]: the per-seed swarm of faults and BUGGIFY.
//! - [`invariants`]: the safety and liveness checkers.
//! - [`trace`]: trace records and the FNV-1a hash.
//! - [`sweep`], [`seedfile`]: many seeds at once, and the failing-seed file format.

pub mod buggify;
pub mod gateway;
pub mod host;
pub mod invariants;
pub mod jetstream;
pub mod network;
pub mod options;
pub mod policies;
pub mod profile;
pub mod queue;
pub mod report;
pub mod rng;
pub mod seedfile;
pub mod sweep;
pub mod trace;
pub mod world;

pub use options::{Bug, SimOptions};
pub use report::{RunReport, Verdict};
pub use world::run;
