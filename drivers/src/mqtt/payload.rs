//! Payload decoding: a plain number, or JSON with a JSON Pointer per point, an optional
//! timestamp and an optional quality field. Pure; every failure has a reason that becomes a
//! metric label, and none of them becomes a value.

use alert_rules::{Millis, Quality};
use serde::Deserialize;
use serde_json::Value;

/// Why a message (or one point of it) was rejected. Used as a low-cardinality metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BadPayload {
    Oversized,
    NotUtf8,
    NotJson,
    MissingField,
    NotANumber,
    NotFinite,
    BadTimestamp,
    /// No configured point matches the topic.
    Unmapped,
}

impl BadPayload {
    pub const ALL: [BadPayload; 8] = [
        BadPayload::Oversized,
        BadPayload::NotUtf8,
        BadPayload::NotJson,
        BadPayload::MissingField,
        BadPayload::NotANumber,
        BadPayload::NotFinite,
        BadPayload::BadTimestamp,
        BadPayload::Unmapped,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            BadPayload::Oversized => "oversized",
            BadPayload::NotUtf8 => "not_utf8",
            BadPayload::NotJson => "not_json",
            BadPayload::MissingField => "missing_field",
            BadPayload::NotANumber => "not_a_number",
            BadPayload::NotFinite => "not_finite",
            BadPayload::BadTimestamp => "bad_timestamp",
            BadPayload::Unmapped => "unmapped",
        }
    }

    pub const fn index(self) -> usize {
        self as usize
    }
}

/// How the optional timestamp field is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampFormat {
    /// Numbers below 10^11 are epoch seconds, larger ones epoch milliseconds; strings RFC 3339.
    #[default]
    Auto,
    EpochS,
    EpochMs,
    Rfc3339,
}

/// Why a JSON Pointer (RFC 6901) is not acceptable.
pub fn pointer_error(pointer: &str) -> Option<String> {
    // "" is the whole document (a payload that is a bare JSON number).
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return Some(format!(
            "{pointer:?} is not a JSON Pointer: it must start with '/' (e.g. \"/nh3\" or \"/data/0/value\")"
        ));
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Some(format!(
                "{pointer:?}: '~' must be followed by 0 ('~') or 1 ('/')"
            ));
        }
    }
    None
}

/// A plain-text number such as `12.5` (surrounding whitespace allowed).
pub fn plain_number(payload: &[u8]) -> Result<f64, BadPayload> {
    let text = std::str::from_utf8(payload).map_err(|_| BadPayload::NotUtf8)?;
    let text = text.trim();
    // A JSON document holding a bare number is also a plain number.
    let v: f64 = text.parse().map_err(|_| BadPayload::NotANumber)?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(BadPayload::NotFinite)
    }
}

/// Parse a payload as JSON. Non-UTF-8 is reported as such, not as bad JSON.
pub fn parse_json(payload: &[u8]) -> Result<Value, BadPayload> {
    if std::str::from_utf8(payload).is_err() {
        return Err(BadPayload::NotUtf8);
    }
    serde_json::from_slice(payload).map_err(|_| BadPayload::NotJson)
}

/// The number at `pointer`. Booleans count as 1 and 0 (digital inputs); numeric strings are
/// accepted, since many devices quote their numbers.
pub fn number_at(doc: &Value, pointer: &str) -> Result<f64, BadPayload> {
    let v = doc.pointer(pointer).ok_or(BadPayload::MissingField)?;
    let n = match v {
        Value::Number(n) => n.as_f64().ok_or(BadPayload::NotANumber)?,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| BadPayload::NotANumber)?,
        Value::Null => return Err(BadPayload::MissingField),
        _ => return Err(BadPayload::NotANumber),
    };
    if n.is_finite() {
        Ok(n)
    } else {
        Err(BadPayload::NotFinite)
    }
}

/// The time at `pointer`, in epoch milliseconds.
pub fn timestamp_at(
    doc: &Value,
    pointer: &str,
    format: TimestampFormat,
) -> Result<Millis, BadPayload> {
    let v = doc.pointer(pointer).ok_or(BadPayload::BadTimestamp)?;
    let ms = match (v, format) {
        (Value::Number(n), TimestampFormat::Auto) => {
            let x = n.as_f64().ok_or(BadPayload::BadTimestamp)?;
            if x.abs() < 1e11 { x * 1000.0 } else { x }
        }
        (Value::Number(n), TimestampFormat::EpochS) => {
            n.as_f64().ok_or(BadPayload::BadTimestamp)? * 1000.0
        }
        (Value::Number(n), TimestampFormat::EpochMs) => {
            n.as_f64().ok_or(BadPayload::BadTimestamp)?
        }
        (Value::String(s), TimestampFormat::Auto | TimestampFormat::Rfc3339) => {
            rfc3339_millis(s).ok_or(BadPayload::BadTimestamp)? as f64
        }
        _ => return Err(BadPayload::BadTimestamp),
    };
    // Before 2000 or after 2200: a unit mix-up, not a measurement time.
    if ms.is_finite() && (946_684_800_000.0..7_258_118_400_000.0).contains(&ms) {
        Ok(ms as Millis)
    } else {
        Err(BadPayload::BadTimestamp)
    }
}

/// The quality field: `good_values` (compared as text, case-insensitive) mean good; a JSON
/// `true` is good and `false` is not; anything else is a sensor fault.
pub fn quality_at(doc: &Value, pointer: &str, good_values: &[String]) -> Quality {
    let text = match doc.pointer(pointer) {
        None => return Quality::Good,
        Some(Value::Bool(b)) => {
            return if *b {
                Quality::Good
            } else {
                Quality::SensorFault
            };
        }
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Quality::SensorFault,
    };
    if good_values
        .iter()
        .any(|g| g.eq_ignore_ascii_case(text.trim()))
    {
        return Quality::Good;
    }
    match text.trim().to_ascii_lowercase().as_str() {
        "stale" | "uncertain" => Quality::Stale,
        "not_measuring" | "calibrating" | "warmup" | "maintenance" => Quality::NotMeasuring,
        _ => Quality::SensorFault,
    }
}

/// RFC 3339 (`2026-11-22T08:30:00Z`, `2026-11-22T16:30:00.250+08:00`) to epoch milliseconds.
pub fn rfc3339_millis(s: &str) -> Option<Millis> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let frac = &s[start..i.min(start + 3)];
        millis = frac.parse::<i64>().ok()? * 10i64.pow(3 - frac.len() as u32);
    }
    let offset_min = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let m = num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?;
            if *sign == b'+' { m } else { -m }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
    Some(secs * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plain_numbers() {
        assert_eq!(plain_number(b" 12.5\n"), Ok(12.5));
        assert_eq!(plain_number(b"-3"), Ok(-3.0));
        assert_eq!(plain_number(b"NaN"), Err(BadPayload::NotFinite));
        assert_eq!(plain_number(b"inf"), Err(BadPayload::NotFinite));
        assert_eq!(plain_number(b"12,5"), Err(BadPayload::NotANumber));
        assert_eq!(plain_number(b"\xff\xfe"), Err(BadPayload::NotUtf8));
        assert_eq!(plain_number(b""), Err(BadPayload::NotANumber));
    }

    #[test]
    fn json_fields() {
        let doc =
            parse_json(br#"{"nh3": 12.5, "s": "7", "on": true, "n": null, "o": {}, "a": [1, 2]}"#)
                .unwrap();
        assert_eq!(number_at(&doc, "/nh3"), Ok(12.5));
        assert_eq!(number_at(&doc, "/s"), Ok(7.0));
        assert_eq!(number_at(&doc, "/on"), Ok(1.0));
        assert_eq!(number_at(&doc, "/a/1"), Ok(2.0));
        assert_eq!(number_at(&doc, "/x"), Err(BadPayload::MissingField));
        assert_eq!(number_at(&doc, "/n"), Err(BadPayload::MissingField));
        assert_eq!(number_at(&doc, "/o"), Err(BadPayload::NotANumber));
        assert_eq!(parse_json(b"{nope"), Err(BadPayload::NotJson));
        assert_eq!(parse_json(b"\xff"), Err(BadPayload::NotUtf8));
        // Out-of-range literals are rejected by the parser, so infinity never becomes a value.
        match parse_json(b"{\"v\": 1e400}") {
            Err(reason) => assert_eq!(reason, BadPayload::NotJson),
            Ok(doc) => assert_eq!(number_at(&doc, "/v"), Err(BadPayload::NotFinite)),
        }
    }

    #[test]
    fn pointers_are_validated() {
        assert_eq!(pointer_error("/a/b~1c/~0"), None);
        assert!(pointer_error("a").is_some());
        assert!(pointer_error("/a~2").is_some());
        assert!(pointer_error("/a~").is_some());
        assert_eq!(pointer_error(""), None);
        assert_eq!(number_at(&parse_json(b"7.5").unwrap(), ""), Ok(7.5));
    }

    #[test]
    fn timestamps() {
        let doc = json!({"s": 1_763_800_000, "ms": 1_763_800_000_123_i64, "t": "2025-11-22T08:26:40.123Z",
            "tz": "2025-11-22T16:26:40+08:00", "bad": "yesterday", "old": 5});
        assert_eq!(
            timestamp_at(&doc, "/s", TimestampFormat::Auto),
            Ok(1_763_800_000_000)
        );
        assert_eq!(
            timestamp_at(&doc, "/ms", TimestampFormat::Auto),
            Ok(1_763_800_000_123)
        );
        assert_eq!(
            timestamp_at(&doc, "/s", TimestampFormat::EpochS),
            Ok(1_763_800_000_000)
        );
        assert_eq!(
            timestamp_at(&doc, "/t", TimestampFormat::Auto),
            Ok(1_763_800_000_123)
        );
        assert_eq!(
            timestamp_at(&doc, "/tz", TimestampFormat::Rfc3339),
            Ok(1_763_800_000_000)
        );
        assert_eq!(
            timestamp_at(&doc, "/bad", TimestampFormat::Auto),
            Err(BadPayload::BadTimestamp)
        );
        assert_eq!(
            timestamp_at(&doc, "/old", TimestampFormat::Auto),
            Err(BadPayload::BadTimestamp)
        );
        assert_eq!(
            timestamp_at(&doc, "/t", TimestampFormat::EpochMs),
            Err(BadPayload::BadTimestamp)
        );
        assert_eq!(rfc3339_millis("1970-01-01T00:00:00Z"), Some(0));
        // A device whose clock reset: a valid RFC 3339 time, but not a measurement time.
        let reset = json!({"t": "1970-01-01T00:00:05Z", "far": "2500-01-01T00:00:00Z"});
        for ptr in ["/t", "/far"] {
            assert_eq!(
                timestamp_at(&reset, ptr, TimestampFormat::Auto),
                Err(BadPayload::BadTimestamp)
            );
        }
        assert_eq!(
            rfc3339_millis("2000-03-01T00:00:00Z"),
            Some(951_868_800_000)
        );
        assert_eq!(rfc3339_millis("2000-03-01T00:00:00"), None);
    }

    #[test]
    fn quality_field() {
        let good = vec!["ok".to_owned(), "0".to_owned()];
        let doc =
            json!({"a": "OK", "b": 0, "c": "fault", "d": false, "e": "calibrating", "f": true});
        assert_eq!(quality_at(&doc, "/a", &good), Quality::Good);
        assert_eq!(quality_at(&doc, "/b", &good), Quality::Good);
        assert_eq!(quality_at(&doc, "/c", &good), Quality::SensorFault);
        assert_eq!(quality_at(&doc, "/d", &good), Quality::SensorFault);
        assert_eq!(quality_at(&doc, "/e", &good), Quality::NotMeasuring);
        assert_eq!(quality_at(&doc, "/f", &good), Quality::Good);
        assert_eq!(quality_at(&doc, "/missing", &good), Quality::Good);
    }
}
