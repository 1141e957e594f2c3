//! The production shell: drives the sans-IO core over tokio and async-nats.
//!
//! It holds no routing logic and no bookkeeping rule: it turns JetStream deliveries,
//! I/O outcomes and connection events into host events (`crate::host`), and performs
//! the host's actions with async-nats. Tables, bounds, time-outs, timers, the advisory
//! journey, the pull watchdog and the shutdown drain are the host's, which the
//! simulator runs too.
//!
//! - [`config`]: the TOML file, environment overrides and validation.
//! - [`cluster`]: the cluster the server reports, the stream replicas chosen from it, and
//!   which existing streams hold fewer.
//! - [`nats`]: connect (URLs, auth, TLS), create the streams and durable pull consumers.
//! - [`setup`]: the streams, consumers and bucket at start, retried while the cluster
//!   has no leader to ask.
//! - [`metrics`]: `/metrics`, `/healthz`, `/readyz` over a small HTTP server.
//! - [`driver`]: the one loop that owns the host and performs its actions.
//! - [`env`]: the wall clock and OS-seeded randomness.
//! - [`publisher`]: one task per publish or request, outcomes reported back as events.
//! - [`feeds`]: reads of server state the host asks for (consumer pending, given-up
//!   messages).
//! - [`headers`]: header conversion between the core and async-nats.

// The determinism rules (docs/ARCHITECTURE.md) bind the core and the simulator. The
// production shell is the one place that must read the wall clock, draw OS randomness
// and use the hash maps that async-nats hands out, so it opts out of those lints here.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod cluster;
pub mod config;
pub mod driver;
pub mod env;
pub mod feeds;
pub mod headers;
pub mod metrics;
pub mod nats;
pub mod publisher;
pub mod reload;
pub mod setup;

pub use config::{ConfigError, Settings};

/// The host as production instantiates it: deliveries are settled through their ack
/// subject, inbound requests answered on their reply subject.
pub(crate) type HostEvent = crate::host::Event<async_nats::Subject, async_nats::Subject>;
pub(crate) type HostAction = crate::host::Action<async_nats::Subject, async_nats::Subject>;
pub use driver::{serve, serve_until, ServeConfig};
