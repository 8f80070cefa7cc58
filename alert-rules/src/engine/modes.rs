//! Shelving, suppression and out of service: who hid which alarms, why, and until when.
//!
//! A mode is held as a record (kind, scope, who, why, until) and as counters on the slots it
//! covers, so overlapping scopes (a device out of service, and one of its points too) end
//! independently. Changes of mode are reported as [`ModeEvent`]s, drained with
//! [`Engine::drain_mode_events`], whether or not an alarm was open at the time; alarms that
//! were open also get an [`AlarmEvent`] for the change of their state.

use serde::{Deserialize, Serialize};

use crate::alarm::{AlarmEvent, AlarmSource};
use crate::reading::{DeviceId, Millis, PointId};

use super::build::Kind;
use super::{CommandError, Engine, MODE_EVENT_CAPACITY};

/// The three ways an alarm can be hidden.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// By an operator, for a limited time (at most [`crate::EngineConfig::max_shelve_ms`]).
    Shelved,
    /// By design: a plant-state condition, or an engineer standing in for one.
    Suppressed,
    /// For maintenance, until a set time (at most [`crate::EngineConfig::max_out_of_service_ms`]).
    OutOfService,
}

impl Mode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::Shelved => "shelved",
            Mode::Suppressed => "suppressed",
            Mode::OutOfService => "out_of_service",
        }
    }
}

/// What a mode applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// One alarm.
    Alarm(AlarmSource),
    /// Every alarm of a point (for suppression: its process alarms).
    Point(PointId),
    /// A device's communication-loss alarm and every alarm of the points read from it (for
    /// suppression: their process alarms).
    Device(DeviceId),
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Alarm(source) => write!(f, "alarm {source}"),
            Scope::Point(p) => write!(f, "point {}", p.0),
            Scope::Device(d) => write!(f, "device {}", d.0),
        }
    }
}

/// A mode in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeRecord {
    pub mode: Mode,
    pub scope: Scope,
    pub since: Millis,
    /// When it ends by itself; `None` only for manual suppression.
    pub until: Option<Millis>,
    pub by: String,
    pub reason: String,
}

/// A mode began (`entered`) or ended. Journal every one: together with the alarm events they
/// say, for every moment, which alarms were hidden, by whom and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeEvent {
    pub mode: Mode,
    pub scope: Scope,
    pub entered: bool,
    pub at: Millis,
    pub until: Option<Millis>,
    /// The operator; `None` when the engine did it (a timer ran out, the plant state changed).
    pub by: Option<String>,
    pub reason: Option<String>,
}

impl Engine {
    /// Shelve one alarm for `duration_ms` (at most the configured maximum). It is unshelved
    /// automatically when the time runs out. Shelving a shelved alarm renews it.
    pub fn shelve(
        &mut self,
        source: AlarmSource,
        duration_ms: Millis,
        by: &str,
        reason: &str,
        now: Millis,
        out: &mut Vec<AlarmEvent>,
    ) -> Result<(), CommandError> {
        let max_ms = self.config.max_shelve_ms;
        if duration_ms <= 0 || duration_ms > max_ms {
            return Err(CommandError::InvalidUntil { max_ms });
        }
        self.begin_mode(
            Mode::Shelved,
            Scope::Alarm(source),
            Some(now + duration_ms),
            by,
            reason,
            now,
            out,
        )
    }

    pub fn unshelve(
        &mut self,
        source: AlarmSource,
        by: &str,
        reason: &str,
        now: Millis,
        out: &mut Vec<AlarmEvent>,
    ) -> Result<(), CommandError> {
        require(by, reason)?;
        self.end_mode(
            Mode::Shelved,
            Scope::Alarm(source),
            Some(by),
            Some(reason),
            now,
            out,
        )
    }

    /// Take alarms out of service for maintenance until `until` (at most the configured maximum
    /// from now); they return to service by themselves then.
    pub fn remove_from_service(
        &mut self,
        scope: Scope,
        until: Millis,
        by: &str,
        reason: &str,
        now: Millis,
        out: &mut Vec<AlarmEvent>,
    ) -> Result<(), CommandError> {
        let max_ms = self.config.max_out_of_service_ms;
        if until <= now || until - now > max_ms {
            return Err(CommandError::InvalidUntil { max_ms });
        }
        self.begin_mode(Mode::OutOfService, scope, Some(until), by, reason, now, out)
    }

    pub fn return_to_service(
        &mut self,
        scope: Scope,
        by: &str,
        reason: &str,
        now: Millis,
        out: &mut Vec<AlarmEvent>,
    ) -> Result<(), CommandError> {
        require(by, reason)?;
        self.end_mode(Mode::OutOfService, scope, Some(by), Some(reason), now, out)
    }

    /// Suppress alarms by hand, where the plant-state signal that would suppress them by design
    /// is not available. `until`, when given, is limited like out of service.
    #[allow(clippy::too_many_arguments)]
    pub fn suppress(
        &mut self,
        scope: Scope,
        until: Option<Millis>,
        by: &str,
        reason: &str,
        now: Millis,
        out: &mut Vec<AlarmEvent>,
    ) -> Result<(), CommandError> {
        let max_ms = self.config.max_out_of_service_ms;
        if until.is_some_and(|u| u <= now || u - now > max_ms) {
            return Err(CommandError::InvalidUntil { max_ms });
        }
        self.begin_mode(Mode::Suppressed, scope, until, by, reason, now, out)
    }

    pub fn unsuppress(
        &mut self,
        scope: Scope,
        by: &str,
        reason: &str,
        now: Millis,
        out: &mut Vec<AlarmEvent>,
    ) -> Result<(), CommandError> {
        require(by, reason)?;
        self.end_mode(Mode::Suppressed, scope, Some(by), Some(reason), now, out)
    }

    /// Modes in force that operators set (suppression by design is not a record: see
    /// [`Engine::is_suppressed_by_design`]).
    pub fn modes(&self) -> &[ModeRecord] {
        &self.records
    }

    /// Put back the modes in force when the previous process stopped (the gateway keeps them
    /// from the mode events). Records whose scope no longer exists are returned. Open alarms are
    /// brought in line on the next [`Engine::tick`]; records that ran out meanwhile end then.
    pub fn restore_modes(&mut self, records: Vec<ModeRecord>) -> Vec<ModeRecord> {
        let mut orphans = Vec::new();
        for rec in records {
            let exists = self
                .records
                .iter()
                .any(|r| r.mode == rec.mode && r.scope == rec.scope);
            match self.scope_slots(rec.mode, rec.scope) {
                Ok(slots) if !exists => {
                    self.count(rec.mode, &slots, true);
                    self.records.push(rec);
                }
                _ => orphans.push(rec),
            }
        }
        self.reconcile = true;
        orphans
    }

    /// Move the mode events produced since the last call into `out`.
    pub fn drain_mode_events(&mut self, out: &mut Vec<ModeEvent>) {
        out.extend(self.mode_events.drain(..));
    }

    /// Mode events dropped because nobody drained them (see [`Engine::drain_mode_events`]).
    pub fn mode_events_dropped(&self) -> u64 {
        self.mode_events_dropped
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn begin_mode(
        &mut self,
        mode: Mode,
        scope: Scope,
        until: Option<Millis>,
        by: &str,
        reason: &str,
        now: Millis,
        out: &mut Vec<AlarmEvent>,
    ) -> Result<(), CommandError> {
        require(by, reason)?;
        let slots = self.scope_slots(mode, scope)?;
        let record = ModeRecord {
            mode,
            scope,
            since: now,
            until,
            by: by.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(existing) = self
            .records
            .iter_mut()
            .find(|r| r.mode == mode && r.scope == scope)
        {
            // A renewal: new end time and reason, same alarms hidden.
            *existing = ModeRecord {
                since: existing.since,
                ..record
            };
        } else {
            self.count(mode, &slots, true);
            self.records.push(record);
        }
        self.push_mode_event(ModeEvent {
            mode,
            scope,
            entered: true,
            at: now,
            until,
            by: Some(by.to_owned()),
            reason: Some(reason.to_owned()),
        });
        for slot in slots {
            self.apply_mode(slot, now, Some(by), Some(reason), out);
        }
        Ok(())
    }

    fn end_mode(
        &mut self,
        mode: Mode,
        scope: Scope,
        by: Option<&str>,
        reason: Option<&str>,
        now: Millis,
        out: &mut Vec<AlarmEvent>,
    ) -> Result<(), CommandError> {
        let pos = self
            .records
            .iter()
            .position(|r| r.mode == mode && r.scope == scope)
            .ok_or(CommandError::NotInMode { mode, scope })?;
        self.records.remove(pos);
        let slots = self.scope_slots(mode, scope).unwrap_or_default();
        self.count(mode, &slots, false);
        self.push_mode_event(ModeEvent {
            mode,
            scope,
            entered: false,
            at: now,
            until: None,
            by: by.map(str::to_owned),
            reason: reason.map(str::to_owned),
        });
        for slot in slots {
            self.apply_mode(slot, now, by, reason, out);
        }
        Ok(())
    }

    /// End the modes whose time ran out.
    pub(super) fn expire_modes(&mut self, now: Millis, out: &mut Vec<AlarmEvent>) {
        while let Some(rec) = self
            .records
            .iter()
            .find(|r| r.until.is_some_and(|u| u <= now))
        {
            let (mode, scope) = (rec.mode, rec.scope);
            let why = match mode {
                Mode::Shelved => "shelving time ran out",
                Mode::Suppressed => "suppression time ran out",
                Mode::OutOfService => "out-of-service time ran out",
            };
            // The record exists, so ending it cannot fail.
            let _ = self.end_mode(mode, scope, None, Some(why), now, out);
        }
    }

    /// The point's `suppress_when` condition changed.
    pub(super) fn set_design_suppression(
        &mut self,
        q: usize,
        on: bool,
        now: Millis,
        out: &mut Vec<AlarmEvent>,
    ) {
        self.points[q].design_suppressed = on;
        let reason = self.config.points[q]
            .suppress_when
            .as_ref()
            .map_or_else(String::new, |c| format!("plant state: {c}"));
        self.push_mode_event(ModeEvent {
            mode: Mode::Suppressed,
            scope: Scope::Point(PointId(q as u32)),
            entered: on,
            at: now,
            until: None,
            by: None,
            reason: Some(reason.clone()),
        });
        let first = self.points[q].first_slot as usize;
        for slot in first..first + self.points[q].n_slots as usize {
            if self.slots[slot].source.is_process() {
                self.apply_mode(slot, now, None, Some(&reason), out);
            }
        }
    }

    fn push_mode_event(&mut self, e: ModeEvent) {
        if self.mode_events.len() == MODE_EVENT_CAPACITY {
            self.mode_events.pop_front();
            self.mode_events_dropped += 1;
        }
        self.mode_events.push_back(e);
    }

    fn count(&mut self, mode: Mode, slots: &[usize], on: bool) {
        for &slot in slots {
            let s = &mut self.slots[slot];
            match mode {
                Mode::Shelved => s.shelved = on,
                Mode::Suppressed if on => s.suppress += 1,
                Mode::Suppressed => s.suppress = s.suppress.saturating_sub(1),
                Mode::OutOfService if on => s.oos += 1,
                Mode::OutOfService => s.oos = s.oos.saturating_sub(1),
            }
        }
    }

    /// The slots a mode with this scope covers.
    fn scope_slots(&self, mode: Mode, scope: Scope) -> Result<Vec<usize>, CommandError> {
        let process_only = mode == Mode::Suppressed;
        let keep = |s: &super::build::Slot| !process_only || s.source.is_process();
        match scope {
            Scope::Alarm(source) => match self.slot_of(&source) {
                Some(s) => Ok(vec![s as usize]),
                None => Err(CommandError::UnknownSource(source)),
            },
            _ if mode == Mode::Shelved => Err(CommandError::ShelveNeedsAlarm(scope)),
            Scope::Point(p) => {
                let point = self
                    .points
                    .get(p.0 as usize)
                    .ok_or(CommandError::UnknownScope(scope))?;
                let first = point.first_slot as usize;
                Ok((first..first + point.n_slots as usize)
                    .filter(|&i| keep(&self.slots[i]))
                    .collect())
            }
            Scope::Device(d) => {
                if d.0 as usize >= self.devices.len() {
                    return Err(CommandError::UnknownScope(scope));
                }
                let covered = |i: &usize| {
                    let s = &self.slots[*i];
                    let of_device = match s.kind {
                        Kind::CommLoss { device, .. } => device == d.0,
                        _ => s.device == d.0,
                    };
                    of_device && keep(s)
                };
                Ok((0..self.slots.len()).filter(covered).collect())
            }
        }
    }
}

fn require(by: &str, reason: &str) -> Result<(), CommandError> {
    if by.trim().is_empty() {
        Err(CommandError::MissingOperator)
    } else if reason.trim().is_empty() {
        Err(CommandError::MissingReason)
    } else {
        Ok(())
    }
}
