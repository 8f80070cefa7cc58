//! Builds the engine's rules from the configuration: explicit limits, sector packs, rate,
//! deviation, fault and data-interruption rules, suppression by design, condition alarms and
//! risk units. Every problem is reported with its configuration path; warnings (a gas setpoint
//! looser than the standard) do not stop the gateway but are printed by `sentinel check` and
//! logged at start.

use alert_rules::packs::check_setpoints;
use alert_rules::{
    Condition, ConditionId, ConditionRule, DataInterruptionRule, DeviationRule, DeviceRules,
    EngineConfig, FaultRule, LimitLevel, LimitRule, PointRules, RateRule, RiskUnitConfig, Span,
};

use crate::config::{ConditionConfig, ConfigError, Limits};
use crate::plant::Plant;

/// Everything the engine task needs about rules, and what was wrong with them.
pub struct Rulebook {
    pub engine: std::sync::Arc<EngineConfig>,
    /// Name and area of each condition alarm, by its id (index).
    pub conditions: Vec<(String, String)>,
    pub risk_units: Vec<RiskUnitConfig>,
    pub problems: Vec<ConfigError>,
    pub warnings: Vec<ConfigError>,
}

fn problem(path: String, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path,
        message: message.into(),
    }
}

fn limit_rule(l: &Limits) -> LimitRule {
    LimitRule {
        levels: l
            .levels
            .iter()
            .map(|lv| LimitLevel {
                level: lv.level,
                setpoint: lv.setpoint,
                priority: lv.priority(),
            })
            .collect(),
        deadband: l.deadband,
        on_delay_ms: crate::config::to_ms(l.on_delay_ms, 1),
        off_delay_ms: crate::config::to_ms(l.off_delay_ms, 1),
        deadband_pct: l.deadband_pct,
        realarm_ms: l.realarm_ms.map(|ms| crate::config::to_ms(ms, 1)),
        latch: l.latch,
    }
}

pub fn build(plant: &Plant, max_shelve_ms: i64, max_out_of_service_ms: i64) -> Rulebook {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let mut conditions: Vec<ConditionRule> = Vec::new();
    let mut names: Vec<(String, String)> = Vec::new();
    let resolve = |tag: &str| plant.point_id(tag);

    let mut points = Vec::with_capacity(plant.points.len());
    for (i, p) in plant.points.iter().enumerate() {
        let at = |field: &str| format!("points[{i}].{field}");
        let span = p.span.map(|[low, high]| Span { low, high });
        let pack = match &p.pack {
            Some(pack) => match pack.rules(&p.tag) {
                Ok(rules) => Some((pack, rules)),
                Err(e) => {
                    problems.push(problem(at("pack"), e.to_string()));
                    None
                }
            },
            None => None,
        };
        let limits = match (&p.limits, &pack) {
            (Some(l), Some((pack, _))) => {
                let rule = limit_rule(l);
                for w in check_setpoints(pack, &rule) {
                    warnings.push(problem(at("limits"), w.message));
                }
                Some(rule)
            }
            (Some(l), None) => Some(limit_rule(l)),
            (None, Some((_, rules))) => Some(rules.limits.clone()),
            (None, None) => None,
        };
        let fault = match &p.fault {
            Some(f) if !f.enabled => None,
            Some(f) => Some(FaultRule {
                priority: f.priority,
                on_delay_ms: crate::config::to_ms(f.on_delay_ms, 1),
            }),
            None => pack.as_ref().and_then(|(_, r)| r.fault).or(Some(FaultRule {
                priority: crate::config::FaultConfig::default().priority,
                on_delay_ms: crate::config::to_ms(
                    crate::config::FaultConfig::default().on_delay_ms,
                    1,
                ),
            })),
        };
        if let Some((_, rules)) = &pack {
            for c in &rules.conditions {
                match Condition::compile(&c.expr, resolve) {
                    Ok(when) => {
                        names.push((format!("{}: {}", p.tag, c.name), p.area.clone()));
                        conditions.push(ConditionRule {
                            name: c.name.clone(),
                            when,
                            priority: c.priority,
                            on_delay_ms: c.on_delay_ms,
                            off_delay_ms: 0,
                            realarm_ms: None,
                            latch: false,
                        });
                    }
                    Err(e) => problems.push(problem(
                        at("pack"),
                        format!(
                            "the pack's condition {:?} does not fit this site: {e}",
                            c.expr
                        ),
                    )),
                }
            }
        }
        let rate = p.rate.as_ref().map(|r| RateRule {
            max_rise_per_min: r.max_rise_per_min,
            max_fall_per_min: r.max_fall_per_min,
            window_ms: crate::config::to_ms(r.window_ms, 1),
            priority: r.priority,
            on_delay_ms: crate::config::to_ms(r.on_delay_ms, 1),
            off_delay_ms: crate::config::to_ms(r.off_delay_ms, 1),
        });
        let deviation = p
            .deviation
            .as_ref()
            .and_then(|d| match plant.point_id(&d.other) {
                Some(other) => Some(DeviationRule {
                    other,
                    max_difference: d.max_difference,
                    deadband: d.deadband,
                    priority: d.priority,
                    on_delay_ms: crate::config::to_ms(d.on_delay_ms, 1),
                    off_delay_ms: crate::config::to_ms(d.off_delay_ms, 1),
                }),
                None => {
                    problems.push(problem(
                        at("deviation.other"),
                        format!("no point has tag {:?}", d.other),
                    ));
                    None
                }
            });
        let suppress_when = p.extra().suppress_when.as_ref().and_then(|text| {
            match Condition::compile(text, resolve) {
                Ok(c) => Some(Box::new(c)),
                Err(e) => {
                    problems.push(problem(at("suppress_when"), e.to_string()));
                    None
                }
            }
        });
        points.push(PointRules {
            device: plant.device_id(&p.device),
            limits: limits.map(Box::new),
            span,
            rate: rate.map(Box::new),
            deviation: deviation.map(Box::new),
            fault,
            data_interruption: p.data_interruption_after_ms.map(|ms| DataInterruptionRule {
                after_ms: crate::config::to_ms(ms, 1),
                priority: p.data_interruption_priority,
            }),
            suppress_when,
        });
    }

    for (i, c) in plant.conditions.iter().enumerate() {
        match compile_condition(c, resolve) {
            Ok(rule) => {
                names.push((c.name.clone(), c.area.clone()));
                conditions.push(rule);
            }
            Err(message) => problems.push(problem(format!("conditions[{i}].when"), message)),
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (i, c) in plant.conditions.iter().enumerate() {
        if !seen.insert(c.name.as_str()) {
            problems.push(problem(
                format!("conditions[{i}].name"),
                format!("{:?} is used twice", c.name),
            ));
        }
    }

    let devices = plant
        .devices
        .iter()
        .map(|d| DeviceRules {
            comm_loss_after_ms: crate::config::to_ms(d.comm_loss_after_secs(), 1000),
            comm_loss_priority: d.comm_loss_priority(),
        })
        .collect();

    let mut risk_units = Vec::new();
    let mut unit_ids = std::collections::HashSet::new();
    for (i, u) in plant.risk_units.iter().enumerate() {
        let at = |field: &str| format!("risk_units[{i}].{field}");
        if u.id.is_empty() || !unit_ids.insert(u.id.as_str()) {
            problems.push(problem(at("id"), "must be non-empty and unique"));
        }
        let mut unit_points = Vec::new();
        for tag in &u.points {
            match plant.point_id(tag) {
                Some(id) => unit_points.push(id),
                None => problems.push(problem(at("points"), format!("no point has tag {tag:?}"))),
            }
        }
        for area in &u.areas {
            let before = unit_points.len();
            for (j, p) in plant.points.iter().enumerate() {
                if &p.area == area && !unit_points.contains(&alert_rules::PointId(j as u32)) {
                    unit_points.push(alert_rules::PointId(j as u32));
                }
            }
            if unit_points.len() == before && !plant.points.iter().any(|p| &p.area == area) {
                problems.push(problem(
                    at("areas"),
                    format!("no point is in area {area:?}"),
                ));
            }
        }
        let mut unit_devices = Vec::new();
        for name in &u.devices {
            match plant.device_id(name) {
                Some(id) => unit_devices.push(id),
                None => problems.push(problem(
                    at("devices"),
                    format!("no device is named {name:?}"),
                )),
            }
        }
        let mut unit_conditions = Vec::new();
        for name in &u.conditions {
            match plant.conditions.iter().position(|c| &c.name == name) {
                // Site conditions follow the packs' conditions in the engine's list.
                Some(k) => unit_conditions.push(ConditionId(
                    (conditions.len() - plant.conditions.len() + k) as u32,
                )),
                None => problems.push(problem(
                    at("conditions"),
                    format!("no condition is named {name:?}"),
                )),
            }
        }
        for (k, (_, area)) in names.iter().enumerate() {
            if u.areas.contains(area) && !unit_conditions.contains(&ConditionId(k as u32)) {
                unit_conditions.push(ConditionId(k as u32));
            }
        }
        risk_units.push(RiskUnitConfig {
            name: u.name.clone(),
            static_colour: u.colour,
            points: unit_points,
            conditions: unit_conditions,
            devices: unit_devices,
            hold_ms: crate::config::to_ms(u.hold_secs, 1000),
        });
    }

    if plant.risk_units.is_empty() {
        // No units configured: the whole site is one unit, so its live colour still follows
        // its alarms by the same rule as everywhere (docs/rules.md, four-colour risk).
        risk_units.push(RiskUnitConfig {
            name: plant.site.name.clone(),
            static_colour: plant.site.risk_colour,
            points: (0..plant.points.len())
                .map(|i| alert_rules::PointId(i as u32))
                .collect(),
            conditions: (0..conditions.len())
                .map(|k| ConditionId(k as u32))
                .collect(),
            devices: (0..plant.devices.len())
                .map(|d| alert_rules::DeviceId(d as u32))
                .collect(),
            hold_ms: 600_000,
        });
    }
    let engine = EngineConfig {
        points,
        devices,
        conditions,
        max_shelve_ms,
        max_out_of_service_ms,
    };
    for issue in engine.validate() {
        problems.push(problem(issue.path, issue.message));
    }
    Rulebook {
        engine: std::sync::Arc::new(engine),
        conditions: names,
        risk_units,
        problems,
        warnings,
    }
}

fn compile_condition(
    c: &ConditionConfig,
    resolve: impl FnMut(&str) -> Option<alert_rules::PointId>,
) -> Result<ConditionRule, String> {
    let when = Condition::compile(&c.when, resolve).map_err(|e| e.to_string())?;
    Ok(ConditionRule {
        name: c.name.clone(),
        when,
        priority: c.priority,
        on_delay_ms: crate::config::to_ms(c.on_delay_ms, 1),
        off_delay_ms: crate::config::to_ms(c.off_delay_ms, 1),
        realarm_ms: c.realarm_ms.map(|ms| crate::config::to_ms(ms, 1)),
        latch: c.latch,
    })
}
