//! Taking a new configuration without losing readings or alarm state.
//!
//! The caller stops the drivers first, so no reading of the old configuration is in flight
//! once this runs (what they sent is already in the channel and was judged). Then: commit what
//! is pending; build a new engine from the new plant; carry every open alarm and every mode
//! (shelved, suppressed, out of service) across by name (tag, device, condition), since indices
//! may have moved; end, with a record, the alarms whose source no longer exists; journal the
//! reload with who asked and what changed. Devices and points carried by name keep how long
//! they have been silent (`Engine::carry_silence`).

use std::sync::Arc;

use alert_rules::{
    AlarmEvent, AlarmSource, AlarmState, ConditionId, DeviceId, Engine, ModeRecord, PointId,
    RiskMap, Scope, Transition,
};
use drivers::now_millis;
use serde::Serialize;

use super::{LastValue, State};
use crate::event::{AlarmEventJson, rfc3339};
use crate::plant::Plant;
use crate::store::JournalEntry;

/// What a reload changed, journaled and returned to the caller.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadSummary {
    pub by: String,
    pub points_added: Vec<String>,
    pub points_removed: Vec<String>,
    pub points_kept: usize,
    pub alarms_carried: usize,
    pub alarms_ended: Vec<u64>,
    pub modes_carried: usize,
    pub modes_ended: usize,
}

struct Remap<'a> {
    old: &'a Plant,
    new: &'a Plant,
}

impl Remap<'_> {
    fn point(&self, p: PointId) -> Option<PointId> {
        self.new.point_id(&self.old.point(p)?.tag)
    }
    fn device(&self, d: DeviceId) -> Option<DeviceId> {
        self.old
            .devices
            .get(d.0 as usize)
            .and_then(|dev| self.new.device_id(dev.name()))
    }
    fn condition(&self, c: ConditionId) -> Option<ConditionId> {
        let (name, _) = self.old.condition(c)?;
        let k = self
            .new
            .rulebook()
            .conditions
            .iter()
            .position(|(n, _)| n == name)?;
        Some(ConditionId(k as u32))
    }
    fn source(&self, s: AlarmSource) -> Option<AlarmSource> {
        Some(match s {
            AlarmSource::Limit { point, level } => AlarmSource::Limit {
                point: self.point(point)?,
                level,
            },
            AlarmSource::CommLoss { device } => AlarmSource::CommLoss {
                device: self.device(device)?,
            },
            AlarmSource::RateOfChange { point } => AlarmSource::RateOfChange {
                point: self.point(point)?,
            },
            AlarmSource::Deviation { point, other } => AlarmSource::Deviation {
                point: self.point(point)?,
                other: self.point(other)?,
            },
            AlarmSource::Fault { point } => AlarmSource::Fault {
                point: self.point(point)?,
            },
            AlarmSource::DataInterruption { point } => AlarmSource::DataInterruption {
                point: self.point(point)?,
            },
            AlarmSource::Condition { condition } => AlarmSource::Condition {
                condition: self.condition(condition)?,
            },
            AlarmSource::System { check } => AlarmSource::System { check },
        })
    }
    fn scope(&self, s: Scope) -> Option<Scope> {
        Some(match s {
            Scope::Point(p) => Scope::Point(self.point(p)?),
            Scope::Device(d) => Scope::Device(self.device(d)?),
            Scope::Alarm(a) => Scope::Alarm(self.source(a)?),
        })
    }
}

impl State {
    /// Swap in a new plant. Returns the new engine; the caller replaces its own.
    pub(super) async fn reload(
        &mut self,
        engine: &Engine,
        plant: Arc<Plant>,
        by: &str,
    ) -> Option<(Engine, ReloadSummary)> {
        // Everything judged under the old configuration is committed under it.
        if !self.flush(None).await {
            return None;
        }
        let now = now_millis();
        let old = Arc::clone(&self.plant);
        let map = Remap {
            old: &old,
            new: &plant,
        };

        let mut carried = Vec::new();
        let mut ended = Vec::new();
        for (alarm, seq) in engine.open_alarms_with_seq() {
            match map.source(alarm.source) {
                Some(source) => {
                    let mut a = alarm.clone();
                    a.source = source;
                    carried.push((a, seq));
                }
                None => ended.push((alarm.clone(), seq)),
            }
        }
        let mut modes = Vec::new();
        let mut modes_ended = 0;
        for m in engine.modes() {
            match map.scope(m.scope) {
                Some(scope) => modes.push(ModeRecord { scope, ..m.clone() }),
                None => modes_ended += 1,
            }
        }
        let mut next = Engine::new(plant.engine_config(), engine.next_id());
        next.carry_silence(engine, |d| map.device(d), |p| map.point(p));
        let alarms_carried = carried.len();
        // Sources that exist but changed shape (a level removed) come back as orphans: end them too.
        for orphan in next.restore(carried) {
            ended.push((orphan, 0));
        }
        let modes_carried = modes.len();
        modes_ended += next.restore_modes(modes).len();

        // Alarms whose source is gone end here, with a record, under the old names.
        let mut ended_ids = Vec::new();
        for (mut alarm, seq) in ended {
            ended_ids.push(alarm.id);
            alarm.state = AlarmState::Normal;
            alarm.cleared_at.get_or_insert(now);
            let event = AlarmEvent {
                seq: seq + 1,
                transition: Transition::Cleared,
                at: now,
                by: Some(by.to_owned()),
                comment: Some("its rule was removed from the configuration".to_owned()),
                alarm,
            };
            let json = AlarmEventJson::new(&old, &event);
            self.batch.events.push(JournalEntry {
                event_id: json.id.clone(),
                seq: event.seq,
                at: now,
                body: serde_json::to_string(&json).unwrap_or_default(),
                alarm: Some(event.alarm),
                notify: true,
            });
        }

        // Last values follow their tags.
        let mut last = vec![
            LastValue {
                value: None,
                time: None,
                quality: None,
                quality_since: None
            };
            plant.points.len()
        ];
        let mut kept = 0;
        for (i, p) in plant.points.iter().enumerate() {
            if let Some(j) = old.point_id(&p.tag) {
                last[i] = self.last[j.0 as usize];
                kept += 1;
            }
        }
        let summary = ReloadSummary {
            by: by.to_owned(),
            points_added: plant
                .points
                .iter()
                .filter(|p| old.point_id(&p.tag).is_none())
                .map(|p| p.tag.clone())
                .collect(),
            points_removed: old
                .points
                .iter()
                .filter(|p| plant.point_id(&p.tag).is_none())
                .map(|p| p.tag.clone())
                .collect(),
            points_kept: kept,
            alarms_carried,
            alarms_ended: ended_ids,
            modes_carried,
            modes_ended,
        };
        let record = serde_json::json!({
            "id": format!("{}-reload-{}-{:016x}", plant.site.id, now, fastrand::u64(..)),
            "site": plant.site.id,
            "kind": "config_reload",
            "at": rfc3339(now),
            "summary": summary,
        });
        self.batch.events.push(JournalEntry {
            event_id: record["id"].as_str().unwrap_or_default().to_owned(),
            seq: 0,
            at: now,
            body: record.to_string(),
            alarm: None,
            notify: false,
        });

        self.last = last;
        // The store files readings by tag: tell it the new point order with this batch.
        self.batch.point_tags = Some(plant.points.iter().map(|p| p.tag.clone()).collect());
        self.plant = Arc::clone(&plant);
        self.risk = RiskMap::new(&plant.rulebook().risk_units);
        let mut ignored = Vec::new();
        for alarm in next.open_alarms() {
            self.risk.on_alarm(alarm, now, &mut ignored);
        }
        self.status_dirty = true;
        if !self.flush(None).await {
            return None;
        }
        Some((next, summary))
    }
}
