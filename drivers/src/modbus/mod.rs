//! Modbus master: polls devices over TCP and turns registers into readings.
//!
//! Monitoring only: Sentinel never writes to a field device.
//!
//! - [`decode`]: registers and bits → engineering values, with the quality they deserve.
//! - [`plan`]: a device's points grouped into the fewest read requests the limits allow.
//! - [`poller`]: one task per device: schedule, timeouts, reconnects, quality transitions.
//! - [`metrics`]: per-device counters the gateway renders as Prometheus text.

mod backoff;
pub mod decode;
pub mod metrics;
pub mod plan;
pub mod poller;
mod streak;

pub use decode::{DecodeError, SpecError};
pub use metrics::DeviceMetrics;
pub use plan::{PlanLimits, PlannedPoint, ReadPlan, ReadRequest, RejectedPoint};
pub use poller::{run_device, spawn_supervised};

use std::time::Duration;

use alert_rules::{DeviceId, PointId};
use serde::{Deserialize, Serialize};

/// Which Modbus table a point is read from (function codes 1, 2, 3, 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    Coil,
    DiscreteInput,
    Holding,
    Input,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    Bool,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
}

/// Order of bytes and 16-bit words in multi-register values; `ABCD` is big-endian throughout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum WordOrder {
    #[default]
    ABCD,
    DCBA,
    BADC,
    CDAB,
}

/// Where and how a point's value lives in a device. Addresses are 0-based protocol addresses
/// (the number on the wire), not 1-based "40001" style register numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterSpec {
    pub table: Table,
    pub address: u16,
    #[serde(rename = "type", default = "default_data_type")]
    pub data_type: DataType,
    #[serde(default)]
    pub word_order: WordOrder,
    /// For `bool` read from a register: which bit (0 = least significant).
    #[serde(default)]
    pub bit: Option<u8>,
    /// Engineering value = raw × scale + offset.
    #[serde(default = "default_scale")]
    pub scale: f64,
    #[serde(default)]
    pub offset: f64,
}

const fn default_data_type() -> DataType {
    DataType::U16
}
const fn default_scale() -> f64 {
    1.0
}

/// One point the poller reads.
#[derive(Debug, Clone, PartialEq)]
pub struct PolledPoint {
    pub id: PointId,
    pub register: RegisterSpec,
}

/// How to reach a device.
#[derive(Debug, Clone, PartialEq)]
pub enum Endpoint {
    Tcp { host: String, port: u16 },
}

/// Everything one poll task needs.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSettings {
    pub id: DeviceId,
    pub name: String,
    pub endpoint: Endpoint,
    pub unit_id: u8,
    pub poll_interval: Duration,
    pub timeout: Duration,
    pub points: Vec<PolledPoint>,
    /// Most registers one holding/input read may ask for; some devices accept fewer than the
    /// protocol's 125. `0` means the protocol limit. A single point wider than this (an `f64`
    /// on a device limited to 1) still gets one request of its own width.
    pub max_registers_per_request: u16,
    /// Largest run of unused addresses one request may read across to save a round trip
    /// (usually [`DEFAULT_MAX_GAP`]). `0` reads only contiguous addresses together.
    pub max_gap: u16,
}

/// Protocol limit of one read of holding or input registers (function codes 3 and 4).
pub const MAX_REGISTERS_PER_REQUEST: u16 = 125;
/// Protocol limit of one read of coils or discrete inputs (function codes 1 and 2).
pub const MAX_BITS_PER_REQUEST: u16 = 2000;
/// Default for [`DeviceSettings::max_gap`].
pub const DEFAULT_MAX_GAP: u16 = 10;
