//! BUGGIFY for the core, in FoundationDB's scheme (`flow/include/flow/Buggify.h`):
//! - BUGGIFY is enabled in a run with p = 0.8 (the fault menu draws it; FDB's
//!   `buggify_on_ratio`);
//! - the first time a site asks, it is made active for the whole run with p = 0.25
//!   (`P_GENERAL_BUGGIFIED_SECTION_ACTIVATED`), and the decision is recorded in the trace;
//! - an active site then fires with p = 0.25 each time it asks (`..._FIRES`).
//!
//! One table for the whole run, shared by every router process, so that a site's
//! activation does not depend on which process asked first. Nothing fires once the chaos
//! phase is over, so that liveness is checked on a healthy system.

use std::collections::BTreeMap;

use crate::rng::SimRng;

/// Per mille: a site is active for the run.
pub const ACTIVATED_PERMILLE: u64 = 250;
/// Per mille: an active site fires when asked.
pub const FIRES_PERMILLE: u64 = 250;

#[derive(Debug)]
pub struct Buggify {
    enabled: bool,
    rng: SimRng,
    active: BTreeMap<&'static str, bool>,
    fired: u64,
    /// The core bug planted for this run (`--bug`), by its core name.
    planted: Option<&'static str>,
}

impl Buggify {
    pub fn new(enabled: bool, rng: SimRng) -> Self {
        Buggify {
            enabled,
            rng,
            active: BTreeMap::new(),
            fired: 0,
            planted: None,
        }
    }

    /// Plant a core bug for the whole run (`Bug::planted_in_core`).
    pub fn plant(&mut self, bug: Option<&'static str>) {
        self.planted = bug;
    }

    /// Whether the core bug `bug` is planted in this run.
    pub fn planted(&self, bug: &'static str) -> bool {
        self.planted == Some(bug)
    }

    /// Whether `site` fires now, and, the first time a site asks, whether it was made
    /// active (`Some(active)`). `in_chaos` is false during the liveness phase.
    pub fn decide(&mut self, site: &'static str, in_chaos: bool) -> (bool, Option<bool>) {
        if !self.enabled {
            return (false, None);
        }
        // Activation is drawn on first ask even outside chaos, so that whether a site is
        // active never depends on when it first asked.
        let mut first = None;
        let active = match self.active.get(site) {
            Some(&a) => a,
            None => {
                let a = self.rng.chance(ACTIVATED_PERMILLE);
                self.active.insert(site, a);
                first = Some(a);
                a
            }
        };
        let fire = in_chaos && active && self.rng.chance(FIRES_PERMILLE);
        self.fired += u64::from(fire);
        (fire, first)
    }

    pub fn fired(&self) -> u64 {
        self.fired
    }

    /// The sites that asked so far, and whether each is active.
    pub fn sites(&self) -> Vec<(&'static str, bool)> {
        self.active.iter().map(|(&s, &a)| (s, a)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_never_fires_and_activation_is_sticky() {
        let mut off = Buggify::new(false, SimRng::stream(1, "buggify"));
        assert_eq!(off.decide("a", true), (false, None));
        // Over many seeds, about a quarter of sites activate, and an active site fires
        // about a quarter of the time; an inactive one never.
        let mut activated = 0;
        let mut fires = 0;
        let mut asks = 0;
        for seed in 0..400 {
            let mut b = Buggify::new(true, SimRng::stream(seed, "buggify"));
            let (_, first) = b.decide("site", true);
            let active = first.unwrap();
            activated += u64::from(active);
            for _ in 0..20 {
                let (fire, again) = b.decide("site", true);
                assert_eq!(again, None);
                assert!(active || !fire);
                if active {
                    asks += 1;
                    fires += u64::from(fire);
                }
            }
            assert_eq!(b.sites(), vec![("site", active)]);
        }
        assert!((60..=140).contains(&activated), "{activated}");
        assert!(fires * 100 / asks.max(1) >= 15 && fires * 100 / asks.max(1) <= 35);
    }

    #[test]
    fn nothing_fires_outside_chaos() {
        let mut b = Buggify::new(true, SimRng::stream(3, "buggify"));
        for _ in 0..100 {
            assert!(!b.decide("x", false).0);
        }
    }
}
