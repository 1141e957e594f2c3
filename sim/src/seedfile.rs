//! The failing-seed file format (`seeds/<seed>.seed`), a TOML subset: `key = value`
//! lines, integers and booleans bare, strings double-quoted with `\"`, `\\` and `\n`
//! escapes, `#` comments. Reading and writing files is the caller's job; this module only
//! renders and parses.
//!
//! A seed file records everything needed to replay the run (seed, options, and the
//! reductions a shrink found) and, for people, what failed and under which commit.

use crate::faults::RateFault;
use crate::options::{Bug, Reductions};
use crate::SimOptions;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedFile {
    pub options: SimOptions,
    pub invariant: String,
    /// The known open core issue it was an instance of, if any.
    pub known: Option<String>,
    pub message: String,
    /// The fault profile and schedule, for people (the seed redraws them).
    pub profile: String,
    /// `git rev-parse HEAD` when it failed: seed plus commit reproduces.
    pub commit: Option<String>,
}

impl SeedFile {
    pub fn render(&self) -> String {
        let o = &self.options;
        let mut out = String::from(
            "# A seed that failed once. Replayed by `cargo test --features sim` (tests/sim_replay.rs);\n\
             # see seeds/README.md. Delete this file only when the fix is in and the seed passes.\n",
        );
        out.push_str(&format!("seed = {}\n", o.seed));
        out.push_str(&format!("requests = {}\n", o.requests));
        out.push_str(&format!("faults = {}\n", o.faults));
        out.push_str(&format!("tail_loss = {}\n", o.tail_loss));
        out.push_str(&format!("strict = {}\n", o.strict));
        if let Some(bug) = o.bug {
            out.push_str(&format!("bug = {}\n", quote(bug.name())));
        }
        let r = &o.reductions;
        if let Some(c) = r.chaos_ms {
            out.push_str(&format!("chaos_ms = {c}\n"));
        }
        if !r.dropped_faults.is_empty() {
            let list: Vec<String> = r.dropped_faults.iter().map(|i| i.to_string()).collect();
            out.push_str(&format!("dropped_faults = {}\n", quote(&list.join(","))));
        }
        if !r.rates_off.is_empty() {
            let list: Vec<&str> = r.rates_off.iter().map(|k| k.name()).collect();
            out.push_str(&format!("rates_off = {}\n", quote(&list.join(","))));
        }
        out.push_str(&format!("invariant = {}\n", quote(&self.invariant)));
        if let Some(k) = &self.known {
            out.push_str(&format!("known = {}\n", quote(k)));
        }
        out.push_str(&format!("message = {}\n", quote(&self.message)));
        out.push_str(&format!("profile = {}\n", quote(&self.profile)));
        if let Some(commit) = &self.commit {
            out.push_str(&format!("commit = {}\n", quote(commit)));
        }
        out
    }

    pub fn parse(text: &str) -> Result<SeedFile, String> {
        let mut f = SeedFile {
            options: SimOptions::new(0),
            invariant: String::new(),
            known: None,
            message: String::new(),
            profile: String::new(),
            commit: None,
        };
        let mut have_seed = false;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| format!("line {}: expected `key = value`", n + 1))?;
            let (key, value) = (key.trim(), value.trim());
            let err = |e: String| format!("line {}: {key}: {e}", n + 1);
            let int = || value.parse::<u64>().map_err(|e| err(e.to_string()));
            let boolean = || value.parse::<bool>().map_err(|e| err(e.to_string()));
            let o = &mut f.options;
            match key {
                "seed" => {
                    o.seed = int()?;
                    have_seed = true;
                }
                "requests" => o.requests = int()?,
                "faults" => o.faults = boolean()?,
                "tail_loss" => o.tail_loss = boolean()?,
                "strict" => o.strict = boolean()?,
                "bug" => {
                    let name = unquote(value)?;
                    o.bug =
                        Some(Bug::parse(&name).ok_or_else(|| err(format!("unknown bug {name}")))?);
                }
                "chaos_ms" => o.reductions.chaos_ms = Some(int()?),
                "dropped_faults" => {
                    o.reductions.dropped_faults = parse_indices(&unquote(value)?).map_err(err)?
                }
                "rates_off" => {
                    o.reductions.rates_off = parse_rates(&unquote(value)?).map_err(err)?
                }
                "invariant" => f.invariant = unquote(value)?,
                "known" => f.known = Some(unquote(value)?),
                "message" => f.message = unquote(value)?,
                "profile" => f.profile = unquote(value)?,
                "commit" => f.commit = Some(unquote(value)?),
                _ => {} // unknown keys are for humans (notes, issue links), and old files
            }
        }
        if !have_seed {
            return Err("no `seed = N` line".to_string());
        }
        Ok(f)
    }
}

/// `1,4,7` -> [1, 4, 7].
pub fn parse_indices(s: &str) -> Result<Vec<usize>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| x.parse().map_err(|e| format!("{x}: {e}")))
        .collect()
}

/// `ack_loss,slow` -> the rate faults.
pub fn parse_rates(s: &str) -> Result<Vec<RateFault>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| RateFault::parse(x).ok_or_else(|| format!("unknown rate fault {x}")))
        .collect()
}

impl Reductions {
    /// How a reduced run is replayed on the command line.
    pub fn flags(&self) -> String {
        let mut out = Vec::new();
        if let Some(c) = self.chaos_ms {
            out.push(format!("--chaos-ms {c}"));
        }
        if !self.dropped_faults.is_empty() {
            let list: Vec<String> = self.dropped_faults.iter().map(|i| i.to_string()).collect();
            out.push(format!("--drop-faults {}", list.join(",")));
        }
        if !self.rates_off.is_empty() {
            let list: Vec<&str> = self.rates_off.iter().map(|k| k.name()).collect();
            out.push(format!("--rates-off {}", list.join(",")));
        }
        out.join(" ")
    }
}

fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn unquote(s: &str) -> Result<String, String> {
    let inner = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .ok_or_else(|| format!("expected a quoted string, got {s}"))?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            other => return Err(format!("bad escape \\{other:?}")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_parses_back() {
        let mut options = SimOptions::new(42);
        options.requests = 7;
        options.faults = false;
        options.strict = true;
        options.bug = Some(Bug::SkipDlq);
        options.reductions = Reductions {
            chaos_ms: Some(9_000),
            dropped_faults: vec![1, 5],
            rates_off: vec![RateFault::Slow, RateFault::Buggify],
        };
        let f = SeedFile {
            options,
            invariant: "unanswered".into(),
            known: Some("seq_collision".into()),
            message: "seq 3 (\"r-2\")\\ has\nnothing".into(),
            profile: "routers=2".into(),
            commit: Some("abc123".into()),
        };
        assert_eq!(SeedFile::parse(&f.render()), Ok(f));
    }

    #[test]
    fn a_bare_seed_is_enough_and_old_keys_are_ignored() {
        let f = SeedFile::parse("seed = 9\nstrict_exhaustion = false\n").unwrap();
        assert_eq!(f.options, SimOptions::new(9));
        assert!(SeedFile::parse("# nothing\n").is_err());
    }
}
