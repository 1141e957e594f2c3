//! The payload digest the core records instead of payloads (DLQ records) and uses for
//! shared-bucket keys: SHA-256, lower-case hex.

use std::fmt;

use sha2::{Digest, Sha256};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A payload's SHA-256, taken once per delivery by whoever receives it (the shell's log
/// span shows its start, a DLQ record carries it whole) and kept as bytes: the hex string
/// is built only when a record needs it.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct PayloadDigest([u8; 32]);

impl PayloadDigest {
    pub fn of(bytes: &[u8]) -> Self {
        PayloadDigest(Sha256::digest(bytes).into())
    }

    /// All 64 hex digits, as DLQ records carry them.
    pub fn hex(&self) -> String {
        let mut out = String::with_capacity(64);
        push_hex(&mut out, &self.0);
        out
    }

    /// The first 16 hex digits, for a log line; formats without allocating.
    pub fn short(&self) -> impl fmt::Display + '_ {
        Short(&self.0[..8])
    }
}

impl fmt::Debug for PayloadDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

struct Short<'a>(&'a [u8]);

impl fmt::Display for Short<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        for b in self.0 {
            f.write_char(HEX[usize::from(b >> 4)] as char)?;
            f.write_char(HEX[usize::from(b & 15)] as char)?;
        }
        Ok(())
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    PayloadDigest::of(bytes).hex()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_short_form_is_the_start_of_the_whole() {
        let d = PayloadDigest::of(b"abc");
        assert_eq!(
            d.hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.short().to_string(), "ba7816bf8f01cfea");
    }
}
