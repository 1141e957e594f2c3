//! The run's trace: one JSON object per line, in the order things happened, plus a 64-bit
//! FNV-1a hash over every line. A line is
//!
//! ```text
//! {"t":<virtual ms>,"k":"<kind>","n":"<node>","v":<detail>}
//! ```
//!
//! `n` is the actor the line is about (`nats` for the server, `world` for the loop
//! itself), `v` is the kind's detail. Every line enters the hash; the lines themselves
//! are kept only when asked (a sweep needs the hash, a diff or a timeline the lines).
//!
//! The hash is the router crate's FNV-1a (`beamline_router::hash`), not `std`'s
//! `DefaultHasher`, whose algorithm is unspecified and may change between Rust releases,
//! which would make recorded hashes meaningless. Wall time never enters the trace; only
//! virtual milliseconds do.

use std::fmt::Write as _;

use beamline_router::hash::Fnv1a64;

/// The ordered record of a run.
#[derive(Clone, Debug)]
pub struct Trace {
    hash: Fnv1a64,
    len: u64,
    lines: Option<Vec<String>>,
    scratch: String,
}

impl Trace {
    pub fn new(keep_lines: bool) -> Self {
        Trace {
            hash: Fnv1a64::new(),
            len: 0,
            lines: keep_lines.then(Vec::new),
            scratch: String::with_capacity(256),
        }
    }

    /// Append a line whose detail `v` is already JSON text.
    pub fn raw(&mut self, at: u64, kind: &str, node: &str, detail_json: &str) {
        self.scratch.clear();
        let _ = write!(
            self.scratch,
            r#"{{"t":{at},"k":"{kind}","n":"{node}","v":{detail_json}}}"#
        );
        self.hash.write(self.scratch.as_bytes());
        self.hash.write(b"\n");
        self.len += 1;
        if let Some(lines) = &mut self.lines {
            lines.push(self.scratch.clone());
        }
    }

    /// Append a line whose detail is any serde-serializable value.
    pub fn record<T: serde::Serialize + ?Sized>(
        &mut self,
        at: u64,
        kind: &str,
        node: &str,
        value: &T,
    ) {
        let detail =
            serde_json::to_string(value).unwrap_or_else(|e| format!("\"unserializable: {e}\""));
        self.raw(at, kind, node, &detail);
    }

    pub fn hash(&self) -> u64 {
        self.hash.finish()
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn lines(&self) -> Option<&[String]> {
        self.lines.as_deref()
    }

    pub fn into_lines(self) -> Option<Vec<String>> {
        self.lines
    }
}

/// The hash as the CLI prints it: 16 lowercase hex digits.
pub fn hash_hex(hash: u64) -> String {
    format!("{hash:016x}")
}

/// Where two traces first differ: the index, and the line of each side there (`None` past
/// the end of that side). `None` if they are identical.
pub fn first_divergence<'a>(
    a: &'a [String],
    b: &'a [String],
) -> Option<(usize, Option<&'a str>, Option<&'a str>)> {
    let n = a.len().max(b.len());
    (0..n).find(|&i| a.get(i) != b.get(i)).map(|i| {
        (
            i,
            a.get(i).map(String::as_str),
            b.get(i).map(String::as_str),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_json_objects() {
        let mut t = Trace::new(true);
        t.record(5, "core.in", "router-1", &serde_json::json!({"a": 1}));
        let line = &t.lines().unwrap()[0];
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["t"], 5);
        assert_eq!(v["k"], "core.in");
        assert_eq!(v["n"], "router-1");
        assert_eq!(v["v"]["a"], 1);
    }

    #[test]
    fn trace_hash_covers_lines_and_order() {
        let mut a = Trace::new(true);
        a.raw(1, "x", "w", "1");
        a.raw(2, "y", "w", "2");
        let mut b = Trace::new(false);
        b.raw(1, "x", "w", "1");
        b.raw(2, "y", "w", "2");
        assert_eq!(a.hash(), b.hash());
        let mut c = Trace::new(true);
        c.raw(2, "y", "w", "2");
        c.raw(1, "x", "w", "1");
        assert_ne!(a.hash(), c.hash());
        let (i, _, _) = first_divergence(a.lines().unwrap(), c.lines().unwrap()).unwrap();
        assert_eq!(i, 0);
        assert_eq!(
            first_divergence(a.lines().unwrap(), a.lines().unwrap()),
            None
        );
    }
}
