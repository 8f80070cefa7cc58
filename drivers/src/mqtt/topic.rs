//! Topic filters (`+`, `#`) and topic templates (`plant/{device}/{point}`): validation and
//! matching. Pure functions, checked by `sentinel check` before any client is built.

/// Why a topic filter or template is not acceptable.
pub fn filter_error(filter: &str) -> Option<String> {
    if filter.is_empty() {
        return Some("must not be empty".to_owned());
    }
    if filter.len() > 65_535 {
        return Some("is longer than MQTT allows (65535 bytes)".to_owned());
    }
    if filter.contains('\0') {
        return Some("must not contain NUL".to_owned());
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Some(format!(
                "{filter:?}: '#' must be a whole level and the last one"
            ));
        }
        if level.contains('+') && *level != "+" {
            return Some(format!("{filter:?}: '+' must be a whole level"));
        }
    }
    None
}

/// Whether `topic` matches `filter` (MQTT 3.1.1 §4.7; topics starting with `$` are not matched
/// by a leading wildcard).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// A topic template such as `plant/{device}/{point}`: `{point}` captures the segment that names
/// the point; any other `{name}` matches one segment and is ignored; `#` at the end matches the
/// rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    levels: Vec<Level>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(String),
    Point,
    Any,
    Rest,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        if text.is_empty() {
            return Err("must not be empty".to_owned());
        }
        let parts: Vec<&str> = text.split('/').collect();
        let mut levels = Vec::with_capacity(parts.len());
        let mut points = 0;
        for (i, part) in parts.iter().enumerate() {
            let level = if *part == "#" {
                if i + 1 != parts.len() {
                    return Err(format!("{text:?}: '#' must be the last level"));
                }
                Level::Rest
            } else if *part == "+" {
                Level::Any
            } else if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!(
                        "{text:?}: {part:?} is not a placeholder such as {{point}}"
                    ));
                }
                if name == "point" {
                    points += 1;
                    Level::Point
                } else {
                    Level::Any
                }
            } else if part.contains(['{', '}', '+', '#']) {
                return Err(format!(
                    "{text:?}: {part:?} mixes a placeholder or wildcard with text; a level is either"
                ));
            } else {
                Level::Literal((*part).to_owned())
            };
            levels.push(level);
        }
        if points != 1 {
            return Err(format!("{text:?} must contain {{point}} exactly once"));
        }
        let template = Template { levels };
        // What is subscribed is the filter, so a template is only as valid as its filter (a NUL
        // or an over-long text would otherwise pass `sentinel check` and fail at subscribe).
        if let Some(e) = filter_error(&template.filter()) {
            return Err(format!("{text:?}: {e}"));
        }
        Ok(template)
    }

    /// The subscription filter equivalent to this template.
    pub fn filter(&self) -> String {
        self.levels
            .iter()
            .map(|l| match l {
                Level::Literal(s) => s.as_str(),
                Level::Point | Level::Any => "+",
                Level::Rest => "#",
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The `{point}` segment of `topic`, when the topic fits the template.
    pub fn capture<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let mut point = None;
        let mut t = topic.split('/');
        for level in &self.levels {
            match level {
                Level::Rest => return point,
                _ => {
                    let seg = t.next()?;
                    match level {
                        Level::Literal(s) if s != seg => return None,
                        Level::Point => point = Some(seg),
                        _ => {}
                    }
                }
            }
        }
        if t.next().is_some() { None } else { point }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_validated() {
        for ok in ["a/b", "a/+/c", "#", "a/#", "+", "+/+/#", "sentinel/v1/x"] {
            assert_eq!(filter_error(ok), None, "{ok}");
        }
        for bad in ["", "a/#/b", "a/b#", "a+/b", "a/+b", "##"] {
            assert!(filter_error(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn wildcards_match_like_the_spec() {
        assert!(matches("a/+/c", "a/b/c"));
        assert!(!matches("a/+/c", "a/b/d"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("#", "x/y"));
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
        assert!(matches("+/b", "/b"));
    }

    #[test]
    fn templates_capture_the_point() {
        let t = Template::parse("plant/{device}/{point}").unwrap();
        assert_eq!(t.filter(), "plant/+/+");
        assert_eq!(t.capture("plant/gw1/NH3-101"), Some("NH3-101"));
        assert_eq!(t.capture("plant/gw1"), None);
        assert_eq!(t.capture("plant/gw1/NH3-101/x"), None);
        assert_eq!(t.capture("other/gw1/NH3-101"), None);
        let t = Template::parse("s/{point}/#").unwrap();
        assert_eq!(t.capture("s/P1/a/b"), Some("P1"));
        assert!(Template::parse("a/{device}").is_err());
        assert!(Template::parse("a/{point}/{point}").is_err());
        assert!(Template::parse("a/x{point}").is_err());
        assert!(Template::parse("a/#/{point}").is_err());
        // Found by fuzz/fuzz_targets/mqtt_payload.rs: the filter must be valid too.
        assert!(Template::parse("pl\0ant/{device}/{point}").is_err());
    }
}
