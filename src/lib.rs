//! Beamline Router: the decision engine of a task platform, consumed over NATS JetStream.
//!
//! - [`contracts`]: wire types and codes.
//! - [`hash`]: 64-bit FNV-1a, whose values rule ids and simulator traces record.
//! - [`intake`]: validation of raw messages, in the documented order.
//! - [`policy`]: the routing policy DSL and its store.
//! - [`core`]: the deterministic, sans-IO state machine that owns every decision.
//! - [`host`]: the shell's deterministic half (tables, time-outs, timers, advisories,
//!   watchdog, drain), shared by the production driver and the simulator.
//! - `shell` (feature `service`): the production driver over tokio and async-nats.
//! - `bench` (feature `service`): clients of the router: the end-to-end benchmark behind
//!   `beamline-router bench` and the gateway-like load generator behind `demo-traffic`.

pub mod contracts;
pub mod core;
pub mod hash;
pub mod host;
pub mod intake;
pub mod policy;

#[cfg(feature = "service")]
pub mod shell;

#[cfg(feature = "service")]
pub mod client;

#[cfg(feature = "service")]
pub mod bench;
