//! HTTP API request bodies. The body types live in the `sentinel` binary (no library target to
//! link against), so this target deserialises copies of them, field for field
//! (gateway/src/api/mod.rs `AckBody`, api/operate.rs `ActionBody`, api/tickets.rs `CreateBody`
//! and `MoveBody`, all `deny_unknown_fields`), and repeats the arithmetic the handlers apply
//! to their numbers. It guards serde_json and that arithmetic against hostile bodies; it does
//! not exercise the handlers themselves, which tests/tests/api_*.rs and abuse_*.rs drive over
//! HTTP. Keep the copies in step with the originals.
//!
//! Input: a body (any bytes). Invariants: nothing panics; durations never overflow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct AckBody {
    by: Option<String>,
    comment: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ActionBody {
    by: String,
    reason: String,
    duration_secs: Option<u64>,
    until_ms: Option<i64>,
    for_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct CreateBody {
    title: String,
    #[serde(default)]
    description: String,
    point: Option<String>,
    area: Option<String>,
    alarm_id: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct MoveBody {
    to: String,
    comment: Option<String>,
    assignee: Option<String>,
    deadline: Option<String>,
    deadline_ms: Option<i64>,
    by: Option<String>,
}

/// 2026-11-23, a fixed "now" so runs are reproducible.
const NOW_MS: i64 = 1_795_392_000_000;

fuzz_target!(|data: &[u8]| {
    // axum's `Json` extractor hands serde_json the raw bytes, as here.
    let _ = serde_json::from_slice::<AckBody>(data);
    if let Ok(b) = serde_json::from_slice::<ActionBody>(data) {
        // api/operate.rs: shelve and `for_secs`.
        if let Some(secs) = b.duration_secs {
            let ms = (secs.min(u64::MAX / 2000) * 1000) as i64;
            assert!(ms >= 0);
        }
        if let Some(secs) = b.for_secs {
            let _ = NOW_MS.saturating_add((secs.min(u64::MAX / 2000) * 1000) as i64);
        }
    }
    let _ = serde_json::from_slice::<CreateBody>(data);
    if let Ok(b) = serde_json::from_slice::<MoveBody>(data) {
        if let Some(d) = &b.deadline {
            let _ = drivers::mqtt::payload::rfc3339_millis(d);
        }
    }
    let _ = serde_json::from_slice::<serde_json::Value>(data);
});
