//! Coverage probes over a sweep: which share of the seeds reached each probe of the
//! catalogue (`beamline_router::core::probes::PROBES`), which probes no seed reached, and
//! whether a required one is among them. FoundationDB's `CODE_PROBE` report and
//! Antithesis' "sometimes" assertions are the model: a path no seed reaches is a path the
//! simulator does not test, however green the sweep.

use std::collections::BTreeMap;
use std::fmt::Write;

use beamline_router::core::probes::{spec, PROBES};

use crate::report::RunReport;

/// One probe over a sweep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeRow {
    pub name: &'static str,
    pub required: bool,
    /// Seeds that reached it at least once.
    pub seeds: usize,
    /// Times it was reached, over all seeds.
    pub hits: u64,
}

/// The tally of a sweep.
#[derive(Clone, Debug, Default)]
pub struct ProbeTally {
    pub seeds: usize,
    /// Catalogue order.
    pub rows: Vec<ProbeRow>,
    /// Names reached that the catalogue does not list (a probe added without its entry).
    pub uncatalogued: Vec<&'static str>,
}

impl ProbeTally {
    pub fn of(reports: &[RunReport]) -> Self {
        let mut seen: BTreeMap<&'static str, (usize, u64)> = BTreeMap::new();
        for r in reports {
            for &(name, count) in &r.probes {
                let e = seen.entry(name).or_default();
                e.0 += 1;
                e.1 += count;
            }
        }
        let rows = PROBES
            .iter()
            .map(|p| {
                let (seeds, hits) = seen.get(p.name).copied().unwrap_or_default();
                ProbeRow {
                    name: p.name,
                    required: p.required,
                    seeds,
                    hits,
                }
            })
            .collect();
        let uncatalogued = seen.keys().copied().filter(|n| spec(n).is_none()).collect();
        ProbeTally {
            seeds: reports.len(),
            rows,
            uncatalogued,
        }
    }

    /// Probes no seed reached.
    pub fn unreached(&self) -> Vec<&ProbeRow> {
        self.rows.iter().filter(|r| r.seeds == 0).collect()
    }

    /// Whether every required probe was reached and every reached name is catalogued.
    pub fn complete(&self) -> bool {
        self.uncatalogued.is_empty() && self.unreached().iter().all(|r| !r.required)
    }

    /// One line for every sweep.
    pub fn summary(&self) -> String {
        let reached = self.rows.len() - self.unreached().len();
        let names = |required: bool| {
            self.unreached()
                .iter()
                .filter(|r| r.required == required)
                .map(|r| r.name)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut line = format!("probes: {reached}/{} reached", self.rows.len());
        let (req, opt) = (names(true), names(false));
        if !req.is_empty() {
            let _ = write!(line, "; REQUIRED never reached: {req}");
        }
        if !opt.is_empty() {
            let _ = write!(line, "; never reached: {opt}");
        }
        if !self.uncatalogued.is_empty() {
            let _ = write!(
                line,
                "; not in the catalogue: {}",
                self.uncatalogued.join(", ")
            );
        }
        line
    }

    /// The whole table, as Markdown (`sweep --probes`, docs/SIMULATION.md).
    pub fn table(&self) -> String {
        let mut out =
            String::from("| probe | required | seeds | share | hits |\n|---|:-:|---:|---:|---:|\n");
        for r in &self.rows {
            let share = if self.seeds == 0 {
                0.0
            } else {
                100.0 * r.seeds as f64 / self.seeds as f64
            };
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {:.1}% | {} |",
                r.name,
                if r.required { "yes" } else { "" },
                r.seeds,
                share,
                r.hits
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::failed_report;
    use crate::SimOptions;

    fn report(probes: Vec<(&'static str, u64)>) -> RunReport {
        let mut r = failed_report(&SimOptions::new(1), "none", String::new());
        r.probes = probes;
        r
    }

    #[test]
    fn a_required_probe_no_seed_reached_makes_the_tally_incomplete() {
        let everything: Vec<_> = PROBES.iter().map(|p| (p.name, 1)).collect();
        let all = ProbeTally::of(&[report(everything.clone()), report(vec![])]);
        assert!(all.complete(), "{}", all.summary());
        let row = &all.rows[0];
        assert_eq!((row.seeds, row.hits), (1, 1));

        let required = PROBES.iter().find(|p| p.required).map(|p| p.name);
        let without: Vec<_> = everything
            .iter()
            .copied()
            .filter(|&(n, _)| Some(n) != required)
            .collect();
        let tally = ProbeTally::of(&[report(without)]);
        assert!(!tally.complete());
        assert!(tally.summary().contains("REQUIRED never reached"));

        let stray = ProbeTally::of(&[report(vec![("no.such_probe", 3)])]);
        assert_eq!(stray.uncatalogued, vec!["no.such_probe"]);
        assert!(!stray.complete());
    }
}
