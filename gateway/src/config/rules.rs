//! The alarm-rule part of the configuration: per-point rules beyond limits, condition alarms
//! over several points, and risk units for the four-colour map. Turned into the engine's
//! `EngineConfig` by `Plant::engine_config`.

use alert_rules::{Colour, Priority};
use serde::Deserialize;

const fn medium() -> Priority {
    Priority::Medium
}
const fn yes() -> bool {
    true
}
const fn one_minute_ms() -> u64 {
    60_000
}
const fn five_seconds_ms() -> u64 {
    5_000
}
const fn ten_minutes_secs() -> u64 {
    600
}

/// Rate-of-change alarm of a point.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Alarm when the value rises faster than this, engineering units per minute.
    #[serde(default)]
    pub max_rise_per_min: Option<f64>,
    /// Alarm when the value falls faster than this (a positive number), units per minute.
    #[serde(default)]
    pub max_fall_per_min: Option<f64>,
    /// The rate is measured over about this long, which filters noise.
    #[serde(default = "one_minute_ms")]
    pub window_ms: u64,
    #[serde(default = "medium")]
    pub priority: Priority,
    #[serde(default)]
    pub on_delay_ms: u64,
    #[serde(default)]
    pub off_delay_ms: u64,
}

/// Deviation alarm between this point and a redundant sensor of the same quantity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviationConfig {
    /// Tag of the redundant sensor.
    pub other: String,
    /// Alarm when the two differ by at least this much, engineering units.
    pub max_difference: f64,
    #[serde(default)]
    pub deadband: f64,
    #[serde(default = "medium")]
    pub priority: Priority,
    #[serde(default)]
    pub on_delay_ms: u64,
    #[serde(default)]
    pub off_delay_ms: u64,
}

/// Fault alarm on bad signal quality (sensor fault, NAMUR failure current, device exception,
/// undecodable value). On for every point unless disabled: a broken sensor is not a quiet one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "medium")]
    pub priority: Priority,
    /// The fault must persist this long; one corrupt frame is not worth an alarm.
    #[serde(default = "five_seconds_ms")]
    pub on_delay_ms: u64,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            enabled: true,
            priority: Priority::Medium,
            on_delay_ms: five_seconds_ms(),
        }
    }
}

/// An alarm on a condition over several points.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionConfig {
    /// Unique; shown to operators, e.g. "Ammonia leak with exhaust fan stopped".
    pub name: String,
    /// The condition, e.g. `NH3-101 >= 28 && !FAN-101` (see docs/rules.md).
    pub when: String,
    #[serde(default = "medium")]
    pub priority: Priority,
    /// The plant area the alarm belongs to.
    #[serde(default)]
    pub area: String,
    #[serde(default)]
    pub on_delay_ms: u64,
    #[serde(default)]
    pub off_delay_ms: u64,
    #[serde(default)]
    pub realarm_ms: Option<u64>,
    #[serde(default)]
    pub latch: bool,
}

/// A risk unit of the four-colour map: a place or installation with an assessed colour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskUnitSettings {
    /// Short unique identifier.
    pub id: String,
    pub name: String,
    /// The assessed (static) colour (LEC or risk matrix).
    pub colour: Colour,
    /// Alarms of these points raise the unit's live colour...
    #[serde(default)]
    pub points: Vec<String>,
    /// ...and of every point in these areas...
    #[serde(default)]
    pub areas: Vec<String>,
    /// ...and communication loss of these devices...
    #[serde(default)]
    pub devices: Vec<String>,
    /// ...and these condition alarms (by name).
    #[serde(default)]
    pub conditions: Vec<String>,
    /// After the last alarm returns, the live colour holds this long before falling back.
    #[serde(default = "ten_minutes_secs")]
    pub hold_secs: u64,
    /// Where the unit is: geographic coordinates...
    #[serde(default)]
    pub latitude: Option<f64>,
    #[serde(default)]
    pub longitude: Option<f64>,
    /// ...or a position on the plant-layout image, in percent of its width and height.
    #[serde(default)]
    pub x_pct: Option<f64>,
    #[serde(default)]
    pub y_pct: Option<f64>,
}
