//! Observed latency and cost per (tenant, provider), from `ExecResult`s. They fill in a
//! decision's `expected_latency_ms` and `expected_cost` (upstream always sent 0).
//!
//! Exponentially weighted moving averages in integers: new = old + (sample - old) / 8.
//! Cost is kept in micro-units so that no float enters the state.

use std::collections::BTreeMap;

/// Used until a provider has reported (upstream's decider defaults).
pub const DEFAULT_LATENCY_MS: u64 = 500;
pub const DEFAULT_COST_MICROS: u64 = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Averages {
    latency_ms: u64,
    cost_micros: u64,
    samples: u64,
    last_used: u64,
}

#[derive(Debug)]
pub struct ProviderStats {
    max_entries: usize,
    table: BTreeMap<(String, String), Averages>,
    tick: u64,
}

impl ProviderStats {
    pub fn new(max_entries: usize) -> Self {
        ProviderStats {
            max_entries: max_entries.max(1),
            table: BTreeMap::new(),
            tick: 0,
        }
    }

    pub fn record(&mut self, tenant: &str, provider: &str, latency_ms: u64, cost: f64) {
        self.tick += 1;
        let cost_micros = if cost.is_finite() && cost > 0.0 {
            (cost * 1e6).min(1e15) as u64
        } else {
            0
        };
        let tick = self.tick;
        let entry = self
            .table
            .entry((tenant.to_string(), provider.to_string()))
            .or_insert(Averages {
                latency_ms,
                cost_micros,
                samples: 0,
                last_used: tick,
            });
        let ewma = |old: u64, new: u64| (old as i128 + (new as i128 - old as i128) / 8) as u64;
        if entry.samples > 0 {
            entry.latency_ms = ewma(entry.latency_ms, latency_ms);
            entry.cost_micros = ewma(entry.cost_micros, cost_micros);
        }
        entry.samples += 1;
        entry.last_used = tick;
        if self.table.len() > self.max_entries {
            // Rare: a linear scan for the least recently updated entry.
            if let Some(oldest) = self
                .table
                .iter()
                .min_by_key(|(_, a)| a.last_used)
                .map(|(k, _)| k.clone())
            {
                self.table.remove(&oldest);
            }
        }
    }

    /// (expected latency in ms, expected cost in micro-units).
    pub fn expected(&self, tenant: &str, provider: &str) -> (u64, u64) {
        self.table
            .get(&(tenant.to_string(), provider.to_string()))
            .map_or((DEFAULT_LATENCY_MS, DEFAULT_COST_MICROS), |a| {
                (a.latency_ms, a.cost_micros)
            })
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_then_moving_average() {
        let mut s = ProviderStats::new(4);
        assert_eq!(s.expected("acme", "openai"), (500, 10_000));
        s.record("acme", "openai", 800, 0.02);
        assert_eq!(s.expected("acme", "openai"), (800, 20_000));
        s.record("acme", "openai", 0, 0.0);
        assert_eq!(s.expected("acme", "openai"), (700, 17_500));
        assert_eq!(s.expected("globex", "openai"), (500, 10_000));
    }

    #[test]
    fn bounded() {
        let mut s = ProviderStats::new(2);
        for p in ["a", "b", "c"] {
            s.record("t", p, 1, 0.0);
        }
        assert_eq!(s.len(), 2);
        assert_eq!(s.expected("t", "a"), (500, 10_000), "oldest evicted");
    }
}
