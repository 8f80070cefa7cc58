//! Modbus master: polls devices over TCP and turns registers into readings.
//!
//! Monitoring only: Sentinel never writes to a field device.
//!
//! - [`decode`]: registers and bits → engineering values, with the quality they deserve.
//! - [`plan`]: a device's points grouped into the fewest read requests the limits allow.
//! - [`poller`]: one task per link (a TCP connection or a serial bus) serving the poll
//!   schedules of the units behind it: timeouts, reconnects, quality transitions.
//! - [`metrics`]: per-device counters the gateway renders as Prometheus text.

mod backoff;
pub mod decode;
pub mod metrics;
mod pipeline;
pub mod plan;
pub mod poller;
mod streak;

pub use decode::{DecodeError, SpecError, from_milliamps};
pub use metrics::DeviceMetrics;
pub use plan::{Part, PlanLimits, PlannedPoint, ReadPlan, ReadRequest, RejectedPoint};
pub use poller::{
    Link, group_links, run_device, run_link, spawn_link_supervised, spawn_supervised,
};

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
/// (the number on the wire), not 1-based "40001" style register numbers; the gateway converts
/// from 1-based addresses when a device says `address_base = 1`.
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
    /// Engineering value = raw × scale + offset (for a 4–20 mA signal: the current in mA).
    #[serde(default = "default_scale")]
    pub scale: f64,
    #[serde(default)]
    pub offset: f64,
    /// What the scaled value is: the engineering value itself, or a 4–20 mA loop current to be
    /// mapped onto the point's span with NAMUR NE43 quality bands.
    #[serde(default)]
    pub signal: Signal,
    /// A status word read in the same poll that decides the point's quality (gas detectors).
    #[serde(default)]
    pub status: Option<StatusSpec>,
    /// Read this point less often than the device's poll interval: a whole multiple of it.
    #[serde(default)]
    pub interval_ms: Option<u64>,
}

/// How a decoded value becomes an engineering value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Signal {
    /// raw × scale + offset is the engineering value.
    #[default]
    #[serde(rename = "direct")]
    Direct,
    /// raw × scale + offset is a loop current in mA; 4 mA is the low end of the span and
    /// 20 mA the high end. Quality follows NAMUR NE43 (see [`decode::from_milliamps`]).
    #[serde(rename = "4-20ma")]
    Ma4To20,
}

/// A gas detector's status register and the bits that matter. Bits count from the least
/// significant bit (0..=15); a bit that is set means the condition holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusSpec {
    /// `holding` or `input`.
    pub table: Table,
    pub address: u16,
    /// Set: the detector reports a fault; the reading is `SensorFault` (bad).
    #[serde(default)]
    pub fault_bit: Option<u8>,
    /// Set: the detector is warming up; the reading is `NotMeasuring` (uncertain).
    #[serde(default)]
    pub warmup_bit: Option<u8>,
    /// Set: calibration is due or in progress; the reading is `NotMeasuring` (uncertain).
    #[serde(default)]
    pub calibration_bit: Option<u8>,
}

const fn default_data_type() -> DataType {
    DataType::U16
}
const fn default_scale() -> f64 {
    1.0
}

impl RegisterSpec {
    /// A plain point: `data_type` at `address` of `table`, no scaling.
    pub fn new(table: Table, address: u16, data_type: DataType) -> Self {
        Self {
            table,
            address,
            data_type,
            word_order: WordOrder::ABCD,
            bit: None,
            scale: 1.0,
            offset: 0.0,
            signal: Signal::Direct,
            status: None,
            interval_ms: None,
        }
    }
}

/// One point the poller reads.
#[derive(Debug, Clone, PartialEq)]
pub struct PolledPoint {
    pub id: PointId,
    pub register: RegisterSpec,
    /// Measuring range `[low, high]`; a 4–20 mA signal is mapped onto it.
    pub span: Option<[f64; 2]>,
}

impl PolledPoint {
    pub fn new(id: PointId, register: RegisterSpec) -> Self {
        Self {
            id,
            register,
            span: None,
        }
    }
}

/// Serial line parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

/// A serial port and its line settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SerialLine {
    pub path: String,
    pub baud_rate: u32,
    pub parity: Parity,
    /// 5..=8.
    pub data_bits: u8,
    /// 1 or 2.
    pub stop_bits: u8,
}

/// How to reach a device. Devices with equal endpoints share one connection (or bus).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// Modbus TCP (MBAP framing).
    Tcp { host: String, port: u16 },
    /// RTU frames (with CRC) over a TCP connection, as serial device servers forward them.
    RtuOverTcp { host: String, port: u16 },
    /// RTU over a local serial port.
    Serial(SerialLine),
}

impl Endpoint {
    /// Whether frames are RTU (one request at a time on a shared line, with a gap between).
    pub const fn is_rtu(&self) -> bool {
        !matches!(self, Endpoint::Tcp { .. })
    }

    /// Two endpoints that would use the same connection or bus. A serial port is one bus
    /// whatever line settings are written for it (validation makes them agree).
    pub fn same_link(&self, other: &Endpoint) -> bool {
        match (self, other) {
            (Endpoint::Serial(a), Endpoint::Serial(b)) => a.path == b.path,
            _ => self == other,
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Endpoint::RtuOverTcp { host, port } => write!(f, "rtu+tcp://{host}:{port}"),
            Endpoint::Serial(line) => write!(f, "{}", line.path),
        }
    }
}

/// Everything one unit's poll schedule needs.
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
    /// Silence kept on the line before each request (RTU); the link uses the largest of its
    /// devices' gaps.
    pub frame_gap: Duration,
    /// Most requests sent before the first is answered (Modbus TCP only; RTU and RTU over
    /// TCP always have one). `1`, the default, suits every device; more is for devices that
    /// document several transactions at once (see `poller`'s pipelining).
    pub max_in_flight: u16,
}

/// Protocol limit of one read of holding or input registers (function codes 3 and 4).
pub const MAX_REGISTERS_PER_REQUEST: u16 = 125;
/// Protocol limit of one read of coils or discrete inputs (function codes 1 and 2).
pub const MAX_BITS_PER_REQUEST: u16 = 2000;
/// Default for [`DeviceSettings::max_gap`].
pub const DEFAULT_MAX_GAP: u16 = 10;
