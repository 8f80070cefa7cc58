//! Checks for MQTT devices, MQTT point mappings and the MQTT notifier. Anything rumqttc would
//! panic on is rejected here, so `sentinel check` catches it before the daemon starts.

use drivers::mqtt::{payload, topic};

use super::load::{ConfigError, err};
use super::model::{Device, MqttDevice, MqttNotify, Point};

const DAY_MS: u64 = 86_400_000;

pub(super) fn check_device(
    d: &MqttDevice,
    at: &dyn Fn(&str) -> String,
    errors: &mut Vec<ConfigError>,
) {
    for (field, message) in d.broker.errors() {
        errors.push(err(at(&format!("broker.{field}")), message));
    }
    if d.topics.is_empty() && d.topic_template.is_none() {
        errors.push(err(
            at("topics"),
            "name at least one topic filter, or a topic_template",
        ));
    }
    for (j, filter) in d.topics.iter().enumerate() {
        if let Some(e) = topic::filter_error(filter) {
            errors.push(err(at(&format!("topics[{j}]")), e));
        }
    }
    if let Some(t) = &d.topic_template
        && let Err(e) = topic::Template::parse(t)
    {
        errors.push(err(at("topic_template"), e));
    }
    if d.qos > 1 {
        errors.push(err(at("qos"), "must be 0 or 1"));
    }
    for (field, ptr) in [
        ("timestamp_pointer", &d.timestamp_pointer),
        ("quality_pointer", &d.quality_pointer),
    ] {
        if let Some(e) = ptr.as_deref().and_then(payload::pointer_error) {
            errors.push(err(at(field), e));
        }
    }
    if d.max_payload_bytes == 0 || d.max_payload_bytes > d.broker.max_packet_bytes {
        errors.push(err(
            at("max_payload_bytes"),
            "must be within 1..=broker.max_packet_bytes",
        ));
    }
    if d.broker.mqtt_version == 5
        && !d.broker.clean_session.unwrap_or(false)
        && d.broker.session_expiry_secs == 0
    {
        errors.push(err(
            at("broker.session_expiry_secs"),
            "0 ends an MQTT 5 session at every disconnect, so messages sent while Sentinel is away are lost; set clean_session = true if that is meant",
        ));
    }
    let stable = drivers::mqtt::STABLE_AFTER.as_secs();
    if d.comm_loss_after_secs <= stable {
        errors.push(err(
            at("comm_loss_after_secs"),
            format!(
                "must be more than {stable}: a broker connection counts as up only once it has lasted {stable} s, so a shorter wait raises the alarm at every start and reconnection"
            ),
        ));
    }
}

pub(super) fn check_point(
    point: &Point,
    device: Option<&Device>,
    at: &dyn Fn(&str) -> String,
    errors: &mut Vec<ConfigError>,
) {
    if let Some(ms) = point.data_interruption_after_ms
        && !(100..=7 * DAY_MS).contains(&ms)
    {
        errors.push(err(
            at("data_interruption_after_ms"),
            "must be within 100..=604800000 (a week)",
        ));
    }
    let extra = point.extra();
    let mqtt_fields = [
        ("topic", extra.topic.is_some()),
        ("json_pointer", extra.json_pointer.is_some()),
        ("topic_point", extra.topic_point.is_some()),
        ("stale_after_ms", extra.stale_after_ms.is_some()),
    ];
    match device {
        None => {}
        Some(Device::Mqtt(d)) => {
            if point.register.is_some() {
                errors.push(err(
                    at("register"),
                    format!(
                        "device {:?} is an MQTT device: use topic/json_pointer",
                        d.name
                    ),
                ));
            }
            if let Some(filter) = &extra.topic
                && let Some(e) = topic::filter_error(filter)
            {
                errors.push(err(at("topic"), e));
            }
            if let Some(e) = extra
                .json_pointer
                .as_deref()
                .and_then(payload::pointer_error)
            {
                errors.push(err(at("json_pointer"), e));
            }
            if extra.topic_point.is_some() && d.topic_template.is_none() {
                errors.push(err(
                    at("topic_point"),
                    format!("device {:?} has no topic_template", d.name),
                ));
            }
            if extra.topic.is_none()
                && d.topic_template.is_none()
                && d.topics.len() > 1
                && extra.json_pointer.is_none()
            {
                errors.push(err(
                    at("topic"),
                    "a plain-number point of a device with several topics needs its own topic (or a json_pointer)",
                ));
            }
            if let Some(ms) = extra.stale_after_ms
                && !(10..=DAY_MS).contains(&ms)
            {
                errors.push(err(at("stale_after_ms"), "must be within 10..=86400000"));
            }
        }
        Some(_) => {
            if point.register.is_none() {
                errors.push(err(at("register"), "required for points of Modbus devices"));
            }
            for (field, set) in mqtt_fields {
                if set {
                    errors.push(err(at(field), "only applies to points of MQTT devices"));
                }
            }
        }
    }
}

pub(super) fn check_notify(n: &MqttNotify, errors: &mut Vec<ConfigError>) {
    let at = |f: &str| format!("notify.mqtt.{f}");
    for (field, message) in n.broker.errors() {
        errors.push(err(at(&format!("broker.{field}")), message));
    }
    if n.topic_prefix.is_empty()
        || n.topic_prefix.contains(['+', '#'])
        || n.topic_prefix.ends_with('/')
    {
        errors.push(err(
            at("topic_prefix"),
            "must be a topic without wildcards or a trailing '/'",
        ));
    }
    if !(100..=600_000).contains(&n.puback_timeout_ms) {
        errors.push(err(at("puback_timeout_ms"), "must be within 100..=600000"));
    }
    if n.max_in_flight
        .is_some_and(|m| m == 0 || m > n.broker.inflight)
    {
        errors.push(err(
            at("max_in_flight"),
            format!("must be within 1..={} (broker.inflight)", n.broker.inflight),
        ));
    }
    if !(1..=3600).contains(&n.status_interval_secs) {
        errors.push(err(at("status_interval_secs"), "must be within 1..=3600"));
    }
    if n.max_backoff_secs == 0 {
        errors.push(err(at("max_backoff_secs"), "must be at least 1"));
    }
}
