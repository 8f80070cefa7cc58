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
    /// Shared, not copied, by the plant and the notifiers: megabytes in a large plant.
    #[serde(default)]
    pub points: std::sync::Arc<Vec<Point>>,
    #[serde(default)]
    pub notify: Notify,
    #[serde(default)]
    pub upstream: Upstream,
    /// Condition alarms over several points.
    #[serde(default)]
    pub conditions: Vec<super::ConditionConfig>,
    /// Risk units of the four-colour map.
    #[serde(default)]
    pub risk_units: Vec<super::RiskUnitSettings>,
    /// People who are told about alarms.
    #[serde(default)]
    pub contacts: Vec<super::Contact>,
    /// Responsibility chains (包保责任人) and their escalation tiers.
    #[serde(default)]
    pub responsibility: Vec<super::Responsibility>,
    #[serde(default)]
    pub tickets: super::Tickets,
    #[serde(default)]
    pub security: super::Security,
}

/// Four-colour risk levels: blue lowest, red highest (the engine's type).
pub use alert_rules::Colour as RiskColour;

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
    /// Most the store file may use, in MiB. Past it the oldest readings are dropped (counted,
    /// recorded in `store_losses`, logged at ERROR); the alarm journal is never dropped.
    #[serde(default = "default_disk_budget_mb")]
    pub disk_budget_mb: u64,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            data_dir: default_data_dir(),
            retention_days: default_retention_days(),
            flush_interval_ms: default_flush_interval_ms(),
            disk_budget_mb: default_disk_budget_mb(),
        }
    }
}

const fn default_disk_budget_mb() -> u64 {
    4096
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
    /// PEM certificate chain: with `tls_key`, the server speaks HTTPS itself (for sites
    /// without a reverse proxy).
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// A plant-layout image (PNG, JPEG or SVG) the console draws the risk units on, at their
    /// `x_pct`/`y_pct`. Read once at start.
    #[serde(default)]
    pub layout_image: Option<PathBuf>,
    /// At most this many live-event streams (`/api/v1/events`) at once; more get 503.
    #[serde(default = "default_max_event_streams")]
    pub max_event_streams: usize,
    /// A request (headers and body) must arrive within this time, and a handler must answer
    /// within it (event streams excepted), or the connection is closed / 408 is answered.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            listen: default_listen(),
            tls_cert: None,
            tls_key: None,
            layout_image: None,
            max_event_streams: default_max_event_streams(),
            request_timeout_secs: default_request_timeout_secs(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".to_owned()
}
const fn default_max_event_streams() -> usize {
    64
}
const fn default_request_timeout_secs() -> u64 {
    30
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
    /// The longest an operator may shelve an alarm (one shift by default).
    #[serde(default = "default_max_shelve_secs")]
    pub max_shelve_secs: u64,
    /// The longest a point or device may be out of service in one go.
    #[serde(default = "default_max_out_of_service_hours")]
    pub max_out_of_service_hours: u64,
    /// Threads of the async runtime (drivers, engine, notifiers, API). The store writer and
    /// the database reads have threads of their own.
    #[serde(default = "default_worker_threads")]
    pub worker_threads: usize,
}

/// One: the engine is a single task and the store writer a thread of its own, so a second
/// worker mostly added hand-offs between threads (about a tenth of the CPU at 300 x 50).
const fn default_worker_threads() -> usize {
    1
}

const fn default_max_shelve_secs() -> u64 {
    8 * 3600
}
const fn default_max_out_of_service_hours() -> u64 {
    7 * 24
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            channel_capacity: default_channel_capacity(),
            tick_ms: default_tick_ms(),
            max_shelve_secs: default_max_shelve_secs(),
            max_out_of_service_hours: default_max_out_of_service_hours(),
            worker_threads: default_worker_threads(),
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
// Parsed once at start, a few hundred at most: boxing the larger variants would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Device {
    ModbusTcp(ModbusTcpDevice),
    /// RTU over a local serial port (RS-485 adapter).
    ModbusRtu(ModbusRtuDevice),
    /// RTU frames over TCP, to a serial device server.
    ModbusRtuOverTcp(ModbusTcpDevice),
    /// Readings from topics on an MQTT broker.
    Mqtt(MqttDevice),
}

impl Device {
    pub fn name(&self) -> &str {
        match self {
            Device::ModbusTcp(d) | Device::ModbusRtuOverTcp(d) => &d.name,
            Device::ModbusRtu(d) => &d.name,
            Device::Mqtt(d) => &d.name,
        }
    }

    pub fn comm_loss_after_secs(&self) -> u64 {
        match self {
            Device::ModbusTcp(d) | Device::ModbusRtuOverTcp(d) => d.comm_loss_after_secs,
            Device::ModbusRtu(d) => d.comm_loss_after_secs,
            Device::Mqtt(d) => d.comm_loss_after_secs,
        }
    }

    pub fn comm_loss_priority(&self) -> Priority {
        match self {
            Device::ModbusTcp(d) | Device::ModbusRtuOverTcp(d) => d.comm_loss_priority,
            Device::ModbusRtu(d) => d.comm_loss_priority,
            Device::Mqtt(d) => d.comm_loss_priority,
        }
    }

    /// The settings every Modbus device has, whatever its transport.
    pub fn modbus(&self) -> Option<ModbusOptions> {
        let o = match self {
            Device::ModbusTcp(d) | Device::ModbusRtuOverTcp(d) => ModbusOptions {
                unit_id: d.unit_id,
                poll_interval_ms: d.poll_interval_ms,
                timeout_ms: d.timeout_ms,
                max_registers_per_request: d.max_registers_per_request,
                max_gap: d.max_gap,
                address_base: d.address_base,
                frame_gap_ms: d.frame_gap_ms.unwrap_or(0),
                max_in_flight: d.max_in_flight,
            },
            Device::ModbusRtu(d) => ModbusOptions {
                unit_id: d.unit_id,
                poll_interval_ms: d.poll_interval_ms,
                timeout_ms: d.timeout_ms,
                max_registers_per_request: d.max_registers_per_request,
                max_gap: d.max_gap,
                address_base: d.address_base,
                frame_gap_ms: d
                    .frame_gap_ms
                    .unwrap_or_else(|| serial_frame_gap_ms(d.baud_rate)),
                max_in_flight: 1,
            },
            Device::Mqtt(_) => return None,
        };
        Some(o)
    }
}

/// See [`Device::modbus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModbusOptions {
    pub unit_id: u8,
    pub poll_interval_ms: u64,
    pub timeout_ms: u64,
    pub max_registers_per_request: u16,
    pub max_gap: u16,
    pub address_base: u16,
    pub frame_gap_ms: u64,
    pub max_in_flight: u16,
}

/// The RTU silent interval: 3.5 characters of 11 bits at `baud_rate`, and at least 2 ms
/// (USB adapters and the OS scheduler blur anything shorter).
pub fn serial_frame_gap_ms(baud_rate: u32) -> u64 {
    let ms = (3.5 * 11.0 * 1000.0 / f64::from(baud_rate.max(1))).ceil() as u64;
    ms.max(2)
}

/// `modbus_tcp` and `modbus_rtu_over_tcp`.
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
    /// 0: register addresses in this device's points are protocol addresses (as on the
    /// wire); 1: they are 1-based register numbers as in many vendor manuals (1 is sent as 0).
    #[serde(default)]
    pub address_base: u16,
    /// `modbus_rtu_over_tcp` only: silence before each request, in ms (default 0: the device
    /// server times its serial side itself).
    #[serde(default)]
    pub frame_gap_ms: Option<u64>,
    /// `modbus_tcp` only: requests sent before the first is answered (1..=64). Only for
    /// devices documented to serve several transactions at once; the default 1 suits all.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u16,
}

const fn default_max_in_flight() -> u16 {
    1
}

/// `modbus_rtu`: a unit on a serial bus. Devices naming the same `serial_port` share the bus.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusRtuDevice {
    /// Unique name; points refer to it.
    pub name: String,
    /// The serial device, e.g. `/dev/ttyUSB0`.
    pub serial_port: String,
    #[serde(default = "default_baud_rate")]
    pub baud_rate: u32,
    #[serde(default)]
    pub parity: drivers::modbus::Parity,
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// Silence before each request, in ms; default 3.5 characters at `baud_rate`, at least 2.
    #[serde(default)]
    pub frame_gap_ms: Option<u64>,
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
    /// Largest read, in registers (1..=125).
    #[serde(default = "default_max_registers")]
    pub max_registers_per_request: u16,
    /// Unused registers a read may span to join two points into one request.
    #[serde(default = "default_max_gap")]
    pub max_gap: u16,
    /// 0 (protocol addresses) or 1 (1-based register numbers); see [`ModbusTcpDevice`].
    #[serde(default)]
    pub address_base: u16,
}

const fn default_baud_rate() -> u32 {
    9600
}
const fn default_data_bits() -> u8 {
    8
}
const fn default_stop_bits() -> u8 {
    1
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

/// A measured quantity, read from a device: a [`PointFile`] as kept while running. The settings
/// few points have are boxed together: inline they were 136 of a point's 432 bytes (2 MB at
/// 15,000 points).
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "PointFile")]
pub struct Point {
    pub tag: String,
    pub name: String,
    pub device: String,
    pub kind: String,
    pub unit: String,
    pub span: Option<[f64; 2]>,
    pub area: String,
    pub register: Option<RegisterSpec>,
    pub data_interruption_after_ms: Option<u64>,
    pub data_interruption_priority: Priority,
    pub limits: Option<Box<Limits>>,
    pub pack: Option<Box<alert_rules::packs::Pack>>,
    pub rate: Option<Box<super::RateConfig>>,
    pub deviation: Option<Box<super::DeviationConfig>>,
    pub fault: Option<super::FaultConfig>,
    /// `None` when the point sets none of them.
    extra: Option<Box<PointExtra>>,
}

/// A point's MQTT settings, its suppression by design and its instruction (see [`PointFile`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PointExtra {
    pub topic: Option<String>,
    pub json_pointer: Option<String>,
    pub topic_point: Option<String>,
    pub stale_after_ms: Option<u64>,
    pub suppress_when: Option<String>,
    pub instruction: Option<String>,
}

const NO_EXTRA: PointExtra = PointExtra {
    topic: None,
    json_pointer: None,
    topic_point: None,
    stale_after_ms: None,
    suppress_when: None,
    instruction: None,
};

impl Point {
    /// The point's MQTT settings, suppression condition and instruction.
    pub fn extra(&self) -> &PointExtra {
        self.extra.as_deref().unwrap_or(&NO_EXTRA)
    }
}

impl From<PointFile> for Point {
    fn from(f: PointFile) -> Point {
        let extra = PointExtra {
            topic: f.topic,
            json_pointer: f.json_pointer,
            topic_point: f.topic_point,
            stale_after_ms: f.stale_after_ms,
            suppress_when: f.suppress_when,
            instruction: f.instruction,
        };
        Point {
            tag: f.tag,
            name: f.name,
            device: f.device,
            kind: f.kind,
            unit: f.unit,
            span: f.span,
            area: f.area,
            register: f.register,
            data_interruption_after_ms: f.data_interruption_after_ms,
            data_interruption_priority: f.data_interruption_priority,
            limits: f.limits,
            pack: f.pack,
            rate: f.rate,
            deviation: f.deviation,
            fault: f.fault,
            extra: (extra != NO_EXTRA).then(|| Box::new(extra)),
        }
    }
}

/// A point as written in the configuration file; kept as a [`Point`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointFile {
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
    /// Where a Modbus device holds the value; required for Modbus points, unused otherwise.
    #[serde(default)]
    pub register: Option<RegisterSpec>,
    /// MQTT: the topic filter the point's messages arrive on (default: any of the device's).
    #[serde(default)]
    pub topic: Option<String>,
    /// MQTT: JSON Pointer to the value (e.g. `/nh3`); unset means a plain-number payload.
    #[serde(default)]
    pub json_pointer: Option<String>,
    /// MQTT: the `{point}` segment of the device's `topic_template` naming this point
    /// (default: the tag).
    #[serde(default)]
    pub topic_point: Option<String>,
    /// The point is expected at least this often; after this much silence its last value
    /// turns uncertain (`stale`). MQTT points only.
    #[serde(default)]
    pub stale_after_ms: Option<u64>,
    /// Raise a data-interruption alarm after this much silence (by timer).
    #[serde(default)]
    pub data_interruption_after_ms: Option<u64>,
    #[serde(default = "default_data_interruption_priority")]
    pub data_interruption_priority: Priority,
    // The rule blocks are boxed: most points have one or two of them, and inline they were
    // about 300 of a point's 700 bytes (4 MB at 15,000 points).
    #[serde(default)]
    pub limits: Option<Box<Limits>>,
    /// A sector rule pack: default limits, fault rule and condition alarms from the standard,
    /// e.g. `{ pack = "gas", gas = "toxic:NH3", unit = "ppm" }` (docs/rules.md). Explicit
    /// `limits` replace the pack's, and are checked against the standard.
    #[serde(default)]
    pub pack: Option<Box<alert_rules::packs::Pack>>,
    #[serde(default)]
    pub rate: Option<Box<super::RateConfig>>,
    #[serde(default)]
    pub deviation: Option<Box<super::DeviationConfig>>,
    #[serde(default)]
    pub fault: Option<super::FaultConfig>,
    /// Suppress the point's process alarms by design while this condition holds, e.g.
    /// `!FURNACE-1-RUN` (journaled when it starts and ends).
    #[serde(default)]
    pub suppress_when: Option<String>,
    /// What to do when this point alarms; quoted in notifications.
    #[serde(default)]
    pub instruction: Option<String>,
}

const fn default_data_interruption_priority() -> Priority {
    Priority::Medium
}

/// A source of readings over MQTT: one broker connection and its subscriptions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttDevice {
    /// Unique name; points refer to it.
    pub name: String,
    pub broker: drivers::mqtt::BrokerConfig,
    /// Topic filters to subscribe to (`+` and `#` allowed).
    #[serde(default)]
    pub topics: Vec<String>,
    /// A topic layout such as `plant/{device}/{point}`: `{point}` names the point (matched
    /// against each point's `topic_point`, or its tag); other `{...}` match any one level.
    #[serde(default)]
    pub topic_template: Option<String>,
    /// 1 (at least once, acknowledged after the engine has the readings) or 0.
    #[serde(default = "default_mqtt_qos")]
    pub qos: u8,
    /// JSON Pointer to a timestamp in the payload; unset: the arrival time.
    #[serde(default)]
    pub timestamp_pointer: Option<String>,
    #[serde(default)]
    pub timestamp_format: drivers::mqtt::TimestampFormat,
    /// JSON Pointer to a quality or status field in the payload.
    #[serde(default)]
    pub quality_pointer: Option<String>,
    /// Values of the quality field that mean good (compared case-insensitively).
    #[serde(default = "default_quality_good")]
    pub quality_good: Vec<String>,
    /// Larger payloads are rejected (counted as `oversized`).
    #[serde(default = "default_max_payload_bytes")]
    pub max_payload_bytes: usize,
    /// A communication-loss alarm is raised when the broker connection is down this long.
    #[serde(default = "default_comm_loss_after_secs")]
    pub comm_loss_after_secs: u64,
    #[serde(default = "default_comm_loss_priority")]
    pub comm_loss_priority: Priority,
}

const fn default_mqtt_qos() -> u8 {
    1
}
fn default_quality_good() -> Vec<String> {
    ["good", "ok", "0", "192"].map(str::to_owned).to_vec()
}
const fn default_max_payload_bytes() -> usize {
    64 * 1024
}

/// Limit alarms of a point.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub levels: Vec<LimitLevel>,
    /// Hysteresis in engineering units, applied when clearing only.
    #[serde(default)]
    pub deadband: f64,
    /// Hysteresis in percent of the point's span; replaces `deadband` when the point has a span.
    #[serde(default)]
    pub deadband_pct: Option<f64>,
    /// Announce an acknowledged alarm again if it is still active this long after.
    #[serde(default)]
    pub realarm_ms: Option<u64>,
    /// After the value returns, the alarm stands until an operator resets it.
    #[serde(default)]
    pub latch: bool,
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
    #[serde(default)]
    pub mqtt: Option<MqttNotify>,
    #[serde(default)]
    pub email: Option<super::EmailNotify>,
    /// Base URL people reach this gateway at, e.g. `https://sentinel.plant.example`: acknowledge
    /// links in messages point here. Unset: messages carry no link.
    #[serde(default)]
    pub public_url: Option<String>,
}

/// Alarm events and the site status, published to an MQTT broker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttNotify {
    pub broker: drivers::mqtt::BrokerConfig,
    /// Topic prefix: events go to `{prefix}/{site}/alarms`, the status to `{prefix}/{site}/status`.
    #[serde(default = "default_mqtt_prefix")]
    pub topic_prefix: String,
    /// An alarm not acknowledged (PUBACK) by the broker within this long is sent again.
    #[serde(default = "default_puback_timeout_ms")]
    pub puback_timeout_ms: u64,
    /// Alarms published and not yet acknowledged, at most (see [`MqttNotify::in_flight`]).
    #[serde(default)]
    pub max_in_flight: Option<u16>,
    /// The retained status is refreshed at least this often.
    #[serde(default = "default_status_interval_secs")]
    pub status_interval_secs: u64,
    /// Longest wait between two delivery attempts.
    #[serde(default = "default_max_backoff_secs")]
    pub max_backoff_secs: u64,
    /// Downsampled readings: every this many seconds, per point min/max/mean/last over the
    /// window, QoS 0 to `{prefix}/{site}/readings` (docs/scale.md). 0 (the default): off.
    #[serde(default)]
    pub readings_every_secs: u64,
}

impl MqttNotify {
    /// Alarms published and not yet acknowledged, at most: `max_in_flight`, or 16 within the
    /// broker's window. More than one keeps a storm moving over a slow link (one at a time, a
    /// 100 ms round trip delivers ten alarms a second).
    pub fn in_flight(&self) -> usize {
        usize::from(self.max_in_flight.unwrap_or(16).min(self.broker.inflight))
    }
}

fn default_mqtt_prefix() -> String {
    "sentinel/v1".to_owned()
}
const fn default_puback_timeout_ms() -> u64 {
    10_000
}
const fn default_status_interval_secs() -> u64 {
    60
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
    /// Key of the `X-Sentinel-Signature` HMAC (docs/notifications.md). Unset: requests are
    /// not signed. Keep the file readable by the service user only.
    #[serde(default)]
    pub secret: Option<Secret>,
}

const fn default_webhook_timeout_ms() -> u64 {
    5000
}
const fn default_max_backoff_secs() -> u64 {
    60
}

/// Where readings are forwarded from the embedded store.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// An InfluxDB (v2 or v1 write API) or anything that accepts its line protocol, such as
    /// VictoriaMetrics.
    #[serde(default)]
    pub influxdb: Option<InfluxDb>,
}

/// Which InfluxDB write endpoint to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InfluxApi {
    /// `/api/v2/write?org=&bucket=`, token in `Authorization: Token ...`.
    V2,
    /// `/write?db=`, the 1.x endpoint (token sent as `Authorization: Token ...` when set).
    V1,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxDb {
    /// Base URL, e.g. `http://influxdb:8086`.
    pub url: String,
    #[serde(default = "default_influx_api")]
    pub api: InfluxApi,
    /// Organisation (v2).
    #[serde(default)]
    pub org: String,
    /// Bucket (v2).
    #[serde(default)]
    pub bucket: String,
    /// Database (v1).
    #[serde(default)]
    pub database: String,
    /// API token; best given as `SENTINEL__UPSTREAM__INFLUXDB__TOKEN`. Never logged.
    #[serde(default)]
    pub token: Option<Secret>,
    /// A batch is sent when it holds this many points ...
    #[serde(default = "default_batch_max_points")]
    pub batch_max_points: usize,
    /// ... or when its oldest point has waited this long.
    #[serde(default = "default_batch_max_wait_ms")]
    pub batch_max_wait_ms: u64,
    /// Compress request bodies with gzip.
    #[serde(default = "default_true")]
    pub gzip: bool,
    /// One write request is abandoned (and retried) after this long.
    #[serde(default = "default_influx_timeout_ms")]
    pub timeout_ms: u64,
    /// Longest wait between two attempts after network errors, 5xx and 429 (a longer
    /// `Retry-After` is honoured).
    #[serde(default = "default_max_backoff_secs")]
    pub max_backoff_secs: u64,
}

const fn default_influx_api() -> InfluxApi {
    InfluxApi::V2
}
const fn default_batch_max_points() -> usize {
    5000
}
const fn default_batch_max_wait_ms() -> u64 {
    1000
}
const fn default_true() -> bool {
    true
}
const fn default_influx_timeout_ms() -> u64 {
    10_000
}

/// A secret (token, password): its `Debug` output is redacted so it never reaches a log.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(\"<redacted>\")")
    }
}
