//! Sector rule packs: default rules for a point from the standards of its sector, each with
//! the citation it rests on, selectable per point in the configuration.
//!
//! A pack gives a [`LimitRule`] (and a fault rule), plus condition alarms as text over tags,
//! which the gateway compiles with its tag resolver like any other condition. Values marked
//! `[?]` in a pack's notes are configurable defaults that no standard we have read fixes;
//! docs/rules.md lists them.
//!
//! [`check_setpoints`] (and [`check_gas_setpoints`] for gas) says when a configured rule is
//! looser than its pack's standard allows; `sentinel check` prints the warnings.

mod gas;
mod sector;

use serde::{Deserialize, Serialize};

use crate::alarm::Priority;
use crate::reading::Millis;
use crate::rules::{FaultRule, LimitRule};

pub use gas::{
    CITE_COMBUSTIBLE, CITE_GBZ223, CITE_OPEN_PATH, CITE_OXYGEN, CITE_TOXIC, GasKind, GasParams,
    GasStandard, GasUnit, MOLAR_VOLUME_20C, TOXIC_GASES, ToxicGas, check_gas_setpoints, gas_rules,
    mg_m3_to_ppm, ppm_to_mg_m3, toxic_gas,
};
pub use sector::{
    AmmoniaRoomParams, CITE_AMMONIA_ROOM, CITE_BLAST_FURNACE, CITE_COOLING_WATER, CITE_ELECTRICAL,
    CITE_ISA_DEADBANDS, CITE_TANK, CoolingWater, Electrical, ProcessKind, TankMeasurand,
    ammonia_room_rules, check_electrical_setpoints, cooling_water_rules, electrical_rules,
    isa_starting_values, tank_rules,
};

/// A pack and its parameters, as the configuration selects it for a point:
/// `pack = { pack = "gas", gas = "toxic:NH3", unit = "ppm" }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "pack", rename_all = "snake_case")]
pub enum Pack {
    Gas(GasParams),
    AmmoniaRoom(AmmoniaRoomParams),
    ElectricalFire(Electrical),
    CoolingWater(CoolingWater),
    Tank {
        measurand: TankMeasurand,
        span: crate::rules::Span,
    },
}

impl Pack {
    pub const fn name(&self) -> &'static str {
        match self {
            Pack::Gas(_) => "gas",
            Pack::AmmoniaRoom(_) => "ammonia_room",
            Pack::ElectricalFire(_) => "electrical_fire",
            Pack::CoolingWater(_) => "cooling_water",
            Pack::Tank { .. } => "tank",
        }
    }

    /// The pack's default rules for the point with tag `tag`.
    pub fn rules(&self, tag: &str) -> Result<PackRules, PackError> {
        match self {
            Pack::Gas(p) => gas_rules(p, tag),
            Pack::AmmoniaRoom(p) => Ok(ammonia_room_rules(p, tag)),
            Pack::ElectricalFire(p) => electrical_rules(p),
            Pack::CoolingWater(p) => cooling_water_rules(p, tag),
            Pack::Tank { measurand, span } => tank_rules(*measurand, *span),
        }
    }
}

/// What a pack proposes for one point.
#[derive(Debug, Clone, PartialEq)]
pub struct PackRules {
    pub limits: LimitRule,
    pub fault: Option<FaultRule>,
    /// Condition alarms, as text in the condition language, to compile with the site's tags.
    pub conditions: Vec<PackCondition>,
    /// The standard and what it says, for the docs and `sentinel check`.
    pub citation: &'static str,
    /// Choices the standard leaves open, marked `[?]`, and anything else worth saying.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PackCondition {
    pub name: String,
    pub expr: String,
    pub priority: Priority,
    pub on_delay_ms: Millis,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PackError {
    #[error("unknown gas `{0}` (known: combustible, combustible_open_path, o2, toxic:<formula>)")]
    UnknownGas(String),
    #[error("unknown unit `{0}` (known: %LEL, LEL.m, mg/m3, ppm, %VOL)")]
    UnknownUnit(String),
    #[error("{gas} is measured in {expected}, not {unit}")]
    UnitMismatch {
        gas: String,
        unit: &'static str,
        expected: &'static str,
    },
    #[error(
        "the {gas} detector range {range} cannot reach the second level {second:.3}, and no IDLH is known for it"
    )]
    RangeTooSmall {
        gas: String,
        range: f64,
        second: f64,
    },
    #[error("{0}")]
    InvalidParameter(String),
}

/// A setpoint that the standard would not accept, or that cannot be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// `looser_than_standard`, `missing_level`, `outside_range` or `cannot_check`.
    pub code: &'static str,
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Warnings for a configured rule against the standard of its pack (gas levels, residual
/// current range). Packs whose numbers are only defaults produce none.
pub fn check_setpoints(pack: &Pack, rule: &LimitRule) -> Vec<Warning> {
    match pack {
        Pack::Gas(p) => check_gas_setpoints(p, rule),
        Pack::ElectricalFire(e) => check_electrical_setpoints(e, rule),
        Pack::AmmoniaRoom(_) | Pack::CoolingWater(_) | Pack::Tank { .. } => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alarm::Level;

    #[test]
    fn packs_deserialise_from_configuration() {
        let p: Pack =
            serde_json::from_str(r#"{"pack":"gas","gas":"toxic:NH3","unit":"ppm"}"#).unwrap();
        assert_eq!(p.name(), "gas");
        let r = p.rules("NH3-101").unwrap();
        assert_eq!(r.citation, CITE_TOXIC);
        let p: Pack = serde_json::from_str(
            r#"{"pack":"tank","measurand":"level","span":{"low":0.0,"high":12.0}}"#,
        )
        .unwrap();
        assert_eq!(
            p.rules("LT-1").unwrap().limits.setpoint(Level::HighHigh),
            Some(11.4)
        );
        let p: Pack =
            serde_json::from_str(r#"{"pack":"electrical_fire","measurand":"residual_current"}"#)
                .unwrap();
        assert_eq!(
            p.rules("RC-1").unwrap().limits.setpoint(Level::High),
            Some(300.0)
        );
        let p: Pack =
            serde_json::from_str(r#"{"pack":"ammonia_room","exhaust_fan":"FAN-101"}"#).unwrap();
        assert_eq!(p.rules("NH3-9").unwrap().conditions.len(), 1);
        let p: Pack = serde_json::from_str(
            r#"{"pack":"cooling_water","measurand":"flow_difference","inlet":"FT-201","max_difference":5.0,"running":"FURNACE-1-RUN"}"#,
        )
        .unwrap();
        assert_eq!(
            p.rules("FT-202").unwrap().conditions[0].expr,
            "FT-201 - FT-202 > 5 && FURNACE-1-RUN"
        );
    }

    #[test]
    fn check_dispatches_by_pack() {
        let gas = Pack::Gas(GasParams::new(GasKind::Combustible, GasUnit::PercentLel));
        let mut rule = gas.rules("GT-1").unwrap().limits;
        assert!(check_setpoints(&gas, &rule).is_empty());
        rule.levels[1].setpoint = 60.0;
        assert_eq!(check_setpoints(&gas, &rule).len(), 1);
        let tank = Pack::Tank {
            measurand: TankMeasurand::Level,
            span: crate::rules::Span {
                low: 0.0,
                high: 10.0,
            },
        };
        assert!(check_setpoints(&tank, &rule).is_empty());
    }
}
