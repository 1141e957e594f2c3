//! Headers across the boundary: the core's ordered `(name, value)` list to an async-nats
//! `HeaderMap` and back.

use std::str::FromStr;

use async_nats::header::{HeaderMap, HeaderName, HeaderValue};

use crate::contracts::subjects::HEADER_MSG_ID;
use crate::core::Headers;

/// The core's headers as a NATS header map. Names and values are validated (a value
/// with CR or LF would otherwise corrupt the wire frame); `Nats-Msg-Id` is added from
/// `msg_id` when the core did not put it in the headers itself.
pub fn header_map_of(headers: &Headers, msg_id: Option<&str>) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    let mut has_msg_id = false;
    for (name, value) in headers {
        has_msg_id |= name.eq_ignore_ascii_case(HEADER_MSG_ID);
        let name =
            HeaderName::from_str(name).map_err(|e| format!("invalid header name {name:?}: {e}"))?;
        let value = HeaderValue::from_str(value)
            .map_err(|e| format!("invalid value for header {name}: {e}"))?;
        map.append(name, value);
    }
    if let (Some(msg_id), false) = (msg_id, has_msg_id) {
        let value =
            HeaderValue::from_str(msg_id).map_err(|e| format!("invalid Nats-Msg-Id: {e}"))?;
        map.append(HEADER_MSG_ID, value);
    }
    Ok(map)
}

/// Headers as the core sees them: sorted by name, values in arrival order. async-nats
/// keeps headers in a hash map, so the wire order is already lost; sorting at least
/// makes the same message produce the same input every time.
pub fn headers_of(map: Option<&HeaderMap>) -> Headers {
    let mut headers: Headers = map
        .map(|map| {
            map.iter()
                .flat_map(|(name, values)| {
                    values
                        .iter()
                        .map(move |v| (name.to_string(), v.as_str().to_string()))
                })
                .collect()
        })
        .unwrap_or_default();
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_map(headers: Vec<(&str, &str)>, msg_id: Option<&str>) -> Result<HeaderMap, String> {
        let headers: Headers = headers
            .into_iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        header_map_of(&headers, msg_id)
    }

    #[test]
    fn msg_id_is_added_once() {
        let map = header_map(vec![("a", "1")], Some("dlq-7")).unwrap();
        assert_eq!(map.get(HEADER_MSG_ID).map(|v| v.as_str()), Some("dlq-7"));
        let map = header_map(vec![("Nats-Msg-Id", "x")], Some("x")).unwrap();
        assert_eq!(map.get_all(HEADER_MSG_ID).count(), 1);
    }

    #[test]
    fn values_that_would_break_the_frame_are_refused() {
        let err = header_map(vec![("a", "1\r\nPUB x 1")], None).unwrap_err();
        assert!(err.contains("header a"), "{err}");
        assert!(header_map(vec![("a:b", "1")], None).is_err());
    }

    #[test]
    fn headers_round_trip_sorted_by_name() {
        let map = header_map(vec![("b", "2"), ("a", "1"), ("b", "3")], None).unwrap();
        let back = headers_of(Some(&map));
        let names: Vec<&str> = back.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b", "b"]);
        assert_eq!(back[1].1, "2");
        assert_eq!(back[2].1, "3");
    }
}
