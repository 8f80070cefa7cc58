//! The site status: what a regulator's map and the uplink need to know at a glance.

use alert_rules::{Colour, Engine, Priority};
use serde::Serialize;
use tokio::sync::oneshot;

use super::State;
use crate::event::rfc3339;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnitStatus {
    pub id: String,
    pub name: String,
    pub static_colour: Colour,
    pub colour: Colour,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SiteStatus {
    pub site: String,
    pub name: String,
    /// The live colour: the worst unit's, never below the site's assessed colour.
    pub colour: Colour,
    pub static_colour: Colour,
    pub units: Vec<UnitStatus>,
    /// Active alarms (not hidden) by priority: low, medium, high, critical.
    pub active_alarms: [u32; 4],
    /// Active alarms nobody has acknowledged yet.
    pub unacknowledged: u32,
    pub points_online: u32,
    pub points_total: u32,
    pub last_data_at: Option<String>,
    pub online: bool,
}

impl SiteStatus {
    pub fn empty(site: &str, name: &str, colour: Colour) -> SiteStatus {
        SiteStatus {
            site: site.to_owned(),
            name: name.to_owned(),
            colour,
            static_colour: colour,
            units: Vec::new(),
            active_alarms: [0; 4],
            unacknowledged: 0,
            points_online: 0,
            points_total: 0,
            last_data_at: None,
            online: true,
        }
    }
}

impl State {
    pub(super) fn site_status(&self, engine: &Engine) -> SiteStatus {
        let plant = &self.plant;
        let static_colour = plant.site.risk_colour;
        let colour = self.risk.site_colour().max(static_colour);
        let units = plant
            .risk_units
            .iter()
            .enumerate()
            .map(|(i, u)| UnitStatus {
                id: u.id.clone(),
                name: u.name.clone(),
                static_colour: u.colour,
                colour: self.risk.unit_colour(i).unwrap_or(u.colour),
            })
            .collect();
        let mut active_alarms = [0u32; 4];
        let mut unacknowledged = 0;
        for a in engine.open_alarms() {
            if a.state.is_active() {
                let i = Priority::ALL
                    .iter()
                    .position(|p| *p == a.priority)
                    .unwrap_or(0);
                active_alarms[i] += 1;
                if a.state == alert_rules::AlarmState::ActiveUnacked {
                    unacknowledged += 1;
                }
            }
        }
        let points_online = self
            .last
            .iter()
            .filter(|l| l.quality.is_some_and(|q| q.is_good()))
            .count() as u32;
        SiteStatus {
            site: plant.site.id.clone(),
            name: plant.site.name.clone(),
            colour,
            static_colour,
            units,
            active_alarms,
            unacknowledged,
            points_online,
            points_total: plant.points.len() as u32,
            last_data_at: self.last_data.map(rfc3339),
            online: true,
        }
    }

    /// Publishes the site status, unless a colour change in it is not committed yet (then
    /// it stays due, for the next tick).
    pub(super) fn publish_status(&mut self, engine: &Engine) {
        if let Some(gate) = &mut self.status_gate {
            match gate.try_recv() {
                // Not committed yet.
                Err(oneshot::error::TryRecvError::Empty) => {
                    self.status_dirty = true;
                    return;
                }
                // Committed, or the writer is gone (and the engine with it).
                Ok(()) | Err(oneshot::error::TryRecvError::Closed) => self.status_gate = None,
            }
        }
        self.status_dirty = false;
        let status = self.site_status(engine);
        self.status.send_if_modified(|s| {
            if *s == status {
                false
            } else {
                *s = status;
                true
            }
        });
    }
}
