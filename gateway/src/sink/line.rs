//! InfluxDB line protocol for readings, as documented in docs/data-model.md: measurement = the
//! point's kind; tags site, area, device, point, unit (empty ones left out, since the protocol
//! has no empty tag values); fields `value` (float, absent when the reading has no usable value)
//! and `quality` (integer code, always present); timestamp in milliseconds.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::plant::Plant;

/// The series key of one stored point, escaped once and reused for every line.
#[derive(Debug, Clone)]
pub struct SeriesKey(Box<str>);

impl SeriesKey {
    pub fn new(measurement: &str, tags: &[(&str, &str)]) -> SeriesKey {
        let mut key = String::with_capacity(96);
        escape_into(&mut key, measurement, &[',', ' ']);
        for (k, v) in tags {
            if v.is_empty() {
                continue;
            }
            key.push(',');
            key.push_str(k);
            key.push('=');
            escape_into(&mut key, v, &[',', ' ', '=']);
        }
        // Boxed: one key per point is kept for the life of the sink, without spare capacity.
        SeriesKey(key.into_boxed_str())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn escape_into(out: &mut String, s: &str, special: &[char]) {
    for c in s.chars() {
        // Line breaks would end the line; the protocol cannot carry them in a key.
        if c == '\n' || c == '\r' {
            out.push(' ');
            continue;
        }
        if c == '\\' || special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Series keys for the store's point numbers. A point the store knows but the configuration no
/// longer has (renamed or removed) is still forwarded, as measurement `unknown` with only its tag.
pub fn series_keys(plant: &Plant, store_points: &[(i64, String)]) -> HashMap<i64, SeriesKey> {
    let site = plant.site.id.as_str();
    store_points
        .iter()
        .map(|(id, tag)| {
            let key = match plant.point_id(tag).and_then(|p| plant.point(p)) {
                Some(p) => SeriesKey::new(
                    &p.kind,
                    &[
                        ("site", site),
                        ("area", &p.area),
                        ("device", &p.device),
                        ("point", &p.tag),
                        ("unit", &p.unit),
                    ],
                ),
                None => SeriesKey::new("unknown", &[("site", site), ("point", tag)]),
            };
            (*id, key)
        })
        .collect()
}

/// One line: `key value=…,quality=…i ts_ms`.
pub fn push_line(out: &mut String, key: &SeriesKey, value: Option<f64>, quality: u8, ts_ms: i64) {
    out.push_str(key.as_str());
    out.push(' ');
    if let Some(v) = value.filter(|v| v.is_finite()) {
        // `{}` on f64 never uses an exponent and keeps every digit needed to read the value
        // back exactly; without an `i` suffix the protocol reads it as a float.
        let _ = write!(out, "value={v},");
    }
    let _ = writeln!(out, "quality={quality}i {ts_ms}");
}

/// A field value of a generic line ([`push_fields`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Field {
    Float(f64),
    Int(i64),
}

/// One line with any numeric fields: `key f1=…,f2=…i ts_ms`. Non-finite floats are left out;
/// with no field left, nothing is written (the protocol needs one) and false is returned.
/// Field names are escaped like tag keys.
pub fn push_fields(
    out: &mut String,
    key: &SeriesKey,
    fields: &[(&str, Field)],
    ts_ms: i64,
) -> bool {
    let mut first = true;
    let start = out.len();
    out.push_str(key.as_str());
    for (name, value) in fields {
        if let Field::Float(v) = value
            && !v.is_finite()
        {
            continue;
        }
        out.push(if first { ' ' } else { ',' });
        first = false;
        escape_into(out, name, &[',', ' ', '=']);
        let _ = match value {
            Field::Float(v) => write!(out, "={v}"),
            Field::Int(v) => write!(out, "={v}i"),
        };
    }
    if first {
        out.truncate(start);
        return false;
    }
    let _ = writeln!(out, " {ts_ms}");
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_skips_empty_tags() {
        let key = SeriesKey::new(
            "toxic gas",
            &[
                ("site", "s1"),
                ("area", ""),
                ("point", "NH3,1=a b"),
                ("unit", "°C"),
            ],
        );
        assert_eq!(
            key.as_str(),
            r"toxic\ gas,site=s1,point=NH3\,1\=a\ b,unit=°C"
        );
        let mut out = String::new();
        push_line(&mut out, &key, Some(20.0), 0, 1_700_000_000_000);
        push_line(&mut out, &key, Some(0.1), 2, 1);
        push_line(&mut out, &key, None, 4, 2);
        push_line(&mut out, &key, Some(f64::NAN), 7, 3);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].ends_with(" value=20,quality=0i 1700000000000"));
        assert!(lines[1].ends_with(" value=0.1,quality=2i 1"));
        assert!(lines[2].ends_with(" quality=4i 2"));
        assert!(lines[3].ends_with(" quality=7i 3"));
    }

    #[test]
    fn generic_fields() {
        let key = SeriesKey::new("site_status", &[("site", "a b"), ("grade", "")]);
        let mut out = String::new();
        assert!(push_fields(
            &mut out,
            &key,
            &[
                ("colour", Field::Int(4)),
                ("quality pct", Field::Float(99.5)),
                ("nan", Field::Float(f64::NAN)),
            ],
            7,
        ));
        assert!(!push_fields(
            &mut out,
            &key,
            &[("x", Field::Float(f64::INFINITY))],
            8
        ));
        assert_eq!(
            out,
            "site_status,site=a\\ b colour=4i,quality\\ pct=99.5 7\n"
        );
    }
}
