//! What a caller chooses about a run; everything else is drawn from the seed.

/// A deliberately broken host, to prove that the checkers can fail. Never on by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// The host acks every delivery as it arrives, before the core has replied.
    AckOnDelivery,
    /// The host swallows reply publishes but tells the core they were confirmed.
    DropReplies,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimOptions {
    pub seed: u64,
    /// How many decide requests the gateway publishes.
    pub requests: u64,
    /// Keep the trace lines in the report (the hash is always computed).
    pub keep_trace: bool,
    /// Draw a fault menu from the seed (swarm); `false` runs a healthy world.
    pub faults: bool,
    pub bug: Option<Bug>,
    /// Fail the run when the server exhausts a message whose final delivery never reached
    /// the router, leaving it with neither reply nor DLQ record. Off by default until the
    /// core can be told of `MAX_DELIVERIES` advisories: such messages are then counted
    /// (`exhausted_unseen`) instead. See docs/SIMULATION.md, "Known gaps".
    pub strict_exhaustion: bool,
}

impl SimOptions {
    pub const DEFAULT_REQUESTS: u64 = 100;

    pub fn new(seed: u64) -> Self {
        SimOptions {
            seed,
            requests: Self::DEFAULT_REQUESTS,
            keep_trace: false,
            faults: true,
            bug: None,
            strict_exhaustion: false,
        }
    }
}
