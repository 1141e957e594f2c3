//! The production shell: drives the sans-IO core over tokio and async-nats.
//!
//! It holds no routing logic. It turns JetStream deliveries, publish outcomes, timer
//! expiries and connection events into core inputs, and core commands into async-nats
//! calls. Everything it decides on its own is plumbing: bounds, timeouts, retries of the
//! connection, shutdown.
//!
//! - [`config`]: the TOML file, environment overrides and validation.
//! - [`nats`]: connect (URLs, auth, TLS), create the streams and durable pull consumers.
//! - [`metrics`]: `/metrics`, `/healthz`, `/readyz` over a small HTTP server.
//! - [`driver`]: the one loop that feeds the core and executes its commands.
//! - [`env`]: the core's `Env` over the wall clock and OS-seeded randomness.
//! - [`timers`]: the core's timers, ordered by deadline.
//! - [`handles`]: ids handed to the core, mapped back to ack and reply subjects.
//! - [`publisher`]: one task per publish or request, outcomes reported back as inputs.
//! - [`feeds`]: background reads of server state (consumer pending, given-up messages).
//! - [`headers`]: header conversion between the core and async-nats.
//! - [`traffic`]: a gateway-like load generator for demos and integration tests.

// The determinism rules (DESIGN.md section 7) bind the core and the simulator. The
// production shell is the one place that must read the wall clock, draw OS randomness
// and use the hash maps that async-nats hands out, so it opts out of those lints here.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod config;
pub mod driver;
pub mod env;
pub mod feeds;
pub mod handles;
pub mod headers;
pub mod metrics;
pub mod nats;
pub mod publisher;
pub mod timers;
pub mod traffic;

pub use config::{ConfigError, Settings};
pub use driver::{serve, serve_until, ServeConfig};
