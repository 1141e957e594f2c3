//! The shape of one run, drawn from its seed in swarm style (TigerBeetle's VOPR): each seed
//! gets its own consumer settings and its own fault menu (which faults are on, how often,
//! how bad), so that a sweep explores combinations no single hand-written profile would.

use serde::Serialize;

use crate::rng::SimRng;

/// Everything a run's world is built from, besides the seed and the options.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Profile {
    // --- the consumer and the clients ---
    pub ack_wait_ms: u64,
    pub max_deliver: u64,
    pub max_ack_pending: usize,
    pub pull_batch: u64,
    pub pull_expires_ms: u64,
    /// How long the router's client waits for a publish confirmation before reporting
    /// the publish as failed (async-nats' request timeout).
    pub publish_timeout_ms: u64,
    /// Requests are published within `[0, workload_ms)`.
    pub workload_ms: u64,
    /// Faults stop at `chaos_ms`; then the liveness phase begins.
    pub chaos_ms: u64,
    pub faults: Faults,
}

/// The fault menu. A zero rate or `false` switches a fault off for the whole run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Faults {
    /// The router's connection to the server drops now and then.
    pub link_drops: bool,
    /// Mean time between drops; each uptime is uniform in `[1, 2 * mean]`.
    pub mean_uptime_ms: u64,
    pub down_min_ms: u64,
    pub down_max_ms: u64,
    /// How late the client notices a drop (ping timeout, read error): until then it sends
    /// into the void.
    pub detect_max_ms: u64,
    /// Chance that the server notices the drop at once and forgets the client's pull
    /// requests; otherwise (a half-open connection) it keeps delivering into them until
    /// they expire, and those deliveries are lost but counted.
    pub server_notices_permille: u64,
    /// An ack, nak, term or progress sent on a healthy connection is lost anyway.
    pub ack_loss_permille: u64,
    /// The server refuses a publish (for a JetStream publish, an error PubAck).
    pub publish_error_permille: u64,
    /// A message on the router's link takes `slow_max_ms` at worst instead of a few ms.
    pub slow_permille: u64,
    pub slow_max_ms: u64,
    /// Core BUGGIFY sites may fire in this run (FoundationDB: on in most seeds).
    pub buggify: bool,
}

impl Faults {
    pub fn none() -> Faults {
        Faults {
            link_drops: false,
            mean_uptime_ms: 0,
            down_min_ms: 0,
            down_max_ms: 0,
            detect_max_ms: 0,
            server_notices_permille: 1000,
            ack_loss_permille: 0,
            publish_error_permille: 0,
            slow_permille: 0,
            slow_max_ms: 0,
            buggify: false,
        }
    }

    fn draw(rng: &mut SimRng) -> Faults {
        let link_drops = rng.chance(750);
        let down_min_ms = rng.between(50, 2_000);
        Faults {
            link_drops,
            mean_uptime_ms: rng.between(3_000, 40_000),
            down_min_ms,
            // Now and then an outage outlasts the ack wait, so that redeliveries pile up.
            down_max_ms: if rng.chance(200) {
                rng.between(30_000, 60_000)
            } else {
                rng.between(down_min_ms, 15_000)
            },
            detect_max_ms: rng.between(0, 2_000),
            server_notices_permille: rng.between(0, 1000),
            ack_loss_permille: if rng.chance(300) {
                rng.between(1, 100)
            } else {
                0
            },
            publish_error_permille: if rng.chance(300) {
                rng.between(1, 400)
            } else {
                0
            },
            slow_permille: if rng.chance(300) {
                rng.between(1, 100)
            } else {
                0
            },
            slow_max_ms: rng.between(50, 3_000),
            buggify: rng.chance(800),
        }
    }

    /// How many distinct faults are switched on: printed, and handy for coverage counts.
    pub fn enabled(&self) -> usize {
        [
            self.link_drops,
            self.ack_loss_permille > 0,
            self.publish_error_permille > 0,
            self.slow_permille > 0,
            self.buggify,
        ]
        .iter()
        .filter(|&&on| on)
        .count()
    }
}

impl Profile {
    /// Draw a profile. With `faults == false`, the world is the same but healthy.
    pub fn draw(rng: &mut SimRng, faults: bool) -> Profile {
        let workload_ms = 60_000;
        Profile {
            ack_wait_ms: *rng.pick(&[5_000, 10_000, 30_000]),
            max_deliver: rng.between(2, 6),
            max_ack_pending: if rng.chance(300) {
                rng.between(2, 64) as usize
            } else {
                1_000
            },
            pull_batch: rng.between(1, 32),
            pull_expires_ms: rng.between(1_000, 30_000),
            publish_timeout_ms: rng.between(1_000, 5_000),
            workload_ms,
            chaos_ms: workload_ms + rng.between(0, 60_000),
            faults: if faults {
                Faults::draw(rng)
            } else {
                Faults::none()
            },
        }
    }

    /// After the chaos phase, every accepted request must reach its final state within
    /// this long: each remaining delivery can cost an ack wait, the longest nak delay, a
    /// publish timeout and a DLQ retry; plus a pull cycle and a margin.
    pub fn liveness_bound_ms(&self, longest_nak_ms: u64, dlq_retry_ms: u64) -> u64 {
        let per_delivery =
            self.ack_wait_ms + longest_nak_ms + self.publish_timeout_ms + dlq_retry_ms;
        self.max_deliver * per_delivery + self.pull_expires_ms + 30_000
    }

    /// One line for the CLI.
    pub fn summary(&self) -> String {
        let f = &self.faults;
        format!(
            "ack_wait={}ms max_deliver={} max_ack_pending={} batch={} chaos={}ms \
             faults[drops={} uptime~{}ms down={}..{}ms ack_loss={}‰ pub_err={}‰ slow={}‰ buggify={}]",
            self.ack_wait_ms,
            self.max_deliver,
            self.max_ack_pending,
            self.pull_batch,
            self.chaos_ms,
            f.link_drops,
            f.mean_uptime_ms,
            f.down_min_ms,
            f.down_max_ms,
            f.ack_loss_permille,
            f.publish_error_permille,
            f.slow_permille,
            f.buggify,
        )
    }
}
