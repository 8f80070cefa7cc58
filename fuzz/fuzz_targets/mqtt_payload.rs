//! MQTT ingest decoding: topic matching, topic templates and the payload → value, timestamp and
//! quality functions the MQTT client applies to every message. Invariants: nothing panics; a
//! value that is returned is finite; a timestamp that is returned (number or RFC 3339 text) lies
//! between 2000 and 2200; RFC 3339 text that parses gives the same time through the JSON
//! timestamp path, or `BadTimestamp` outside that range.
//!
//! Input layout, text-like so seeds are readable: line 1 a JSON Pointer (or a topic template
//! when it contains `{`), line 2 a topic (or topic filter), the rest the payload bytes.
#![no_main]

use drivers::mqtt::TimestampFormat;
use drivers::mqtt::payload::{
    BadPayload, number_at, parse_json, plain_number, pointer_error, quality_at, rfc3339_millis,
    timestamp_at,
};
use drivers::mqtt::topic::{Template, filter_error, matches};
use libfuzzer_sys::fuzz_target;

/// 2000-01-01 and 2200-01-01 in epoch milliseconds: the range `timestamp_at` promises.
const RANGE: std::ops::Range<i64> = 946_684_800_000..7_258_118_400_000;

fn line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

fuzz_target!(|data: &[u8]| {
    let (first, rest) = line(data);
    let (second, payload) = line(rest);
    let first = String::from_utf8_lossy(first);
    let second = String::from_utf8_lossy(second);

    // Topics.
    let _ = filter_error(&second);
    let _ = matches(&second, &first);
    let _ = matches(&first, &second);
    if let Ok(template) = Template::parse(&first) {
        let filter = template.filter();
        assert!(
            filter_error(&filter).is_none(),
            "template {first:?} made a bad filter {filter:?}"
        );
        if let Some(captured) = template.capture(&second) {
            assert!(second.contains(captured));
        }
    }

    // Payloads.
    if let Ok(v) = plain_number(payload) {
        assert!(v.is_finite());
    }
    let pointer: &str = &first;
    let pointer_ok = pointer_error(pointer).is_none();
    if let Ok(doc) = parse_json(payload) {
        if pointer_ok {
            if let Ok(v) = number_at(&doc, pointer) {
                assert!(v.is_finite());
            }
            for format in [
                TimestampFormat::Auto,
                TimestampFormat::EpochS,
                TimestampFormat::EpochMs,
                TimestampFormat::Rfc3339,
            ] {
                // Numbers and RFC 3339 text alike are range-checked.
                if let Ok(ms) = timestamp_at(&doc, pointer, format) {
                    assert!(RANGE.contains(&ms), "{ms} ms from {format:?}");
                }
            }
            let _ = quality_at(&doc, pointer, &["ok".to_owned(), "1".to_owned()]);
        }
    }
    if let Ok(text) = std::str::from_utf8(payload) {
        if let Some(ms) = rfc3339_millis(text) {
            // The same text inside JSON gives the same time, when it is a measurement time.
            let doc = serde_json::json!({ "ts": text });
            let want = if RANGE.contains(&ms) {
                Ok(ms)
            } else {
                Err(BadPayload::BadTimestamp)
            };
            assert_eq!(timestamp_at(&doc, "/ts", TimestampFormat::Rfc3339), want);
        }
    }
});
