//! The plant as the running gateway sees it: the configuration resolved into dense indices,
//! shared read-only by the engine task, the API and the notifiers.

use std::collections::HashMap;
use std::time::Duration;

use alert_rules::{
    AlarmSource, DeviceId, DeviceRules, EngineConfig, LimitLevel, LimitRule, PointId, PointRules,
};
use drivers::modbus::{DeviceSettings, Endpoint, PolledPoint};

use crate::config::{Config, Device, Point, Site};

pub struct Plant {
    pub site: Site,
    pub points: Vec<Point>,
    pub devices: Vec<Device>,
    tags: HashMap<String, PointId>,
    device_ids: HashMap<String, DeviceId>,
}

impl Plant {
    /// Build from a validated configuration.
    pub fn new(config: &Config) -> Plant {
        let tags = config
            .points
            .iter()
            .enumerate()
            .map(|(i, p)| (p.tag.clone(), PointId(i as u32)))
            .collect();
        let device_ids = config
            .devices
            .iter()
            .enumerate()
            .map(|(i, d)| (d.name().to_owned(), DeviceId(i as u32)))
            .collect();
        Plant {
            site: config.site.clone(),
            points: config.points.clone(),
            devices: config.devices.clone(),
            tags,
            device_ids,
        }
    }

    pub fn point(&self, id: PointId) -> Option<&Point> {
        self.points.get(id.0 as usize)
    }

    pub fn point_id(&self, tag: &str) -> Option<PointId> {
        self.tags.get(tag).copied()
    }

    pub fn device_id(&self, name: &str) -> Option<DeviceId> {
        self.device_ids.get(name).copied()
    }

    pub fn device_name(&self, id: DeviceId) -> &str {
        self.devices.get(id.0 as usize).map_or("?", Device::name)
    }

    /// What the alarm engine watches.
    pub fn engine_config(&self) -> EngineConfig {
        let points = self
            .points
            .iter()
            .map(|p| PointRules {
                device: self.device_id(&p.device),
                limits: p.limits.as_ref().map(|l| LimitRule {
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
                    on_delay_ms: l.on_delay_ms as i64,
                    off_delay_ms: l.off_delay_ms as i64,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        let devices = self
            .devices
            .iter()
            .map(|d| {
                let Device::ModbusTcp(m) = d;
                DeviceRules {
                    comm_loss_after_ms: (m.comm_loss_after_secs * 1000) as i64,
                    comm_loss_priority: m.comm_loss_priority,
                    ..Default::default()
                }
            })
            .collect();
        EngineConfig {
            points,
            devices,
            ..Default::default()
        }
    }

    /// One poll task's settings per Modbus device.
    pub fn modbus_devices(&self) -> Vec<DeviceSettings> {
        self.devices
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let Device::ModbusTcp(m) = d;
                let points = self
                    .points
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.device == m.name)
                    .map(|(j, p)| PolledPoint {
                        id: PointId(j as u32),
                        register: p.register.clone(),
                    })
                    .collect();
                DeviceSettings {
                    id: DeviceId(i as u32),
                    name: m.name.clone(),
                    endpoint: Endpoint::Tcp {
                        host: m.host.clone(),
                        port: m.port,
                    },
                    unit_id: m.unit_id,
                    poll_interval: Duration::from_millis(m.poll_interval_ms),
                    timeout: Duration::from_millis(m.timeout_ms),
                    max_registers_per_request: m.max_registers_per_request,
                    max_gap: m.max_gap,
                    points,
                }
            })
            .collect()
    }

    /// The tag or device name an alarm is about, its area, and its unit.
    pub fn describe(&self, source: &AlarmSource) -> (String, String, String) {
        if let Some(point) = source.point() {
            return match self.point(point) {
                Some(p) => (p.tag.clone(), p.area.clone(), p.unit.clone()),
                None => (format!("point-{}", point.0), String::new(), String::new()),
            };
        }
        if let Some(device) = source.device() {
            return (
                self.device_name(device).to_owned(),
                String::new(),
                String::new(),
            );
        }
        (source.to_string(), String::new(), String::new())
    }
}
