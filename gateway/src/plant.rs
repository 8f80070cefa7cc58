//! The plant as the running gateway sees it: the configuration resolved into dense indices,
//! shared read-only by the engine task, the API and the notifiers.

use std::collections::HashMap;
use std::time::Duration;

use alert_rules::{AlarmSource, DeviceId, EngineConfig, PointId};
use drivers::modbus::{DeviceSettings, Endpoint, PolledPoint, SerialLine};

use crate::config::{Config, Device, Point, Site};

#[path = "plant_mqtt.rs"]
mod mqtt;

pub struct Plant {
    pub site: Site,
    pub points: std::sync::Arc<Vec<Point>>,
    pub devices: Vec<Device>,
    pub conditions: Vec<crate::config::ConditionConfig>,
    pub risk_units: Vec<crate::config::RiskUnitSettings>,
    /// The points' indices in the order of their tags, to find a point by tag. A sorted index
    /// rather than a map of copied tags: 4 bytes a point instead of about 100.
    by_tag: Vec<u32>,
    device_ids: HashMap<String, DeviceId>,
    /// The rules as the engine takes them, built once.
    rules: Option<crate::rulebook::Rulebook>,
}

impl Plant {
    /// Build from a validated configuration.
    pub fn new(config: &Config) -> Plant {
        let mut by_tag: Vec<u32> = (0..config.points.len() as u32).collect();
        by_tag.sort_unstable_by(|&a, &b| {
            config.points[a as usize]
                .tag
                .cmp(&config.points[b as usize].tag)
        });
        let device_ids = config
            .devices
            .iter()
            .enumerate()
            .map(|(i, d)| (d.name().to_owned(), DeviceId(i as u32)))
            .collect();
        let mut plant = Plant {
            site: config.site.clone(),
            points: std::sync::Arc::clone(&config.points),
            devices: config.devices.clone(),
            conditions: config.conditions.clone(),
            risk_units: config.risk_units.clone(),
            by_tag,
            device_ids,
            rules: None,
        };
        let e = &config.engine;
        plant.rules = Some(crate::rulebook::build(
            &plant,
            crate::config::to_ms(e.max_shelve_secs, 1000),
            crate::config::to_ms(e.max_out_of_service_hours, 3_600_000),
        ));
        plant
    }

    /// The rules, and any problems and warnings found while building them.
    pub fn rulebook(&self) -> &crate::rulebook::Rulebook {
        // Set in `new`, before the plant is handed out.
        self.rules
            .as_ref()
            .unwrap_or_else(|| unreachable!("Plant::new builds the rulebook"))
    }

    /// Name and area of a condition alarm.
    pub fn condition(&self, id: alert_rules::ConditionId) -> Option<&(String, String)> {
        self.rulebook().conditions.get(id.0 as usize)
    }

    pub fn point(&self, id: PointId) -> Option<&Point> {
        self.points.get(id.0 as usize)
    }

    pub fn point_id(&self, tag: &str) -> Option<PointId> {
        // Validation keeps tags unique; with a duplicate (an unchecked file), one of them.
        let i = self
            .by_tag
            .binary_search_by(|&i| self.points[i as usize].tag.as_str().cmp(tag))
            .ok()?;
        Some(PointId(self.by_tag[i]))
    }

    pub fn device_id(&self, name: &str) -> Option<DeviceId> {
        self.device_ids.get(name).copied()
    }

    pub fn device_name(&self, id: DeviceId) -> &str {
        self.devices.get(id.0 as usize).map_or("?", Device::name)
    }

    /// What the alarm engine watches.
    pub fn engine_config(&self) -> std::sync::Arc<EngineConfig> {
        std::sync::Arc::clone(&self.rulebook().engine)
    }

    /// Poll settings per Modbus device (unit); `drivers::modbus::group_links` puts the units
    /// that share an endpoint on one connection or bus.
    pub fn modbus_devices(&self) -> Vec<DeviceSettings> {
        self.devices
            .iter()
            .enumerate()
            .filter_map(|(i, d)| {
                let o = d.modbus()?;
                let endpoint = match d {
                    Device::ModbusTcp(m) => Endpoint::Tcp {
                        host: m.host.clone(),
                        port: m.port,
                    },
                    Device::ModbusRtuOverTcp(m) => Endpoint::RtuOverTcp {
                        host: m.host.clone(),
                        port: m.port,
                    },
                    Device::ModbusRtu(m) => Endpoint::Serial(SerialLine {
                        path: m.serial_port.clone(),
                        baud_rate: m.baud_rate,
                        parity: m.parity,
                        data_bits: m.data_bits,
                        stop_bits: m.stop_bits,
                    }),
                    Device::Mqtt(_) => return None,
                };
                let points = self
                    .points
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.device == d.name())
                    .filter_map(|(j, p)| {
                        // Validation keeps 1-based addresses at 1 or more, and requires a
                        // register for every Modbus point.
                        let mut register = p.register.clone()?;
                        register.address = register.address.saturating_sub(o.address_base);
                        if let Some(status) = &mut register.status {
                            status.address = status.address.saturating_sub(o.address_base);
                        }
                        Some(PolledPoint {
                            id: PointId(j as u32),
                            register,
                            span: p.span,
                        })
                    })
                    .collect();
                Some(DeviceSettings {
                    id: DeviceId(i as u32),
                    name: d.name().to_owned(),
                    endpoint,
                    unit_id: o.unit_id,
                    poll_interval: Duration::from_millis(o.poll_interval_ms),
                    timeout: Duration::from_millis(o.timeout_ms),
                    max_registers_per_request: o.max_registers_per_request,
                    max_gap: o.max_gap,
                    frame_gap: Duration::from_millis(o.frame_gap_ms),
                    max_in_flight: o.max_in_flight,
                    points,
                })
            })
            .collect()
    }

    /// One ingest task's settings per MQTT device.
    pub fn mqtt_devices(&self) -> Vec<drivers::mqtt::MqttDeviceSettings> {
        self.devices
            .iter()
            .enumerate()
            .filter_map(|(i, d)| {
                let Device::Mqtt(m) = d else { return None };
                Some(mqtt::settings(
                    &self.site,
                    DeviceId(i as u32),
                    m,
                    &self.points,
                ))
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
        if let Some(c) = source.condition().and_then(|c| self.condition(c)) {
            return (c.0.clone(), c.1.clone(), String::new());
        }
        if let AlarmSource::System { check } = source {
            return (
                check.as_str().to_owned(),
                "sentinel".to_owned(),
                String::new(),
            );
        }
        (source.to_string(), String::new(), String::new())
    }
}
