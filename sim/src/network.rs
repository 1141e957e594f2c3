//! The router's connection to the server. Every message on it (pull requests, deliveries,
//! acks, publishes, confirmations) carries the epoch of the connection it was sent on and
//! arrives only if that connection is still up when it gets there: a drop loses what is
//! in flight, and a reconnect is a new connection, so nothing sent on the old one
//! sneaks through afterwards.
//!
//! Like TCP, each direction is FIFO: a message never overtakes an earlier one on the same
//! connection, so one slow message holds up those behind it (head-of-line blocking).

use crate::profile::Faults;
use crate::rng::SimRng;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Router to server: pull requests, acks, publishes.
    ToServer,
    /// Server to router: deliveries, confirmations.
    ToClient,
}

#[derive(Debug)]
pub struct Link {
    up: bool,
    epoch: u64,
    rng: SimRng,
    /// The latest arrival time scheduled in each direction on this connection.
    last_to_server: u64,
    last_to_client: u64,
}

/// When a message sent now arrives, and whether it was a slow one (a fault).
#[derive(Clone, Copy, Debug)]
pub struct Transit {
    pub arrives_at: u64,
    pub slow: bool,
}

impl Link {
    pub fn new(rng: SimRng) -> Self {
        Link {
            up: true,
            epoch: 0,
            rng,
            last_to_server: 0,
            last_to_client: 0,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether a message sent on connection `epoch` arrives now.
    pub fn delivers(&self, epoch: u64) -> bool {
        self.up && epoch == self.epoch
    }

    pub fn drop_connection(&mut self) {
        self.up = false;
    }

    /// Reconnect: a new connection with a new epoch.
    pub fn reconnect(&mut self) {
        self.up = true;
        self.epoch += 1;
        self.last_to_server = 0;
        self.last_to_client = 0;
    }

    /// When a message sent now in `direction` arrives: a few ms on a LAN, sometimes much
    /// more when the slow-link fault is on (and `in_chaos`), never before the message
    /// sent ahead of it.
    pub fn send(
        &mut self,
        now: u64,
        direction: Direction,
        faults: &Faults,
        in_chaos: bool,
    ) -> Transit {
        let slow = in_chaos && faults.slow_permille > 0 && self.rng.chance(faults.slow_permille);
        let ms = if slow {
            self.rng.between(50, faults.slow_max_ms.max(50))
        } else {
            self.rng.between(1, 5)
        };
        let last = match direction {
            Direction::ToServer => &mut self.last_to_server,
            Direction::ToClient => &mut self.last_to_client,
        };
        let arrives_at = (now + ms).max(*last);
        *last = arrives_at;
        Transit { arrives_at, slow }
    }
}
