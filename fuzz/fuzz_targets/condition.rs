//! The condition language (`alert_rules::Condition`), as written in `[[rules]]` of the
//! configuration. Invariants: compiling any text never panics; a compiled condition compiles
//! again from its own `source()` to the same program; evaluation never panics; and Kleene
//! logic holds: when the condition is decided with every point unknown, any values of the
//! points give the same answer. A serialised program (JSON, as stored) that does not come from
//! the compiler is evaluated without panicking.
//!
//! Input: the condition text, optionally followed by a NUL byte and bytes that pick the points'
//! values (each byte: 0 → 0.0, 1 → 1.0, 2 → NaN, 3 → +inf, else a small number).
#![no_main]

use std::collections::HashMap;

use alert_rules::{Condition, PointId, Truth};
use libfuzzer_sys::fuzz_target;

fn value_of(byte: u8) -> f64 {
    match byte {
        0 => 0.0,
        1 => 1.0,
        2 => f64::NAN,
        3 => f64::INFINITY,
        b => f64::from(b) - 128.0,
    }
}

fuzz_target!(|data: &[u8]| {
    let (text, values) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };

    if text.starts_with('{') {
        if let Ok(program) = serde_json::from_str::<Condition>(text) {
            let _ =
                program.evaluate(|p| value_of(values.get(p.0 as usize % 64).copied().unwrap_or(1)));
        }
        return;
    }

    let mut ids: HashMap<String, PointId> = HashMap::new();
    let mut resolve = |tag: &str| -> Option<PointId> {
        // Every tag exists except those starting with `X`, so unknown-tag errors are reached too.
        if tag.starts_with('X') {
            return None;
        }
        let next = PointId(ids.len() as u32);
        Some(*ids.entry(tag.to_owned()).or_insert(next))
    };
    let Ok(condition) = Condition::compile(text, &mut resolve) else {
        return;
    };

    let again = Condition::compile(condition.source(), &mut resolve).unwrap_or_else(|e| {
        panic!(
            "{:?} compiled, its source {:?} did not: {e}",
            text,
            condition.source()
        )
    });
    assert_eq!(
        again, condition,
        "recompiling the source changed the program"
    );

    let points = condition.points();
    assert!(
        points.windows(2).all(|w| w[0] < w[1]),
        "points not sorted and unique"
    );

    let unknown = condition.evaluate(|_| f64::NAN);
    let concrete = condition.evaluate(|p| value_of(values.get(p.0 as usize).copied().unwrap_or(1)));
    if unknown != Truth::Unknown {
        assert_eq!(
            concrete, unknown,
            "{text:?}: decided {unknown:?} with every point unknown, {concrete:?} with values"
        );
    }
});
