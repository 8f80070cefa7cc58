//! From configuration to the engine's flat state: one slot per configured alarm, the points'
//! quiet bands, and the dependency index that routes readings to deviations and conditions.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::alarm::{AlarmId, AlarmSource, ConditionId, Priority, SystemCheck};
use crate::reading::{DeviceId, Millis, PointId, Reading};
use crate::rules::EngineConfig;

use super::{Engine, NONE};

/// The point has a rate-of-change rule (every sample counts).
pub(super) const F_RATE: u8 = 1;
/// Deviations, conditions or suppressions read this point.
pub(super) const F_DEPS: u8 = 2;

#[derive(Debug, Clone)]
pub(super) struct PointState {
    pub last: Option<Reading>,
    /// While no slot of the point is busy, a usable value strictly inside
    /// `(calm_lo, calm_hi)` cannot change any limit alarm: the reading needs no judging.
    pub calm_lo: f64,
    pub calm_hi: f64,
    /// The last time a fresh reading (not stale, not communication lost) arrived.
    pub last_fresh: Option<Millis>,
    /// The point's own slots are `first_slot..first_slot + n_slots`, limit levels first.
    pub first_slot: u32,
    pub n_slots: u16,
    /// How many of the point's own slots are busy (condition active or a timer running).
    pub busy: u16,
    pub flags: u8,
    pub design_suppressed: bool,
}

#[derive(Debug, Default, Clone)]
pub(super) struct DeviceState {
    /// Last time the device answered.
    pub last_ok: Option<Millis>,
    /// When the engine started watching the device (the reference while it never answered).
    pub watch_from: Option<Millis>,
    /// The device's communication-loss slot.
    pub slot: u32,
}

/// Samples for a rate of change: four, spaced a quarter window apart, so the oldest is about
/// one window old. Fixed size: no allocation per reading.
#[derive(Debug, Clone)]
pub(super) struct RateState {
    pub samples: [(Millis, f64); 4],
    pub len: u8,
    pub next: u8,
    pub spacing_ms: Millis,
    /// Largest allowed rise and fall per minute (infinite when not checked).
    pub max_rise: f64,
    pub max_fall: f64,
    /// Units per minute at the last usable reading; NaN when unknown.
    pub rate: f64,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    Limit {
        setpoint: f64,
        clear_at: f64,
        high: bool,
    },
    Rate {
        index: u32,
    },
    Deviation {
        a: u32,
        b: u32,
        max: f64,
        clear_below: f64,
    },
    Fault,
    DataInterruption {
        after_ms: Millis,
    },
    Condition {
        index: u32,
    },
    CommLoss {
        device: u32,
        after_ms: Millis,
    },
    System {
        check: SystemCheck,
    },
}

/// One configured alarm and its detection state.
#[derive(Debug, Clone)]
pub(super) struct Slot {
    pub source: AlarmSource,
    pub kind: Kind,
    /// The point whose slot this is (`NONE` for conditions and communication loss).
    pub point: u32,
    /// The device the alarm depends on, for out-of-service by device (`NONE` if none).
    pub device: u32,
    pub priority: Priority,
    pub on_delay_ms: Millis,
    pub off_delay_ms: Millis,
    pub realarm_ms: Option<Millis>,
    pub latch: bool,
    /// The detected condition, after on- and off-delays, whatever the alarm's mode.
    pub cond: bool,
    pub raising_since: Option<Millis>,
    pub clearing_since: Option<Millis>,
    /// Index of the slot's open alarm in `Engine::open`, or `NONE`.
    pub open: u32,
    /// Out-of-service and manual-suppression records covering this slot.
    pub oos: u16,
    pub suppress: u16,
    pub shelved: bool,
}

impl Slot {
    fn new(source: AlarmSource, kind: Kind, point: u32, device: u32, priority: Priority) -> Slot {
        Slot {
            source,
            kind,
            point,
            device,
            priority,
            on_delay_ms: 0,
            off_delay_ms: 0,
            realarm_ms: None,
            latch: false,
            cond: false,
            raising_since: None,
            clearing_since: None,
            open: NONE,
            oos: 0,
            suppress: 0,
            shelved: false,
        }
    }

    pub fn busy(&self) -> bool {
        self.cond || self.raising_since.is_some() || self.clearing_since.is_some()
    }
}

/// Something to re-judge when a point's reading arrives.
#[derive(Debug, Clone, Copy)]
pub(super) enum Dep {
    /// A deviation or condition slot.
    Slot(u32),
    /// The `suppress_when` condition of this point.
    Suppress(u32),
}

pub(super) fn build(config: Arc<EngineConfig>, next_id: AlarmId) -> Engine {
    let mut slots = Vec::new();
    let mut rates = Vec::new();
    let mut points = Vec::with_capacity(config.points.len());
    let mut edges: Vec<(u32, Dep)> = Vec::new();
    let dev_of = |p: &crate::PointRules| p.device.map_or(NONE, |d| d.0);

    for (i, rules) in config.points.iter().enumerate() {
        let pid = PointId(i as u32);
        let first_slot = slots.len() as u32;
        let device = dev_of(rules);
        let (mut calm_lo, mut calm_hi) = (f64::NEG_INFINITY, f64::INFINITY);
        if let Some(limits) = &rules.limits {
            let deadband = limits.effective_deadband(rules.span);
            for lv in &limits.levels {
                let high = lv.level.is_high();
                let clear_at = if high {
                    lv.setpoint - deadband
                } else {
                    lv.setpoint + deadband
                };
                if high {
                    calm_hi = calm_hi.min(lv.setpoint);
                } else {
                    calm_lo = calm_lo.max(lv.setpoint);
                }
                if lv.setpoint.is_nan() {
                    // Never calm, never trips: the engine must not panic on a bad setpoint,
                    // and validation reports it.
                    calm_hi = f64::NEG_INFINITY;
                }
                let mut s = Slot::new(
                    AlarmSource::Limit {
                        point: pid,
                        level: lv.level,
                    },
                    Kind::Limit {
                        setpoint: lv.setpoint,
                        clear_at,
                        high,
                    },
                    i as u32,
                    device,
                    lv.priority,
                );
                s.on_delay_ms = limits.on_delay_ms;
                s.off_delay_ms = limits.off_delay_ms;
                s.realarm_ms = limits.realarm_ms;
                s.latch = limits.latch;
                slots.push(s);
            }
        }
        let mut flags = 0;
        if let Some(rate) = &rules.rate {
            let index = rates.len() as u32;
            rates.push(RateState {
                samples: [(0, 0.0); 4],
                len: 0,
                next: 0,
                spacing_ms: (rate.window_ms / 4).max(1),
                max_rise: rate.max_rise_per_min.unwrap_or(f64::INFINITY),
                max_fall: rate.max_fall_per_min.unwrap_or(f64::INFINITY),
                rate: f64::NAN,
            });
            let mut s = Slot::new(
                AlarmSource::RateOfChange { point: pid },
                Kind::Rate { index },
                i as u32,
                device,
                rate.priority,
            );
            s.on_delay_ms = rate.on_delay_ms;
            s.off_delay_ms = rate.off_delay_ms;
            slots.push(s);
            flags |= F_RATE;
        }
        if let Some(d) = &rules.deviation {
            if (d.other.0 as usize) < config.points.len() {
                let slot = slots.len() as u32;
                let mut s = Slot::new(
                    AlarmSource::Deviation {
                        point: pid,
                        other: d.other,
                    },
                    Kind::Deviation {
                        a: i as u32,
                        b: d.other.0,
                        max: d.max_difference,
                        clear_below: d.max_difference - d.deadband,
                    },
                    i as u32,
                    device,
                    d.priority,
                );
                s.on_delay_ms = d.on_delay_ms;
                s.off_delay_ms = d.off_delay_ms;
                slots.push(s);
                edges.push((i as u32, Dep::Slot(slot)));
                edges.push((d.other.0, Dep::Slot(slot)));
            }
        }
        if let Some(f) = &rules.fault {
            let mut s = Slot::new(
                AlarmSource::Fault { point: pid },
                Kind::Fault,
                i as u32,
                device,
                f.priority,
            );
            s.on_delay_ms = f.on_delay_ms;
            slots.push(s);
        }
        if let Some(d) = &rules.data_interruption {
            slots.push(Slot::new(
                AlarmSource::DataInterruption { point: pid },
                Kind::DataInterruption {
                    after_ms: d.after_ms,
                },
                i as u32,
                device,
                d.priority,
            ));
        }
        if let Some(c) = &rules.suppress_when {
            for p in c.points() {
                edges.push((p.0, Dep::Suppress(i as u32)));
            }
        }
        points.push(PointState {
            last: None,
            calm_lo,
            calm_hi,
            last_fresh: None,
            first_slot,
            n_slots: (slots.len() as u32 - first_slot) as u16,
            busy: 0,
            flags,
            design_suppressed: false,
        });
    }

    let first_condition_slot = slots.len() as u32;
    for (i, c) in config.conditions.iter().enumerate() {
        let slot = slots.len() as u32;
        let mut s = Slot::new(
            AlarmSource::Condition {
                condition: ConditionId(i as u32),
            },
            Kind::Condition { index: i as u32 },
            NONE,
            NONE,
            c.priority,
        );
        s.on_delay_ms = c.on_delay_ms;
        s.off_delay_ms = c.off_delay_ms;
        s.realarm_ms = c.realarm_ms;
        s.latch = c.latch;
        slots.push(s);
        for p in c.when.points() {
            edges.push((p.0, Dep::Slot(slot)));
        }
    }

    let mut devices = Vec::with_capacity(config.devices.len());
    for (i, d) in config.devices.iter().enumerate() {
        let slot = slots.len() as u32;
        slots.push(Slot::new(
            AlarmSource::CommLoss {
                device: DeviceId(i as u32),
            },
            Kind::CommLoss {
                device: i as u32,
                after_ms: d.comm_loss_after_ms,
            },
            NONE,
            i as u32,
            d.comm_loss_priority,
        ));
        devices.push(DeviceState {
            slot,
            ..DeviceState::default()
        });
    }

    // Every engine watches Sentinel's own checks; they need no configuration.
    for check in SystemCheck::ALL {
        slots.push(Slot::new(
            AlarmSource::System { check },
            Kind::System { check },
            NONE,
            NONE,
            check.priority(),
        ));
    }

    // Compressed adjacency: deps of point p are deps[dep_start[p]..dep_start[p + 1]].
    edges.retain(|(p, _)| (*p as usize) < points.len());
    edges.sort_by_key(|(p, _)| *p);
    let mut dep_start = vec![0u32; points.len() + 1];
    for (p, _) in &edges {
        dep_start[*p as usize + 1] += 1;
    }
    for i in 0..points.len() {
        dep_start[i + 1] += dep_start[i];
        if dep_start[i + 1] > dep_start[i] {
            points[i].flags |= F_DEPS;
        }
    }
    let deps = edges.into_iter().map(|(_, d)| d).collect();
    // Grown by doubling; a large plant's engine lives for years with whatever was left over.
    slots.shrink_to_fit();
    rates.shrink_to_fit();

    Engine {
        config,
        points,
        devices,
        slots,
        rates,
        first_condition_slot,
        dep_start,
        deps,
        open: Vec::new(),
        open_seq: Vec::new(),
        open_slot: Vec::new(),
        recent: VecDeque::new(),
        next_id,
        records: Vec::new(),
        mode_events: VecDeque::new(),
        mode_events_dropped: 0,
        reconcile: false,
        system_failing: [false; SystemCheck::ALL.len()],
    }
}
