//! An MQTT device of the configuration resolved into what its ingest task needs.

use std::time::Duration;

use alert_rules::{DeviceId, PointId};
use drivers::mqtt::{MqttDeviceSettings, MqttPoint, Qos, topic::Template};

use crate::config::{MqttDevice, Point, Site};

pub fn settings(site: &Site, id: DeviceId, d: &MqttDevice, points: &[Point]) -> MqttDeviceSettings {
    // Validation has accepted the template already; a failure here only disables it.
    let template = d
        .topic_template
        .as_deref()
        .and_then(|t| Template::parse(t).ok());
    let mut filters = d.topics.clone();
    if let Some(t) = &template {
        filters.push(t.filter());
    }
    let points: Vec<MqttPoint> = points
        .iter()
        .enumerate()
        .filter(|(_, p)| p.device == d.name)
        .map(|(j, p)| {
            let extra = p.extra();
            MqttPoint {
                id: PointId(j as u32),
                topic: extra.topic.clone(),
                key: template
                    .as_ref()
                    .map(|_| extra.topic_point.clone().unwrap_or_else(|| p.tag.clone())),
                json_pointer: extra.json_pointer.clone(),
                stale_after: extra.stale_after_ms.map(Duration::from_millis),
            }
        })
        .collect();
    // A point's own topic must be subscribed to as well.
    for p in &points {
        if let Some(t) = &p.topic
            && !filters
                .iter()
                .any(|f| drivers::mqtt::topic::matches(f, t) || f == t)
        {
            filters.push(t.clone());
        }
    }
    MqttDeviceSettings {
        id,
        name: d.name.clone(),
        broker: d.broker.clone(),
        // Stable across restarts, so the broker finds the persistent session again.
        client_id: d
            .broker
            .client_id_or(&format!("sentinel-{}-{}", site.id, d.name)),
        clean_session: d.broker.clean_session.unwrap_or(false),
        qos: if d.qos == 0 {
            Qos::AtMostOnce
        } else {
            Qos::AtLeastOnce
        },
        filters,
        template,
        timestamp_pointer: d.timestamp_pointer.clone(),
        timestamp_format: d.timestamp_format,
        quality_pointer: d.quality_pointer.clone(),
        quality_good: d.quality_good.clone(),
        max_payload_bytes: d.max_payload_bytes,
        points,
    }
}
