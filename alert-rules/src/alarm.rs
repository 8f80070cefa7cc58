//! What an alarm is: its identity, its ISA-18.2 state, and the events its life produces.

use serde::{Deserialize, Serialize};

use crate::reading::{DeviceId, Millis, PointId};

/// Engine-assigned alarm number, unique for the life of a store (the gateway seeds the engine
/// with the next free number on start).
pub type AlarmId = u64;

/// Index of a condition alarm in [`crate::EngineConfig::conditions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConditionId(pub u32);

/// Which level of a limit rule. Gas first/second level map to `High`/`HighHigh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Level {
    #[serde(rename = "LL")]
    LowLow,
    #[serde(rename = "L")]
    Low,
    #[serde(rename = "H")]
    High,
    #[serde(rename = "HH")]
    HighHigh,
}

impl Level {
    pub const fn as_str(self) -> &'static str {
        match self {
            Level::LowLow => "LL",
            Level::Low => "L",
            Level::High => "H",
            Level::HighHigh => "HH",
        }
    }

    /// High levels alarm above the setpoint, low levels below it.
    pub const fn is_high(self) -> bool {
        matches!(self, Level::High | Level::HighHigh)
    }

    /// Second-level (LL, HH) rather than first-level (L, H).
    pub const fn is_second(self) -> bool {
        matches!(self, Level::LowLow | Level::HighHigh)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    Medium,
    High,
    Critical,
}

impl Priority {
    /// Every priority, lowest first (the index is [`Priority::rank`]).
    pub const ALL: [Priority; 4] = [
        Priority::Low,
        Priority::Medium,
        Priority::High,
        Priority::Critical,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Medium => "medium",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }

    /// 0 for low up to 3 for critical; an index into per-priority arrays.
    pub const fn rank(self) -> usize {
        match self {
            Priority::Low => 0,
            Priority::Medium => 1,
            Priority::High => 2,
            Priority::Critical => 3,
        }
    }
}

/// What condition an alarm stands for. Each configured source has at most one open alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AlarmSource {
    /// A process limit of a point was crossed.
    Limit { point: PointId, level: Level },
    /// A device stopped answering for longer than its communication-loss time.
    CommLoss { device: DeviceId },
    /// A point's value changed faster than its rate-of-change rule allows.
    RateOfChange { point: PointId },
    /// Two redundant sensors (`point` and `other`) disagree by more than allowed.
    Deviation { point: PointId, other: PointId },
    /// A point's signal is bad: sensor fault, NAMUR failure current, device exception or an
    /// undecodable value. A fault alarm, separate from the point's process alarms.
    Fault { point: PointId },
    /// No fresh reading of a point arrived for longer than its data-interruption time.
    DataInterruption { point: PointId },
    /// A configured condition over several points holds (for example ammonia above the first
    /// level while the exhaust fan is not running).
    Condition { condition: ConditionId },
    /// Sentinel itself is losing part of the record it must keep or forward (see
    /// [`SystemCheck`]). Not a process alarm: it belongs to no point and no risk unit.
    System { check: SystemCheck },
}

/// A fault of Sentinel itself that costs the plant part of its record: the 30 days of history
/// the rules require, or what must reach the upstream server. Each is an alarm, so that someone
/// is told, rather than only a log line and a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SystemCheck {
    /// The upstream time-series server refused a batch for good (a 4xx other than 413 and 429);
    /// the batch went to the dead-letter table. Clears when upstream accepts a batch again.
    UpstreamRejected,
    /// The embedded store reached its disk budget and dropped its oldest readings, so history
    /// is shorter than its retention. Clears when the store is back well under its budget.
    DiskBudget,
    /// The embedded store cannot commit (a full disk, a failing device): readings are being
    /// dropped, and alarm records wait in memory, unannounced, until it can. Clears with the
    /// first commit that succeeds.
    StoreFailing,
}

impl SystemCheck {
    pub const ALL: [SystemCheck; 3] = [
        SystemCheck::UpstreamRejected,
        SystemCheck::DiskBudget,
        SystemCheck::StoreFailing,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            SystemCheck::UpstreamRejected => "upstream_rejected",
            SystemCheck::DiskBudget => "disk_budget",
            SystemCheck::StoreFailing => "store_failing",
        }
    }

    pub fn from_name(name: &str) -> Option<SystemCheck> {
        SystemCheck::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// Index into per-check arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Losing records the law requires is urgent but not a process danger: high, not critical.
    pub const fn priority(self) -> Priority {
        Priority::High
    }
}

impl AlarmSource {
    /// The alarm class name used in events and the API.
    pub const fn kind(&self) -> &'static str {
        match self {
            AlarmSource::Limit { .. } => "limit",
            AlarmSource::CommLoss { .. } => "comm_loss",
            AlarmSource::RateOfChange { .. } => "rate_of_change",
            AlarmSource::Deviation { .. } => "deviation",
            AlarmSource::Fault { .. } => "fault",
            AlarmSource::DataInterruption { .. } => "data_interruption",
            AlarmSource::Condition { .. } => "condition",
            AlarmSource::System { .. } => "system",
        }
    }

    /// The point the alarm belongs to, if it belongs to one (for a deviation, the point that
    /// carries the rule).
    pub const fn point(&self) -> Option<PointId> {
        match *self {
            AlarmSource::Limit { point, .. }
            | AlarmSource::RateOfChange { point }
            | AlarmSource::Deviation { point, .. }
            | AlarmSource::Fault { point }
            | AlarmSource::DataInterruption { point } => Some(point),
            AlarmSource::CommLoss { .. }
            | AlarmSource::Condition { .. }
            | AlarmSource::System { .. } => None,
        }
    }

    /// The device of a communication-loss alarm.
    pub const fn device(&self) -> Option<DeviceId> {
        match *self {
            AlarmSource::CommLoss { device } => Some(device),
            _ => None,
        }
    }

    /// The condition of a condition alarm.
    pub const fn condition(&self) -> Option<ConditionId> {
        match *self {
            AlarmSource::Condition { condition } => Some(condition),
            _ => None,
        }
    }

    /// The level of a limit alarm.
    pub const fn level(&self) -> Option<Level> {
        match *self {
            AlarmSource::Limit { level, .. } => Some(level),
            _ => None,
        }
    }

    /// Process alarms judge the plant (limits, rates, deviations, conditions); the others judge
    /// the measurement chain (faults, silence). Suppression by design applies to process alarms
    /// only: a stopped furnace makes its temperatures meaningless, not its broken sensors fine.
    pub const fn is_process(&self) -> bool {
        matches!(
            self,
            AlarmSource::Limit { .. }
                | AlarmSource::RateOfChange { .. }
                | AlarmSource::Deviation { .. }
                | AlarmSource::Condition { .. }
        )
    }
}

impl std::fmt::Display for AlarmSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AlarmSource::Limit { point, level } => {
                write!(f, "limit {} of point {}", level.as_str(), point.0)
            }
            AlarmSource::CommLoss { device } => {
                write!(f, "communication loss of device {}", device.0)
            }
            AlarmSource::RateOfChange { point } => write!(f, "rate of change of point {}", point.0),
            AlarmSource::Deviation { point, other } => {
                write!(f, "deviation of point {} from point {}", point.0, other.0)
            }
            AlarmSource::Fault { point } => write!(f, "fault of point {}", point.0),
            AlarmSource::DataInterruption { point } => {
                write!(f, "data interruption of point {}", point.0)
            }
            AlarmSource::Condition { condition } => write!(f, "condition {}", condition.0),
            AlarmSource::System { check } => write!(f, "system check {}", check.as_str()),
        }
    }
}

/// ISA-18.2 / IEC 62682 alarm states.
///
/// `Shelved`, `SuppressedByDesign` and `OutOfService` are the hidden states: an alarm in them is
/// recorded but never announced. An alarm is in a hidden state only while its condition is
/// active; when the condition clears under a hidden state, the alarm ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmState {
    Normal,
    ActiveUnacked,
    ActiveAcked,
    /// Returned to normal before anyone acknowledged it.
    ReturnedUnacked,
    /// The condition returned to normal but the alarm latches: it stands until an operator
    /// resets it (see [`crate::LimitRule::latch`]). `Alarm::acked_at` tells whether it was
    /// acknowledged.
    Latched,
    /// An operator shelved it for a limited time, with a reason.
    Shelved,
    /// Suppressed by design: a plant-state condition (for example the furnace is stopped)
    /// makes the alarm meaningless.
    SuppressedByDesign,
    /// Taken out of service for maintenance, by someone, with a reason, until a set time.
    OutOfService,
}

impl AlarmState {
    pub const fn as_str(self) -> &'static str {
        match self {
            AlarmState::Normal => "normal",
            AlarmState::ActiveUnacked => "active_unacked",
            AlarmState::ActiveAcked => "active_acked",
            AlarmState::ReturnedUnacked => "returned_unacked",
            AlarmState::Latched => "latched",
            AlarmState::Shelved => "shelved",
            AlarmState::SuppressedByDesign => "suppressed_by_design",
            AlarmState::OutOfService => "out_of_service",
        }
    }

    /// Active and announced. Hidden alarms are not active in this sense even while their
    /// condition holds.
    pub const fn is_active(self) -> bool {
        matches!(self, AlarmState::ActiveUnacked | AlarmState::ActiveAcked)
    }

    /// Shelved, suppressed by design or out of service: recorded, never announced.
    pub const fn is_hidden(self) -> bool {
        matches!(
            self,
            AlarmState::Shelved | AlarmState::SuppressedByDesign | AlarmState::OutOfService
        )
    }

    /// Rank for "worst state" views: unacknowledged active first, hidden and normal last.
    pub const fn severity(self) -> u8 {
        match self {
            AlarmState::Normal => 0,
            AlarmState::OutOfService => 1,
            AlarmState::SuppressedByDesign => 2,
            AlarmState::Shelved => 3,
            AlarmState::ReturnedUnacked => 4,
            AlarmState::Latched => 5,
            AlarmState::ActiveAcked => 6,
            AlarmState::ActiveUnacked => 7,
        }
    }
}

/// What happened to an alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    /// The condition became active (after its on-delay).
    Raised,
    Acknowledged,
    /// The condition returned to normal (after its off-delay). A latching alarm goes to
    /// [`AlarmState::Latched`] instead of ending.
    Cleared,
    /// An operator reset a latched alarm.
    Reset,
    Shelved,
    /// Unshelved by an operator or because the shelving time ran out.
    Unshelved,
    /// Suppressed by design (plant-state condition) or by an engineer.
    Suppressed,
    Unsuppressed,
    RemovedFromService,
    ReturnedToService,
    /// Acknowledged but still active after the rule's re-alarm time: announced again.
    Realarmed,
}

impl Transition {
    pub const fn as_str(self) -> &'static str {
        match self {
            Transition::Raised => "raised",
            Transition::Acknowledged => "acknowledged",
            Transition::Cleared => "cleared",
            Transition::Reset => "reset",
            Transition::Shelved => "shelved",
            Transition::Unshelved => "unshelved",
            Transition::Suppressed => "suppressed",
            Transition::Unsuppressed => "unsuppressed",
            Transition::RemovedFromService => "removed_from_service",
            Transition::ReturnedToService => "returned_to_service",
            Transition::Realarmed => "realarmed",
        }
    }
}

/// One alarm occurrence, from raise until it is both cleared and acknowledged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    pub id: AlarmId,
    pub source: AlarmSource,
    pub state: AlarmState,
    pub priority: Priority,
    /// The value that raised the alarm, in engineering units (limit and deviation alarms: the
    /// value or difference; rate alarms: units per minute).
    pub value: Option<f64>,
    /// The setpoint crossed.
    pub limit: Option<f64>,
    pub raised_at: Millis,
    pub acked_at: Option<Millis>,
    pub acked_by: Option<String>,
    pub cleared_at: Option<Millis>,
}

/// One transition of one alarm, with a snapshot of the alarm after it. The unit of the journal,
/// the outbox and every notification. `(alarm.id, seq)` identifies the event for idempotency.
///
/// Every event belongs in the journal; only those for which [`AlarmEvent::announce`] is true
/// may be pushed to people (notifications, horns, escalation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmEvent {
    /// 1 for the raise, then counting up per transition of this alarm.
    pub seq: u32,
    pub transition: Transition,
    /// When the transition happened (the `now` passed into the engine).
    pub at: Millis,
    /// Who caused it (the operator of a command; `None` for the engine itself).
    pub by: Option<String>,
    /// Why: the operator's reason, or the engine's (for example `"shelving time ran out"`).
    pub comment: Option<String>,
    pub alarm: Alarm,
}

impl AlarmEvent {
    /// Whether this event asks for an operator's attention now: the alarm became active and
    /// unacknowledged, by a raise, a re-alarm, or the end of shelving, suppression or
    /// maintenance while its condition still holds. Events of hidden alarms are never announced.
    pub fn announce(&self) -> bool {
        self.alarm.state == AlarmState::ActiveUnacked
            && matches!(
                self.transition,
                Transition::Raised
                    | Transition::Realarmed
                    | Transition::Unshelved
                    | Transition::Unsuppressed
                    | Transition::ReturnedToService
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_names_of_the_first_engine_are_kept() {
        let limit = AlarmSource::Limit {
            point: PointId(3),
            level: Level::HighHigh,
        };
        assert_eq!(
            serde_json::to_string(&limit).unwrap(),
            r#"{"kind":"limit","point":3,"level":"HH"}"#
        );
        let comm = AlarmSource::CommLoss {
            device: DeviceId(1),
        };
        assert_eq!(
            serde_json::to_string(&comm).unwrap(),
            r#"{"kind":"comm_loss","device":1}"#
        );
        for (state, name) in [
            (AlarmState::Normal, "normal"),
            (AlarmState::ActiveUnacked, "active_unacked"),
            (AlarmState::ActiveAcked, "active_acked"),
            (AlarmState::ReturnedUnacked, "returned_unacked"),
        ] {
            assert_eq!(
                serde_json::to_string(&state).unwrap(),
                format!("\"{name}\"")
            );
            assert_eq!(state.as_str(), name);
        }
        for (t, name) in [
            (Transition::Raised, "raised"),
            (Transition::Acknowledged, "acknowledged"),
            (Transition::Cleared, "cleared"),
        ] {
            assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{name}\""));
        }
    }

    #[test]
    fn serde_names_match_as_str() {
        let states = [
            AlarmState::Latched,
            AlarmState::Shelved,
            AlarmState::SuppressedByDesign,
            AlarmState::OutOfService,
        ];
        for s in states {
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        let transitions = [
            Transition::Reset,
            Transition::Shelved,
            Transition::Unshelved,
            Transition::Suppressed,
            Transition::Unsuppressed,
            Transition::RemovedFromService,
            Transition::ReturnedToService,
            Transition::Realarmed,
        ];
        for t in transitions {
            assert_eq!(
                serde_json::to_string(&t).unwrap(),
                format!("\"{}\"", t.as_str())
            );
        }
        let sources = [
            AlarmSource::RateOfChange { point: PointId(1) },
            AlarmSource::Deviation {
                point: PointId(1),
                other: PointId(2),
            },
            AlarmSource::Fault { point: PointId(1) },
            AlarmSource::DataInterruption { point: PointId(1) },
            AlarmSource::Condition {
                condition: ConditionId(0),
            },
        ];
        for s in sources {
            let json = serde_json::to_value(s).unwrap();
            assert_eq!(json["kind"], s.kind());
            let back: AlarmSource = serde_json::from_value(json).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn source_helpers() {
        let d = AlarmSource::Deviation {
            point: PointId(4),
            other: PointId(5),
        };
        assert_eq!(d.point(), Some(PointId(4)));
        assert_eq!(d.device(), None);
        assert!(d.is_process());
        let c = AlarmSource::CommLoss {
            device: DeviceId(2),
        };
        assert_eq!(c.device(), Some(DeviceId(2)));
        assert_eq!(c.point(), None);
        assert!(!c.is_process());
        assert!(!AlarmSource::Fault { point: PointId(1) }.is_process());
        let k = AlarmSource::Condition {
            condition: ConditionId(7),
        };
        assert_eq!(k.condition(), Some(ConditionId(7)));
        assert_eq!(
            AlarmSource::Limit {
                point: PointId(0),
                level: Level::Low
            }
            .level(),
            Some(Level::Low)
        );
    }
}
