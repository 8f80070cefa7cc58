//! Modes in force (shelved, suppressed, out of service) survive a restart: every start and end
//! of a mode is a journal record naming its scope by tag, device or condition name, and at
//! start-up the records are replayed to find what is still in force. Names, not indices, so a
//! reordered configuration still finds its points; a scope that no longer exists is dropped
//! with a warning. Modes whose time ran out meanwhile end at the engine's first tick.

use alert_rules::{AlarmSource, ConditionId, Level, Mode, ModeRecord, Scope, SystemCheck};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::plant::Plant;

/// A scope as the journal names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeRef {
    /// `point`, `device` or `alarm`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The point's tag, the device's name, or (alarms) the tag, device or condition name.
    pub name: String,
    /// Alarms: the alarm class (`limit`, `comm_loss`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<Level>,
    /// Deviation alarms: the other sensor's tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other: Option<String>,
}

pub fn scope_ref(plant: &Plant, scope: &Scope) -> ScopeRef {
    let point = |p: alert_rules::PointId| {
        plant
            .point(p)
            .map_or_else(|| format!("point-{}", p.0), |p| p.tag.clone())
    };
    match scope {
        Scope::Point(p) => ScopeRef {
            kind: "point".into(),
            name: point(*p),
            alarm: None,
            level: None,
            other: None,
        },
        Scope::Device(d) => ScopeRef {
            kind: "device".into(),
            name: plant.device_name(*d).to_owned(),
            alarm: None,
            level: None,
            other: None,
        },
        Scope::Alarm(source) => {
            let name = match source {
                AlarmSource::CommLoss { device } => plant.device_name(*device).to_owned(),
                AlarmSource::Condition { condition } => plant
                    .condition(*condition)
                    .map_or_else(String::new, |c| c.0.clone()),
                AlarmSource::System { check } => check.as_str().to_owned(),
                _ => source.point().map(point).unwrap_or_default(),
            };
            let other = match source {
                AlarmSource::Deviation { other, .. } => Some(point(*other)),
                _ => None,
            };
            ScopeRef {
                kind: "alarm".into(),
                name,
                alarm: Some(source.kind().to_owned()),
                level: source.level(),
                other,
            }
        }
    }
}

pub fn resolve(plant: &Plant, r: &ScopeRef) -> Option<Scope> {
    match r.kind.as_str() {
        "point" => plant.point_id(&r.name).map(Scope::Point),
        "device" => plant.device_id(&r.name).map(Scope::Device),
        "alarm" => {
            let point = || plant.point_id(&r.name);
            let source = match r.alarm.as_deref()? {
                "limit" => AlarmSource::Limit {
                    point: point()?,
                    level: r.level?,
                },
                "comm_loss" => AlarmSource::CommLoss {
                    device: plant.device_id(&r.name)?,
                },
                "rate_of_change" => AlarmSource::RateOfChange { point: point()? },
                "deviation" => AlarmSource::Deviation {
                    point: point()?,
                    other: plant.point_id(r.other.as_deref()?)?,
                },
                "fault" => AlarmSource::Fault { point: point()? },
                "data_interruption" => AlarmSource::DataInterruption { point: point()? },
                "system" => AlarmSource::System {
                    check: SystemCheck::from_name(&r.name)?,
                },
                "condition" => {
                    let k = plant
                        .rulebook()
                        .conditions
                        .iter()
                        .position(|(n, _)| *n == r.name)?;
                    AlarmSource::Condition {
                        condition: ConditionId(k as u32),
                    }
                }
                _ => return None,
            };
            Some(Scope::Alarm(source))
        }
        _ => None,
    }
}

/// The part of a mode journal record that replay needs.
#[derive(Debug, Deserialize)]
struct Record {
    mode: String,
    scope_ref: Option<ScopeRef>,
    entered: bool,
    at_ms: Option<i64>,
    until_ms: Option<i64>,
    by: Option<String>,
    reason: Option<String>,
}

fn mode(name: &str) -> Option<Mode> {
    match name {
        "shelved" => Some(Mode::Shelved),
        "suppressed" => Some(Mode::Suppressed),
        "out_of_service" => Some(Mode::OutOfService),
        _ => None,
    }
}

/// Replay the journal's mode records: what is still in force, mapped onto this plant.
pub fn in_force(conn: &Connection, plant: &Plant) -> rusqlite::Result<Vec<ModeRecord>> {
    let mut stmt = conn
        .prepare("SELECT body FROM journal WHERE body LIKE '%\"kind\":\"mode\"%' ORDER BY seq")?;
    let mut active: Vec<(Mode, ScopeRef, ModeRecordParts)> = Vec::new();
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    for body in rows {
        let Ok(rec) = serde_json::from_str::<Record>(&body?) else {
            continue;
        };
        let (Some(m), Some(scope)) = (mode(&rec.mode), rec.scope_ref) else {
            continue;
        };
        active.retain(|(am, s, _)| !(*am == m && *s == scope));
        if rec.entered {
            let parts = ModeRecordParts {
                since: rec.at_ms.unwrap_or(0),
                until: rec.until_ms,
                by: rec.by.unwrap_or_default(),
                reason: rec.reason.unwrap_or_default(),
            };
            active.push((m, scope, parts));
        }
    }
    let mut out = Vec::new();
    for (m, scope, parts) in active {
        match resolve(plant, &scope) {
            Some(s) => out.push(ModeRecord {
                mode: m,
                scope: s,
                since: parts.since,
                until: parts.until,
                by: parts.by,
                reason: parts.reason,
            }),
            None => {
                tracing::warn!(mode = m.as_str(), scope = %scope.name, "A mode in force names something no longer configured; it is dropped.")
            }
        }
    }
    Ok(out)
}

struct ModeRecordParts {
    since: i64,
    until: Option<i64>,
    by: String,
    reason: String,
}
