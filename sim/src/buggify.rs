//! BUGGIFY for the core, in FoundationDB's scheme: the first time a site asks, it is made
//! active for the whole run with p = 0.25; an active site then fires with p = 0.25 each
//! time it asks. Nothing fires once the chaos phase is over, so that liveness can be
//! checked on a healthy system.

use std::collections::BTreeMap;

use crate::rng::SimRng;

#[derive(Debug)]
pub struct Buggify {
    enabled: bool,
    rng: SimRng,
    active: BTreeMap<&'static str, bool>,
    fired: u64,
}

impl Buggify {
    pub fn new(enabled: bool, rng: SimRng) -> Self {
        Buggify {
            enabled,
            rng,
            active: BTreeMap::new(),
            fired: 0,
        }
    }

    /// Whether `site` fires now. `in_chaos` is false during the liveness phase.
    pub fn decide(&mut self, site: &'static str, in_chaos: bool) -> bool {
        if !self.enabled {
            return false;
        }
        // Activation is drawn on first ask even outside chaos, so that whether a site is
        // active never depends on when it first asked.
        let rng = &mut self.rng;
        let active = *self.active.entry(site).or_insert_with(|| rng.chance(250));
        let fire = in_chaos && active && self.rng.chance(250);
        self.fired += u64::from(fire);
        fire
    }

    pub fn fired(&self) -> u64 {
        self.fired
    }
}
