//! Sentinel's domain core: what a reading is, what an alarm is, the engine that turns readings
//! into alarm events, the sector rule packs that give its defaults, the four-colour risk of
//! units and sites, and the alarm-load figures that say whether operators can cope.
//!
//! Pure logic. No I/O, no async runtime, no clock reads: every call takes `now` as an argument,
//! so every behaviour is testable synchronously with explicit time.

pub mod alarm;
pub mod condition;
pub mod engine;
pub mod kpi;
pub mod packs;
pub mod reading;
pub mod risk;
pub mod rules;

pub use alarm::{
    Alarm, AlarmEvent, AlarmId, AlarmSource, AlarmState, ConditionId, Level, Priority, SystemCheck,
    Transition,
};
pub use condition::{Condition, ParseError, Truth};
pub use engine::{CommandError, Engine, Mode, ModeEvent, ModeRecord, PointAlarmSummary, Scope};
pub use reading::{DeviceId, Millis, PointId, Quality, QualityClass, Reading};
pub use risk::{Colour, ColourChange, RiskMap, RiskUnit, RiskUnitConfig};
pub use rules::{
    ConditionRule, ConfigIssue, DataInterruptionRule, DeviationRule, DeviceRules, EngineConfig,
    FaultRule, LimitLevel, LimitRule, PointRules, PriorityMap, RateRule, Span,
};
