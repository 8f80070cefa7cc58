//! Sentinel's field side: talks to devices and brokers and turns what they say into
//! [`alert_rules::Reading`]s with the right quality. Knows nothing of alarms or storage.

use alert_rules::{DeviceId, Millis, Reading};

pub mod modbus;
pub mod mqtt;
pub mod sim;

/// What a driver task sends to the engine. One bounded channel carries all of them; a full
/// channel blocks the driver (back-pressure), it never drops.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldEvent {
    Reading(Reading),
    /// The device answered a request (`ok`), or a request failed at the transport level
    /// (timeout, refused, reset). Device exceptions are answers: `ok` is true for them.
    DeviceStatus {
        device: DeviceId,
        ok: bool,
        at: Millis,
    },
}

/// Wall-clock time in milliseconds since the Unix epoch: the stamp drivers put on readings.
pub fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}
