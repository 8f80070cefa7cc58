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

/// Series keys by the store's point number. The numbers run from 1 with few gaps, so a vector
/// indexed by number holds nearly all of them (16 bytes a point, against about 50 in a hash
/// map); a number far beyond the count, which only a damaged store would hold, goes to a map.
#[derive(Default)]
pub struct SeriesKeys {
    dense: Vec<Option<SeriesKey>>,
    sparse: HashMap<i64, SeriesKey>,
}

impl SeriesKeys {
    pub fn get(&self, id: i64) -> Option<&SeriesKey> {
        match usize::try_from(id).ok().and_then(|i| self.dense.get(i)) {
            Some(key) => key.as_ref(),
            None => self.sparse.get(&id),
        }
    }

    fn insert(&mut self, id: i64, key: SeriesKey, dense_limit: usize) {
        match usize::try_from(id) {
            Ok(i) if i < dense_limit => {
                if self.dense.len() <= i {
                    self.dense.resize_with(i + 1, || None);
                }
                self.dense[i] = Some(key);
            }
            _ => {
                self.sparse.insert(id, key);
            }
        }
    }
}

/// Series keys for the store's point numbers. A point the store knows but the configuration no
/// longer has (renamed or removed) is still forwarded, as measurement `unknown` with only its tag.
pub fn series_keys(plant: &Plant, store_points: &[(i64, String)]) -> SeriesKeys {
    let site = plant.site.id.as_str();
    let dense_limit = store_points.len().saturating_mul(2).saturating_add(1024);
    let mut keys = SeriesKeys::default();
    for (id, tag) in store_points {
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
        keys.insert(*id, key, dense_limit);
    }
    keys.dense.shrink_to_fit();
    keys
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
    fn series_keys_by_number_near_and_far() {
        let mut keys = SeriesKeys::default();
        let key = |tag: &str| SeriesKey::new("m", &[("point", tag)]);
        keys.insert(1, key("a"), 10);
        keys.insert(5, key("b"), 10);
        keys.insert(1 << 40, key("far"), 10);
        keys.insert(-3, key("negative"), 10);
        let tag_of = |id: i64| keys.get(id).map(|k| k.0.to_string());
        assert_eq!(tag_of(1).as_deref(), Some("m,point=a"));
        assert_eq!(tag_of(5).as_deref(), Some("m,point=b"));
        assert_eq!(tag_of(1 << 40).as_deref(), Some("m,point=far"));
        assert_eq!(tag_of(-3).as_deref(), Some("m,point=negative"));
        for absent in [0, 2, 6, 11, -1, i64::MAX, i64::MIN] {
            assert_eq!(tag_of(absent), None, "{absent}");
        }
        assert_eq!(
            keys.dense.len(),
            6,
            "the far numbers stay out of the vector"
        );
    }

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
