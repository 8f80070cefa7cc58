//! [`DemoPlant`]: the simulated plant behind `sentinel demo`.
//!
//! Four [`SimDevice`]s on `127.0.0.1` (ephemeral ports, see [`DemoPlant::devices`]) whose values
//! drift slowly around a base (a bounded, mean-reverting random walk) and follow a fixed
//! scenario timeline. The gateway's demo configuration mirrors the register map below: change
//! both together.
//!
//! # Register map
//!
//! Every device answers on unit id 1. Addresses are 0-based protocol addresses. "×10" means the
//! register holds the value times ten (scale 0.1 when decoding).
//!
//! | device | table (FC) | addr | value | type | normal |
//! |---|---|---|---|---|---|
//! | `gas_panel` | holding (3) | 0 | NH₃ concentration, ppm ×10 | u16 | ≈ 3 ppm |
//! | `gas_panel` | holding (3) | 1 | CH₄, %LEL ×10 | u16 | ≈ 1 %LEL |
//! | `gas_panel` | holding (3) | 2 | NH₃ detector status word | u16 bits | 0 |
//! | `gas_panel` | holding (3) | 3 | CH₄ detector status word | u16 bits | 0 |
//! | `gas_panel` | holding (3) | 4 | exhaust fan running | u16 0/1 | 0 |
//! | `tank_t101` | holding (3) | 0–1 | level, m (span 0–10) | f32, word order ABCD | ≈ 6.2 m |
//! | `tank_t101` | holding (3) | 2–3 | pressure, MPa (span 0–1.6) | f32, word order CDAB | ≈ 0.25 MPa |
//! | `tank_t101` | holding (3) | 4 | temperature, °C ×10 (span −20..80) | i16 | ≈ 18 °C |
//! | `furnace_cw` | holding (3) | 0 | cooling water outlet temperature, °C ×10 | u16 | ≈ 38 °C |
//! | `furnace_cw` | holding (3) | 1 | cooling water inlet flow, m³/h ×10 | u16 | ≈ 120 m³/h |
//! | `furnace_cw` | holding (3) | 2 | cooling water outlet flow, m³/h ×10 | u16 | inlet − ≈ 1 % (± 0.5) |
//! | `furnace_cw` | holding (3) | 3 | cooling water inlet pressure, kPa | u16 | ≈ 450 kPa |
//! | `furnace_cw` | holding (3) | 4 | furnace running | u16 0/1 | 1 |
//! | `power_meter` | **input (4)** | 0 | residual current, mA | u16 | ≈ 40 mA |
//! | `power_meter` | **input (4)** | 1 | cable temperature, °C ×10 | i16 | ≈ 35 °C |
//! | `power_meter` | **input (4)** | 2 | voltage, V ×10 | u16 | ≈ 220 V |
//! | `power_meter` | **input (4)** | 3 | current, A ×10 | u16 | ≈ 60 A |
//!
//! Detector status words (both detectors): bit 0 first-level alarm, bit 1 second-level alarm,
//! bit 2 fault, bit 3 warm-up, bit 4 calibration due. Bits 0 and 1 follow the value in the
//! concentration register: NH₃ ≥ 28 / ≥ 57 ppm (register ≥ 280 / ≥ 570), CH₄ ≥ 25 / ≥ 50 %LEL
//! (register ≥ 250 / ≥ 500). Bits 2–4 stay 0. The exhaust fan runs once the NH₃ register has
//! stayed ≥ 280 for 5 s and stops as soon as it drops below.
//!
//! # Timeline
//!
//! A fixed cycle of 240 s from plant start, repeated (times in scenario seconds; with
//! [`DemoPlant::start_at_speed`] one real second is `speed` scenario seconds):
//!
//! | t (s) | scenario | what happens |
//! |---|---|---|
//! | 5–50 | `ammonia_leak` | NH₃ rises from ≈ 3 ppm, crossing 28 ppm at ≈ 12 s and 57 ppm at ≈ 22 s, to ≈ 65 ppm at 25 s; holds until 31 s, then falls below 20 ppm by 50 s (back to base by 56 s). Fan on ≈ 17–43 s. |
//! | 65–85 | `residual_current_surge` | residual current jumps to ≈ 450 mA (67–81 s), back to base by 83 s; cable temperature rises ≈ 4 °C by 80 s and settles back by 92 s. |
//! | 125–150 | `cooling_water_leak` | outlet flow falls to ≈ 15 % below inlet (difference ≈ 18 m³/h, 130–144 s); outlet temperature climbs to ≈ 52 °C (139–143 s); both recover by ≈ 155 s. |
//! | 185–225 | `power_meter_offline` | `power_meter` stops answering (no response, connections stay open) and answers again from 225 s. |
//! | otherwise | `normal` | drift only. |
//!
//! Each scenario start is logged at INFO with the field `scenario`. Values are updated every
//! 250 ms of scenario time (at most every 10 ms of real time). The random walk is seeded: pass a
//! seed to [`DemoPlant::start_seeded`] to repeat a run exactly (up to timing jitter).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::device::{SimDevice, WordOrder, f32_to_words};

/// Name of the gas detection panel device (NH₃, CH₄, exhaust fan).
pub const GAS_PANEL: &str = "gas_panel";
/// Name of the storage tank device (level, pressure, temperature).
pub const TANK_T101: &str = "tank_t101";
/// Name of the furnace cooling-water device.
pub const FURNACE_CW: &str = "furnace_cw";
/// Name of the electrical-fire monitoring device (input registers).
pub const POWER_METER: &str = "power_meter";

/// The unit id every demo device answers on.
pub const UNIT_ID: u8 = 1;

/// Length of the scenario cycle in scenario seconds.
pub const CYCLE_SECS: f64 = 240.0;

/// Word order of the tank level (holding registers 0–1).
pub const TANK_LEVEL_WORD_ORDER: WordOrder = WordOrder::ABCD;
/// Word order of the tank pressure (holding registers 2–3).
pub const TANK_PRESSURE_WORD_ORDER: WordOrder = WordOrder::CDAB;

/// Status word bit: first-level alarm.
pub const STATUS_ALARM_1: u16 = 1 << 0;
/// Status word bit: second-level alarm.
pub const STATUS_ALARM_2: u16 = 1 << 1;
/// Status word bit: detector fault.
pub const STATUS_FAULT: u16 = 1 << 2;
/// Status word bit: warm-up.
pub const STATUS_WARM_UP: u16 = 1 << 3;
/// Status word bit: calibration due.
pub const STATUS_CALIBRATION_DUE: u16 = 1 << 4;

/// Scenario time between value updates.
const TICK_SCENARIO_SECS: f64 = 0.25;
/// Shortest real time between value updates, whatever the speed.
const MIN_TICK: Duration = Duration::from_millis(10);
/// Highest accepted speed factor.
const MAX_SPEED: f64 = 10_000.0;
/// The exhaust fan's on-delay after NH₃ reaches the first alarm level.
const FAN_DELAY_SECS: f64 = 5.0;

/// NH₃ levels in ppm ×10 (register units).
const NH3_ALARM_1: u16 = 280;
const NH3_ALARM_2: u16 = 570;
/// CH₄ levels in %LEL ×10 (register units).
const CH4_ALARM_1: u16 = 250;
const CH4_ALARM_2: u16 = 500;

/// Leak profiles: `(scenario seconds, offset from base)`, linear in between, zero outside.
const NH3_LEAK_PPM: &[(f64, f64)] = &[
    (5.0, 0.0),
    (12.0, 25.0),
    (22.0, 54.0),
    (25.0, 62.0),
    (31.0, 62.0),
    (40.0, 33.0),
    (50.0, 10.0),
    (56.0, 0.0),
];
const RESIDUAL_SURGE_MA: &[(f64, f64)] = &[(65.0, 0.0), (67.0, 410.0), (81.0, 410.0), (83.0, 0.0)];
const CABLE_HEATING_C: &[(f64, f64)] = &[(65.0, 0.0), (80.0, 4.0), (92.0, 0.0)];
/// Extra fraction of the inlet flow lost on top of the normal ≈ 1 %.
const COOLING_LEAK_FRACTION: &[(f64, f64)] =
    &[(125.0, 0.0), (130.0, 0.14), (144.0, 0.14), (152.0, 0.0)];
const COOLING_LEAK_TEMP_C: &[(f64, f64)] = &[
    (125.0, 0.0),
    (139.0, 14.0),
    (143.0, 14.0),
    (150.0, 4.0),
    (155.0, 0.0),
];
/// Normal loss between cooling-water inlet and outlet flow.
const NORMAL_FLOW_LOSS: f64 = 0.01;
/// Span of the outlet flow's measurement noise, m³/h either side.
const OUTLET_FLOW_NOISE: f64 = 0.5;

/// The phases of the demo timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    Normal,
    AmmoniaLeak,
    ResidualCurrentSurge,
    CoolingWaterLeak,
    PowerMeterOffline,
}

impl Scenario {
    /// The name used in logs and by [`DemoPlant::current_scenario`].
    pub const fn name(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::AmmoniaLeak => "ammonia_leak",
            Self::ResidualCurrentSurge => "residual_current_surge",
            Self::CoolingWaterLeak => "cooling_water_leak",
            Self::PowerMeterOffline => "power_meter_offline",
        }
    }

    /// The scenario at `t_secs` scenario seconds after plant start (the cycle repeats).
    pub fn at(t_secs: f64) -> Self {
        let t = t_secs.rem_euclid(CYCLE_SECS);
        if (5.0..50.0).contains(&t) {
            Self::AmmoniaLeak
        } else if (65.0..85.0).contains(&t) {
            Self::ResidualCurrentSurge
        } else if (125.0..150.0).contains(&t) {
            Self::CoolingWaterLeak
        } else if (185.0..225.0).contains(&t) {
            Self::PowerMeterOffline
        } else {
            Self::Normal
        }
    }
}

/// Piecewise-linear interpolation through `knots` (sorted by time), zero outside them.
fn profile(t: f64, knots: &[(f64, f64)]) -> f64 {
    let (Some(&(t_first, _)), Some(&(t_last, _))) = (knots.first(), knots.last()) else {
        return 0.0;
    };
    if t <= t_first || t >= t_last {
        return 0.0;
    }
    knots
        .windows(2)
        .find(|pair| t <= pair[1].0)
        .map_or(0.0, |pair| {
            let ((t0, v0), (t1, v1)) = (pair[0], pair[1]);
            v0 + (v1 - v0) * (t - t0) / (t1 - t0)
        })
}

/// A value drifting around `base`: a mean-reverting random walk kept within `[lo, hi]`.
#[derive(Debug, Clone)]
struct Drift {
    base: f64,
    value: f64,
    /// Pull back towards `base`, per second.
    reversion: f64,
    /// Random step size, per square root of a second.
    sigma: f64,
    lo: f64,
    hi: f64,
}

impl Drift {
    fn new(base: f64, sigma: f64, lo: f64, hi: f64) -> Self {
        Self {
            base,
            value: base,
            reversion: 0.1,
            sigma,
            lo,
            hi,
        }
    }

    fn step(&mut self, rng: &mut fastrand::Rng, dt: f64) -> f64 {
        // Uniform on [-√3, √3]: unit variance.
        let shock = (rng.f64() * 2.0 - 1.0) * 3.0_f64.sqrt();
        self.value +=
            self.reversion * (self.base - self.value) * dt + self.sigma * dt.sqrt() * shock;
        self.value = self.value.clamp(self.lo, self.hi);
        self.value
    }
}

/// Register contents of all four devices at one instant: exactly what goes on the wire.
#[derive(Debug, Clone, PartialEq)]
struct Registers {
    scenario: Scenario,
    /// `gas_panel` holding registers 0–4.
    gas_panel: [u16; 5],
    /// `tank_t101` holding registers 0–4.
    tank: [u16; 5],
    /// `furnace_cw` holding registers 0–4.
    furnace: [u16; 5],
    /// `power_meter` input registers 0–3.
    power_meter: [u16; 4],
    power_meter_online: bool,
}

/// `value × factor` rounded into an unsigned register, saturating at its limits.
fn unsigned(value: f64, factor: f64) -> u16 {
    (value * factor).round().clamp(0.0, f64::from(u16::MAX)) as u16
}

/// `value × factor` rounded into a two's-complement register, saturating at its limits.
fn signed(value: f64, factor: f64) -> u16 {
    let v = (value * factor)
        .round()
        .clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16;
    u16::from_be_bytes(v.to_be_bytes())
}

fn status_word(register: u16, alarm_1: u16, alarm_2: u16) -> u16 {
    let mut word = 0;
    if register >= alarm_1 {
        word |= STATUS_ALARM_1;
    }
    if register >= alarm_2 {
        word |= STATUS_ALARM_2;
    }
    word
}

/// The plant's physics, free of I/O and clocks: [`PlantModel::step`] takes scenario time.
#[derive(Debug)]
struct PlantModel {
    rng: fastrand::Rng,
    nh3_ppm: Drift,
    ch4_lel: Drift,
    level_m: Drift,
    pressure_mpa: Drift,
    tank_temp_c: Drift,
    cw_outlet_temp_c: Drift,
    inlet_flow: Drift,
    inlet_pressure_kpa: Drift,
    residual_ma: Drift,
    cable_temp_c: Drift,
    voltage_v: Drift,
    current_a: Drift,
    /// Scenario time since which NH₃ has been at or above the first alarm level.
    nh3_high_since: Option<f64>,
}

impl PlantModel {
    fn new(seed: u64) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed),
            nh3_ppm: Drift::new(3.0, 0.25, 1.5, 4.5),
            ch4_lel: Drift::new(1.0, 0.08, 0.4, 1.8),
            level_m: Drift::new(6.2, 0.01, 5.9, 6.5),
            pressure_mpa: Drift::new(0.25, 0.002, 0.235, 0.265),
            tank_temp_c: Drift::new(18.0, 0.05, 17.0, 19.0),
            cw_outlet_temp_c: Drift::new(38.0, 0.1, 37.0, 39.0),
            inlet_flow: Drift::new(120.0, 0.3, 118.0, 122.0),
            inlet_pressure_kpa: Drift::new(450.0, 1.0, 444.0, 456.0),
            residual_ma: Drift::new(40.0, 1.5, 30.0, 50.0),
            cable_temp_c: Drift::new(35.0, 0.08, 34.0, 36.0),
            voltage_v: Drift::new(220.0, 0.3, 217.0, 223.0),
            current_a: Drift::new(60.0, 0.3, 57.0, 63.0),
            nh3_high_since: None,
        }
    }

    /// Advances the model by `dt` to scenario time `t_abs` (seconds since plant start).
    fn step(&mut self, t_abs: f64, dt: f64) -> Registers {
        // A stalled runtime must not make the walk jump: cap the step.
        let dt = dt.clamp(0.0, 5.0);
        let t = t_abs.rem_euclid(CYCLE_SECS);
        let rng = &mut self.rng;

        let nh3 = unsigned(self.nh3_ppm.step(rng, dt) + profile(t, NH3_LEAK_PPM), 10.0);
        let ch4 = unsigned(self.ch4_lel.step(rng, dt), 10.0);
        if nh3 >= NH3_ALARM_1 {
            self.nh3_high_since.get_or_insert(t_abs);
        } else {
            self.nh3_high_since = None;
        }
        let fan = self
            .nh3_high_since
            .is_some_and(|since| t_abs - since >= FAN_DELAY_SECS);
        let gas_panel = [
            nh3,
            ch4,
            status_word(nh3, NH3_ALARM_1, NH3_ALARM_2),
            status_word(ch4, CH4_ALARM_1, CH4_ALARM_2),
            u16::from(fan),
        ];

        let level = f32_to_words(self.level_m.step(rng, dt) as f32, TANK_LEVEL_WORD_ORDER);
        let pressure = f32_to_words(
            self.pressure_mpa.step(rng, dt) as f32,
            TANK_PRESSURE_WORD_ORDER,
        );
        let tank = [
            level[0],
            level[1],
            pressure[0],
            pressure[1],
            signed(self.tank_temp_c.step(rng, dt), 10.0),
        ];

        let inlet_flow = self.inlet_flow.step(rng, dt);
        let loss = NORMAL_FLOW_LOSS + profile(t, COOLING_LEAK_FRACTION);
        let outlet_flow = inlet_flow * (1.0 - loss) + (rng.f64() * 2.0 - 1.0) * OUTLET_FLOW_NOISE;
        let outlet_temp = self.cw_outlet_temp_c.step(rng, dt) + profile(t, COOLING_LEAK_TEMP_C);
        let furnace = [
            unsigned(outlet_temp, 10.0),
            unsigned(inlet_flow, 10.0),
            unsigned(outlet_flow, 10.0),
            unsigned(self.inlet_pressure_kpa.step(rng, dt), 1.0),
            1,
        ];

        let residual = self.residual_ma.step(rng, dt) + profile(t, RESIDUAL_SURGE_MA);
        let cable_temp = self.cable_temp_c.step(rng, dt) + profile(t, CABLE_HEATING_C);
        let power_meter = [
            unsigned(residual, 1.0),
            signed(cable_temp, 10.0),
            unsigned(self.voltage_v.step(rng, dt), 10.0),
            unsigned(self.current_a.step(rng, dt), 10.0),
        ];

        let scenario = Scenario::at(t);
        Registers {
            scenario,
            gas_panel,
            tank,
            furnace,
            power_meter,
            power_meter_online: scenario != Scenario::PowerMeterOffline,
        }
    }
}

/// The four devices, in the order [`DemoPlant::devices`] lists them.
#[derive(Debug, Clone)]
struct PlantDevices {
    gas_panel: Arc<SimDevice>,
    tank: Arc<SimDevice>,
    furnace: Arc<SimDevice>,
    power_meter: Arc<SimDevice>,
}

impl PlantDevices {
    fn bind() -> io::Result<Self> {
        let localhost = SocketAddr::from(([127, 0, 0, 1], 0));
        let bind = || SimDevice::bind(localhost).map(Arc::new);
        Ok(Self {
            gas_panel: bind()?,
            tank: bind()?,
            furnace: bind()?,
            power_meter: bind()?,
        })
    }

    fn named(&self) -> [(&'static str, &Arc<SimDevice>); 4] {
        [
            (GAS_PANEL, &self.gas_panel),
            (TANK_T101, &self.tank),
            (FURNACE_CW, &self.furnace),
            (POWER_METER, &self.power_meter),
        ]
    }

    fn apply(&self, registers: &Registers) {
        let results = [
            (
                GAS_PANEL,
                self.gas_panel
                    .set_holding_words(UNIT_ID, 0, &registers.gas_panel),
            ),
            (
                TANK_T101,
                self.tank.set_holding_words(UNIT_ID, 0, &registers.tank),
            ),
            (
                FURNACE_CW,
                self.furnace
                    .set_holding_words(UNIT_ID, 0, &registers.furnace),
            ),
            (
                POWER_METER,
                self.power_meter
                    .set_input_words(UNIT_ID, 0, &registers.power_meter),
            ),
        ];
        for (device, result) in results {
            if let Err(error) = result {
                // Unit 1 and addresses 0..5 always exist: this is a broken invariant, not input.
                tracing::error!(device, %error, "Demo plant could not update a simulated device.");
            }
        }
        self.power_meter.set_online(registers.power_meter_online);
    }

    fn shutdown(&self) {
        for (_, device) in self.named() {
            device.shutdown();
        }
    }
}

/// The running demo plant; see the [module docs](self) for the register map and timeline.
/// Dropping it, or calling [`DemoPlant::stop`], stops the updates and all four devices.
#[derive(Debug)]
pub struct DemoPlant {
    devices: PlantDevices,
    updater: JoinHandle<()>,
    started: Instant,
    speed: f64,
    seed: u64,
}

impl DemoPlant {
    /// Binds the four devices on `127.0.0.1` (ephemeral ports) and starts the timeline in real
    /// time with a random seed. Must be called within a Tokio runtime.
    pub fn start() -> io::Result<Self> {
        Self::start_at_speed(1.0)
    }

    /// Like [`DemoPlant::start`], with the timeline running `speed` times faster (10 = ten
    /// scenario seconds per real second). `speed` must be finite, positive and at most 10,000.
    pub fn start_at_speed(speed: f64) -> io::Result<Self> {
        Self::start_seeded(speed, fastrand::u64(..))
    }

    /// Like [`DemoPlant::start_at_speed`], with a fixed seed for the random walk.
    pub fn start_seeded(speed: f64, seed: u64) -> io::Result<Self> {
        if !(speed.is_finite() && speed > 0.0 && speed <= MAX_SPEED) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("demo plant speed must be in (0, {MAX_SPEED}], got {speed}"),
            ));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        let devices = PlantDevices::bind()?;
        let mut model = PlantModel::new(seed);
        // Pollers that start right away see plausible values, not zeros.
        let first = model.step(0.0, 0.0);
        devices.apply(&first);

        let started = Instant::now();
        let tick = Duration::from_secs_f64(TICK_SCENARIO_SECS / speed).max(MIN_TICK);
        let updater = runtime.spawn(run_plant(model, devices.clone(), started, speed, tick));

        tracing::info!(seed, speed, "Demo plant started.");
        for (device, sim) in devices.named() {
            tracing::info!(device, addr = %sim.local_addr(), "Demo plant device listening.");
        }
        Ok(Self {
            devices,
            updater,
            started,
            speed,
            seed,
        })
    }

    /// Device names and addresses: `gas_panel`, `tank_t101`, `furnace_cw`, `power_meter`.
    pub fn devices(&self) -> Vec<(&'static str, SocketAddr)> {
        self.devices
            .named()
            .into_iter()
            .map(|(name, device)| (name, device.local_addr()))
            .collect()
    }

    /// The simulated device called `name`, e.g. to inspect its request counter.
    pub fn device(&self, name: &str) -> Option<&SimDevice> {
        self.devices
            .named()
            .into_iter()
            .find(|(device_name, _)| *device_name == name)
            .map(|(_, device)| device.as_ref())
    }

    /// Name of the scenario now running (`normal` between scenarios).
    pub fn current_scenario(&self) -> &'static str {
        Scenario::at(self.scenario_time_secs()).name()
    }

    /// Scenario seconds since the plant started (real seconds × speed).
    pub fn scenario_time_secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * self.speed
    }

    /// The seed of the random walk (log it to repeat a run).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Stops the updates and shuts all devices down. Idempotent; dropping the plant does the same.
    pub fn stop(&self) {
        self.updater.abort();
        self.devices.shutdown();
    }
}

impl Drop for DemoPlant {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Advances the model on a fixed tick and writes the registers, logging scenario changes.
async fn run_plant(
    mut model: PlantModel,
    devices: PlantDevices,
    started: Instant,
    speed: f64,
    tick: Duration,
) {
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_t = 0.0;
    let mut last_scenario = None;
    loop {
        ticker.tick().await;
        let t_abs = started.elapsed().as_secs_f64() * speed;
        let registers = model.step(t_abs, t_abs - last_t);
        last_t = t_abs;
        if last_scenario != Some(registers.scenario) {
            last_scenario = Some(registers.scenario);
            let t_secs = (t_abs.rem_euclid(CYCLE_SECS) * 10.0).round() / 10.0;
            tracing::info!(
                scenario = registers.scenario.name(),
                t_secs,
                "Demo plant scenario started."
            );
        }
        devices.apply(&registers);
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::timeout;
    use tokio_modbus::client::{Context, Reader, tcp};
    use tokio_modbus::prelude::Slave;

    use super::*;

    const CLIENT_TIMEOUT: Duration = Duration::from_millis(300);

    fn words_to_f32(words: [u16; 2], order: WordOrder) -> f32 {
        let [ab, cd] = match order {
            WordOrder::CDAB => [words[1], words[0]],
            _ => words,
        };
        f32::from_bits((u32::from(ab) << 16) | u32::from(cd))
    }

    /// Runs the model through one cycle at the real tick and returns `(t, registers)`.
    fn run_cycle(seed: u64) -> Vec<(f64, Registers)> {
        let mut model = PlantModel::new(seed);
        let steps = (CYCLE_SECS / TICK_SCENARIO_SECS) as usize;
        (0..=steps)
            .map(|i| {
                let t = i as f64 * TICK_SCENARIO_SECS;
                let dt = if i == 0 { 0.0 } else { TICK_SCENARIO_SECS };
                (t, model.step(t, dt))
            })
            .collect()
    }

    fn first_time(cycle: &[(f64, Registers)], pred: impl Fn(&Registers) -> bool) -> Option<f64> {
        cycle.iter().find(|(_, r)| pred(r)).map(|(t, _)| *t)
    }

    fn at(cycle: &[(f64, Registers)], t: f64) -> &Registers {
        &cycle
            .iter()
            .find(|(ts, _)| *ts >= t)
            .expect("time within the cycle")
            .1
    }

    #[test]
    fn sim_scenario_names_follow_the_timeline() {
        assert_eq!(Scenario::at(0.0), Scenario::Normal);
        assert_eq!(Scenario::at(5.0), Scenario::AmmoniaLeak);
        assert_eq!(Scenario::at(49.9), Scenario::AmmoniaLeak);
        assert_eq!(Scenario::at(70.0).name(), "residual_current_surge");
        assert_eq!(Scenario::at(130.0).name(), "cooling_water_leak");
        assert_eq!(Scenario::at(200.0).name(), "power_meter_offline");
        assert_eq!(Scenario::at(225.0), Scenario::Normal);
        assert_eq!(Scenario::at(CYCLE_SECS + 10.0), Scenario::AmmoniaLeak);
    }

    #[test]
    fn sim_profile_interpolates_and_is_zero_outside() {
        assert_eq!(profile(4.0, NH3_LEAK_PPM), 0.0);
        assert_eq!(profile(60.0, NH3_LEAK_PPM), 0.0);
        assert!((profile(28.0, NH3_LEAK_PPM) - 62.0).abs() < 1e-9);
        assert!((profile(8.5, NH3_LEAK_PPM) - 12.5).abs() < 1e-9);
    }

    #[test]
    fn sim_ammonia_leak_crosses_both_alarm_levels_on_time() {
        for seed in 0..8 {
            let cycle = run_cycle(seed);
            let nh3 = |r: &Registers| f64::from(r.gas_panel[0]) / 10.0;
            let alarm_1 = first_time(&cycle, |r| r.gas_panel[0] >= NH3_ALARM_1).unwrap();
            let alarm_2 = first_time(&cycle, |r| r.gas_panel[0] >= NH3_ALARM_2).unwrap();
            assert!(
                (11.0..=13.0).contains(&alarm_1),
                "seed {seed}: 28 ppm at {alarm_1}"
            );
            assert!(
                (21.0..=23.0).contains(&alarm_2),
                "seed {seed}: 57 ppm at {alarm_2}"
            );
            let peak = cycle.iter().map(|(_, r)| nh3(r)).fold(0.0, f64::max);
            assert!((62.0..=69.0).contains(&peak), "seed {seed}: peak {peak}");
            assert!(nh3(at(&cycle, 50.0)) < 20.0);
            assert!(nh3(at(&cycle, 60.0)) < 6.0);

            let fan_on = first_time(&cycle, |r| r.gas_panel[4] == 1).unwrap();
            assert!((alarm_1 + FAN_DELAY_SECS..=alarm_1 + FAN_DELAY_SECS + 0.5).contains(&fan_on));
            for (t, r) in &cycle {
                assert_eq!(
                    r.gas_panel[2],
                    status_word(r.gas_panel[0], NH3_ALARM_1, NH3_ALARM_2),
                    "t {t}"
                );
                assert_eq!(r.gas_panel[3], 0, "CH4 stays normal");
                if r.gas_panel[4] == 1 {
                    assert!(
                        r.gas_panel[0] >= NH3_ALARM_1,
                        "fan running below 28 ppm at {t}"
                    );
                }
                if !(5.0..56.0).contains(t) {
                    assert!((1.0..=5.0).contains(&nh3(r)), "t {t}: NH3 {}", nh3(r));
                }
            }
        }
    }

    #[test]
    fn sim_electrical_and_cooling_water_scenarios() {
        for seed in 0..8 {
            let cycle = run_cycle(seed);
            let residual = |t| at(&cycle, t).power_meter[0];
            let cable = |t| f64::from(at(&cycle, t).power_meter[1] as i16) / 10.0;
            assert!((30..=50).contains(&residual(60.0)));
            assert!(
                (420..=480).contains(&residual(75.0)),
                "surge {}",
                residual(75.0)
            );
            assert!((30..=50).contains(&residual(86.0)));
            assert!(cable(80.0) - cable(60.0) >= 2.0);

            let flow_diff = |t| {
                let f = &at(&cycle, t).furnace;
                (f64::from(f[1]) - f64::from(f[2])) / 10.0
            };
            let outlet_temp = |t| f64::from(at(&cycle, t).furnace[0]) / 10.0;
            assert!(
                (0.0..=3.0).contains(&flow_diff(110.0)),
                "normal diff {}",
                flow_diff(110.0)
            );
            assert!(
                (15.0..=21.0).contains(&flow_diff(137.0)),
                "leak diff {}",
                flow_diff(137.0)
            );
            assert!(
                (50.0..=54.0).contains(&outlet_temp(141.0)),
                "leak temp {}",
                outlet_temp(141.0)
            );
            assert!(outlet_temp(160.0) < 40.0);
            assert!((0.0..=3.0).contains(&flow_diff(160.0)));
            assert_eq!(at(&cycle, 100.0).furnace[4], 1);

            for (t, r) in &cycle {
                assert_eq!(r.power_meter_online, !(185.0..225.0).contains(t), "t {t}");
            }
        }
    }

    #[test]
    fn sim_normal_values_stay_near_base() {
        let cycle = run_cycle(42);
        for (t, r) in cycle
            .iter()
            .filter(|(t, _)| Scenario::at(*t) == Scenario::Normal && *t > 160.0)
        {
            let level = words_to_f32([r.tank[0], r.tank[1]], WordOrder::ABCD);
            let pressure = words_to_f32([r.tank[2], r.tank[3]], WordOrder::CDAB);
            assert!((5.9..=6.5).contains(&level), "t {t}: level {level}");
            assert!(
                (0.23..=0.27).contains(&pressure),
                "t {t}: pressure {pressure}"
            );
            assert!(
                (170..=190).contains(&(r.tank[4] as i16)),
                "t {t}: tank temp"
            );
            assert!((440..=460).contains(&r.furnace[3]));
            assert!((2170..=2230).contains(&r.power_meter[2]));
            assert!((570..=630).contains(&r.power_meter[3]));
        }
    }

    #[test]
    fn sim_same_seed_same_values() {
        assert_eq!(run_cycle(7), run_cycle(7));
        assert_ne!(run_cycle(7), run_cycle(8));
    }

    #[tokio::test]
    async fn sim_plant_rejects_bad_speed() {
        for speed in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e9] {
            let error = DemoPlant::start_at_speed(speed).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        }
    }

    async fn connect(addr: SocketAddr) -> Context {
        timeout(
            Duration::from_secs(2),
            tcp::connect_slave(addr, Slave(UNIT_ID)),
        )
        .await
        .unwrap()
        .unwrap()
    }

    #[tokio::test]
    async fn sim_demo_plant_runs_the_timeline_fast() {
        let plant = DemoPlant::start_at_speed(20.0).unwrap();
        let devices = plant.devices();
        let names: Vec<_> = devices.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, [GAS_PANEL, TANK_T101, FURNACE_CW, POWER_METER]);
        let addr = |name| devices.iter().find(|(n, _)| *n == name).unwrap().1;

        // Tank values are there from the start, in their word orders.
        let mut tank = connect(addr(TANK_T101)).await;
        let regs = timeout(CLIENT_TIMEOUT, tank.read_holding_registers(0, 5))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let level = words_to_f32([regs[0], regs[1]], WordOrder::ABCD);
        let pressure = words_to_f32([regs[2], regs[3]], WordOrder::CDAB);
        assert!(
            (5.5..=7.0).contains(&level) && (0.2..=0.3).contains(&pressure),
            "{regs:?}"
        );

        // The ammonia leak reaches the second alarm level (t ≈ 22 s, about 1.1 s real).
        let mut gas = connect(addr(GAS_PANEL)).await;
        let mut fan_seen = false;
        let second_level = timeout(Duration::from_secs(4), async {
            loop {
                let regs = timeout(CLIENT_TIMEOUT, gas.read_holding_registers(0, 5))
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap();
                fan_seen |= regs[4] == 1;
                if regs[0] >= NH3_ALARM_2 {
                    return regs;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("NH3 never reached 57 ppm");
        assert_eq!(
            second_level[2] & (STATUS_ALARM_1 | STATUS_ALARM_2),
            STATUS_ALARM_1 | STATUS_ALARM_2
        );
        assert!(
            fan_seen || second_level[4] == 1,
            "fan not running during the leak"
        );

        // The power meter goes silent at t = 185 s (9.25 s real) and is back at 225 s (11.25 s).
        let mut power = connect(addr(POWER_METER)).await;
        let silent = timeout(Duration::from_secs(11), async {
            loop {
                match timeout(CLIENT_TIMEOUT, power.read_input_registers(0, 4)).await {
                    Err(_elapsed) => break,
                    Ok(answer) => assert!(answer.unwrap().is_ok()),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(silent.is_ok(), "power meter never went silent");
        assert_eq!(plant.current_scenario(), "power_meter_offline");
        assert!(!plant.device(POWER_METER).unwrap().is_online());
        let back = timeout(Duration::from_secs(4), async {
            let mut power = connect(addr(POWER_METER)).await;
            while !matches!(
                timeout(CLIENT_TIMEOUT, power.read_input_registers(0, 4)).await,
                Ok(Ok(Ok(_)))
            ) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(back.is_ok(), "power meter never came back");

        plant.stop();
        let closed = timeout(Duration::from_secs(2), async {
            while gas.read_holding_registers(0, 1).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(closed.is_ok(), "gas panel still answering after stop");
    }
}
