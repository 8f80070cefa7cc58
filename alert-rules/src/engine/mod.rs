//! The engine: turns readings, device health and operator commands into alarm events.
//!
//! Design: the engine owns all alarm state and is driven from one task. Every entry point takes
//! `now` and appends the events it caused to `out`; the caller makes them durable before it
//! announces them (and announces only those for which [`AlarmEvent::announce`] is true).
//! Timers (on-delay, off-delay, data interruption, communication loss, shelving and
//! maintenance end times, re-alarm) advance in [`Engine::tick`], so a device that goes quiet
//! raises its alarm even though no data arrives.
//!
//! Every configured alarm (one limit level of one point, a point's fault alarm, a condition, a
//! device's communication loss, ...) is a *slot* with its own detection state; a slot has at
//! most one open alarm. Readings reach only the slots of their point and the slots that depend
//! on it, through indices built once in [`Engine::new`], so the cost of a reading does not grow
//! with the number of open alarms or points.
//!
//! The module is split by concern: `build` (configuration to slots), `detect` (readings and
//! timers to conditions), `lifecycle` (conditions and acknowledgements to ISA-18.2 states and
//! events), `modes` (shelving, suppression, out of service).

mod build;
mod detect;
mod lifecycle;
mod modes;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;

use thiserror::Error;

use crate::alarm::{Alarm, AlarmEvent, AlarmId, AlarmSource, AlarmState, SystemCheck};
use crate::reading::{DeviceId, Millis, PointId, Reading};
use crate::rules::EngineConfig;

pub use modes::{Mode, ModeEvent, ModeRecord, Scope};

use build::{DeviceState, PointState, RateState, Slot};

/// How many finished alarms the engine remembers for the "recent" view.
const RECENT_CAPACITY: usize = 256;
/// Mode events waiting for [`Engine::drain_mode_events`]; beyond this the oldest are dropped
/// and counted, so a caller that never drains cannot make the engine grow without bound.
const MODE_EVENT_CAPACITY: usize = 4096;
/// "No index" in the dense index fields.
const NONE: u32 = u32::MAX;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CommandError {
    #[error("no alarm with id {0} is open")]
    UnknownAlarm(AlarmId),
    #[error("alarm {0} is already acknowledged")]
    AlreadyAcknowledged(AlarmId),
    #[error("alarm {0} is shelved, suppressed or out of service and cannot be acknowledged")]
    NotAnnounced(AlarmId),
    #[error("alarm {0} is not latched")]
    NotLatched(AlarmId),
    #[error("alarm {0} cannot be reset while its condition is still active")]
    ConditionActive(AlarmId),
    #[error("no alarm {0} is configured")]
    UnknownSource(AlarmSource),
    #[error("{0} does not exist")]
    UnknownScope(Scope),
    #[error("only single alarms can be shelved, not {0}")]
    ShelveNeedsAlarm(Scope),
    #[error("say who is doing this")]
    MissingOperator,
    #[error("give a reason")]
    MissingReason,
    #[error("the end time must be in the future and at most {max_ms} ms from now")]
    InvalidUntil { max_ms: Millis },
    #[error("{scope} is not {}", .mode.as_str())]
    NotInMode { mode: Mode, scope: Scope },
}

impl CommandError {
    /// The command named something that does not exist (an HTTP 404 rather than a 409).
    pub const fn is_not_found(&self) -> bool {
        matches!(
            self,
            CommandError::UnknownAlarm(_)
                | CommandError::UnknownSource(_)
                | CommandError::UnknownScope(_)
        )
    }
}

/// Alarm state of one point, for views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PointAlarmSummary {
    /// Open alarms of the point (any state but normal).
    pub open: usize,
    /// The worst state among them by [`AlarmState::severity`] (`Normal` when none).
    pub worst: AlarmState,
}

pub struct Engine {
    /// Shared with whoever built it (the gateway's plant keeps the same rules).
    config: Arc<EngineConfig>,
    points: Vec<PointState>,
    devices: Vec<DeviceState>,
    slots: Vec<Slot>,
    rates: Vec<RateState>,
    /// The first condition alarm's slot: condition `c` has slot `first_condition_slot + c`.
    first_condition_slot: u32,
    /// For point `p`, `deps[dep_start[p]..dep_start[p + 1]]` is what must be re-judged when a
    /// reading of `p` arrives, beyond `p`'s own slots: deviations, conditions, suppressions.
    dep_start: Vec<u32>,
    deps: Vec<build::Dep>,
    /// Open alarms: any state but normal. Small by nature.
    open: Vec<Alarm>,
    /// Event sequence number of each open alarm, parallel to `open`.
    open_seq: Vec<u32>,
    /// Slot of each open alarm, parallel to `open`.
    open_slot: Vec<u32>,
    recent: VecDeque<Alarm>,
    next_id: AlarmId,
    /// Shelving, out-of-service and manual suppression in force.
    records: Vec<ModeRecord>,
    mode_events: VecDeque<ModeEvent>,
    mode_events_dropped: u64,
    /// Set by the restore functions: hidden states are brought in line with the restored
    /// modes on the next tick.
    reconcile: bool,
    /// What Sentinel last reported of each of its own checks, by [`SystemCheck::index`].
    system_failing: [bool; SystemCheck::ALL.len()],
}

impl Engine {
    /// `next_id` is the first alarm id this engine may hand out. The rules may be shared
    /// (`Arc`): a large plant's are megabytes.
    pub fn new(config: impl Into<Arc<EngineConfig>>, next_id: AlarmId) -> Self {
        build::build(config.into(), next_id)
    }

    /// Put back alarms that were open when the previous process stopped, with the last event
    /// sequence number of each, so that a restart neither forgets nor repeats them. Alarms whose
    /// source no longer exists in the configuration are returned to the caller.
    pub fn restore(&mut self, alarms: Vec<(Alarm, u32)>) -> Vec<Alarm> {
        let mut orphans = Vec::new();
        for (alarm, seq) in alarms {
            self.next_id = self.next_id.max(alarm.id + 1);
            let slot = match self.slot_of(&alarm.source) {
                Some(s) if self.slots[s as usize].open == NONE => s as usize,
                _ => {
                    orphans.push(alarm);
                    continue;
                }
            };
            if alarm.state == AlarmState::Normal {
                self.push_recent(alarm);
                continue;
            }
            let active = alarm.state.is_active() || alarm.state.is_hidden();
            self.set_restored_condition(slot, active);
            self.slots[slot].open = self.open.len() as u32;
            self.open.push(alarm);
            self.open_seq.push(seq);
            self.open_slot.push(slot as u32);
        }
        self.reconcile = true;
        orphans
    }

    /// Judge one reading. Bad-quality readings never raise or clear process alarms; they may
    /// raise the point's fault alarm.
    pub fn on_reading(&mut self, reading: &Reading, now: Millis, out: &mut Vec<AlarmEvent>) {
        let Some(p) = self.points.get_mut(reading.point.0 as usize) else {
            return;
        };
        p.last = Some(*reading);
        let v = reading.value;
        // The common case: a good value inside the band where no limit can trip, nothing
        // pending, no rule that needs every sample. Nothing to do but remember it.
        if p.flags == 0
            && p.busy == 0
            && reading.quality.is_usable()
            && v > p.calm_lo
            && v < p.calm_hi
        {
            if reading.quality != crate::Quality::Stale {
                p.last_fresh = Some(now);
            }
            return;
        }
        self.judge_reading(reading.point.0 as usize, now, out);
    }

    /// A device answered (`ok`) or failed to. Only answers matter for communication loss; the
    /// alarm itself is raised by [`Engine::tick`] once the silence has lasted long enough.
    pub fn on_device_status(
        &mut self,
        device: DeviceId,
        ok: bool,
        now: Millis,
        out: &mut Vec<AlarmEvent>,
    ) {
        let Some(state) = self.devices.get_mut(device.0 as usize) else {
            return;
        };
        state.watch_from.get_or_insert(now);
        if ok {
            state.last_ok = Some(now);
            let slot = state.slot as usize;
            self.judge_slot(slot, now, out);
        }
    }

    /// After a reload: take over the silence timers of `old`'s devices and points, mapped by
    /// `device` and `point` (old id to new id, `None` when gone). A device silent for most of
    /// its communication-loss wait, or a point for most of its data-interruption wait, must not
    /// get a fresh full wait because the configuration was reloaded: reloads more frequent than
    /// the wait would otherwise keep the alarm from ever being raised.
    pub fn carry_silence(
        &mut self,
        old: &Engine,
        device: impl Fn(DeviceId) -> Option<DeviceId>,
        point: impl Fn(PointId) -> Option<PointId>,
    ) {
        for (i, d) in old.devices.iter().enumerate() {
            let new = device(DeviceId(i as u32)).and_then(|id| self.devices.get_mut(id.0 as usize));
            if let Some(new) = new {
                new.last_ok = d.last_ok;
                new.watch_from = d.watch_from;
            }
        }
        for (i, p) in old.points.iter().enumerate() {
            let new = point(PointId(i as u32)).and_then(|id| self.points.get_mut(id.0 as usize));
            if let Some(new) = new {
                new.last_fresh = p.last_fresh;
            }
        }
    }

    /// Sentinel's own check `check` is failing or not (see [`SystemCheck`]). Call it whenever
    /// the state is known; only a change raises or clears the alarm. Until the first call after
    /// a restart, a restored system alarm stays as it was.
    pub fn on_system_check(
        &mut self,
        check: SystemCheck,
        failing: bool,
        now: Millis,
        out: &mut Vec<AlarmEvent>,
    ) {
        self.system_failing[check.index()] = failing;
        if let Some(slot) = self.slot_of(&AlarmSource::System { check }) {
            self.judge_slot(slot as usize, now, out);
        }
    }

    /// The wall clock was stepped by `delta_ms` (an NTP correction, an operator setting the
    /// time): move every timer reference by the same amount, so that silence, delays and rate
    /// windows measure the time that really passed, not the step. Without this a forward step
    /// looks like every device falling silent at once. Records (raised, acknowledged, cleared
    /// times) and operators' end times (shelved until, out of service until) are wall-clock
    /// facts and stay as they are.
    pub fn clock_stepped(&mut self, delta_ms: Millis) {
        let shift = |t: &mut Option<Millis>| {
            if let Some(t) = t {
                *t = t.saturating_add(delta_ms);
            }
        };
        for p in &mut self.points {
            shift(&mut p.last_fresh);
        }
        for d in &mut self.devices {
            shift(&mut d.last_ok);
            shift(&mut d.watch_from);
        }
        for s in &mut self.slots {
            shift(&mut s.raising_since);
            shift(&mut s.clearing_since);
        }
        for r in &mut self.rates {
            for (t, _) in &mut r.samples {
                *t = t.saturating_add(delta_ms);
            }
        }
    }

    /// Advance timers: mode end times, on-delays and off-delays that completed without new
    /// data, data interruption, communication loss, and re-alarms.
    pub fn tick(&mut self, now: Millis, out: &mut Vec<AlarmEvent>) {
        self.expire_modes(now, out);
        if self.reconcile {
            self.reconcile = false;
            for slot in 0..self.slots.len() {
                if self.slots[slot].open != NONE {
                    self.apply_mode(slot, now, None, Some("state restored after a restart"), out);
                }
            }
        }
        self.advance_timers(now, out);
        self.realarm_due(now, out);
    }

    /// Open alarms: any state but normal, hidden ones included (see [`AlarmState::is_hidden`]).
    pub fn open_alarms(&self) -> &[Alarm] {
        &self.open
    }

    /// The open alarm with this id, if it is open.
    pub fn open_alarm_by_id(&self, id: AlarmId) -> Option<&Alarm> {
        self.open.iter().find(|a| a.id == id)
    }

    /// Open alarms with the sequence number of their last event: what [`Engine::restore`]
    /// takes, for carrying alarm state into an engine built from a new configuration.
    pub fn open_alarms_with_seq(&self) -> impl Iterator<Item = (&Alarm, u32)> {
        self.open.iter().zip(self.open_seq.iter().copied())
    }

    /// The slot of a configured alarm source: found from the point, device or condition it
    /// belongs to (commands and restore only; not on the hot path). A map of every source took
    /// about 36 bytes a slot: a megabyte in a large plant.
    fn slot_of(&self, source: &AlarmSource) -> Option<u32> {
        let range = match *source {
            AlarmSource::Limit { point, .. }
            | AlarmSource::RateOfChange { point }
            | AlarmSource::Deviation { point, .. }
            | AlarmSource::Fault { point }
            | AlarmSource::DataInterruption { point } => {
                let p = self.points.get(point.0 as usize)?;
                p.first_slot..p.first_slot + u32::from(p.n_slots)
            }
            AlarmSource::CommLoss { device } => {
                let slot = self.devices.get(device.0 as usize)?.slot;
                slot..slot + 1
            }
            AlarmSource::Condition { condition } => {
                let slot = self.first_condition_slot.checked_add(condition.0)?;
                slot..slot + 1
            }
            // Sentinel's own checks come last.
            AlarmSource::System { .. } => {
                let end = self.slots.len() as u32;
                end.saturating_sub(SystemCheck::ALL.len() as u32)..end
            }
        };
        range
            .filter(|&slot| (slot as usize) < self.slots.len())
            .find(|&slot| self.slots[slot as usize].source == *source)
    }

    /// The open alarm of one source, if any.
    pub fn open_alarm(&self, source: AlarmSource) -> Option<&Alarm> {
        let slot = self.slot_of(&source)?;
        let idx = self.slots[slot as usize].open;
        self.open.get(idx as usize)
    }

    /// Every alarm the configuration defines, open or not.
    pub fn sources(&self) -> impl Iterator<Item = AlarmSource> + '_ {
        self.slots.iter().map(|s| s.source)
    }

    /// Alarms that finished (cleared and acknowledged), newest last.
    pub fn recent_alarms(&self) -> impl Iterator<Item = &Alarm> {
        self.recent.iter()
    }

    /// The last reading the engine saw for a point.
    pub fn last_reading(&self, point: PointId) -> Option<&Reading> {
        self.points
            .get(point.0 as usize)
            .and_then(|p| p.last.as_ref())
    }

    pub fn point_summary(&self, point: PointId) -> PointAlarmSummary {
        let mut summary = PointAlarmSummary {
            open: 0,
            worst: AlarmState::Normal,
        };
        for a in &self.open {
            if a.source.point() == Some(point) {
                summary.open += 1;
                if a.state.severity() > summary.worst.severity() {
                    summary.worst = a.state;
                }
            }
        }
        summary
    }

    /// Whether the point's process alarms are suppressed by design right now (its
    /// `suppress_when` condition holds).
    pub fn is_suppressed_by_design(&self, point: PointId) -> bool {
        self.points
            .get(point.0 as usize)
            .is_some_and(|p| p.design_suppressed)
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn next_id(&self) -> AlarmId {
        self.next_id
    }

    fn push_recent(&mut self, alarm: Alarm) {
        if self.recent.len() == RECENT_CAPACITY {
            self.recent.pop_front();
        }
        self.recent.push_back(alarm);
    }
}
