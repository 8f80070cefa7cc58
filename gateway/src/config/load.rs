//! Reading the configuration: one TOML file plus `SENTINEL__`-prefixed environment overrides.
//!
//! Parsing goes section by section and list element by list element, so that one mistake does
//! not hide the next: `sentinel check` reports every error it can find, each with its path.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::model::{
    Config, Device, EngineSettings, Http, Notify, Point, RiskColour, Site, Store, Upstream,
};
use super::validate;

/// One problem in the configuration, at a path such as `points[3].register.address`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found, in file order where possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

pub(super) fn err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.into(),
        message: message.into(),
    }
}

/// Where environment overrides come from: the process environment, or a fixed map (tests).
pub enum EnvSource {
    Process,
    /// A fixed set of variables instead of the process's (tests).
    #[cfg_attr(not(test), allow(dead_code))]
    Map(HashMap<String, String>),
}

/// Load and validate a configuration file.
pub fn load_file(path: &Path, env: EnvSource) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![err(
            "",
            format!("cannot read {}: {e}", path.display()),
        )])
    })?;
    load_str(&text, env)
}

/// Load and validate a configuration given as TOML text.
pub fn load_str(toml: &str, env: EnvSource) -> Result<Config, ConfigErrors> {
    let env_source = match env {
        EnvSource::Process => None,
        EnvSource::Map(map) => Some(map.into_iter().collect()),
    };
    if toml.len() > CHUNK_BYTES
        && let Some((mut value, points)) = parse_in_chunks_typed(toml)
    {
        let overrides = parse(None, env_source.clone())?;
        // An override of the point list itself would replace what was typed piece by piece.
        if overrides.get("points").is_none() {
            merge_overrides(&mut value, overrides);
            return from_value(value, Some(points));
        }
    }
    from_value(parse(Some(toml), env_source)?, None)
}

/// `[[points]]` typed one piece of the file at a time, so that a large plant's points never
/// exist all at once as a value tree (about 3 KB a point, against some hundreds typed).
pub(super) struct TypedPoints {
    points: Vec<Point>,
    /// For each typed point, its index in the file's list.
    index: Vec<usize>,
    errors: Vec<ConfigError>,
    /// Points seen so far, typed or not.
    seen: usize,
}

/// A file larger than this is parsed a piece at a time (see [`parse_in_chunks`]).
pub(super) const CHUNK_BYTES: usize = 256 * 1024;

/// The file (if any) and the `SENTINEL__` environment, through config-rs, as one value tree.
fn parse(
    toml: Option<&str>,
    env_source: Option<config::Map<String, String>>,
) -> Result<Value, ConfigErrors> {
    let mut builder = config::Config::builder();
    if let Some(toml) = toml {
        builder = builder.add_source(config::File::from_str(toml, config::FileFormat::Toml));
    }
    builder
        .add_source(
            config::Environment::with_prefix("SENTINEL")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(env_source),
        )
        .build()
        .and_then(config::Config::try_deserialize)
        .map_err(|e| ConfigErrors(vec![err("", e.to_string())]))
}

/// A large plant's file is mostly `[[points]]` and `[[devices]]` tables. Parsed whole, the TOML
/// parser's and config-rs's trees for 15,000 points peak at 140 MB, which an edge box keeps for
/// good. So the text is cut before such a header every [`CHUNK_BYTES`] or so, each piece
/// parsed alone, and the pieces' arrays of tables joined. `None` whenever the pieces do not
/// fit together exactly as one document would (a piece does not parse, or two pieces set the
/// same value): the caller then parses the file whole, which also gives the right error with
/// the right line number.
#[cfg(test)]
pub(super) fn parse_in_chunks(toml: &str) -> Option<Value> {
    parse_pieces(toml, |_| Some(()))
}

/// [`parse_in_chunks`], with each piece's `[[points]]` typed (into [`TypedPoints`]) and taken
/// out before the piece is joined.
fn parse_in_chunks_typed(toml: &str) -> Option<(Value, TypedPoints)> {
    let mut typed = TypedPoints {
        points: Vec::new(),
        index: Vec::new(),
        errors: Vec::new(),
        seen: 0,
    };
    let value = parse_pieces(toml, |piece| {
        let Value::Object(map) = piece else {
            return Some(());
        };
        match map.remove("points") {
            None => {}
            Some(Value::Array(items)) => {
                for item in items {
                    let i = typed.seen;
                    typed.seen += 1;
                    if let Some(p) = section(&format!("points[{i}]"), item, &mut typed.errors) {
                        typed.points.push(p);
                        typed.index.push(i);
                    }
                }
            }
            // Not a list of tables: the whole parse reports it.
            Some(_) => return None,
        }
        Some(())
    })?;
    typed.points.shrink_to_fit();
    Some((value, typed))
}

/// Cuts `toml` into pieces (see [`parse_in_chunks`]), parses each, lets `each` see it, and
/// joins it into the whole. `None` as soon as a piece fails to parse or to join, or `each`
/// returns `None`.
fn parse_pieces(toml: &str, mut each: impl FnMut(&mut Value) -> Option<()>) -> Option<Value> {
    let mut value = Value::Object(serde_json::Map::new());
    let mut start = 0;
    let mut at = 0;
    for line in toml.split_inclusive('\n') {
        let header = line.trim();
        if at - start >= CHUNK_BYTES && (header == "[[points]]" || header == "[[devices]]") {
            let mut piece = parse_piece(&toml[start..at])?;
            each(&mut piece)?;
            join(&mut value, piece)?;
            start = at;
        }
        at += line.len();
    }
    let mut piece = parse_piece(&toml[start..])?;
    each(&mut piece)?;
    join(&mut value, piece)?;
    Some(value)
}

fn parse_piece(piece: &str) -> Option<Value> {
    config::Config::builder()
        .add_source(config::File::from_str(piece, config::FileFormat::Toml))
        .build()
        .and_then(config::Config::try_deserialize)
        .ok()
}

/// Join a piece into what came before: tables key by key, arrays of tables one after the
/// other. Anything else met twice is a conflict a whole parse must judge.
fn join(into: &mut Value, piece: Value) -> Option<()> {
    match (into, piece) {
        (Value::Object(into), Value::Object(piece)) => {
            for (key, v) in piece {
                match into.get_mut(&key) {
                    Some(slot) => join(slot, v)?,
                    None => {
                        into.insert(key, v);
                    }
                }
            }
            Some(())
        }
        (Value::Array(into), Value::Array(more))
            if into.iter().chain(&more).all(Value::is_object) =>
        {
            into.extend(more);
            Some(())
        }
        _ => None,
    }
}

/// Environment overrides over the file: tables merge key by key, anything else replaces.
fn merge_overrides(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (key, v) in over {
                match base.get_mut(&key) {
                    Some(slot) => merge_overrides(slot, v),
                    None => {
                        base.insert(key, v);
                    }
                }
            }
        }
        (base, over) => *base = over,
    }
}

/// The configuration from its value tree; `typed`, if given, holds the points already typed
/// (and the tree has none).
fn from_value(value: Value, typed: Option<TypedPoints>) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let Value::Object(mut top) = value else {
        return Err(ConfigErrors(vec![err(
            "",
            "the configuration must be a table",
        )]));
    };
    const SECTIONS: &[&str] = &[
        "site",
        "store",
        "http",
        "engine",
        "devices",
        "points",
        "notify",
        "upstream",
        "conditions",
        "risk_units",
        "contacts",
        "responsibility",
        "tickets",
        "security",
    ];
    for key in top.keys() {
        if !SECTIONS.contains(&key.as_str()) {
            errors.push(err(
                key.clone(),
                format!("unknown section; expected one of {}", SECTIONS.join(", ")),
            ));
        }
    }
    let site = match top.remove("site") {
        Some(v) => section::<Site>("site", v, &mut errors),
        None => {
            errors.push(err(
                "site",
                "missing section: every configuration names its site (id, name)",
            ));
            None
        }
    };
    let store = optional_section::<Store>("store", &mut top, &mut errors);
    let http = optional_section::<Http>("http", &mut top, &mut errors);
    let engine = optional_section::<EngineSettings>("engine", &mut top, &mut errors);
    let notify = optional_section::<Notify>("notify", &mut top, &mut errors);
    let upstream = optional_section::<Upstream>("upstream", &mut top, &mut errors);
    let tickets = optional_section::<super::Tickets>("tickets", &mut top, &mut errors);
    let security = optional_section::<super::Security>("security", &mut top, &mut errors);
    let (contacts, _) =
        list::<super::Contact>("contacts", top.remove("contacts"), &mut errors, |_| {});
    let (responsibility, _) = list::<super::Responsibility>(
        "responsibility",
        top.remove("responsibility"),
        &mut errors,
        |_| {},
    );
    let raw_devices = top.remove("devices");
    // Names of devices that failed to parse: points naming them are not reported a second time.
    let mut broken_devices: Vec<String> = Vec::new();
    let (devices, device_index) = list::<Device>("devices", raw_devices, &mut errors, |raw| {
        if let Some(name) = raw.get("name").and_then(Value::as_str) {
            broken_devices.push(name.to_owned());
        }
    });
    let (points, point_index) = match typed {
        Some(typed) => {
            errors.extend(typed.errors);
            (typed.points, typed.index)
        }
        None => list::<Point>("points", top.remove("points"), &mut errors, |_| {}),
    };
    let (conditions, _) = list("conditions", top.remove("conditions"), &mut errors, |_| {});
    let (risk_units, _) = list("risk_units", top.remove("risk_units"), &mut errors, |_| {});

    let config = Config {
        site: site.unwrap_or_else(|| Site {
            id: "unnamed".into(),
            name: "unnamed".into(),
            latitude: None,
            longitude: None,
            risk_colour: RiskColour::Blue,
        }),
        store: store.unwrap_or_default(),
        http: http.unwrap_or_default(),
        engine: engine.unwrap_or_default(),
        devices,
        points: std::sync::Arc::new(points),
        notify: notify.unwrap_or_default(),
        upstream: upstream.unwrap_or_default(),
        conditions,
        risk_units,
        contacts,
        responsibility,
        tickets: tickets.unwrap_or_default(),
        security: security.unwrap_or_default(),
    };
    let origin = validate::Origin {
        device_index,
        point_index,
        broken_devices,
    };
    validate::check(&config, &origin, &mut errors);
    if errors.is_empty() {
        // Rules need the whole plant (tags resolved, packs expanded), so they are checked once
        // everything else is known to be sound.
        let plant = crate::plant::Plant::new(&config);
        errors.extend(plant.rulebook().problems.iter().cloned());
    }
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(errors))
    }
}

fn optional_section<T: DeserializeOwned + Default>(
    name: &str,
    top: &mut serde_json::Map<String, Value>,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    match top.remove(name) {
        Some(v) => section(name, v, errors),
        None => Some(T::default()),
    }
}

fn section<T: DeserializeOwned>(
    path: &str,
    value: Value,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let full = if inner == "." || inner.is_empty() {
                path.to_owned()
            } else {
                format!("{path}.{inner}")
            };
            errors.push(err(full, e.into_inner().to_string()));
            None
        }
    }
}

/// A list of tables; each element is parsed on its own so that every bad element is reported.
/// Returns the parsed elements and, for each, its index in the file. `on_broken` sees the raw
/// value of each element that failed.
fn list<T: DeserializeOwned>(
    name: &str,
    value: Option<Value>,
    errors: &mut Vec<ConfigError>,
    mut on_broken: impl FnMut(&Value),
) -> (Vec<T>, Vec<usize>) {
    let mut parsed = Vec::new();
    let mut index = Vec::new();
    match value {
        None => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.into_iter().enumerate() {
                let raw = item.clone();
                match section(&format!("{name}[{i}]"), item, errors) {
                    Some(v) => {
                        parsed.push(v);
                        index.push(i);
                    }
                    None => on_broken(&raw),
                }
            }
        }
        Some(_) => errors.push(err(
            name,
            format!("must be a list of tables, written [[{name}]]"),
        )),
    }
    (parsed, index)
}
