//! What the API shows of the engine's state.

use alert_rules::{Engine, PointId, Quality};
use serde::Serialize;

use super::State;
use crate::event::rfc3339;

/// A point as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PointView {
    pub tag: String,
    pub name: String,
    pub device: String,
    pub kind: String,
    pub unit: String,
    pub area: String,
    pub span: Option<[f64; 2]>,
    /// The last good (or uncertain) value; `null` when none was ever received.
    pub value: Option<f64>,
    /// When that value was measured: never re-stamped while the point is bad.
    pub time: Option<String>,
    pub quality: &'static str,
    /// Since when the point has had its present quality.
    pub quality_since: Option<String>,
    /// Open alarms of the point, and the worst state among them.
    pub open_alarms: usize,
    pub alarm_state: &'static str,
}

/// The four-colour picture: the site and each risk unit, with where to draw it.
#[derive(Debug, Clone, Serialize)]
pub struct RiskView {
    #[serde(flatten)]
    pub status: super::SiteStatus,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub unit_places: Vec<UnitPlace>,
}

#[derive(Debug, Clone, Serialize)]
pub struct UnitPlace {
    pub id: String,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub x_pct: Option<f64>,
    pub y_pct: Option<f64>,
    pub points: Vec<String>,
    pub areas: Vec<String>,
}

impl State {
    pub(super) fn point_views(&self, engine: &Engine) -> Vec<PointView> {
        self.plant
            .points
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let last = self.last[i];
                let summary = engine.point_summary(PointId(i as u32));
                PointView {
                    tag: p.tag.clone(),
                    name: p.name.clone(),
                    device: p.device.clone(),
                    kind: p.kind.clone(),
                    unit: p.unit.clone(),
                    area: p.area.clone(),
                    span: p.span,
                    value: last.value,
                    time: last.time.map(rfc3339),
                    quality: last.quality.map_or("no_data", Quality::as_str),
                    quality_since: last.quality_since.map(rfc3339),
                    open_alarms: summary.open,
                    alarm_state: summary.worst.as_str(),
                }
            })
            .collect()
    }

    pub(super) fn risk_view(&self, engine: &Engine) -> RiskView {
        let plant = &self.plant;
        RiskView {
            status: self.site_status(engine),
            latitude: plant.site.latitude,
            longitude: plant.site.longitude,
            unit_places: plant
                .risk_units
                .iter()
                .map(|u| UnitPlace {
                    id: u.id.clone(),
                    latitude: u.latitude,
                    longitude: u.longitude,
                    x_pct: u.x_pct,
                    y_pct: u.y_pct,
                    points: u.points.clone(),
                    areas: u.areas.clone(),
                })
                .collect(),
        }
    }
}
