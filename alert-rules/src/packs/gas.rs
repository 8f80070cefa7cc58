//! Gas detection after GB/T 50493-2019, with the GBZ/T 223-2009 three-level option for
//! general workplaces.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::alarm::{Level, Priority};
use crate::rules::{FaultRule, LimitLevel, LimitRule, PriorityMap};

use super::{PackCondition, PackError, PackRules, Warning};

/// Molar volume of an ideal gas at 20 °C and 101.325 kPa, litres per mole.
pub const MOLAR_VOLUME_20C: f64 = 24.06;

/// mg/m³ to ppm (µmol/mol) at 20 °C.
pub fn mg_m3_to_ppm(mg_m3: f64, molar_mass: f64) -> f64 {
    mg_m3 * MOLAR_VOLUME_20C / molar_mass
}

pub fn ppm_to_mg_m3(ppm: f64, molar_mass: f64) -> f64 {
    ppm * molar_mass / MOLAR_VOLUME_20C
}

/// A toxic gas of the GB/T 50493-2019 sample table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ToxicGas {
    /// The key used in configuration: `toxic:NH3`.
    pub formula: &'static str,
    pub name: &'static str,
    /// g/mol.
    pub molar_mass: f64,
    /// First-level alarm, 100 % OEL, mg/m³.
    pub first_mg_m3: f64,
    /// Second-level alarm, 200 % OEL, mg/m³.
    pub second_mg_m3: f64,
    /// Immediately dangerous to life or health, mg/m³, where the primer gives it.
    pub idlh_mg_m3: Option<f64>,
}

/// First and second levels from GB/T 50493-2019; molar masses from the atomic weights.
pub const TOXIC_GASES: [ToxicGas; 10] = [
    ToxicGas {
        formula: "H2S",
        name: "hydrogen sulphide",
        molar_mass: 34.08,
        first_mg_m3: 10.0,
        second_mg_m3: 20.0,
        idlh_mg_m3: Some(430.0),
    },
    ToxicGas {
        formula: "CO",
        name: "carbon monoxide",
        molar_mass: 28.01,
        first_mg_m3: 20.0,
        second_mg_m3: 40.0,
        idlh_mg_m3: Some(1700.0),
    },
    ToxicGas {
        formula: "NH3",
        name: "ammonia",
        molar_mass: 17.03,
        first_mg_m3: 20.0,
        second_mg_m3: 40.0,
        idlh_mg_m3: Some(360.0),
    },
    ToxicGas {
        formula: "Cl2",
        name: "chlorine",
        molar_mass: 70.90,
        first_mg_m3: 1.0,
        second_mg_m3: 2.0,
        idlh_mg_m3: Some(88.0),
    },
    ToxicGas {
        formula: "SO2",
        name: "sulphur dioxide",
        molar_mass: 64.07,
        first_mg_m3: 5.0,
        second_mg_m3: 10.0,
        idlh_mg_m3: None,
    },
    ToxicGas {
        formula: "NO2",
        name: "nitrogen dioxide",
        molar_mass: 46.01,
        first_mg_m3: 5.0,
        second_mg_m3: 10.0,
        idlh_mg_m3: None,
    },
    ToxicGas {
        formula: "HCN",
        name: "hydrogen cyanide",
        molar_mass: 27.03,
        first_mg_m3: 1.0,
        second_mg_m3: 2.0,
        idlh_mg_m3: None,
    },
    ToxicGas {
        formula: "COCl2",
        name: "phosgene",
        molar_mass: 98.92,
        first_mg_m3: 0.5,
        second_mg_m3: 1.0,
        idlh_mg_m3: None,
    },
    ToxicGas {
        formula: "C6H6",
        name: "benzene",
        molar_mass: 78.11,
        first_mg_m3: 6.0,
        second_mg_m3: 12.0,
        idlh_mg_m3: None,
    },
    ToxicGas {
        formula: "HCl",
        name: "hydrogen chloride",
        molar_mass: 36.46,
        first_mg_m3: 7.5,
        second_mg_m3: 15.0,
        idlh_mg_m3: None,
    },
];

/// Look a toxic gas up by formula, ignoring case (`nh3`, `NH3`).
pub fn toxic_gas(formula: &str) -> Option<&'static ToxicGas> {
    TOXIC_GASES
        .iter()
        .find(|g| g.formula.eq_ignore_ascii_case(formula))
}

/// What a gas detector measures. Text form: `combustible`, `combustible_open_path`,
/// `toxic:NH3`, `o2`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum GasKind {
    Combustible,
    CombustibleOpenPath,
    Toxic(String),
    Oxygen,
}

impl FromStr for GasKind {
    type Err = PackError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "combustible" => Ok(GasKind::Combustible),
            "combustible_open_path" => Ok(GasKind::CombustibleOpenPath),
            "o2" | "oxygen" => Ok(GasKind::Oxygen),
            _ => match s.trim().split_once(':') {
                Some((kind, gas))
                    if kind.eq_ignore_ascii_case("toxic") && !gas.trim().is_empty() =>
                {
                    Ok(GasKind::Toxic(gas.trim().to_owned()))
                }
                _ => Err(PackError::UnknownGas(s.to_owned())),
            },
        }
    }
}

impl TryFrom<String> for GasKind {
    type Error = PackError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<GasKind> for String {
    fn from(k: GasKind) -> String {
        k.to_string()
    }
}

impl fmt::Display for GasKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GasKind::Combustible => f.write_str("combustible"),
            GasKind::CombustibleOpenPath => f.write_str("combustible_open_path"),
            GasKind::Toxic(gas) => write!(f, "toxic:{gas}"),
            GasKind::Oxygen => f.write_str("o2"),
        }
    }
}

/// Units of gas readings. Text form: `%LEL`, `LEL.m`, `mg/m3`, `ppm`, `%VOL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum GasUnit {
    PercentLel,
    LelMetre,
    MgPerM3,
    Ppm,
    PercentVol,
}

impl FromStr for GasUnit {
    type Err = PackError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm: String = s
            .trim()
            .to_ascii_lowercase()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        match norm.as_str() {
            "%lel" | "lel%" => Ok(GasUnit::PercentLel),
            "lel.m" | "lel·m" | "lel*m" | "lelm" => Ok(GasUnit::LelMetre),
            "mg/m3" | "mg/m³" => Ok(GasUnit::MgPerM3),
            "ppm" => Ok(GasUnit::Ppm),
            "%vol" | "%v/v" | "vol%" => Ok(GasUnit::PercentVol),
            _ => Err(PackError::UnknownUnit(s.to_owned())),
        }
    }
}

impl TryFrom<String> for GasUnit {
    type Error = PackError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<GasUnit> for String {
    fn from(u: GasUnit) -> String {
        u.as_str().to_owned()
    }
}

impl GasUnit {
    pub const fn as_str(self) -> &'static str {
        match self {
            GasUnit::PercentLel => "%LEL",
            GasUnit::LelMetre => "LEL.m",
            GasUnit::MgPerM3 => "mg/m3",
            GasUnit::Ppm => "ppm",
            GasUnit::PercentVol => "%VOL",
        }
    }
}

/// Which standard sets a toxic gas detector's levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GasStandard {
    /// GB/T 50493-2019 (petrochemical and hazardous-chemical plants): 100 % and 200 % OEL.
    #[default]
    Gb50493,
    /// GBZ/T 223-2009 (general workplaces): pre-alarm at ½ MAC or ½ PC-STEL, alarm at MAC or
    /// PC-STEL, and a high alarm the enterprise sets.
    Gbz223,
}

/// Parameters of the gas pack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GasParams {
    pub gas: GasKind,
    pub unit: GasUnit,
    #[serde(default)]
    pub standard: GasStandard,
    /// Top of the detector's range, in `unit`. When it cannot reach the second level of a toxic
    /// gas, GB/T 50493 allows 5 % and 10 % of IDLH instead.
    #[serde(default)]
    pub detector_range: Option<f64>,
    /// The occupational exposure limit in mg/m³ (MAC or PC-STEL for GBZ/T 223), for gases not
    /// in the table or to override it.
    #[serde(default)]
    pub oel_mg_m3: Option<f64>,
    /// GBZ/T 223 high alarm, set by the enterprise, in `unit`.
    #[serde(default)]
    pub high_alarm: Option<f64>,
}

impl GasParams {
    pub fn new(gas: GasKind, unit: GasUnit) -> GasParams {
        GasParams {
            gas,
            unit,
            standard: GasStandard::Gb50493,
            detector_range: None,
            oel_mg_m3: None,
            high_alarm: None,
        }
    }
}

pub const CITE_COMBUSTIBLE: &str = "GB/T 50493-2019: combustible gas first-level alarm at most 25 % LEL, second-level at most 50 % LEL";
pub const CITE_OPEN_PATH: &str = "GB/T 50493-2019: open-path combustible gas detectors, first level 1 LEL·m, second level 2 LEL·m";
pub const CITE_TOXIC: &str = "GB/T 50493-2019: toxic gas first-level alarm at most 100 % OEL, second-level at most \
     200 % OEL; where the detector range cannot reach them, at most 5 % and 10 % of IDLH";
pub const CITE_OXYGEN: &str = "GB/T 50493-2019: oxygen low alarm 19.5 % VOL, high alarm 23.5 % VOL";
pub const CITE_GBZ223: &str = "GBZ/T 223-2009: pre-alarm at ½ MAC or ½ PC-STEL, alarm at MAC or PC-STEL, high alarm \
     set by the enterprise; at least two levels";

/// The standard's levels for a gas in a unit: what the first and second setpoints may be at
/// most (for oxygen: the low setpoint at least, the high at most).
struct Allowed {
    first: f64,
    second: f64,
    citation: &'static str,
    notes: Vec<String>,
}

fn unit_mismatch(gas: &GasKind, unit: GasUnit, expected: &'static str) -> PackError {
    PackError::UnitMismatch {
        gas: gas.to_string(),
        unit: unit.as_str(),
        expected,
    }
}

fn allowed(p: &GasParams) -> Result<Allowed, PackError> {
    match &p.gas {
        GasKind::Combustible => match p.unit {
            GasUnit::PercentLel => Ok(Allowed {
                first: 25.0,
                second: 50.0,
                citation: CITE_COMBUSTIBLE,
                notes: vec![],
            }),
            u => Err(unit_mismatch(&p.gas, u, "%LEL")),
        },
        GasKind::CombustibleOpenPath => match p.unit {
            GasUnit::LelMetre => Ok(Allowed {
                first: 1.0,
                second: 2.0,
                citation: CITE_OPEN_PATH,
                notes: vec![],
            }),
            u => Err(unit_mismatch(&p.gas, u, "LEL.m")),
        },
        GasKind::Oxygen => match p.unit {
            GasUnit::PercentVol => Ok(Allowed {
                first: 19.5,
                second: 23.5,
                citation: CITE_OXYGEN,
                notes: vec![],
            }),
            u => Err(unit_mismatch(&p.gas, u, "%VOL")),
        },
        GasKind::Toxic(formula) => {
            let table = toxic_gas(formula);
            let molar_mass = table.map(|g| g.molar_mass);
            let convert = |mg: f64| -> Result<f64, PackError> {
                match (p.unit, molar_mass) {
                    (GasUnit::MgPerM3, _) => Ok(mg),
                    (GasUnit::Ppm, Some(m)) => Ok(mg_m3_to_ppm(mg, m)),
                    (GasUnit::Ppm, None) => Err(PackError::UnknownGas(format!(
                        "toxic:{formula} (its molar mass is needed for ppm; give the setpoints in mg/m3)"
                    ))),
                    (u, _) => Err(unit_mismatch(&p.gas, u, "mg/m3 or ppm")),
                }
            };
            let mut notes = Vec::new();
            let oel = match (p.oel_mg_m3, table) {
                (Some(oel), _) => oel,
                (None, Some(g)) => g.first_mg_m3,
                (None, None) => {
                    return Err(PackError::UnknownGas(format!(
                        "toxic:{formula} (not in the gas table; give oel_mg_m3)"
                    )));
                }
            };
            if p.standard == GasStandard::Gbz223 {
                if p.oel_mg_m3.is_none() {
                    notes.push(
                        "[?] the MAC or PC-STEL is taken as the GB/T 50493 first level (100 % OEL); \
                         set oel_mg_m3 from GBZ 2.1"
                            .to_owned(),
                    );
                }
                return Ok(Allowed {
                    first: convert(oel / 2.0)?,
                    second: convert(oel)?,
                    citation: CITE_GBZ223,
                    notes,
                });
            }
            let (mut first, mut second) = (convert(oel)?, convert(2.0 * oel)?);
            if let Some(range) = p.detector_range {
                if range < second {
                    match table.and_then(|g| g.idlh_mg_m3) {
                        Some(idlh) => {
                            first = convert(0.05 * idlh)?;
                            second = convert(0.10 * idlh)?;
                            notes.push(format!(
                                "the detector range {range} {} cannot reach 200 % OEL: levels at 5 % and 10 % of IDLH",
                                p.unit.as_str()
                            ));
                        }
                        None => {
                            return Err(PackError::RangeTooSmall {
                                gas: p.gas.to_string(),
                                range,
                                second,
                            });
                        }
                    }
                }
            }
            Ok(Allowed {
                first,
                second,
                citation: CITE_TOXIC,
                notes,
            })
        }
    }
}

/// Default rules of the gas pack for point `tag`.
pub fn gas_rules(p: &GasParams, tag: &str) -> Result<PackRules, PackError> {
    let a = allowed(p)?;
    let map = PriorityMap::GAS;
    let level = |level: Level, setpoint: f64| LimitLevel {
        level,
        setpoint,
        priority: map.priority(level),
    };
    let levels = match p.gas {
        GasKind::Oxygen => vec![level(Level::Low, a.first), level(Level::High, a.second)],
        _ => vec![
            level(Level::High, a.first),
            level(Level::HighHigh, a.second),
        ],
    };
    // Gas alarms are never delayed; a tenth of the first level as deadband keeps a detector
    // hovering at the setpoint from chattering.
    let deadband = match p.gas {
        GasKind::Oxygen => 0.3,
        _ => a.first / 10.0,
    };
    let mut notes = a.notes;
    notes.push(
        "[?] deadband: a tenth of the first level (0.3 % VOL for oxygen); no on-delay".to_owned(),
    );
    let mut conditions = Vec::new();
    if let Some(high) = p.high_alarm {
        if p.standard == GasStandard::Gbz223 {
            conditions.push(PackCondition {
                name: format!("{tag} high alarm (GBZ/T 223)"),
                expr: format!("{} >= {high}", quote_tag(tag)),
                priority: Priority::Critical,
                on_delay_ms: 0,
            });
        } else {
            notes.push("high_alarm applies to the GBZ/T 223 option only; ignored".to_owned());
        }
    }
    Ok(PackRules {
        limits: LimitRule {
            levels,
            deadband,
            ..Default::default()
        },
        fault: Some(FaultRule {
            priority: Priority::High,
            on_delay_ms: 0,
        }),
        conditions,
        citation: a.citation,
        notes,
    })
}

/// Put a tag in quotes when the condition language would not read it as one tag.
pub(super) fn quote_tag(tag: &str) -> String {
    let plain = tag
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !matches!(tag, "true" | "false");
    if plain {
        tag.to_owned()
    } else {
        format!("\"{tag}\"")
    }
}

/// Rounding when setpoints are converted between mg/m³ and ppm (the primer itself rounds
/// 56.5 ppm to 57): differences below 1 % are not reported.
const CONVERSION_TOLERANCE: f64 = 0.01;

/// Warnings for setpoints of a gas detector that are looser than the standard allows, or
/// missing. `sentinel check` prints them.
pub fn check_gas_setpoints(p: &GasParams, rule: &LimitRule) -> Vec<Warning> {
    let mut warnings = Vec::new();
    let a = match allowed(p) {
        Ok(a) => a,
        Err(e) => {
            warnings.push(Warning {
                code: "cannot_check",
                message: e.to_string(),
            });
            return warnings;
        }
    };
    let tolerance = if matches!(&p.gas, GasKind::Toxic(_)) && p.unit == GasUnit::Ppm {
        CONVERSION_TOLERANCE
    } else {
        0.0
    };
    let unit = p.unit.as_str();
    let mut check = |level: Level, bound: f64, high: bool, name: &str| match rule.setpoint(level) {
        None => warnings.push(Warning {
            code: "missing_level",
            message: format!(
                "no {name} ({}) alarm; {} requires it",
                level.as_str(),
                a.citation
            ),
        }),
        Some(sp) => {
            let looser = if high {
                sp > bound * (1.0 + tolerance)
            } else {
                sp < bound * (1.0 - tolerance)
            };
            if looser {
                let dir = if high { "at most" } else { "at least" };
                warnings.push(Warning {
                    code: "looser_than_standard",
                    message: format!(
                        "{name} ({}) setpoint {sp} {unit} is looser than the standard's {bound:.3} {unit} ({dir}; {})",
                        level.as_str(),
                        a.citation
                    ),
                });
            }
        }
    };
    match p.gas {
        GasKind::Oxygen => {
            check(Level::Low, a.first, false, "low oxygen");
            check(Level::High, a.second, true, "high oxygen");
        }
        _ => {
            check(Level::High, a.first, true, "first-level");
            check(Level::HighHigh, a.second, true, "second-level");
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_matches_the_primer() {
        let nh3 = toxic_gas("nh3").unwrap();
        assert!((mg_m3_to_ppm(20.0, nh3.molar_mass) - 28.26).abs() < 0.01);
        assert!((mg_m3_to_ppm(40.0, nh3.molar_mass) - 56.51).abs() < 0.01);
        assert!((ppm_to_mg_m3(mg_m3_to_ppm(7.5, 36.46), 36.46) - 7.5).abs() < 1e-12);
    }

    #[test]
    fn kinds_and_units_parse_and_print() {
        for text in ["combustible", "combustible_open_path", "toxic:NH3", "o2"] {
            assert_eq!(text.parse::<GasKind>().unwrap().to_string(), text);
        }
        assert_eq!(
            "Toxic: h2s".parse::<GasKind>().unwrap(),
            GasKind::Toxic("h2s".into())
        );
        assert!("toxic:".parse::<GasKind>().is_err());
        assert!("steam".parse::<GasKind>().is_err());
        assert_eq!("mg/m³".parse::<GasUnit>().unwrap(), GasUnit::MgPerM3);
        assert_eq!("% LEL".parse::<GasUnit>().unwrap(), GasUnit::PercentLel);
        assert_eq!("LEL·m".parse::<GasUnit>().unwrap(), GasUnit::LelMetre);
        assert!("furlongs".parse::<GasUnit>().is_err());
        let p: GasParams = serde_json::from_str(r#"{"gas":"toxic:NH3","unit":"ppm"}"#).unwrap();
        assert_eq!(
            p,
            GasParams::new(GasKind::Toxic("NH3".into()), GasUnit::Ppm)
        );
        assert!(
            serde_json::from_str::<GasParams>(r#"{"gas":"toxic:NH3","unit":"ppm","colour":1}"#)
                .is_err()
        );
    }

    #[test]
    fn combustible_oxygen_and_open_path_levels() {
        let r = gas_rules(
            &GasParams::new(GasKind::Combustible, GasUnit::PercentLel),
            "GT-101",
        )
        .unwrap();
        assert_eq!(r.limits.setpoint(Level::High), Some(25.0));
        assert_eq!(r.limits.setpoint(Level::HighHigh), Some(50.0));
        assert_eq!(r.limits.levels[1].priority, Priority::Critical);
        assert_eq!(r.citation, CITE_COMBUSTIBLE);
        let r = gas_rules(
            &GasParams::new(GasKind::Oxygen, GasUnit::PercentVol),
            "O2-1",
        )
        .unwrap();
        assert_eq!(r.limits.setpoint(Level::Low), Some(19.5));
        assert_eq!(r.limits.setpoint(Level::High), Some(23.5));
        let r = gas_rules(
            &GasParams::new(GasKind::CombustibleOpenPath, GasUnit::LelMetre),
            "OP-1",
        )
        .unwrap();
        assert_eq!(r.limits.setpoint(Level::HighHigh), Some(2.0));
        let e = gas_rules(&GasParams::new(GasKind::Combustible, GasUnit::Ppm), "GT-1").unwrap_err();
        assert!(e.to_string().contains("%LEL"), "{e}");
    }

    #[test]
    fn toxic_levels_in_both_units_and_the_idlh_fallback() {
        let mut p = GasParams::new(GasKind::Toxic("NH3".into()), GasUnit::MgPerM3);
        let r = gas_rules(&p, "NH3-101").unwrap();
        assert_eq!(
            (
                r.limits.setpoint(Level::High),
                r.limits.setpoint(Level::HighHigh)
            ),
            (Some(20.0), Some(40.0))
        );
        p.unit = GasUnit::Ppm;
        let r = gas_rules(&p, "NH3-101").unwrap();
        assert!((r.limits.setpoint(Level::High).unwrap() - 28.26).abs() < 0.01);
        p.detector_range = Some(50.0);
        let r = gas_rules(&p, "NH3-101").unwrap();
        assert!((r.limits.setpoint(Level::High).unwrap() - mg_m3_to_ppm(18.0, 17.03)).abs() < 1e-9);
        assert!(r.notes.iter().any(|n| n.contains("IDLH")));
        let p = GasParams {
            detector_range: Some(1.0),
            ..GasParams::new(GasKind::Toxic("SO2".into()), GasUnit::MgPerM3)
        };
        assert!(matches!(
            gas_rules(&p, "SO2-1"),
            Err(PackError::RangeTooSmall { .. })
        ));
        let p = GasParams::new(GasKind::Toxic("XYZ".into()), GasUnit::MgPerM3);
        assert!(matches!(
            gas_rules(&p, "X-1"),
            Err(PackError::UnknownGas(_))
        ));
        let p = GasParams {
            oel_mg_m3: Some(3.0),
            ..p
        };
        assert_eq!(
            gas_rules(&p, "X-1")
                .unwrap()
                .limits
                .setpoint(Level::HighHigh),
            Some(6.0)
        );
    }

    #[test]
    fn gbz223_three_levels() {
        let p = GasParams {
            standard: GasStandard::Gbz223,
            high_alarm: Some(60.0),
            ..GasParams::new(GasKind::Toxic("H2S".into()), GasUnit::MgPerM3)
        };
        let r = gas_rules(&p, "H2S 1").unwrap();
        assert_eq!(
            (
                r.limits.setpoint(Level::High),
                r.limits.setpoint(Level::HighHigh)
            ),
            (Some(5.0), Some(10.0))
        );
        assert_eq!(r.conditions[0].expr, "\"H2S 1\" >= 60");
        assert_eq!(r.citation, CITE_GBZ223);
        assert!(r.notes.iter().any(|n| n.starts_with("[?]")));
    }

    #[test]
    fn check_warns_about_looser_and_missing_setpoints() {
        let p = GasParams::new(GasKind::Combustible, GasUnit::PercentLel);
        let ok = gas_rules(&p, "GT-1").unwrap().limits;
        assert!(check_gas_setpoints(&p, &ok).is_empty());
        let mut loose = ok.clone();
        loose.levels[0].setpoint = 30.0;
        loose.levels.pop();
        let w = check_gas_setpoints(&p, &loose);
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(w[0].code, "looser_than_standard");
        assert!(w[0].message.contains("30 %LEL"), "{}", w[0]);
        assert_eq!(w[1].code, "missing_level");

        // Ammonia in ppm: the primer's rounded 28/57 pass, 30 does not.
        let p = GasParams::new(GasKind::Toxic("NH3".into()), GasUnit::Ppm);
        let mut r = gas_rules(&p, "NH3-1").unwrap().limits;
        r.levels[0].setpoint = 28.0;
        r.levels[1].setpoint = 57.0;
        assert!(check_gas_setpoints(&p, &r).is_empty());
        r.levels[0].setpoint = 30.0;
        assert_eq!(check_gas_setpoints(&p, &r).len(), 1);

        // Oxygen: a low alarm below 19.5 is looser.
        let p = GasParams::new(GasKind::Oxygen, GasUnit::PercentVol);
        let mut r = gas_rules(&p, "O2-1").unwrap().limits;
        r.levels[0].setpoint = 18.0;
        let w = check_gas_setpoints(&p, &r);
        assert_eq!(w.len(), 1);
        assert!(w[0].message.contains("at least"));

        let p = GasParams::new(GasKind::Combustible, GasUnit::Ppm);
        assert_eq!(check_gas_setpoints(&p, &r)[0].code, "cannot_check");
    }
}
