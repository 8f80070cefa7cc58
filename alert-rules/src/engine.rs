//! The engine: turns readings, device health and operator commands into alarm events.
//!
//! Design: the engine owns all alarm state and is driven from one task. Every entry point takes
//! `now` and appends the events it caused to `out`; the caller makes them durable before it
//! announces them. Timers (on-delay, off-delay, communication loss) advance in [`Engine::tick`],
//! so a device that goes quiet raises its alarm even though no data arrives.

use thiserror::Error;

use crate::alarm::{Alarm, AlarmEvent, AlarmId, AlarmSource, AlarmState, Transition};
use crate::reading::{DeviceId, Millis, PointId, Reading};
use crate::rules::{EngineConfig, LimitLevel};

/// How many finished alarms the engine remembers for the "recent" view.
const RECENT_CAPACITY: usize = 256;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CommandError {
    #[error("no alarm with id {0} is open")]
    UnknownAlarm(AlarmId),
    #[error("alarm {0} is already acknowledged")]
    AlreadyAcknowledged(AlarmId),
}

#[derive(Debug, Default, Clone)]
struct LevelState {
    /// Since when the raise condition has held without interruption (on-delay timer).
    raising_since: Option<Millis>,
    /// Since when the clear condition has held without interruption (off-delay timer).
    clearing_since: Option<Millis>,
    /// The open alarm of this level that is still active (not yet returned to normal).
    active: Option<AlarmId>,
}

#[derive(Debug, Default, Clone)]
struct PointState {
    last: Option<Reading>,
    levels: Vec<LevelState>,
}

#[derive(Debug, Default, Clone)]
struct DeviceState {
    /// Last time the device answered.
    last_ok: Option<Millis>,
    /// When the engine started watching the device (the reference while it never answered).
    watch_from: Option<Millis>,
    active: Option<AlarmId>,
}

/// Alarm state of one point, for views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PointAlarmSummary {
    /// Open alarms of the point (active, or returned and not yet acknowledged).
    pub open: usize,
    /// The worst state among them (`Normal` when none).
    pub worst: AlarmState,
}

pub struct Engine {
    config: EngineConfig,
    points: Vec<PointState>,
    devices: Vec<DeviceState>,
    /// Open alarms: active, or returned to normal and not yet acknowledged. Small by nature.
    open: Vec<Alarm>,
    /// Event sequence number of each open alarm, parallel to `open`.
    open_seq: Vec<u32>,
    recent: std::collections::VecDeque<Alarm>,
    next_id: AlarmId,
}

impl Engine {
    /// `next_id` is the first alarm id this engine may hand out.
    pub fn new(config: EngineConfig, next_id: AlarmId) -> Self {
        let points = config
            .points
            .iter()
            .map(|p| PointState {
                last: None,
                levels: vec![
                    LevelState::default();
                    p.limits.as_ref().map_or(0, |l| l.levels.len())
                ],
            })
            .collect();
        let devices = vec![DeviceState::default(); config.devices.len()];
        Engine {
            config,
            points,
            devices,
            open: Vec::new(),
            open_seq: Vec::new(),
            recent: std::collections::VecDeque::new(),
            next_id,
        }
    }

    /// Put back alarms that were open when the previous process stopped, with the last event
    /// sequence number of each, so that a restart neither forgets nor repeats them. Alarms whose
    /// source no longer exists in the configuration are returned to the caller.
    pub fn restore(&mut self, alarms: Vec<(Alarm, u32)>) -> Vec<Alarm> {
        let mut orphans = Vec::new();
        for (alarm, seq) in alarms {
            self.next_id = self.next_id.max(alarm.id + 1);
            let slot = match alarm.source {
                AlarmSource::Limit { point, level } => self
                    .level_index(point, level)
                    .map(|i| &mut self.points[point.0 as usize].levels[i].active),
                AlarmSource::CommLoss { device } => self
                    .devices
                    .get_mut(device.0 as usize)
                    .map(|d| &mut d.active),
            };
            match slot {
                Some(slot) => {
                    if alarm.state.is_active() {
                        *slot = Some(alarm.id);
                    }
                    self.open.push(alarm);
                    self.open_seq.push(seq);
                }
                None => orphans.push(alarm),
            }
        }
        orphans
    }

    /// Judge one reading. Bad-quality readings never raise or clear process alarms.
    pub fn on_reading(&mut self, reading: &Reading, now: Millis, out: &mut Vec<AlarmEvent>) {
        let Some(state) = self.points.get_mut(reading.point.0 as usize) else {
            return;
        };
        state.last = Some(*reading);
        if !reading.quality.is_usable() || !reading.value.is_finite() {
            for level in &mut state.levels {
                level.raising_since = None;
                level.clearing_since = None;
            }
            return;
        }
        self.evaluate_limits(reading.point, now, out);
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
            if let Some(id) = state.active.take() {
                self.clear(id, now, out);
            }
        }
    }

    /// Advance timers: on-delays and off-delays that completed without new data, and
    /// communication loss of devices that stopped answering.
    pub fn tick(&mut self, now: Millis, out: &mut Vec<AlarmEvent>) {
        for p in 0..self.points.len() {
            let pending = self.points[p]
                .levels
                .iter()
                .any(|l| l.raising_since.is_some() || l.clearing_since.is_some());
            if pending {
                self.evaluate_limits(PointId(p as u32), now, out);
            }
        }
        for d in 0..self.devices.len() {
            let after = self.config.devices[d].comm_loss_after_ms;
            let priority = self.config.devices[d].comm_loss_priority;
            let state = &mut self.devices[d];
            let reference = *state.watch_from.get_or_insert(now);
            let silent_since = state.last_ok.unwrap_or(reference);
            if state.active.is_none() && now - silent_since >= after {
                let id = self.raise(
                    AlarmSource::CommLoss {
                        device: DeviceId(d as u32),
                    },
                    priority,
                    None,
                    None,
                    now,
                    out,
                );
                self.devices[d].active = Some(id);
            }
        }
    }

    /// Operator acknowledgement.
    pub fn acknowledge(
        &mut self,
        id: AlarmId,
        by: &str,
        comment: Option<&str>,
        now: Millis,
        out: &mut Vec<AlarmEvent>,
    ) -> Result<(), CommandError> {
        let idx = self
            .open
            .iter()
            .position(|a| a.id == id)
            .ok_or(CommandError::UnknownAlarm(id))?;
        let alarm = &mut self.open[idx];
        alarm.state = match alarm.state {
            AlarmState::ActiveUnacked => AlarmState::ActiveAcked,
            AlarmState::ReturnedUnacked => AlarmState::Normal,
            AlarmState::ActiveAcked | AlarmState::Normal => {
                return Err(CommandError::AlreadyAcknowledged(id));
            }
        };
        alarm.acked_at = Some(now);
        alarm.acked_by = Some(by.to_owned());
        self.emit(idx, Transition::Acknowledged, now, Some(by), comment, out);
        self.retire_if_done(idx);
        Ok(())
    }

    /// Open alarms: active, or returned to normal and not yet acknowledged.
    pub fn open_alarms(&self) -> &[Alarm] {
        &self.open
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
            if matches!(a.source, AlarmSource::Limit { point: p, .. } if p == point) {
                summary.open += 1;
                summary.worst = worse(summary.worst, a.state);
            }
        }
        summary
    }

    pub fn next_id(&self) -> AlarmId {
        self.next_id
    }

    fn level_index(&self, point: PointId, level: crate::Level) -> Option<usize> {
        self.config
            .points
            .get(point.0 as usize)?
            .limits
            .as_ref()?
            .levels
            .iter()
            .position(|l| l.level == level)
    }

    fn evaluate_limits(&mut self, point: PointId, now: Millis, out: &mut Vec<AlarmEvent>) {
        let p = point.0 as usize;
        let Some(rule) = self.config.points[p].limits.as_ref() else {
            return;
        };
        let Some(reading) = self.points[p].last else {
            return;
        };
        if !reading.quality.is_usable() || !reading.value.is_finite() {
            return;
        }
        let (deadband, on_delay, off_delay) = (rule.deadband, rule.on_delay_ms, rule.off_delay_ms);
        for i in 0..self.points[p].levels.len() {
            let LimitLevel {
                level,
                setpoint,
                priority,
            } = match &self.config.points[p].limits {
                Some(rule) => rule.levels[i],
                None => return,
            };
            let v = reading.value;
            let (in_alarm, clear) = if level.is_high() {
                (v >= setpoint, v < setpoint - deadband)
            } else {
                (v <= setpoint, v > setpoint + deadband)
            };
            let state = &mut self.points[p].levels[i];
            match state.active {
                None => {
                    state.clearing_since = None;
                    if in_alarm {
                        let since = *state.raising_since.get_or_insert(now);
                        if now - since >= on_delay {
                            state.raising_since = None;
                            let id = self.raise(
                                AlarmSource::Limit { point, level },
                                priority,
                                Some(v),
                                Some(setpoint),
                                now,
                                out,
                            );
                            self.points[p].levels[i].active = Some(id);
                        }
                    } else {
                        state.raising_since = None;
                    }
                }
                Some(id) => {
                    state.raising_since = None;
                    if clear {
                        let since = *state.clearing_since.get_or_insert(now);
                        if now - since >= off_delay {
                            state.clearing_since = None;
                            state.active = None;
                            self.clear(id, now, out);
                        }
                    } else {
                        state.clearing_since = None;
                    }
                }
            }
        }
    }

    /// Raise a new alarm, or re-activate the same condition's alarm if it returned to normal
    /// and was never acknowledged (ISA-18.2: returned-unacknowledged goes back to active).
    fn raise(
        &mut self,
        source: AlarmSource,
        priority: crate::Priority,
        value: Option<f64>,
        limit: Option<f64>,
        now: Millis,
        out: &mut Vec<AlarmEvent>,
    ) -> AlarmId {
        if let Some(idx) = self
            .open
            .iter()
            .position(|a| a.source == source && a.state == AlarmState::ReturnedUnacked)
        {
            let alarm = &mut self.open[idx];
            alarm.state = AlarmState::ActiveUnacked;
            alarm.value = value;
            alarm.limit = limit;
            alarm.raised_at = now;
            alarm.cleared_at = None;
            let id = alarm.id;
            self.emit(idx, Transition::Raised, now, None, None, out);
            return id;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.open.push(Alarm {
            id,
            source,
            state: AlarmState::ActiveUnacked,
            priority,
            value,
            limit,
            raised_at: now,
            acked_at: None,
            acked_by: None,
            cleared_at: None,
        });
        self.open_seq.push(0);
        self.emit(
            self.open.len() - 1,
            Transition::Raised,
            now,
            None,
            None,
            out,
        );
        id
    }

    fn clear(&mut self, id: AlarmId, now: Millis, out: &mut Vec<AlarmEvent>) {
        let Some(idx) = self.open.iter().position(|a| a.id == id) else {
            return;
        };
        let alarm = &mut self.open[idx];
        alarm.state = match alarm.state {
            AlarmState::ActiveUnacked => AlarmState::ReturnedUnacked,
            AlarmState::ActiveAcked => AlarmState::Normal,
            other => other,
        };
        alarm.cleared_at = Some(now);
        self.emit(idx, Transition::Cleared, now, None, None, out);
        self.retire_if_done(idx);
    }

    fn emit(
        &mut self,
        idx: usize,
        transition: Transition,
        at: Millis,
        by: Option<&str>,
        comment: Option<&str>,
        out: &mut Vec<AlarmEvent>,
    ) {
        self.open_seq[idx] += 1;
        out.push(AlarmEvent {
            seq: self.open_seq[idx],
            transition,
            at,
            by: by.map(str::to_owned),
            comment: comment.map(str::to_owned),
            alarm: self.open[idx].clone(),
        });
    }

    fn retire_if_done(&mut self, idx: usize) {
        if self.open[idx].state == AlarmState::Normal {
            let alarm = self.open.swap_remove(idx);
            self.open_seq.swap_remove(idx);
            if self.recent.len() == RECENT_CAPACITY {
                self.recent.pop_front();
            }
            self.recent.push_back(alarm);
        }
    }
}

fn worse(a: AlarmState, b: AlarmState) -> AlarmState {
    fn rank(s: AlarmState) -> u8 {
        match s {
            AlarmState::Normal => 0,
            AlarmState::ReturnedUnacked => 1,
            AlarmState::ActiveAcked => 2,
            AlarmState::ActiveUnacked => 3,
        }
    }
    if rank(b) > rank(a) { b } else { a }
}
