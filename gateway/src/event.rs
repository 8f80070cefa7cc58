//! The alarm event JSON: one schema for the webhook body, the MQTT payload, the SSE data and the
//! journal. Documented in docs/api.md. `id` is stable per transition and serves as the
//! idempotency key: a receiver that sees the same `id` twice has seen the same event twice.

use alert_rules::engine::{ModeEvent, Scope};
use alert_rules::{Alarm, AlarmEvent, AlarmSource, Millis, SystemCheck};
use serde::Serialize;

use crate::plant::Plant;

/// An alarm as the API and every notification show it.
#[derive(Debug, Clone, Serialize)]
pub struct AlarmJson {
    pub alarm_id: u64,
    pub site: String,
    pub area: String,
    /// The point's tag, or the device's name for device alarms.
    pub point: String,
    /// Alarm class: `limit`, `comm_loss`, ...
    pub kind: &'static str,
    pub state: &'static str,
    pub priority: &'static str,
    pub level: Option<&'static str>,
    pub value: Option<f64>,
    pub unit: String,
    pub limit: Option<f64>,
    pub raised_at: String,
    pub acked_at: Option<String>,
    pub acked_by: Option<String>,
    pub cleared_at: Option<String>,
    /// One line a person can read: what the alarm is about.
    pub message: String,
}

/// One transition of an alarm: the webhook body, the MQTT payload, the SSE data, the journal record.
#[derive(Debug, Clone, Serialize)]
pub struct AlarmEventJson {
    /// `{site}-{alarm_id}-{seq}`: unique per transition, the idempotency key.
    pub id: String,
    pub seq: u32,
    /// What happened: `raised`, `acknowledged`, `cleared`, ...
    pub transition: &'static str,
    /// When it happened.
    pub at: String,
    pub by: Option<String>,
    pub comment: Option<String>,
    #[serde(flatten)]
    pub alarm: AlarmJson,
}

/// The last millisecond RFC 3339 can write (9999-12-31T23:59:59.999Z).
pub const MAX_RFC3339_MS: Millis = 253_402_300_799_999;

/// RFC 3339 with milliseconds, UTC. Total: a time past year 9999 (a deadline sent in
/// microseconds, say) is written as the last instant RFC 3339 can hold, because the formatter
/// refuses it and `to_string` would panic.
pub fn rfc3339(ms: Millis) -> String {
    let ms = ms.clamp(0, MAX_RFC3339_MS);
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

impl AlarmJson {
    pub fn new(plant: &Plant, alarm: &Alarm) -> AlarmJson {
        let (point, area, unit) = plant.describe(&alarm.source);
        let level = alarm.source.level().map(|l| l.as_str());
        let (value, limit) = (fmt_num(alarm.value), fmt_num(alarm.limit));
        let message = match alarm.source {
            AlarmSource::Limit { .. } => {
                format!(
                    "{point} {} {value} {unit} (limit {limit} {unit})",
                    level.unwrap_or("")
                )
            }
            AlarmSource::CommLoss { .. } => format!("device {point} is not answering"),
            AlarmSource::RateOfChange { .. } => {
                format!("{point} changing too fast ({value} {unit}/min, limit {limit})")
            }
            AlarmSource::Deviation { other, .. } => format!(
                "{point} deviates from {} by {value} {unit} (limit {limit})",
                plant.point(other).map_or("?", |p| p.tag.as_str())
            ),
            AlarmSource::Fault { .. } => format!("{point} measurement fault"),
            AlarmSource::DataInterruption { .. } => format!("{point} has sent no data"),
            AlarmSource::Condition { .. } => point.clone(),
            AlarmSource::System { check } => system_message(check).to_owned(),
        };
        AlarmJson {
            alarm_id: alarm.id,
            site: plant.site.id.clone(),
            area,
            point,
            kind: alarm.source.kind(),
            state: alarm.state.as_str(),
            priority: alarm.priority.as_str(),
            level,
            value: alarm.value,
            unit,
            limit: alarm.limit,
            raised_at: rfc3339(alarm.raised_at),
            acked_at: alarm.acked_at.map(rfc3339),
            acked_by: alarm.acked_by.clone(),
            cleared_at: alarm.cleared_at.map(rfc3339),
            message,
        }
    }
}

impl AlarmEventJson {
    pub fn new(plant: &Plant, event: &AlarmEvent) -> AlarmEventJson {
        AlarmEventJson {
            id: format!("{}-{}-{}", plant.site.id, event.alarm.id, event.seq),
            seq: event.seq,
            transition: event.transition.as_str(),
            at: rfc3339(event.at),
            by: event.by.clone(),
            comment: event.comment.clone(),
            alarm: AlarmJson::new(plant, &event.alarm),
        }
    }
}

/// What an operator reads for one of Sentinel's own checks, in both languages like the mails.
fn system_message(check: SystemCheck) -> &'static str {
    match check {
        SystemCheck::UpstreamRejected => {
            "上游数据库拒收一批数据，已转入死信表 The upstream time-series server refused a batch; it is kept in the dead-letter table"
        }
        SystemCheck::DiskBudget => {
            "本地存储已达磁盘配额，最早的读数已被删除 The store reached its disk budget; its oldest readings were dropped"
        }
        SystemCheck::StoreFailing => {
            "本地存储无法写入（磁盘已满或故障），读数正在丢失，报警记录暂存内存 The store cannot write (disk full or failing); readings are being dropped and alarm records wait in memory"
        }
    }
}

fn fmt_num(v: Option<f64>) -> String {
    v.map_or_else(
        || "-".to_owned(),
        |v| {
            format!("{v:.2}")
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_owned()
        },
    )
}

/// A mode record of the journal: an alarm, point or device was shelved, suppressed or taken out
/// of service (`entered`), or that ended. Journaled, shown in the API, never announced.
#[derive(Debug, Clone, Serialize)]
pub struct ModeEventJson {
    pub id: String,
    pub site: String,
    pub kind: &'static str,
    pub mode: &'static str,
    /// What it applies to: a point's tag, a device's name, or an alarm (`TAG:kind[:level]`).
    pub scope: String,
    pub entered: bool,
    pub at: String,
    pub until: Option<String>,
    pub by: Option<String>,
    pub reason: Option<String>,
    /// The scope by name, and the times in milliseconds: what a restart replays.
    pub scope_ref: crate::modes::ScopeRef,
    pub at_ms: Millis,
    pub until_ms: Option<Millis>,
}

impl ModeEventJson {
    pub fn new(plant: &Plant, e: &ModeEvent) -> ModeEventJson {
        ModeEventJson {
            // Unique even across restarts within one millisecond: the journal refuses duplicates.
            id: format!("{}-mode-{}-{:016x}", plant.site.id, e.at, fastrand::u64(..)),
            site: plant.site.id.clone(),
            kind: "mode",
            mode: e.mode.as_str(),
            scope: scope_name(plant, &e.scope),
            entered: e.entered,
            at: rfc3339(e.at),
            until: e.until.map(rfc3339),
            by: e.by.clone(),
            reason: e.reason.clone(),
            scope_ref: crate::modes::scope_ref(plant, &e.scope),
            at_ms: e.at,
            until_ms: e.until,
        }
    }
}

/// A scope as people name it.
pub fn scope_name(plant: &Plant, scope: &Scope) -> String {
    match scope {
        Scope::Point(p) => plant
            .point(*p)
            .map_or_else(|| format!("point-{}", p.0), |p| p.tag.clone()),
        Scope::Device(d) => plant.device_name(*d).to_owned(),
        Scope::Alarm(source) => {
            let (name, _, _) = plant.describe(source);
            match source.level() {
                Some(level) => format!("{name}:{}:{}", source.kind(), level.as_str()),
                None => format!("{name}:{}", source.kind()),
            }
        }
    }
}

/// A change of a risk unit's live colour, or of the site's. Journaled; the map shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ColourChangeJson {
    pub id: String,
    pub site: String,
    pub kind: &'static str,
    /// The risk unit's id, or `site` for the site as a whole.
    pub unit: String,
    pub from: &'static str,
    pub to: &'static str,
    pub at: String,
    /// The alarm whose event caused it; none when a hold time ran out.
    pub alarm_id: Option<u64>,
}

impl ColourChangeJson {
    pub fn new(plant: &Plant, c: &alert_rules::ColourChange) -> ColourChangeJson {
        let unit = match c.unit {
            // Without configured units the site itself is the one (implicit) unit.
            Some(u) => plant
                .risk_units
                .get(u as usize)
                .map_or_else(|| plant.site.id.clone(), |u| u.id.clone()),
            None => "site".to_owned(),
        };
        ColourChangeJson {
            id: format!(
                "{}-colour-{}-{:016x}",
                plant.site.id,
                c.at,
                fastrand::u64(..)
            ),
            site: plant.site.id.clone(),
            kind: "risk_colour",
            unit,
            from: c.from.as_str(),
            to: c.to.as_str(),
            at: rfc3339(c.at),
            alarm_id: c.alarm,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_past_year_9999_are_written_without_a_panic() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(-5), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_767_225_600_123), "2026-01-01T00:00:00.123Z");
        // A deadline sent in microseconds by mistake.
        assert_eq!(rfc3339(1_767_225_600_000_000), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(Millis::MAX), "9999-12-31T23:59:59.999Z");
    }
}
