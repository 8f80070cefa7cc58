//! Sentinel's domain core: what a reading is, what an alarm is, and the engine that turns
//! readings into alarm events.
//!
//! Pure logic. No I/O, no async runtime, no clock reads: every call takes `now` as an argument,
//! so every behaviour is testable synchronously with explicit time.

pub mod alarm;
pub mod engine;
pub mod reading;
pub mod rules;

pub use alarm::{Alarm, AlarmEvent, AlarmId, AlarmSource, AlarmState, Level, Priority, Transition};
pub use engine::{CommandError, Engine};
pub use reading::{DeviceId, Millis, PointId, Quality, QualityClass, Reading};
pub use rules::{DeviceRules, EngineConfig, LimitLevel, LimitRule, PointRules};
