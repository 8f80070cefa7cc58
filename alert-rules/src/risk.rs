//! Four-colour risk (红橙黄蓝): the static colour of each risk unit from its assessment, the
//! live colour that steps up with its active alarms and falls back after a hold time, and the
//! site's colour, which is its worst unit's.
//!
//! There is no official formula for the live colour; this is Sentinel's design (see
//! docs/rules.md):
//! - an active (or latched) first-level alarm (L, H) raises the unit one step above its static
//!   colour, a second-level one (LL, HH) two steps; other process alarms by priority
//!   (medium and high one step, critical two); fault and silence alarms do not move it;
//! - an unacknowledged critical alarm makes the unit red;
//! - when an alarm's contribution drops (it cleared, was acknowledged, was hidden), the unit
//!   keeps the higher colour for the hold time, so a colour does not flicker with the alarm;
//! - every change of a unit or of the site is a [`ColourChange`] for the journal.
//!
//! Fed with alarm events (or, after a restart, the engine's open alarms) and `now`.

use serde::{Deserialize, Serialize};

use crate::alarm::{Alarm, AlarmEvent, AlarmId, AlarmSource, AlarmState, ConditionId, Priority};
use crate::reading::{DeviceId, Millis, PointId};

/// Fifteen minutes: long enough that an operator sees an incident's colour after it ends.
pub const DEFAULT_HOLD_MS: Millis = 15 * 60_000;
/// Alarms tracked per unit at once; beyond this the weakest contribution gives way.
const MAX_CONTRIBUTIONS: usize = 256;

/// Risk colours, ordered from low (blue) to major (red).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Colour {
    /// 低风险 low.
    Blue,
    /// 一般风险 general.
    Yellow,
    /// 较大风险 considerable.
    Orange,
    /// 重大风险 major.
    Red,
}

impl Colour {
    pub const fn as_str(self) -> &'static str {
        match self {
            Colour::Blue => "blue",
            Colour::Yellow => "yellow",
            Colour::Orange => "orange",
            Colour::Red => "red",
        }
    }

    const fn from_rank(r: u8) -> Colour {
        match r {
            0 => Colour::Blue,
            1 => Colour::Yellow,
            2 => Colour::Orange,
            _ => Colour::Red,
        }
    }

    /// `steps` colours higher, at most red.
    pub const fn raised(self, steps: u8) -> Colour {
        Colour::from_rank((self as u8).saturating_add(steps))
    }

    /// From an LEC assessment, D = L × E × C: above 320 red, 160–320 orange, 70–160 yellow,
    /// below 70 blue.
    pub fn from_lec(d: f64) -> Colour {
        if d > 320.0 {
            Colour::Red
        } else if d >= 160.0 {
            Colour::Orange
        } else if d >= 70.0 {
            Colour::Yellow
        } else {
            Colour::Blue
        }
    }

    /// From a risk matrix, R = L × S (each 1–5): 20–25 red, 9–16 orange, 4–8 yellow, 1–3 blue.
    pub const fn from_matrix(r: u32) -> Colour {
        if r >= 20 {
            Colour::Red
        } else if r >= 9 {
            Colour::Orange
        } else if r >= 4 {
            Colour::Yellow
        } else {
            Colour::Blue
        }
    }
}

/// The colour one alarm asks of a unit whose static colour is `base` (`base` itself when the
/// alarm asks nothing).
pub fn alarm_colour(base: Colour, alarm: &Alarm) -> Colour {
    let standing = matches!(
        alarm.state,
        AlarmState::ActiveUnacked | AlarmState::ActiveAcked | AlarmState::Latched
    );
    let unacked = alarm.acked_at.is_none()
        && matches!(
            alarm.state,
            AlarmState::ActiveUnacked | AlarmState::ReturnedUnacked | AlarmState::Latched
        );
    if alarm.priority == Priority::Critical && unacked {
        return Colour::Red;
    }
    if !standing {
        return base;
    }
    let steps = match alarm.source {
        AlarmSource::Limit { level, .. } => {
            if level.is_second() {
                2
            } else {
                1
            }
        }
        s if s.is_process() => match alarm.priority {
            Priority::Low => 0,
            Priority::Medium | Priority::High => 1,
            Priority::Critical => 2,
        },
        _ => 0,
    };
    base.raised(steps)
}

#[derive(Debug, Clone, Copy)]
struct Contribution {
    alarm: AlarmId,
    /// What the alarm asks now.
    current: Colour,
    /// What it asked before it dropped, kept until `held_until`.
    held: Colour,
    held_until: Millis,
}

impl Contribution {
    fn effective(&self, now: Millis) -> Colour {
        if now < self.held_until {
            self.current.max(self.held)
        } else {
            self.current
        }
    }
}

/// The live colour of one risk unit.
#[derive(Debug, Clone)]
pub struct RiskUnit {
    static_colour: Colour,
    hold_ms: Millis,
    colour: Colour,
    contributions: Vec<Contribution>,
    dropped: u64,
}

impl RiskUnit {
    pub fn new(static_colour: Colour, hold_ms: Millis) -> RiskUnit {
        RiskUnit {
            static_colour,
            hold_ms,
            colour: static_colour,
            contributions: Vec::new(),
            dropped: 0,
        }
    }

    pub fn colour(&self) -> Colour {
        self.colour
    }

    pub fn static_colour(&self) -> Colour {
        self.static_colour
    }

    /// Contributions that did not fit (more than 256 alarms raising one unit at once).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Take an alarm's new state into account. Returns `(from, to)` when the colour changed.
    pub fn on_alarm(&mut self, alarm: &Alarm, now: Millis) -> Option<(Colour, Colour)> {
        let target = alarm_colour(self.static_colour, alarm);
        match self.contributions.iter_mut().find(|c| c.alarm == alarm.id) {
            Some(c) => {
                if target < c.current {
                    c.held = c.effective(now);
                    c.held_until = now + self.hold_ms;
                }
                c.current = target;
            }
            None if target > self.static_colour => {
                let new = Contribution {
                    alarm: alarm.id,
                    current: target,
                    held: target,
                    held_until: now,
                };
                if self.contributions.len() < MAX_CONTRIBUTIONS {
                    self.contributions.push(new);
                } else {
                    self.dropped += 1;
                    let weakest = self
                        .contributions
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, c)| c.effective(now));
                    if let Some((i, c)) = weakest {
                        if c.effective(now) < target {
                            self.contributions[i] = new;
                        }
                    }
                }
            }
            None => {}
        }
        self.recompute(now)
    }

    /// Let hold times run out. Returns `(from, to)` when the colour changed.
    pub fn tick(&mut self, now: Millis) -> Option<(Colour, Colour)> {
        self.recompute(now)
    }

    fn recompute(&mut self, now: Millis) -> Option<(Colour, Colour)> {
        let base = self.static_colour;
        self.contributions.retain(|c| c.effective(now) > base);
        let live = self
            .contributions
            .iter()
            .map(|c| c.effective(now))
            .fold(base, Colour::max);
        let from = self.colour;
        self.colour = live;
        (live != from).then_some((from, live))
    }
}

/// One risk unit of the site: what it is, its assessed colour, and which alarms move it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiskUnitConfig {
    pub name: String,
    pub static_colour: Colour,
    #[serde(default)]
    pub points: Vec<PointId>,
    #[serde(default)]
    pub conditions: Vec<ConditionId>,
    /// Devices whose communication-loss alarms count (they do not move the colour by level,
    /// but a critical one unacknowledged makes it red).
    #[serde(default)]
    pub devices: Vec<DeviceId>,
    #[serde(default = "default_hold_ms")]
    pub hold_ms: Millis,
}

const fn default_hold_ms() -> Millis {
    DEFAULT_HOLD_MS
}

impl Default for RiskUnitConfig {
    fn default() -> Self {
        RiskUnitConfig {
            name: String::new(),
            static_colour: Colour::Blue,
            points: Vec::new(),
            conditions: Vec::new(),
            devices: Vec::new(),
            hold_ms: DEFAULT_HOLD_MS,
        }
    }
}

/// A change of a unit's colour, or of the site's (`unit: None`). Journal every one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColourChange {
    /// Index of the unit in the configuration; `None` for the site.
    pub unit: Option<u32>,
    pub from: Colour,
    pub to: Colour,
    pub at: Millis,
    /// The alarm whose event caused it; `None` when a hold time ran out.
    pub alarm: Option<AlarmId>,
}

/// The risk units of one site and the site's colour.
#[derive(Debug, Clone)]
pub struct RiskMap {
    units: Vec<RiskUnit>,
    by_point: UnitsOf,
    by_condition: UnitsOf,
    by_device: UnitsOf,
    site: Colour,
}

/// The risk units each point (or condition, or device) belongs to, by its number: those of
/// number `i` are `units[start[i]..start[i + 1]]`. Packed rather than a map of vectors: a
/// plant's default unit holds every point, and a map entry with a vector of its own cost about
/// 100 bytes a point.
#[derive(Debug, Clone, Default)]
struct UnitsOf {
    start: Vec<u32>,
    units: Vec<u32>,
}

impl UnitsOf {
    /// From `(number, unit)` pairs; a unit that lists a member twice holds it once.
    fn new(mut pairs: Vec<(u32, u32)>) -> UnitsOf {
        pairs.sort_unstable();
        pairs.dedup();
        let len = pairs.last().map_or(0, |&(id, _)| id as usize + 1);
        let mut start = vec![0u32; len + 1];
        for &(id, _) in &pairs {
            start[id as usize + 1] += 1;
        }
        for i in 1..start.len() {
            start[i] += start[i - 1];
        }
        UnitsOf {
            start,
            units: pairs.into_iter().map(|(_, unit)| unit).collect(),
        }
    }

    fn get(&self, id: u32) -> &[u32] {
        let i = id as usize;
        match (self.start.get(i), self.start.get(i + 1)) {
            (Some(&from), Some(&to)) => &self.units[from as usize..to as usize],
            _ => &[],
        }
    }
}

impl RiskMap {
    pub fn new(config: &[RiskUnitConfig]) -> RiskMap {
        let (mut points, mut conditions, mut devices) = (Vec::new(), Vec::new(), Vec::new());
        for (i, u) in config.iter().enumerate() {
            let i = i as u32;
            points.extend(u.points.iter().map(|p| (p.0, i)));
            conditions.extend(u.conditions.iter().map(|c| (c.0, i)));
            devices.extend(u.devices.iter().map(|d| (d.0, i)));
        }
        let mut map = RiskMap {
            units: config
                .iter()
                .map(|u| RiskUnit::new(u.static_colour, u.hold_ms))
                .collect(),
            by_point: UnitsOf::new(points),
            by_condition: UnitsOf::new(conditions),
            by_device: UnitsOf::new(devices),
            site: Colour::Blue,
        };
        map.site = map.worst();
        map
    }

    pub fn on_event(&mut self, event: &AlarmEvent, now: Millis, out: &mut Vec<ColourChange>) {
        self.on_alarm(&event.alarm, now, out);
    }

    /// Take an alarm's state into account (after a restart, call this for each open alarm).
    pub fn on_alarm(&mut self, alarm: &Alarm, now: Millis, out: &mut Vec<ColourChange>) {
        let units = match alarm.source {
            s if s.point().is_some() => s.point().map_or(&[][..], |p| self.by_point.get(p.0)),
            AlarmSource::Condition { condition } => self.by_condition.get(condition.0),
            AlarmSource::CommLoss { device } => self.by_device.get(device.0),
            _ => &[],
        };
        // An alarm outside every unit changes no colour.
        if units.is_empty() {
            return;
        }
        for &u in units {
            if let Some((from, to)) = self.units[u as usize].on_alarm(alarm, now) {
                out.push(ColourChange {
                    unit: Some(u),
                    from,
                    to,
                    at: now,
                    alarm: Some(alarm.id),
                });
            }
        }
        self.update_site(now, Some(alarm.id), out);
    }

    /// Let hold times run out.
    pub fn tick(&mut self, now: Millis, out: &mut Vec<ColourChange>) {
        for (u, unit) in self.units.iter_mut().enumerate() {
            if let Some((from, to)) = unit.tick(now) {
                out.push(ColourChange {
                    unit: Some(u as u32),
                    from,
                    to,
                    at: now,
                    alarm: None,
                });
            }
        }
        self.update_site(now, None, out);
    }

    pub fn units(&self) -> &[RiskUnit] {
        &self.units
    }

    pub fn unit_colour(&self, unit: usize) -> Option<Colour> {
        self.units.get(unit).map(RiskUnit::colour)
    }

    /// The site's colour: its worst unit's (blue with no units).
    pub fn site_colour(&self) -> Colour {
        self.site
    }

    fn worst(&self) -> Colour {
        self.units
            .iter()
            .map(RiskUnit::colour)
            .max()
            .unwrap_or(Colour::Blue)
    }

    fn update_site(&mut self, now: Millis, alarm: Option<AlarmId>, out: &mut Vec<ColourChange>) {
        let worst = self.worst();
        if worst != self.site {
            out.push(ColourChange {
                unit: None,
                from: self.site,
                to: worst,
                at: now,
                alarm,
            });
            self.site = worst;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alarm::Level;

    #[test]
    fn units_of_a_number_are_found_packed() {
        // point 0 in units 0 and 2, point 3 in unit 1 (listed twice), points 1 and 2 in none
        let of = UnitsOf::new(vec![(3, 1), (0, 2), (0, 0), (3, 1)]);
        assert_eq!(of.get(0), &[0, 2]);
        assert_eq!(of.get(1), &[] as &[u32]);
        assert_eq!(of.get(2), &[] as &[u32]);
        assert_eq!(of.get(3), &[1]);
        assert_eq!(of.get(4), &[] as &[u32]);
        assert_eq!(of.get(u32::MAX), &[] as &[u32]);
        assert_eq!(UnitsOf::new(Vec::new()).get(0), &[] as &[u32]);
    }

    fn alarm(
        id: AlarmId,
        point: u32,
        level: Level,
        priority: Priority,
        state: AlarmState,
    ) -> Alarm {
        Alarm {
            id,
            source: AlarmSource::Limit {
                point: PointId(point),
                level,
            },
            state,
            priority,
            value: None,
            limit: None,
            raised_at: 0,
            acked_at: None,
            acked_by: None,
            cleared_at: None,
        }
    }

    #[test]
    fn static_colour_from_assessments() {
        assert_eq!(Colour::from_lec(400.0), Colour::Red);
        assert_eq!(Colour::from_lec(320.0), Colour::Orange);
        assert_eq!(Colour::from_lec(160.0), Colour::Orange);
        assert_eq!(Colour::from_lec(100.0), Colour::Yellow);
        assert_eq!(Colour::from_lec(69.0), Colour::Blue);
        assert_eq!(Colour::from_matrix(25), Colour::Red);
        assert_eq!(Colour::from_matrix(16), Colour::Orange);
        assert_eq!(Colour::from_matrix(9), Colour::Orange);
        assert_eq!(Colour::from_matrix(8), Colour::Yellow);
        assert_eq!(Colour::from_matrix(3), Colour::Blue);
        assert!(Colour::Blue < Colour::Yellow && Colour::Orange < Colour::Red);
        assert_eq!(Colour::Orange.raised(5), Colour::Red);
    }

    #[test]
    fn steps_by_level_and_red_for_unacknowledged_critical() {
        let base = Colour::Blue;
        let a = alarm(
            1,
            0,
            Level::High,
            Priority::Medium,
            AlarmState::ActiveUnacked,
        );
        assert_eq!(alarm_colour(base, &a), Colour::Yellow);
        let a = alarm(
            1,
            0,
            Level::HighHigh,
            Priority::High,
            AlarmState::ActiveAcked,
        );
        assert_eq!(alarm_colour(base, &a), Colour::Orange);
        let mut a = alarm(
            1,
            0,
            Level::High,
            Priority::Critical,
            AlarmState::ActiveUnacked,
        );
        assert_eq!(alarm_colour(base, &a), Colour::Red);
        a.state = AlarmState::ActiveAcked;
        a.acked_at = Some(1);
        assert_eq!(alarm_colour(base, &a), Colour::Yellow);
        let a = alarm(1, 0, Level::HighHigh, Priority::High, AlarmState::Shelved);
        assert_eq!(
            alarm_colour(base, &a),
            Colour::Blue,
            "hidden alarms do not move the colour"
        );
        let mut f = alarm(1, 0, Level::High, Priority::High, AlarmState::ActiveUnacked);
        f.source = AlarmSource::Fault { point: PointId(0) };
        assert_eq!(alarm_colour(base, &f), Colour::Blue);
    }

    #[test]
    fn unit_rises_at_once_and_falls_after_the_hold_time() {
        let mut unit = RiskUnit::new(Colour::Yellow, 60_000);
        let mut a = alarm(
            1,
            0,
            Level::High,
            Priority::Medium,
            AlarmState::ActiveUnacked,
        );
        assert_eq!(unit.on_alarm(&a, 0), Some((Colour::Yellow, Colour::Orange)));
        a.state = AlarmState::ReturnedUnacked;
        assert_eq!(unit.on_alarm(&a, 10_000), None, "held");
        assert_eq!(unit.tick(69_999), None);
        assert_eq!(unit.tick(70_000), Some((Colour::Orange, Colour::Yellow)));
    }

    #[test]
    fn map_site_is_worst_unit_and_changes_are_events() {
        let config = [
            RiskUnitConfig {
                name: "tank farm".into(),
                static_colour: Colour::Yellow,
                points: vec![PointId(0)],
                hold_ms: 1_000,
                ..Default::default()
            },
            RiskUnitConfig {
                name: "boiler".into(),
                static_colour: Colour::Blue,
                points: vec![PointId(1)],
                hold_ms: 1_000,
                ..Default::default()
            },
        ];
        let mut map = RiskMap::new(&config);
        assert_eq!(map.site_colour(), Colour::Yellow);
        let mut out = Vec::new();
        let a = alarm(
            7,
            1,
            Level::HighHigh,
            Priority::High,
            AlarmState::ActiveUnacked,
        );
        map.on_alarm(&a, 0, &mut out);
        assert_eq!(
            out,
            [
                ColourChange {
                    unit: Some(1),
                    from: Colour::Blue,
                    to: Colour::Orange,
                    at: 0,
                    alarm: Some(7)
                },
                ColourChange {
                    unit: None,
                    from: Colour::Yellow,
                    to: Colour::Orange,
                    at: 0,
                    alarm: Some(7)
                },
            ]
        );
        out.clear();
        let mut done = a.clone();
        done.state = AlarmState::Normal;
        map.on_alarm(&done, 100, &mut out);
        assert!(out.is_empty());
        map.tick(1_100, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(map.site_colour(), Colour::Yellow);
        assert_eq!(map.unit_colour(1), Some(Colour::Blue));
        // An alarm of a point in no unit changes nothing.
        out.clear();
        map.on_alarm(
            &alarm(
                8,
                9,
                Level::HighHigh,
                Priority::Critical,
                AlarmState::ActiveUnacked,
            ),
            2_000,
            &mut out,
        );
        assert!(out.is_empty());
    }

    #[test]
    fn held_colour_survives_a_second_drop() {
        let mut unit = RiskUnit::new(Colour::Blue, 60_000);
        let mut a = alarm(
            1,
            0,
            Level::HighHigh,
            Priority::Critical,
            AlarmState::ActiveUnacked,
        );
        unit.on_alarm(&a, 0);
        assert_eq!(unit.colour(), Colour::Red);
        a.state = AlarmState::ActiveAcked;
        a.acked_at = Some(1_000);
        unit.on_alarm(&a, 1_000);
        assert_eq!(unit.colour(), Colour::Red, "held after the acknowledgement");
        a.state = AlarmState::Normal;
        unit.on_alarm(&a, 2_000);
        assert_eq!(unit.tick(61_999), None);
        assert_eq!(unit.tick(62_000), Some((Colour::Red, Colour::Blue)));
    }
}
