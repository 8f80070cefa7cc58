//! What a measurement is: a value, when it was taken, and how far it can be trusted.

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch. Every function in this crate takes time as an argument
/// of this type; nothing here reads a clock.
pub type Millis = i64;

/// Index of a point in the engine's configuration (dense, assigned at load time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PointId(pub u32);

/// Index of a device (a Modbus endpoint+unit, an MQTT source) in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeviceId(pub u32);

/// How far a value can be trusted. Travels with every value, into the store and the API.
///
/// Three classes, after OPC UA and NAMUR NE43: good; uncertain (a value exists but is
/// doubtful); bad (no usable value: the `value` beside it must not be used for judgement).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    Good,
    /// The source went quiet for longer than expected; the value is the last one received.
    Stale,
    /// A 4–20 mA signal in the NAMUR saturation bands (3.6–3.8 mA, 20.5–21 mA).
    Saturated,
    /// The device reports warm-up, calibration or a similar non-measuring state.
    NotMeasuring,
    /// The device does not answer (timeout, connection refused or lost).
    CommLost,
    /// The device answered the request with a Modbus exception (or an equivalent error).
    DeviceException,
    /// The sensor reports a fault, or the signal is outside the NAMUR failure limits.
    SensorFault,
    /// The raw value could not be decoded (NaN, infinity, wrong type).
    BadValue,
}

/// The three quality classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QualityClass {
    Good,
    Uncertain,
    Bad,
}

impl Quality {
    /// Every quality, in code order (see [`Quality::code`]).
    pub const ALL: [Quality; 8] = [
        Quality::Good,
        Quality::Stale,
        Quality::Saturated,
        Quality::NotMeasuring,
        Quality::CommLost,
        Quality::DeviceException,
        Quality::SensorFault,
        Quality::BadValue,
    ];

    pub const fn class(self) -> QualityClass {
        match self {
            Quality::Good => QualityClass::Good,
            Quality::Stale | Quality::Saturated | Quality::NotMeasuring => QualityClass::Uncertain,
            Quality::CommLost
            | Quality::DeviceException
            | Quality::SensorFault
            | Quality::BadValue => QualityClass::Bad,
        }
    }

    pub const fn is_good(self) -> bool {
        matches!(self, Quality::Good)
    }

    /// Whether a process alarm may be judged on this value. Saturated and stale values still
    /// carry information (a saturated-high gas reading is *more* alarming, not less); bad ones don't.
    pub const fn is_usable(self) -> bool {
        !matches!(self.class(), QualityClass::Bad)
    }

    /// Stable small integer for storage. Never renumber.
    pub const fn code(self) -> u8 {
        match self {
            Quality::Good => 0,
            Quality::Stale => 1,
            Quality::Saturated => 2,
            Quality::NotMeasuring => 3,
            Quality::CommLost => 4,
            Quality::DeviceException => 5,
            Quality::SensorFault => 6,
            Quality::BadValue => 7,
        }
    }

    pub fn from_code(code: u8) -> Option<Quality> {
        Quality::ALL.get(usize::from(code)).copied()
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::Stale => "stale",
            Quality::Saturated => "saturated",
            Quality::NotMeasuring => "not_measuring",
            Quality::CommLost => "comm_lost",
            Quality::DeviceException => "device_exception",
            Quality::SensorFault => "sensor_fault",
            Quality::BadValue => "bad_value",
        }
    }
}

/// One measurement of one point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub point: PointId,
    /// When the value was measured (or, for a bad reading, when the failure was observed).
    pub time: Millis,
    /// Engineering units. For a bad reading this is the last good value (or NaN when none).
    pub value: f64,
    pub quality: Quality,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_codes_round_trip() {
        for q in Quality::ALL {
            assert_eq!(Quality::from_code(q.code()), Some(q));
        }
        assert_eq!(Quality::from_code(200), None);
    }
}
