//! What production gives the host: the wall clock (read once per event) and OS-seeded
//! randomness.

use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::core::{Buggify, Entropy, Probe, Time};

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

/// The randomness and fault points production gives the host: OS-seeded draws, and no
/// faults ever.
pub struct ShellEnv {
    rng: SplitMix64,
}

impl ShellEnv {
    pub fn from_os() -> Self {
        ShellEnv {
            rng: SplitMix64::from_os(),
        }
    }
}

impl Entropy for ShellEnv {
    fn next_u64(&mut self) -> u64 {
        self.rng.next()
    }
}

/// Production never injects faults.
impl Buggify for ShellEnv {}
/// Nor counts probes.
impl Probe for ShellEnv {}

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
    fn the_wall_clock_counts_ms_since_the_unix_epoch() {
        assert!(wall_clock().millis() > 1_600_000_000_000);
    }
}
