//! Packs for ammonia refrigeration, electrical fire, molten-metal cooling water and tank
//! storage, and the ISA-18.2 starting deadbands and delays they share.

use serde::{Deserialize, Serialize};

use crate::alarm::{Level, Priority};
use crate::reading::Millis;
use crate::rules::{FaultRule, LimitLevel, LimitRule, PriorityMap, Span};

use super::gas::quote_tag;
use super::{PackCondition, PackError, PackRules, Warning};

pub const CITE_ISA_DEADBANDS: &str = "ISA-18.2 starting values: deadband in % of span and delay, flow 5 %/15 s, \
     level 5 %/60 s, pressure 2 %/15 s, temperature 1 %/60 s";
pub const CITE_AMMONIA_ROOM: &str = "GB 50072 practice for ammonia refrigeration machine rooms: alarm at 100 ppm or \
     150 ppm and start the accident exhaust fan automatically (the 2021 edition's wording is not verified)";
pub const CITE_ELECTRICAL: &str = "GB 50116-2013 §9.2.3: residual current alarm setting 300–500 mA; §9.1.6: the \
     electrical fire monitoring system should not cut power automatically";
pub const CITE_COOLING_WATER: &str = "工贸企业重大事故隐患判定标准 (2023): water-cooled elements of steelmaking \
     furnaces need outlet-water temperature and inlet/outlet flow-difference monitoring and alarms; non-ferrous \
     closed-loop cooling the same, open-loop cooling inlet flow and pressure; aluminium deep-well casting mould \
     cooling water inlet pressure and flow";
pub const CITE_BLAST_FURNACE: &str = "炼铁安全规程: blast furnace cooling water pressure at least the hot-blast \
     pressure plus 0.05 MPa";
pub const CITE_TANK: &str = "Major hazard installations (原安监总局令第40号 art. 13): continuous monitoring of \
     temperature, pressure and level with early warning; the setpoints are configurable fractions of the span";

/// Quantities with ISA-18.2 starting values for deadband and delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessKind {
    Flow,
    Level,
    Pressure,
    Temperature,
}

/// ISA-18.2 starting deadband (% of span) and delay for a kind of measurement. Sentinel applies
/// the delay on clearing (off-delay): a safety alarm is never held back, and the off-delay is
/// what stops chattering.
pub const fn isa_starting_values(kind: ProcessKind) -> (f64, Millis) {
    match kind {
        ProcessKind::Flow => (5.0, 15_000),
        ProcessKind::Level => (5.0, 60_000),
        ProcessKind::Pressure => (2.0, 15_000),
        ProcessKind::Temperature => (1.0, 60_000),
    }
}

fn levels(map: PriorityMap, items: &[(Level, f64)]) -> Vec<LimitLevel> {
    items
        .iter()
        .map(|&(level, setpoint)| LimitLevel {
            level,
            setpoint,
            priority: map.priority(level),
        })
        .collect()
}

fn finite(name: &str, v: f64) -> Result<f64, PackError> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(PackError::InvalidParameter(format!(
            "{name} must be a finite number"
        )))
    }
}

// ------------------------------------------------------------------ ammonia machine room

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmmoniaRoomParams {
    /// Tag of the accident exhaust fan's running signal; adds the alarm "ammonia at alarm level
    /// and the fan not running".
    #[serde(default)]
    pub exhaust_fan: Option<String>,
    #[serde(default = "default_alarm_ppm")]
    pub alarm_ppm: f64,
    #[serde(default = "default_high_alarm_ppm")]
    pub high_alarm_ppm: f64,
}

const fn default_alarm_ppm() -> f64 {
    100.0
}

const fn default_high_alarm_ppm() -> f64 {
    150.0
}

impl Default for AmmoniaRoomParams {
    fn default() -> Self {
        AmmoniaRoomParams {
            exhaust_fan: None,
            alarm_ppm: default_alarm_ppm(),
            high_alarm_ppm: default_high_alarm_ppm(),
        }
    }
}

/// Ammonia machine room detector, in ppm.
pub fn ammonia_room_rules(p: &AmmoniaRoomParams, tag: &str) -> PackRules {
    let mut conditions = Vec::new();
    if let Some(fan) = &p.exhaust_fan {
        conditions.push(PackCondition {
            name: format!(
                "{tag}: ammonia at alarm level and the accident exhaust fan {fan} not running"
            ),
            expr: format!(
                "{} >= {} && !{}",
                quote_tag(tag),
                p.alarm_ppm,
                quote_tag(fan)
            ),
            priority: Priority::Critical,
            // The fan is started by the alarm; give it time to run before alarming that it did not.
            on_delay_ms: 10_000,
        });
    }
    PackRules {
        limits: LimitRule {
            levels: levels(PriorityMap::GAS, &[(Level::High, p.alarm_ppm), (Level::HighHigh, p.high_alarm_ppm)]),
            deadband: p.alarm_ppm / 10.0,
            ..Default::default()
        },
        fault: Some(FaultRule { priority: Priority::High, on_delay_ms: 0 }),
        conditions,
        citation: CITE_AMMONIA_ROOM,
        notes: vec![
            "[?] 100 and 150 ppm as first and second level; 10 s for the exhaust fan to start".to_owned(),
            "in process areas GB/T 50493-2019 asks for 20/40 mg/m3 (about 28/57 ppm): use the gas pack there".to_owned(),
        ],
    }
}

// ------------------------------------------------------------------ electrical fire

/// What an electrical fire monitoring point measures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "measurand", rename_all = "snake_case", deny_unknown_fields)]
pub enum Electrical {
    /// Residual current, mA.
    ResidualCurrent {
        #[serde(default)]
        setpoint_ma: Option<f64>,
    },
    /// Cable or terminal temperature, °C.
    CableTemperature,
    /// Phase voltage, V.
    Voltage { nominal_v: f64 },
    /// Phase current, A.
    Current { rated_a: f64 },
}

pub fn electrical_rules(e: &Electrical) -> Result<PackRules, PackError> {
    let map = PriorityMap::default();
    let (limits, notes) = match *e {
        Electrical::ResidualCurrent { setpoint_ma } => {
            let sp = finite("setpoint_ma", setpoint_ma.unwrap_or(300.0))?;
            let mut levels = levels(map, &[(Level::High, sp)]);
            levels[0].priority = Priority::High;
            (
                LimitRule {
                    levels,
                    deadband: sp / 10.0,
                    ..Default::default()
                },
                vec!["[?] deadband a tenth of the setpoint".into()],
            )
        }
        Electrical::CableTemperature => (
            LimitRule {
                levels: levels(map, &[(Level::High, 60.0), (Level::HighHigh, 70.0)]),
                deadband: 2.0,
                off_delay_ms: isa_starting_values(ProcessKind::Temperature).1,
                ..Default::default()
            },
            vec!["[?] 60 °C and 70 °C (PVC insulation limit 70 °C), deadband 2 °C".into()],
        ),
        Electrical::Voltage { nominal_v } => {
            let n = finite("nominal_v", nominal_v)?;
            (
                LimitRule {
                    levels: levels(map, &[(Level::Low, 0.9 * n), (Level::High, 1.1 * n)]),
                    deadband: 0.01 * n,
                    off_delay_ms: 15_000,
                    ..Default::default()
                },
                vec!["[?] ±10 % of nominal, deadband 1 %, 15 s off-delay".into()],
            )
        }
        Electrical::Current { rated_a } => {
            let r = finite("rated_a", rated_a)?;
            (
                LimitRule {
                    levels: levels(map, &[(Level::High, r)]),
                    deadband: 0.05 * r,
                    // Motor starting currents last seconds; overload is what matters.
                    on_delay_ms: 10_000,
                    ..Default::default()
                },
                vec!["[?] alarm above the rated current for 10 s, deadband 5 %".into()],
            )
        }
    };
    Ok(PackRules {
        limits,
        fault: Some(FaultRule {
            priority: Priority::Medium,
            on_delay_ms: 0,
        }),
        conditions: Vec::new(),
        citation: CITE_ELECTRICAL,
        notes,
    })
}

/// GB 50116-2013 §9.2.3: a residual-current alarm set between 300 and 500 mA.
pub fn check_electrical_setpoints(e: &Electrical, rule: &LimitRule) -> Vec<Warning> {
    let Electrical::ResidualCurrent { .. } = e else {
        return Vec::new();
    };
    match rule.setpoint(Level::High) {
        None => vec![Warning {
            code: "missing_level",
            message: format!("no residual-current (H) alarm; {CITE_ELECTRICAL}"),
        }],
        Some(sp) if sp > 500.0 => vec![Warning {
            code: "looser_than_standard",
            message: format!(
                "residual-current setpoint {sp} mA is looser than the standard's 500 mA; {CITE_ELECTRICAL}"
            ),
        }],
        Some(sp) if sp < 300.0 => vec![Warning {
            code: "outside_range",
            message: format!(
                "residual-current setpoint {sp} mA is below the 300–500 mA the standard names and will likely \
                 alarm on normal leakage"
            ),
        }],
        Some(_) => Vec::new(),
    }
}

// ------------------------------------------------------------------ molten-metal cooling water

/// A cooling-water point of a furnace, casting mould or blast furnace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "measurand", rename_all = "snake_case", deny_unknown_fields)]
pub enum CoolingWater {
    /// Outlet water temperature, °C; the setpoints come from the furnace design.
    OutletTemperature {
        high: f64,
        #[serde(default)]
        high_high: Option<f64>,
    },
    /// Inlet water pressure.
    InletPressure {
        low: f64,
        #[serde(default)]
        low_low: Option<f64>,
    },
    /// Inlet water flow (open-loop cooling, casting moulds).
    InletFlow {
        low: f64,
        #[serde(default)]
        low_low: Option<f64>,
    },
    /// The point is the outlet flow: alarm when `inlet - outlet > max_difference` (water lost
    /// into the furnace), while `running` holds, if given.
    FlowDifference {
        inlet: String,
        max_difference: f64,
        #[serde(default)]
        running: Option<String>,
        #[serde(default = "default_difference_delay_ms")]
        on_delay_ms: Millis,
    },
    /// The point is the blast furnace cooling water pressure, MPa: alarm when it is not at least
    /// `margin_mpa` above the hot-blast pressure `hot_blast` (MPa).
    BlastFurnaceWaterPressure {
        hot_blast: String,
        #[serde(default = "default_margin_mpa")]
        margin_mpa: f64,
    },
}

const fn default_difference_delay_ms() -> Millis {
    10_000
}

const fn default_margin_mpa() -> f64 {
    0.05
}

/// Cooling water is safety-critical: first level high, second critical.
const COOLING: PriorityMap = PriorityMap {
    low_low: Priority::Critical,
    low: Priority::High,
    high: Priority::High,
    high_high: Priority::Critical,
};

pub fn cooling_water_rules(c: &CoolingWater, tag: &str) -> Result<PackRules, PackError> {
    let isa = |kind: ProcessKind, items: &[(Level, f64)]| {
        let (deadband_pct, off_delay_ms) = isa_starting_values(kind);
        LimitRule {
            levels: levels(COOLING, items),
            deadband_pct: Some(deadband_pct),
            off_delay_ms,
            ..Default::default()
        }
    };
    let with_second = |first: (Level, f64),
                       second: Option<(Level, f64)>|
     -> Result<Vec<(Level, f64)>, PackError> {
        let mut v = vec![(first.0, finite("setpoint", first.1)?)];
        if let Some((l, s)) = second {
            v.push((l, finite("setpoint", s)?));
        }
        v.sort_by(|a, b| a.1.total_cmp(&b.1));
        Ok(v)
    };
    let span_note = "give the point its span: the deadband is in percent of span".to_owned();
    let (limits, conditions, citation, notes) = match c {
        CoolingWater::OutletTemperature { high, high_high } => (
            isa(
                ProcessKind::Temperature,
                &with_second(
                    (Level::High, *high),
                    high_high.map(|h| (Level::HighHigh, h)),
                )?,
            ),
            Vec::new(),
            CITE_COOLING_WATER,
            vec![span_note],
        ),
        CoolingWater::InletPressure { low, low_low } => (
            isa(
                ProcessKind::Pressure,
                &with_second((Level::Low, *low), low_low.map(|l| (Level::LowLow, l)))?,
            ),
            Vec::new(),
            CITE_COOLING_WATER,
            vec![span_note],
        ),
        CoolingWater::InletFlow { low, low_low } => (
            isa(
                ProcessKind::Flow,
                &with_second((Level::Low, *low), low_low.map(|l| (Level::LowLow, l)))?,
            ),
            Vec::new(),
            CITE_COOLING_WATER,
            vec![span_note],
        ),
        CoolingWater::FlowDifference {
            inlet,
            max_difference,
            running,
            on_delay_ms,
        } => {
            let max = finite("max_difference", *max_difference)?;
            let mut expr = format!("{} - {} > {max}", quote_tag(inlet), quote_tag(tag));
            if let Some(r) = running {
                expr.push_str(&format!(" && {}", quote_tag(r)));
            }
            (
                LimitRule::default(),
                vec![PackCondition {
                    name: format!("cooling water lost between {inlet} and {tag}"),
                    expr,
                    priority: Priority::Critical,
                    on_delay_ms: *on_delay_ms,
                }],
                CITE_COOLING_WATER,
                vec!["[?] 10 s on-delay so that flow transients do not alarm".to_owned()],
            )
        }
        CoolingWater::BlastFurnaceWaterPressure {
            hot_blast,
            margin_mpa,
        } => {
            let margin = finite("margin_mpa", *margin_mpa)?;
            (
                LimitRule::default(),
                vec![PackCondition {
                    name: format!(
                        "{tag}: cooling water pressure not above the hot-blast pressure {hot_blast} + {margin} MPa"
                    ),
                    expr: format!("{} < {} + {margin}", quote_tag(tag), quote_tag(hot_blast)),
                    priority: Priority::Critical,
                    on_delay_ms: 0,
                }],
                CITE_BLAST_FURNACE,
                vec![
                    "secondary source: 炼铁安全规程 as quoted, not read in the original".to_owned(),
                ],
            )
        }
    };
    Ok(PackRules {
        limits,
        fault: Some(FaultRule {
            priority: Priority::High,
            on_delay_ms: 0,
        }),
        conditions,
        citation,
        notes,
    })
}

// ------------------------------------------------------------------ tank storage

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TankMeasurand {
    Level,
    Pressure,
    Temperature,
}

/// Tank limits as fractions of the span: level LL 5 %, L 10 %, H 85 %, HH 95 %; pressure and
/// temperature H 80 %, HH 90 %. Deadband and off-delay from the ISA-18.2 starting values.
pub fn tank_rules(m: TankMeasurand, span: Span) -> Result<PackRules, PackError> {
    if !(span.width().is_finite() && span.width() > 0.0) {
        return Err(PackError::InvalidParameter(
            "the span's high must be above its low".into(),
        ));
    }
    let (kind, items): (ProcessKind, Vec<(Level, f64)>) = match m {
        TankMeasurand::Level => (
            ProcessKind::Level,
            vec![
                (Level::LowLow, 5.0),
                (Level::Low, 10.0),
                (Level::High, 85.0),
                (Level::HighHigh, 95.0),
            ],
        ),
        TankMeasurand::Pressure => (
            ProcessKind::Pressure,
            vec![(Level::High, 80.0), (Level::HighHigh, 90.0)],
        ),
        TankMeasurand::Temperature => (
            ProcessKind::Temperature,
            vec![(Level::High, 80.0), (Level::HighHigh, 90.0)],
        ),
    };
    let (deadband_pct, off_delay_ms) = isa_starting_values(kind);
    let at: Vec<(Level, f64)> = items
        .iter()
        .map(|&(l, pct)| (l, span.at_pct(pct)))
        .collect();
    Ok(PackRules {
        limits: LimitRule {
            levels: levels(PriorityMap::default(), &at),
            deadband: deadband_pct / 100.0 * span.width(),
            off_delay_ms,
            ..Default::default()
        },
        fault: Some(FaultRule { priority: Priority::Medium, on_delay_ms: 0 }),
        conditions: Vec::new(),
        citation: CITE_TANK,
        notes: vec![
            "[?] setpoints as percentages of the span; set them from the tank's design and operating limits".into(),
            format!("deadband and off-delay: {CITE_ISA_DEADBANDS}"),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ammonia_room() {
        let p = AmmoniaRoomParams {
            exhaust_fan: Some("FAN-101".into()),
            ..Default::default()
        };
        let r = ammonia_room_rules(&p, "NH3-101");
        assert_eq!(r.limits.setpoint(Level::High), Some(100.0));
        assert_eq!(r.limits.setpoint(Level::HighHigh), Some(150.0));
        assert_eq!(r.conditions[0].expr, "NH3-101 >= 100 && !FAN-101");
        assert!(
            ammonia_room_rules(&AmmoniaRoomParams::default(), "X")
                .conditions
                .is_empty()
        );
    }

    #[test]
    fn electrical() {
        let rc = Electrical::ResidualCurrent { setpoint_ma: None };
        let r = electrical_rules(&rc).unwrap();
        assert_eq!(r.limits.setpoint(Level::High), Some(300.0));
        assert!(check_electrical_setpoints(&rc, &r.limits).is_empty());
        let mut loose = r.limits.clone();
        loose.levels[0].setpoint = 600.0;
        assert_eq!(
            check_electrical_setpoints(&rc, &loose)[0].code,
            "looser_than_standard"
        );
        loose.levels[0].setpoint = 100.0;
        assert_eq!(
            check_electrical_setpoints(&rc, &loose)[0].code,
            "outside_range"
        );
        assert_eq!(
            check_electrical_setpoints(&rc, &LimitRule::default())[0].code,
            "missing_level"
        );
        let v = electrical_rules(&Electrical::Voltage { nominal_v: 220.0 }).unwrap();
        assert!((v.limits.setpoint(Level::Low).unwrap() - 198.0).abs() < 1e-9);
        assert!((v.limits.setpoint(Level::High).unwrap() - 242.0).abs() < 1e-9);
        let t = electrical_rules(&Electrical::CableTemperature).unwrap();
        assert_eq!(t.limits.setpoint(Level::HighHigh), Some(70.0));
        assert!(electrical_rules(&Electrical::Current { rated_a: f64::NAN }).is_err());
        assert_eq!(
            electrical_rules(&Electrical::Current { rated_a: 32.0 })
                .unwrap()
                .limits
                .on_delay_ms,
            10_000
        );
    }

    #[test]
    fn cooling_water() {
        let r = cooling_water_rules(
            &CoolingWater::OutletTemperature {
                high: 45.0,
                high_high: Some(50.0),
            },
            "TI-1",
        )
        .unwrap();
        assert_eq!(r.limits.levels[1].priority, Priority::Critical);
        assert_eq!(
            (r.limits.deadband_pct, r.limits.off_delay_ms),
            (Some(1.0), 60_000)
        );
        let r = cooling_water_rules(
            &CoolingWater::InletPressure {
                low: 0.4,
                low_low: Some(0.3),
            },
            "PT-1",
        )
        .unwrap();
        assert_eq!(
            r.limits.levels[0].level,
            Level::LowLow,
            "sorted by setpoint"
        );
        assert_eq!(r.limits.deadband_pct, Some(2.0));
        let r = cooling_water_rules(
            &CoolingWater::InletFlow {
                low: 50.0,
                low_low: None,
            },
            "FT-1",
        )
        .unwrap();
        assert_eq!(r.limits.off_delay_ms, 15_000);
        let c = CoolingWater::BlastFurnaceWaterPressure {
            hot_blast: "PT-BLAST".into(),
            margin_mpa: 0.05,
        };
        let r = cooling_water_rules(&c, "PT-WATER").unwrap();
        assert_eq!(r.conditions[0].expr, "PT-WATER < PT-BLAST + 0.05");
        assert_eq!(r.citation, CITE_BLAST_FURNACE);
        let c = CoolingWater::FlowDifference {
            inlet: "FT-201".into(),
            max_difference: 5.0,
            running: None,
            on_delay_ms: 0,
        };
        assert_eq!(
            cooling_water_rules(&c, "FT-202").unwrap().conditions[0].expr,
            "FT-201 - FT-202 > 5"
        );
    }

    #[test]
    fn tank_from_span() {
        let r = tank_rules(
            TankMeasurand::Level,
            Span {
                low: 0.0,
                high: 20.0,
            },
        )
        .unwrap();
        let sps: Vec<f64> = r.limits.levels.iter().map(|l| l.setpoint).collect();
        assert_eq!(sps, [1.0, 2.0, 17.0, 19.0]);
        assert_eq!((r.limits.deadband, r.limits.off_delay_ms), (1.0, 60_000));
        let r = tank_rules(
            TankMeasurand::Pressure,
            Span {
                low: 0.0,
                high: 1.6,
            },
        )
        .unwrap();
        assert!((r.limits.setpoint(Level::High).unwrap() - 1.28).abs() < 1e-9);
        assert!(
            tank_rules(
                TankMeasurand::Temperature,
                Span {
                    low: 5.0,
                    high: 5.0
                }
            )
            .is_err()
        );
    }

    #[test]
    fn pack_conditions_compile() {
        let resolve = |t: &str| {
            ["NH3-101", "FAN-101", "FT-201", "FT-202", "RUN", "H2S 1"]
                .iter()
                .position(|x| *x == t)
                .map(|i| crate::PointId(i as u32))
        };
        let p = AmmoniaRoomParams {
            exhaust_fan: Some("FAN-101".into()),
            ..Default::default()
        };
        for c in ammonia_room_rules(&p, "NH3-101").conditions {
            crate::Condition::compile(&c.expr, resolve).unwrap();
        }
        let c = CoolingWater::FlowDifference {
            inlet: "FT-201".into(),
            max_difference: 2.5,
            running: Some("RUN".into()),
            on_delay_ms: 0,
        };
        for c in cooling_water_rules(&c, "FT-202").unwrap().conditions {
            crate::Condition::compile(&c.expr, resolve).unwrap();
        }
    }
}
