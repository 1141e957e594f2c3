//! Formats of correlation identifiers.

/// UUID version 4 in its canonical 8-4-4-4-12 form.
pub fn is_uuid_v4(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            14 => *c == b'4',
            19 => matches!(c.to_ascii_lowercase(), b'8' | b'9' | b'a' | b'b'),
            _ => c.is_ascii_hexdigit(),
        })
}

/// ULID: 26 characters of Crockford base32 (no I, L, O, U).
pub fn is_ulid(s: &str) -> bool {
    s.len() == 26
        && s.bytes().all(|c| {
            let c = c.to_ascii_uppercase();
            c.is_ascii_digit()
                || (c.is_ascii_uppercase() && !matches!(c, b'I' | b'L' | b'O' | b'U'))
        })
}

/// A trace id: the W3C 32-hex form, a UUID, or an opaque token of at most 128 characters
/// of `[A-Za-z0-9._:-]`. Upstream rejected opaque ids its own docs used (`tr-123`); we
/// accept them but keep the charset tight so that they are safe in headers and logs.
pub fn valid_trace_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert!(is_uuid_v4("e3b0c442-98fc-4c14-9afb-4c8996fb9242"));
        assert!(!is_uuid_v4("e3b0c442-98fc-3c14-9afb-4c8996fb9242"));
        assert!(!is_uuid_v4("e3b0c442-98fc-4c14-cafb-4c8996fb9242"));
        assert!(is_ulid("01ARZ3NDEKTSV4RRFFQ69G5FAV"));
        assert!(!is_ulid("01ARZ3NDEKTSV4RRFFQ69G5FAI"));
        assert!(valid_trace_id("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert!(valid_trace_id("tr-123"));
        assert!(!valid_trace_id("has space"));
        assert!(!valid_trace_id(&"a".repeat(129)));
    }
}
