//! The configuration file, as the user writes it. Every field is documented in
//! `docs/configuration.md`; units are in field names (`_ms`, `_secs`).

use std::path::PathBuf;

use alert_rules::{Level, Priority};
use drivers::modbus::RegisterSpec;
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub site: Site,
    #[serde(default)]
    pub store: Store,
    #[serde(default)]
    pub http: Http,
    #[serde(default)]
    pub engine: EngineSettings,
    #[serde(default)]
    pub devices: Vec<Device>,
    #[serde(default)]
    pub points: Vec<Point>,
    #[serde(default)]
    pub notify: Notify,
}

/// Four-colour risk levels (GB/T and provincial practice): blue lowest, red highest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskColour {
    Blue,
    Yellow,
    Orange,
    Red,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// Short identifier used in topics, tags and event ids: lowercase letters, digits, `-` and `_`.
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub latitude: Option<f64>,
    #[serde(default)]
    pub longitude: Option<f64>,
    /// The site's assessed (static) risk colour.
    #[serde(default = "default_risk_colour")]
    pub risk_colour: RiskColour,
}

const fn default_risk_colour() -> RiskColour {
    RiskColour::Blue
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Store {
    /// Where the embedded store (`sentinel.db`) lives.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Reading history is kept this long (major-hazard rules require at least 30 days).
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// Readings are committed at least this often (and at once when an alarm event is pending).
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            data_dir: default_data_dir(),
            retention_days: default_retention_days(),
            flush_interval_ms: default_flush_interval_ms(),
        }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/sentinel")
}
const fn default_retention_days() -> u32 {
    30
}
const fn default_flush_interval_ms() -> u64 {
    250
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    /// Address of the API and web console.
    #[serde(default = "default_listen")]
    pub listen: String,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            listen: default_listen(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".to_owned()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSettings {
    /// Capacity of the channel from the drivers to the engine. When full, drivers wait.
    #[serde(default = "default_channel_capacity")]
    pub channel_capacity: usize,
    /// How often timers (delays, communication loss) are evaluated.
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            channel_capacity: default_channel_capacity(),
            tick_ms: default_tick_ms(),
        }
    }
}

const fn default_channel_capacity() -> usize {
    8192
}
const fn default_tick_ms() -> u64 {
    250
}

/// A field device, by protocol.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "protocol", rename_all = "snake_case")]
pub enum Device {
    ModbusTcp(ModbusTcpDevice),
}

impl Device {
    pub fn name(&self) -> &str {
        match self {
            Device::ModbusTcp(d) => &d.name,
        }
    }

    pub fn comm_loss_after_secs(&self) -> u64 {
        match self {
            Device::ModbusTcp(d) => d.comm_loss_after_secs,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusTcpDevice {
    /// Unique name; points refer to it.
    pub name: String,
    pub host: String,
    #[serde(default = "default_modbus_port")]
    pub port: u16,
    #[serde(default = "default_unit_id")]
    pub unit_id: u8,
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Every request is abandoned after this long and counted as a timeout.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// A communication-loss alarm is raised when the device has not answered for this long.
    #[serde(default = "default_comm_loss_after_secs")]
    pub comm_loss_after_secs: u64,
    #[serde(default = "default_comm_loss_priority")]
    pub comm_loss_priority: Priority,
    /// Largest read, in registers (1..=125); 1 for devices that allow one register per request.
    #[serde(default = "default_max_registers")]
    pub max_registers_per_request: u16,
    /// Unused registers a read may span to join two points into one request.
    #[serde(default = "default_max_gap")]
    pub max_gap: u16,
}

const fn default_modbus_port() -> u16 {
    502
}
const fn default_unit_id() -> u8 {
    1
}
const fn default_poll_interval_ms() -> u64 {
    1000
}
const fn default_timeout_ms() -> u64 {
    1000
}
const fn default_comm_loss_after_secs() -> u64 {
    15
}
const fn default_comm_loss_priority() -> Priority {
    Priority::High
}
const fn default_max_registers() -> u16 {
    125
}
const fn default_max_gap() -> u16 {
    10
}

/// A measured quantity, read from a device.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Point {
    /// The plant's identifier (位号), e.g. `NH3-101`. Unique.
    pub tag: String,
    #[serde(default)]
    pub name: String,
    /// The device it is read from (a `devices[].name`).
    pub device: String,
    /// What it measures, e.g. `toxic_gas`, `combustible_gas`, `level`, `pressure`,
    /// `temperature`, `flow`, `residual_current`. Becomes the time-series measurement name.
    pub kind: String,
    /// Engineering unit, e.g. `ppm`, `%LEL`, `m`, `MPa`, `°C`, `mA`.
    #[serde(default)]
    pub unit: String,
    /// Measuring range `[low, high]` in engineering units.
    #[serde(default)]
    pub span: Option<[f64; 2]>,
    /// Plant area, for routing and the map.
    #[serde(default)]
    pub area: String,
    pub register: RegisterSpec,
    #[serde(default)]
    pub limits: Option<Limits>,
}

/// Limit alarms of a point.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub levels: Vec<LimitLevel>,
    /// Hysteresis in engineering units, applied when clearing only.
    #[serde(default)]
    pub deadband: f64,
    #[serde(default)]
    pub on_delay_ms: u64,
    #[serde(default)]
    pub off_delay_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitLevel {
    pub level: Level,
    pub setpoint: f64,
    #[serde(default)]
    pub priority: Option<Priority>,
}

impl LimitLevel {
    /// Priority when the file names none: the outer levels matter more.
    pub fn priority(&self) -> Priority {
        self.priority.unwrap_or(match self.level {
            Level::High | Level::Low => Priority::Medium,
            Level::HighHigh | Level::LowLow => Priority::High,
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    #[serde(default)]
    pub webhook: Vec<Webhook>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// Unique name of this receiver (it names the outbox channel).
    pub name: String,
    pub url: String,
    #[serde(default = "default_webhook_timeout_ms")]
    pub timeout_ms: u64,
    /// Longest wait between two delivery attempts.
    #[serde(default = "default_max_backoff_secs")]
    pub max_backoff_secs: u64,
}

const fn default_webhook_timeout_ms() -> u64 {
    5000
}
const fn default_max_backoff_secs() -> u64 {
    60
}
