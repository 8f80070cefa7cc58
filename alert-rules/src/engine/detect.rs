//! Detection: from readings and elapsed time to each slot's condition, through on-delays and
//! off-delays. Nothing here allocates; events are produced by `lifecycle` when a condition
//! changes.

use crate::alarm::AlarmEvent;
use crate::condition::Truth;
use crate::reading::{Millis, PointId, Quality, Reading};

use super::build::{Dep, F_RATE, Kind, PointState};
use super::{Engine, NONE};

/// What one evaluation of a slot says. Both flags false means "cannot tell" (a bad value, an
/// unknown condition): timers restart and the condition stays as it is.
#[derive(Debug, Clone, Copy)]
pub(super) struct Judgement {
    pub raise: bool,
    pub clear: bool,
    /// For the alarm record: the value judged and the limit it was judged against.
    pub value: Option<f64>,
    pub limit: Option<f64>,
}

const UNKNOWN: Judgement = Judgement {
    raise: false,
    clear: false,
    value: None,
    limit: None,
};

fn judged(raise: bool, value: f64, limit: f64) -> Judgement {
    Judgement {
        raise,
        clear: !raise,
        value: Some(value),
        limit: Some(limit),
    }
}

/// The usable value of a reading, if it has one.
fn usable(r: &Reading) -> Option<f64> {
    (r.quality.is_usable() && r.value.is_finite()).then_some(r.value)
}

/// Qualities that mean the signal itself is broken. Communication loss is the device's alarm
/// and silence is the data-interruption alarm; neither is a sensor fault.
const fn is_fault(q: Quality) -> bool {
    matches!(
        q,
        Quality::SensorFault | Quality::BadValue | Quality::DeviceException
    )
}

const fn is_fresh(q: Quality) -> bool {
    !matches!(q, Quality::Stale | Quality::CommLost)
}

fn value_of(points: &[PointState], p: PointId) -> f64 {
    points
        .get(p.0 as usize)
        .and_then(|s| s.last.as_ref())
        .and_then(usable)
        .unwrap_or(f64::NAN)
}

impl Engine {
    /// The slow path of `on_reading`: the reading is already stored as the point's last.
    pub(super) fn judge_reading(&mut self, p: usize, now: Millis, out: &mut Vec<AlarmEvent>) {
        let point = &mut self.points[p];
        let Some(reading) = point.last else { return };
        if is_fresh(reading.quality) {
            point.last_fresh = Some(now);
        }
        if point.flags & F_RATE != 0 {
            self.update_rate(p, &reading);
        }
        let first = self.points[p].first_slot as usize;
        let n = self.points[p].n_slots as usize;
        for slot in first..first + n {
            // Deviations are judged once per reading through the dependency index below.
            if !matches!(self.slots[slot].kind, Kind::Deviation { .. }) {
                self.judge_slot(slot, now, out);
            }
        }
        let (from, to) = (self.dep_start[p] as usize, self.dep_start[p + 1] as usize);
        for d in from..to {
            match self.deps[d] {
                Dep::Slot(slot) => self.judge_slot(slot as usize, now, out),
                Dep::Suppress(q) => self.judge_suppression(q as usize, now, out),
            }
        }
    }

    /// Evaluate one slot from the state the engine holds and step its delays.
    pub(super) fn judge_slot(&mut self, slot: usize, now: Millis, out: &mut Vec<AlarmEvent>) {
        let j = self.evaluate(slot, now);
        self.step(slot, j, now, out);
    }

    fn evaluate(&self, slot: usize, now: Millis) -> Judgement {
        let s = &self.slots[slot];
        let last = || {
            self.points
                .get(s.point as usize)
                .and_then(|p| p.last.as_ref())
        };
        match s.kind {
            Kind::Limit {
                setpoint,
                clear_at,
                high,
            } => {
                let Some(v) = last().and_then(usable) else {
                    return UNKNOWN;
                };
                let (raise, clear) = if high {
                    (v >= setpoint, v < clear_at)
                } else {
                    (v <= setpoint, v > clear_at)
                };
                Judgement {
                    raise,
                    clear,
                    value: Some(v),
                    limit: Some(setpoint),
                }
            }
            Kind::Rate { index } => {
                let r = &self.rates[index as usize];
                if r.rate.is_nan() {
                    return UNKNOWN;
                }
                if r.rate > r.max_rise {
                    judged(true, r.rate, r.max_rise)
                } else if -r.rate > r.max_fall {
                    judged(true, r.rate, -r.max_fall)
                } else {
                    judged(
                        false,
                        r.rate,
                        if r.rate >= 0.0 {
                            r.max_rise
                        } else {
                            -r.max_fall
                        },
                    )
                }
            }
            Kind::Deviation {
                a,
                b,
                max,
                clear_below,
            } => {
                let diff =
                    (value_of(&self.points, PointId(a)) - value_of(&self.points, PointId(b))).abs();
                if diff.is_nan() {
                    return UNKNOWN;
                }
                Judgement {
                    raise: diff >= max,
                    clear: diff < clear_below,
                    value: Some(diff),
                    limit: Some(max),
                }
            }
            Kind::Fault => match last() {
                Some(r) if is_fault(r.quality) || (r.quality.is_good() && !r.value.is_finite()) => {
                    Judgement {
                        raise: true,
                        clear: false,
                        value: None,
                        limit: None,
                    }
                }
                Some(r) if usable(r).is_some() => Judgement {
                    raise: false,
                    clear: true,
                    value: None,
                    limit: None,
                },
                _ => UNKNOWN,
            },
            Kind::DataInterruption { after_ms } => {
                let Some(fresh) = self.points.get(s.point as usize).and_then(|p| p.last_fresh)
                else {
                    return UNKNOWN;
                };
                let silent = now - fresh;
                Judgement {
                    raise: silent >= after_ms,
                    clear: silent < after_ms,
                    value: None,
                    limit: None,
                }
            }
            Kind::Condition { index } => {
                let Some(rule) = self.config.conditions.get(index as usize) else {
                    return UNKNOWN;
                };
                match rule.when.evaluate(|p| value_of(&self.points, p)) {
                    Truth::True => Judgement {
                        raise: true,
                        clear: false,
                        value: None,
                        limit: None,
                    },
                    Truth::False => Judgement {
                        raise: false,
                        clear: true,
                        value: None,
                        limit: None,
                    },
                    Truth::Unknown => UNKNOWN,
                }
            }
            Kind::System { check } => {
                let failing = self.system_failing[check.index()];
                Judgement {
                    raise: failing,
                    clear: !failing,
                    value: None,
                    limit: None,
                }
            }
            Kind::CommLoss { device, after_ms } => {
                let Some(d) = self.devices.get(device as usize) else {
                    return UNKNOWN;
                };
                let Some(since) = d.last_ok.or(d.watch_from) else {
                    return UNKNOWN;
                };
                let silent = now - since;
                Judgement {
                    raise: silent >= after_ms,
                    clear: silent < after_ms,
                    value: None,
                    limit: None,
                }
            }
        }
    }

    /// The on-delay / off-delay state machine shared by every kind of alarm.
    fn step(&mut self, slot: usize, j: Judgement, now: Millis, out: &mut Vec<AlarmEvent>) {
        let s = &mut self.slots[slot];
        let was_busy = s.busy();
        let mut change = None;
        if !s.cond {
            s.clearing_since = None;
            if j.raise {
                let since = *s.raising_since.get_or_insert(now);
                if now - since >= s.on_delay_ms {
                    s.raising_since = None;
                    s.cond = true;
                    change = Some(true);
                }
            } else {
                s.raising_since = None;
            }
        } else {
            s.raising_since = None;
            if j.clear {
                let since = *s.clearing_since.get_or_insert(now);
                if now - since >= s.off_delay_ms {
                    s.clearing_since = None;
                    s.cond = false;
                    change = Some(false);
                }
            } else {
                s.clearing_since = None;
            }
        }
        let (is_busy, point) = (s.busy(), s.point);
        if is_busy != was_busy {
            self.adjust_busy(point, is_busy);
        }
        if let Some(active) = change {
            self.condition_changed(slot, active, j.value, j.limit, now, out);
        }
    }

    fn adjust_busy(&mut self, point: u32, busy: bool) {
        if let Some(p) = self.points.get_mut(point as usize) {
            if busy {
                p.busy += 1;
            } else {
                p.busy = p.busy.saturating_sub(1);
            }
        }
    }

    /// Restore sets the detected condition without events.
    pub(super) fn set_restored_condition(&mut self, slot: usize, active: bool) {
        let s = &mut self.slots[slot];
        let was_busy = s.busy();
        s.cond = active;
        let (is_busy, point) = (s.busy(), s.point);
        if is_busy != was_busy {
            self.adjust_busy(point, is_busy);
        }
    }

    fn update_rate(&mut self, p: usize, reading: &Reading) {
        let Some(rate_index) = self.point_rate_index(p) else {
            return;
        };
        let r = &mut self.rates[rate_index];
        let Some(v) = usable(reading) else {
            r.rate = f64::NAN;
            return;
        };
        let t = reading.time;
        if r.len == 0 {
            r.samples[0] = (t, v);
            r.len = 1;
            r.next = 1;
            r.rate = f64::NAN;
            return;
        }
        let newest = r.samples[(usize::from(r.next) + 3) % 4];
        let oldest = if r.len < 4 {
            r.samples[0]
        } else {
            r.samples[usize::from(r.next)]
        };
        let dt = t - oldest.0;
        // Half a window at least, so that the first samples after a start are not judged on
        // a few seconds of noise.
        r.rate = if dt >= 2 * r.spacing_ms {
            (v - oldest.1) / dt as f64 * 60_000.0
        } else {
            f64::NAN
        };
        if t - newest.0 >= r.spacing_ms {
            r.samples[usize::from(r.next)] = (t, v);
            r.next = (r.next + 1) % 4;
            r.len = (r.len + 1).min(4);
        }
    }

    fn point_rate_index(&self, p: usize) -> Option<usize> {
        let point = &self.points[p];
        let first = point.first_slot as usize;
        self.slots[first..first + point.n_slots as usize]
            .iter()
            .find_map(|s| match s.kind {
                Kind::Rate { index } => Some(index as usize),
                _ => None,
            })
    }

    fn judge_suppression(&mut self, q: usize, now: Millis, out: &mut Vec<AlarmEvent>) {
        let Some(cond) = self
            .config
            .points
            .get(q)
            .and_then(|p| p.suppress_when.as_ref())
        else {
            return;
        };
        let suppressed = match cond.evaluate(|p| value_of(&self.points, p)) {
            Truth::True => true,
            Truth::False => false,
            Truth::Unknown => return,
        };
        if self.points[q].design_suppressed != suppressed {
            self.set_design_suppression(q, suppressed, now, out);
        }
    }

    /// Timers that run without data: pending delays, silence, communication loss.
    pub(super) fn advance_timers(&mut self, now: Millis, out: &mut Vec<AlarmEvent>) {
        for slot in 0..self.slots.len() {
            let s = &self.slots[slot];
            match s.kind {
                Kind::DataInterruption { .. } => {
                    // Silence is measured from the first tick for a point that never reported.
                    if let Some(p) = self.points.get_mut(s.point as usize) {
                        p.last_fresh.get_or_insert(now);
                    }
                    self.judge_slot(slot, now, out);
                }
                Kind::CommLoss { device, .. } => {
                    if let Some(d) = self.devices.get_mut(device as usize) {
                        d.watch_from.get_or_insert(now);
                    }
                    self.judge_slot(slot, now, out);
                }
                _ if s.raising_since.is_some() || s.clearing_since.is_some() => {
                    self.judge_slot(slot, now, out)
                }
                _ => {}
            }
        }
    }

    /// Open index of a slot, if it has an open alarm.
    pub(super) fn open_index(&self, slot: usize) -> Option<usize> {
        let i = self.slots[slot].open;
        (i != NONE).then_some(i as usize)
    }
}
