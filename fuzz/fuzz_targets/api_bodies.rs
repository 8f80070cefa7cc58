//! HTTP API request bodies, with the gateway's own types (all `deny_unknown_fields`):
//! `api::AckBody`, `api::operate::ActionBody`, `api::tickets::CreateBody` and `MoveBody`, and
//! the arithmetic the handlers apply to their numbers (`secs_to_ms`, `until_at`). It guards
//! serde_json and that arithmetic against hostile bodies; the handlers themselves are driven
//! over HTTP by tests/tests/api_*.rs and abuse_inputs.rs.
//!
//! Input: a body (any bytes). Invariants: nothing panics; durations never overflow or turn
//! negative; an end time asked for with `for_secs` is never before now.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sentinel_gateway::api::AckBody;
use sentinel_gateway::api::operate::{ActionBody, secs_to_ms, until_at};
use sentinel_gateway::api::tickets::{CreateBody, MoveBody};

/// 2026-11-23, a fixed "now" so runs are reproducible.
const NOW_MS: i64 = 1_795_392_000_000;

fuzz_target!(|data: &[u8]| {
    // axum's `Json` extractor hands serde_json the raw bytes, as here.
    let _ = serde_json::from_slice::<AckBody>(data);
    if let Ok(b) = serde_json::from_slice::<ActionBody>(data) {
        if let Some(secs) = b.duration_secs {
            assert!(secs_to_ms(secs) >= 0);
        }
        if let (Ok(Some(until)), Some(_)) = (until_at(&b, NOW_MS), b.for_secs) {
            assert!(until >= NOW_MS);
        }
    }
    let _ = serde_json::from_slice::<CreateBody>(data);
    if let Ok(b) = serde_json::from_slice::<MoveBody>(data)
        && let Some(d) = &b.deadline
    {
        let _ = drivers::mqtt::payload::rfc3339_millis(d);
    }
    let _ = serde_json::from_slice::<serde_json::Value>(data);
});
