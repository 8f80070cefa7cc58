//! MQTT ingest counters on `/metrics`, labelled by device name (low cardinality: never the raw
//! topic). Names and meanings are in docs/metrics.md.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use drivers::mqtt::{BadPayload, MqttMetrics};

use super::escape;

/// Name, help, type and the counter it reads.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&MqttMetrics) -> &AtomicU64,
);

pub(super) fn render(devices: &Mutex<Vec<(String, Arc<MqttMetrics>)>>, out: &mut String) {
    let devices = devices
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if devices.is_empty() {
        return;
    }
    let simple: [Series; 9] = [
        (
            "sentinel_mqtt_messages_total",
            "MQTT messages received, by device.",
            "counter",
            |m| &m.messages,
        ),
        (
            "sentinel_mqtt_readings_total",
            "Readings decoded from MQTT messages, by device.",
            "counter",
            |m| &m.readings,
        ),
        (
            "sentinel_mqtt_connected",
            "1 while the device's broker connection is up.",
            "gauge",
            |m| &m.connected,
        ),
        (
            "sentinel_mqtt_connects_total",
            "MQTT connections established, by device.",
            "counter",
            |m| &m.connects,
        ),
        (
            "sentinel_mqtt_connection_errors_total",
            "MQTT connection attempts that failed and connections that broke.",
            "counter",
            |m| &m.connection_errors,
        ),
        (
            "sentinel_mqtt_subscribe_failures_total",
            "MQTT subscriptions refused or not queued.",
            "counter",
            |m| &m.subscribe_failures,
        ),
        (
            "sentinel_mqtt_acks_waiting",
            "Acknowledgements of processed MQTT messages waiting for the client's request queue.",
            "gauge",
            |m| &m.acks_waiting,
        ),
        (
            "sentinel_mqtt_stale_total",
            "Times a silent MQTT point was marked stale.",
            "counter",
            |m| &m.stale_marks,
        ),
        (
            "sentinel_mqtt_timestamps_replaced_total",
            "MQTT messages whose own timestamp was implausible (over 10 min ahead, over 30 days behind); their readings were kept with the arrival time.",
            "counter",
            |m| &m.timestamps_replaced,
        ),
    ];
    for (name, help, kind, get) in simple {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (device, m) in devices.iter() {
            let _ = writeln!(
                out,
                "{name}{{device=\"{}\"}} {}",
                escape(device),
                get(m).load(Ordering::Relaxed)
            );
        }
    }
    let name = "sentinel_mqtt_bad_payloads_total";
    let _ = writeln!(
        out,
        "# HELP {name} MQTT messages (or points of one) rejected, by device and reason.\n# TYPE {name} counter"
    );
    for (device, m) in devices.iter() {
        for reason in BadPayload::ALL {
            let _ = writeln!(
                out,
                "{name}{{device=\"{}\",reason=\"{}\"}} {}",
                escape(device),
                reason.as_str(),
                m.bad[reason.index()].load(Ordering::Relaxed)
            );
        }
    }
}
