//! The core's `Env` in production: the wall clock, OS-seeded randomness, and a command
//! buffer the driver drains after every input.

use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::core::{Broker, Buggify, Clock, Command, Entropy, Time};

/// Milliseconds since the Unix epoch: the production meaning of `core::Time`.
pub fn wall_clock() -> Time {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    Time(millis)
}

/// SplitMix64 seeded once from the OS. Production draws (weighted provider choice) need
/// no cryptographic strength, only independence between processes; `RandomState` is
/// seeded from OS randomness by std, so it serves as the seed without another crate.
struct SplitMix64(u64);

impl SplitMix64 {
    fn from_os() -> Self {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(u64::from(std::process::id()));
        SplitMix64(hasher.finish())
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

pub struct ShellEnv {
    now: Time,
    rng: SplitMix64,
    commands: Vec<Command>,
}

impl ShellEnv {
    pub fn from_os() -> Self {
        ShellEnv {
            now: wall_clock(),
            rng: SplitMix64::from_os(),
            commands: Vec::new(),
        }
    }

    /// Read the wall clock once per input: the core sees one instant per `handle` call.
    pub fn stamp(&mut self) -> Time {
        self.now = wall_clock();
        self.now
    }

    pub fn take_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.commands)
    }
}

impl Clock for ShellEnv {
    fn now(&self) -> Time {
        self.now
    }
}

impl Entropy for ShellEnv {
    fn next_u64(&mut self) -> u64 {
        self.rng.next()
    }
}

impl Broker for ShellEnv {
    fn execute(&mut self, command: Command) {
        self.commands.push(command);
    }
}

/// Production never injects faults.
impl Buggify for ShellEnv {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_envs_draw_different_streams() {
        let mut a = ShellEnv::from_os();
        let mut b = ShellEnv::from_os();
        assert_ne!((a.next_u64(), a.next_u64()), (b.next_u64(), b.next_u64()));
    }

    #[test]
    fn stamp_fixes_now_until_the_next_input() {
        let mut env = ShellEnv::from_os();
        let t = env.stamp();
        assert_eq!(env.now(), t);
        assert!(t.millis() > 1_600_000_000_000, "ms since the Unix epoch");
    }
}
