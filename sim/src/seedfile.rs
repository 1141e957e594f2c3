//! The failing-seed file format (`seeds/<seed>.seed`), a TOML subset: `key = value` lines,
//! integers bare, strings double-quoted with `\"`, `\\` and `\n` escapes, `#` comments.
//! Reading and writing files is the caller's job; this module only renders and parses.

use crate::SimOptions;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedFile {
    pub seed: u64,
    pub requests: u64,
    /// Whether the run drew a fault profile (the CLI's `--no-faults` turns it off).
    pub faults: bool,
    /// `SimOptions::strict_exhaustion` of the failing run.
    pub strict_exhaustion: bool,
    pub invariant: String,
    pub message: String,
    /// `git rev-parse HEAD` when the seed failed, if known: seed plus commit reproduces.
    pub commit: Option<String>,
}

impl SeedFile {
    pub fn options(&self) -> SimOptions {
        SimOptions {
            requests: self.requests,
            faults: self.faults,
            strict_exhaustion: self.strict_exhaustion,
            ..SimOptions::new(self.seed)
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::from(
            "# A seed that failed once. Replayed by `cargo test --features sim` (tests/sim_replay.rs);\n\
             # see seeds/README.md. Delete this file only when the fix is in and the seed passes.\n",
        );
        out.push_str(&format!("seed = {}\n", self.seed));
        out.push_str(&format!("requests = {}\n", self.requests));
        out.push_str(&format!("faults = {}\n", self.faults));
        out.push_str(&format!("strict_exhaustion = {}\n", self.strict_exhaustion));
        out.push_str(&format!("invariant = {}\n", quote(&self.invariant)));
        out.push_str(&format!("message = {}\n", quote(&self.message)));
        if let Some(commit) = &self.commit {
            out.push_str(&format!("commit = {}\n", quote(commit)));
        }
        out
    }

    pub fn parse(text: &str) -> Result<SeedFile, String> {
        let mut file = SeedFile {
            seed: 0,
            requests: SimOptions::DEFAULT_REQUESTS,
            faults: true,
            strict_exhaustion: false,
            invariant: String::new(),
            message: String::new(),
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
            let int = || {
                value
                    .parse::<u64>()
                    .map_err(|e| format!("line {}: {key}: {e}", n + 1))
            };
            match key {
                "seed" => {
                    file.seed = int()?;
                    have_seed = true;
                }
                "requests" => file.requests = int()?,
                "faults" => {
                    file.faults = value
                        .parse()
                        .map_err(|e| format!("line {}: faults: {e}", n + 1))?
                }
                "strict_exhaustion" => {
                    file.strict_exhaustion = value
                        .parse()
                        .map_err(|e| format!("line {}: strict_exhaustion: {e}", n + 1))?
                }
                "invariant" => file.invariant = unquote(value)?,
                "message" => file.message = unquote(value)?,
                "commit" => file.commit = Some(unquote(value)?),
                _ => {} // unknown keys are for humans (notes, issue links)
            }
        }
        if !have_seed {
            return Err("no `seed = N` line".to_string());
        }
        Ok(file)
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
        let f = SeedFile {
            seed: 42,
            requests: 7,
            faults: false,
            strict_exhaustion: true,
            invariant: "unanswered".into(),
            message: "seq 3 (\"r-2\")\\ has\nnothing".into(),
            commit: Some("abc123".into()),
        };
        assert_eq!(SeedFile::parse(&f.render()), Ok(f));
    }

    #[test]
    fn a_bare_seed_is_enough() {
        let f = SeedFile::parse("seed = 9\n").unwrap();
        assert_eq!(
            (f.seed, f.requests, f.faults),
            (9, SimOptions::DEFAULT_REQUESTS, true)
        );
        assert!(SeedFile::parse("# nothing\n").is_err());
    }
}
