//! How the engine is told what to watch. Built by the gateway from its configuration.
//!
//! The engine trusts these values and never panics on them; [`EngineConfig::validate`] lists
//! what does not make sense, with the path of each problem, for `sentinel check`.
//!
//! Every struct here has a `Default`, so that callers can name the fields they set and write
//! `..Default::default()` for the rest; every field added after the first engine carries
//! `#[serde(default)]` so older serialised configurations still load.

use serde::{Deserialize, Serialize};

use crate::alarm::{Level, Priority};
use crate::condition::Condition;
use crate::reading::{DeviceId, Millis, PointId};

/// Eight hours: one shift. EEMUA 191 expects shelving to be reviewed every shift.
pub const DEFAULT_MAX_SHELVE_MS: Millis = 8 * 3_600_000;
/// Seven days: longer maintenance needs a new permit, and a new decision, not a forgotten flag.
pub const DEFAULT_MAX_OUT_OF_SERVICE_MS: Millis = 7 * 24 * 3_600_000;

/// One setpoint of a limit rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LimitLevel {
    pub level: Level,
    /// Engineering units. A high level alarms at `value >= setpoint`, a low level at `value <= setpoint`.
    pub setpoint: f64,
    pub priority: Priority,
}

/// Limit alarms of one point.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LimitRule {
    pub levels: Vec<LimitLevel>,
    /// Engineering units; acts on clearing only: a high alarm clears below `setpoint - deadband`.
    pub deadband: f64,
    /// The condition must hold continuously this long before the alarm is raised.
    pub on_delay_ms: Millis,
    /// The return to normal must hold continuously this long before the alarm clears.
    pub off_delay_ms: Millis,
    /// Deadband as a percentage of the point's span ([`PointRules::span`]). When set and the
    /// point has a span, it replaces `deadband`.
    #[serde(default)]
    pub deadband_pct: Option<f64>,
    /// Announce an acknowledged alarm again if it is still active this long after the
    /// acknowledgement.
    #[serde(default)]
    pub realarm_ms: Option<Millis>,
    /// Latching: after the value returns, the alarm stands until an operator resets it.
    #[serde(default)]
    pub latch: bool,
}

impl LimitRule {
    /// The deadband in engineering units for a point with the given span.
    pub fn effective_deadband(&self, span: Option<Span>) -> f64 {
        match (self.deadband_pct, span) {
            (Some(pct), Some(span)) => pct / 100.0 * span.width(),
            _ => self.deadband,
        }
    }

    /// The setpoint of a level, if the rule has it.
    pub fn setpoint(&self, level: Level) -> Option<f64> {
        self.levels
            .iter()
            .find(|l| l.level == level)
            .map(|l| l.setpoint)
    }
}

/// A point's measuring range in engineering units (4 mA and 20 mA for a current loop).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Span {
    pub low: f64,
    pub high: f64,
}

impl Span {
    pub fn width(self) -> f64 {
        self.high - self.low
    }

    /// The value at `pct` percent of the span.
    pub fn at_pct(self, pct: f64) -> f64 {
        self.low + self.width() * pct / 100.0
    }
}

/// Rate-of-change alarm: the value moved faster than allowed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateRule {
    /// Alarm when the value rises faster than this, in engineering units per minute.
    #[serde(default)]
    pub max_rise_per_min: Option<f64>,
    /// Alarm when the value falls faster than this (a positive number), units per minute.
    #[serde(default)]
    pub max_fall_per_min: Option<f64>,
    /// The rate is measured over about this long, which filters noise.
    pub window_ms: Millis,
    pub priority: Priority,
    #[serde(default)]
    pub on_delay_ms: Millis,
    #[serde(default)]
    pub off_delay_ms: Millis,
}

impl Default for RateRule {
    fn default() -> Self {
        RateRule {
            max_rise_per_min: None,
            max_fall_per_min: None,
            window_ms: 60_000,
            priority: Priority::Medium,
            on_delay_ms: 0,
            off_delay_ms: 0,
        }
    }
}

/// Deviation alarm between two redundant sensors of the same quantity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DeviationRule {
    /// The redundant sensor compared with this point.
    pub other: PointId,
    /// Alarm when `|this - other| >= max_difference`, engineering units.
    pub max_difference: f64,
    /// Clears below `max_difference - deadband`.
    #[serde(default)]
    pub deadband: f64,
    pub priority: Priority,
    #[serde(default)]
    pub on_delay_ms: Millis,
    #[serde(default)]
    pub off_delay_ms: Millis,
}

impl Default for DeviationRule {
    fn default() -> Self {
        DeviationRule {
            other: PointId(0),
            max_difference: f64::INFINITY,
            deadband: 0.0,
            priority: Priority::Medium,
            on_delay_ms: 0,
            off_delay_ms: 0,
        }
    }
}

/// Fault alarm on bad signal quality (sensor fault, NAMUR NE43 failure current, device
/// exception, undecodable value). Communication loss is the device's alarm, not this one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    pub priority: Priority,
    /// The fault must persist this long; a single corrupt frame is not worth an alarm.
    #[serde(default)]
    pub on_delay_ms: Millis,
}

impl Default for FaultRule {
    fn default() -> Self {
        FaultRule {
            priority: Priority::Medium,
            on_delay_ms: 0,
        }
    }
}

/// Data-interruption alarm: no fresh reading (anything but `stale` or `comm_lost`) for a while.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DataInterruptionRule {
    pub after_ms: Millis,
    pub priority: Priority,
}

impl Default for DataInterruptionRule {
    fn default() -> Self {
        DataInterruptionRule {
            after_ms: 60_000,
            priority: Priority::Medium,
        }
    }
}

/// What the engine watches for one point. The point's id is its index in [`EngineConfig::points`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PointRules {
    /// The device the point is read from, if any (for communication loss).
    pub device: Option<DeviceId>,
    // Limits, rate, deviation and the suppression condition are boxed: most points have few of
    // them, and inline they made every point's rules several hundred bytes (megabytes in a
    // large plant).
    pub limits: Option<Box<LimitRule>>,
    /// Measuring range; needed for deadbands in percent of span.
    #[serde(default)]
    pub span: Option<Span>,
    #[serde(default)]
    pub rate: Option<Box<RateRule>>,
    #[serde(default)]
    pub deviation: Option<Box<DeviationRule>>,
    #[serde(default)]
    pub fault: Option<FaultRule>,
    #[serde(default)]
    pub data_interruption: Option<DataInterruptionRule>,
    /// Suppress this point's process alarms by design while this condition holds (for example
    /// `!FURNACE-1-RUN` on a cooling-water temperature).
    #[serde(default)]
    pub suppress_when: Option<Box<Condition>>,
}

/// What the engine watches for one device. The device's id is its index in [`EngineConfig::devices`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRules {
    /// Raise a communication-loss alarm when the device has not answered for this long.
    pub comm_loss_after_ms: Millis,
    pub comm_loss_priority: Priority,
}

impl Default for DeviceRules {
    fn default() -> Self {
        DeviceRules {
            comm_loss_after_ms: 30_000,
            comm_loss_priority: Priority::High,
        }
    }
}

/// An alarm on a condition over several points, compiled from text such as
/// `NH3-101 > 28 && !FAN-101` (see [`crate::condition`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConditionRule {
    /// Shown to operators, e.g. "Ammonia leak with exhaust fan stopped".
    pub name: String,
    pub when: Condition,
    pub priority: Priority,
    #[serde(default)]
    pub on_delay_ms: Millis,
    #[serde(default)]
    pub off_delay_ms: Millis,
    #[serde(default)]
    pub realarm_ms: Option<Millis>,
    #[serde(default)]
    pub latch: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineConfig {
    pub points: Vec<PointRules>,
    pub devices: Vec<DeviceRules>,
    /// Condition alarms; the id of each is its index here.
    #[serde(default)]
    pub conditions: Vec<ConditionRule>,
    /// The longest an operator may shelve an alarm.
    #[serde(default = "default_max_shelve_ms")]
    pub max_shelve_ms: Millis,
    /// The longest a point or device may be taken out of service in one go.
    #[serde(default = "default_max_out_of_service_ms")]
    pub max_out_of_service_ms: Millis,
}

const fn default_max_shelve_ms() -> Millis {
    DEFAULT_MAX_SHELVE_MS
}

const fn default_max_out_of_service_ms() -> Millis {
    DEFAULT_MAX_OUT_OF_SERVICE_MS
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            points: Vec::new(),
            devices: Vec::new(),
            conditions: Vec::new(),
            max_shelve_ms: DEFAULT_MAX_SHELVE_MS,
            max_out_of_service_ms: DEFAULT_MAX_OUT_OF_SERVICE_MS,
        }
    }
}

/// Maps limit levels to priorities, so a site sets its policy once and packs follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriorityMap {
    pub low_low: Priority,
    pub low: Priority,
    pub high: Priority,
    pub high_high: Priority,
}

impl PriorityMap {
    /// Gas detection: a first-level gas alarm already calls for action, the second for
    /// evacuation and emergency response.
    pub const GAS: PriorityMap = PriorityMap {
        low_low: Priority::Critical,
        low: Priority::High,
        high: Priority::High,
        high_high: Priority::Critical,
    };

    pub const fn priority(&self, level: Level) -> Priority {
        match level {
            Level::LowLow => self.low_low,
            Level::Low => self.low,
            Level::High => self.high,
            Level::HighHigh => self.high_high,
        }
    }
}

impl Default for PriorityMap {
    /// Process alarms: first level medium, second level high; EEMUA 191 wants most alarms at
    /// the lower priorities, and "critical" reserved for safety.
    fn default() -> Self {
        PriorityMap {
            low_low: Priority::High,
            low: Priority::Medium,
            high: Priority::Medium,
            high_high: Priority::High,
        }
    }
}

/// One problem found by [`EngineConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Where, e.g. `points[3].limits.levels[1]`.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl EngineConfig {
    /// Every problem in the configuration, each with its path. Empty when it is sound.
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        let mut issue = |path: String, message: String| issues.push(ConfigIssue { path, message });
        let n_points = self.points.len();
        for (i, p) in self.points.iter().enumerate() {
            if let Some(d) = p.device {
                if d.0 as usize >= self.devices.len() {
                    issue(
                        format!("points[{i}].device"),
                        format!("device {} does not exist", d.0),
                    );
                }
            }
            if let Some(span) = p.span {
                if !span.width().is_finite() || span.width() <= 0.0 {
                    issue(format!("points[{i}].span"), "high must be above low".into());
                }
            }
            if let Some(l) = &p.limits {
                validate_limits(i, l, p.span, &mut issue);
            }
            if let Some(r) = &p.rate {
                if r.max_rise_per_min.is_none() && r.max_fall_per_min.is_none() {
                    issue(
                        format!("points[{i}].rate"),
                        "set max_rise_per_min, max_fall_per_min or both".into(),
                    );
                }
                if r.window_ms <= 0 {
                    issue(
                        format!("points[{i}].rate.window_ms"),
                        "must be positive".into(),
                    );
                }
            }
            if let Some(d) = &p.deviation {
                if d.other.0 as usize >= n_points || d.other.0 as usize == i {
                    issue(
                        format!("points[{i}].deviation.other"),
                        "must name another existing point".into(),
                    );
                }
                let bad_max = !d.max_difference.is_finite() || d.max_difference <= 0.0;
                if bad_max || d.deadband < 0.0 || d.deadband >= d.max_difference {
                    issue(
                        format!("points[{i}].deviation"),
                        "max_difference must be positive and the deadband below it".into(),
                    );
                }
            }
            if let Some(d) = &p.data_interruption {
                if d.after_ms <= 0 {
                    issue(
                        format!("points[{i}].data_interruption.after_ms"),
                        "must be positive".into(),
                    );
                }
            }
            if let Some(c) = &p.suppress_when {
                validate_condition_points(
                    &format!("points[{i}].suppress_when"),
                    c,
                    n_points,
                    &mut issue,
                );
            }
        }
        for (i, d) in self.devices.iter().enumerate() {
            if d.comm_loss_after_ms <= 0 {
                issue(
                    format!("devices[{i}].comm_loss_after_ms"),
                    "must be positive".into(),
                );
            }
        }
        for (i, c) in self.conditions.iter().enumerate() {
            validate_condition_points(
                &format!("conditions[{i}].when"),
                &c.when,
                n_points,
                &mut issue,
            );
            if c.on_delay_ms < 0 || c.off_delay_ms < 0 {
                issue(
                    format!("conditions[{i}]"),
                    "delays must not be negative".into(),
                );
            }
        }
        if self.max_shelve_ms <= 0 {
            issue("max_shelve_ms".into(), "must be positive".into());
        }
        if self.max_out_of_service_ms <= 0 {
            issue("max_out_of_service_ms".into(), "must be positive".into());
        }
        issues
    }
}

fn validate_limits(
    i: usize,
    l: &LimitRule,
    span: Option<Span>,
    issue: &mut impl FnMut(String, String),
) {
    for (j, level) in l.levels.iter().enumerate() {
        if !level.setpoint.is_finite() {
            issue(
                format!("points[{i}].limits.levels[{j}].setpoint"),
                "must be a finite number".into(),
            );
        }
        if l.levels[..j].iter().any(|other| other.level == level.level) {
            issue(
                format!("points[{i}].limits.levels[{j}]"),
                format!("level {} appears twice", level.level.as_str()),
            );
        }
    }
    let order = [Level::LowLow, Level::Low, Level::High, Level::HighHigh];
    let present: Vec<(Level, f64)> = order
        .iter()
        .filter_map(|lv| l.setpoint(*lv).map(|s| (*lv, s)))
        .collect();
    for pair in present.windows(2) {
        if pair[0].1 >= pair[1].1 {
            issue(
                format!("points[{i}].limits"),
                format!(
                    "setpoints must rise LL < L < H < HH, but {} = {} is not below {} = {}",
                    pair[0].0.as_str(),
                    pair[0].1,
                    pair[1].0.as_str(),
                    pair[1].1
                ),
            );
        }
    }
    if l.deadband.is_nan() || l.deadband < 0.0 {
        issue(
            format!("points[{i}].limits.deadband"),
            "must not be negative".into(),
        );
    }
    if let Some(pct) = l.deadband_pct {
        if !(0.0..=50.0).contains(&pct) {
            issue(
                format!("points[{i}].limits.deadband_pct"),
                "must be between 0 and 50".into(),
            );
        }
        if span.is_none() {
            issue(
                format!("points[{i}].limits.deadband_pct"),
                "needs the point's span; the deadband in engineering units is used instead".into(),
            );
        }
    }
    if l.on_delay_ms < 0 || l.off_delay_ms < 0 {
        issue(
            format!("points[{i}].limits"),
            "delays must not be negative".into(),
        );
    }
    if l.realarm_ms.is_some_and(|r| r <= 0) {
        issue(
            format!("points[{i}].limits.realarm_ms"),
            "must be positive".into(),
        );
    }
}

fn validate_condition_points(
    path: &str,
    c: &Condition,
    n_points: usize,
    issue: &mut impl FnMut(String, String),
) {
    for p in c.points() {
        if p.0 as usize >= n_points {
            issue(
                path.to_owned(),
                format!("refers to point {} which does not exist", p.0),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(level: Level, setpoint: f64) -> LimitLevel {
        LimitLevel {
            level,
            setpoint,
            priority: Priority::Medium,
        }
    }

    #[test]
    fn defaults_allow_struct_update_syntax() {
        let p = PointRules {
            device: Some(DeviceId(0)),
            limits: None,
            ..Default::default()
        };
        assert!(p.rate.is_none());
        let c = EngineConfig {
            points: vec![p],
            devices: vec![DeviceRules::default()],
            ..Default::default()
        };
        assert_eq!(c.max_shelve_ms, DEFAULT_MAX_SHELVE_MS);
        assert!(c.validate().is_empty(), "{:?}", c.validate());
    }

    #[test]
    fn first_engine_configuration_still_deserialises() {
        let json = r#"{"points":[{"device":null,"limits":{"levels":[{"level":"H","setpoint":25.0,"priority":"high"}],
            "deadband":1.0,"on_delay_ms":0,"off_delay_ms":0}}],"devices":[]}"#;
        let c: EngineConfig = serde_json::from_str(json).unwrap();
        assert_eq!(c.points[0].limits.as_ref().unwrap().deadband, 1.0);
        assert_eq!(c.max_out_of_service_ms, DEFAULT_MAX_OUT_OF_SERVICE_MS);
    }

    #[test]
    fn deadband_in_percent_of_span_replaces_units() {
        let rule = LimitRule {
            deadband: 1.0,
            deadband_pct: Some(2.0),
            ..Default::default()
        };
        assert_eq!(
            rule.effective_deadband(Some(Span {
                low: 0.0,
                high: 200.0
            })),
            4.0
        );
        assert_eq!(rule.effective_deadband(None), 1.0);
    }

    #[test]
    fn validation_names_the_path() {
        let limits = LimitRule {
            levels: vec![level(Level::High, 50.0), level(Level::HighHigh, 40.0)],
            deadband_pct: Some(5.0),
            ..Default::default()
        };
        let c = EngineConfig {
            points: vec![PointRules {
                device: Some(DeviceId(9)),
                limits: Some(Box::new(limits)),
                ..Default::default()
            }],
            ..Default::default()
        };
        let issues: Vec<String> = c.validate().iter().map(ToString::to_string).collect();
        assert!(
            issues.iter().any(|i| i.starts_with("points[0].device:")),
            "{issues:?}"
        );
        assert!(
            issues
                .iter()
                .any(|i| i.contains("H = 50 is not below HH = 40")),
            "{issues:?}"
        );
        assert!(
            issues
                .iter()
                .any(|i| i.starts_with("points[0].limits.deadband_pct:")),
            "{issues:?}"
        );
    }

    #[test]
    fn priority_map() {
        assert_eq!(
            PriorityMap::default().priority(Level::HighHigh),
            Priority::High
        );
        assert_eq!(
            PriorityMap::GAS.priority(Level::HighHigh),
            Priority::Critical
        );
    }
}
