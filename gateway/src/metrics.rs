//! The gateway's own counters, rendered as Prometheus text on `/metrics`.
//! Names and meanings are listed in docs/metrics.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use alert_rules::SystemCheck;
use drivers::modbus::DeviceMetrics;

#[path = "metrics_mqtt.rs"]
mod metrics_mqtt;

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }
}

/// A latency summary: count and sum, enough for an average rate in Prometheus.
#[derive(Debug, Default)]
pub struct Timing {
    count: AtomicU64,
    micros: AtomicU64,
}

impl Timing {
    pub fn observe(&self, d: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
}

/// Counters keyed by a small, fixed set of label values (never raw error text).
#[derive(Debug, Default)]
pub struct LabelledCounter(Mutex<BTreeMap<(String, String), u64>>);

impl LabelledCounter {
    pub fn inc(&self, a: &str, b: &str) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *map.entry((a.to_owned(), b.to_owned())).or_default() += 1;
    }
    pub fn set(&self, a: &str, b: &str, v: u64) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.insert((a.to_owned(), b.to_owned()), v);
    }
    pub fn add(&self, a: &str, b: &str, n: u64) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *map.entry((a.to_owned(), b.to_owned())).or_default() += n;
    }
    #[cfg(test)]
    pub fn get(&self, a: &str, b: &str) -> u64 {
        let map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(&(a.to_owned(), b.to_owned())).copied().unwrap_or(0)
    }
    fn snapshot(&self) -> Vec<((String, String), u64)> {
        let map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub readings_received: Counter,
    pub readings_stored: Counter,
    pub readings_lost: Counter,
    pub events_stored: Counter,
    pub events_lost: Counter,
    pub store_errors: Counter,
    pub store_commit_seconds: Timing,
    pub engine_queue_depth: Counter,
    /// Advanced by every engine tick; the systemd watchdog watches it.
    pub engine_heartbeat: Counter,
    /// (kind, transition)
    pub alarm_events: LabelledCounter,
    /// (channel, outcome)
    pub deliveries: LabelledCounter,
    /// (channel, "") → pending rows
    pub outbox_pending: LabelledCounter,
    pub devices: Mutex<Vec<(String, Arc<DeviceMetrics>)>>,
    /// MQTT ingest, by device name.
    pub mqtt: Mutex<Vec<(String, Arc<drivers::mqtt::MqttMetrics>)>>,
    /// Upstream sinks and store losses (see `render_sinks`).
    pub sinks: SinkMetrics,
    /// Sentinel's own checks, set by the store writer and the sinks, turned into alarms by the
    /// engine task.
    pub system_checks: SystemChecks,
}

/// What the store writer and the sinks last found of each [`SystemCheck`]. The engine task reads
/// it every tick and hands it to the engine, which raises or clears the check's alarm: the data
/// flows one way, and neither the writer thread nor a sink needs a channel to the engine.
#[derive(Debug, Default)]
pub struct SystemChecks([AtomicU8; SystemCheck::ALL.len()]);

const CHECK_UNKNOWN: u8 = 0;
const CHECK_FINE: u8 = 1;
const CHECK_FAILING: u8 = 2;

impl SystemChecks {
    pub fn set(&self, check: SystemCheck, failing: bool) {
        let v = if failing { CHECK_FAILING } else { CHECK_FINE };
        self.0[check.index()].store(v, Ordering::Relaxed);
    }

    /// `None` until someone has looked since the start: a restored alarm then stays as it was.
    pub fn get(&self, check: SystemCheck) -> Option<bool> {
        match self.0[check.index()].load(Ordering::Relaxed) {
            CHECK_UNKNOWN => None,
            v => Some(v == CHECK_FAILING),
        }
    }
}

/// Counters of the upstream sinks and of what the store had to give up.
#[derive(Debug, Default)]
pub struct SinkMetrics {
    /// (sink, "") → points accepted upstream
    pub points_sent: LabelledCounter,
    /// (sink, outcome) → write requests
    pub requests: LabelledCounter,
    /// (sink, "") → readings stored but not yet forwarded
    pub backlog: LabelledCounter,
    /// (sink, "") → 1 while the last attempt failed
    pub failing: LabelledCounter,
    /// (sink, "") → points written to the dead-letter table
    pub dead_letter_points: LabelledCounter,
    /// (reason, "") → readings the store dropped (disk_budget, retention_unforwarded, salvage)
    pub readings_dropped: LabelledCounter,
    /// Wall-clock ms of the last loss (dead letter or dropped readings); 0 = none since start.
    pub last_loss_ms: Counter,
    /// 1 while the store is over its disk budget.
    pub store_over_budget: Counter,
    /// Bytes the store's live pages use.
    pub store_used_bytes: Counter,
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut counter = |name: &str, help: &str, kind: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        counter(
            "sentinel_readings_received_total",
            "Readings received from drivers.",
            "counter",
            self.readings_received.get(),
        );
        counter(
            "sentinel_readings_stored_total",
            "Readings committed to the embedded store.",
            "counter",
            self.readings_stored.get(),
        );
        counter(
            "sentinel_readings_lost_total",
            "Readings that could not be stored at shutdown.",
            "counter",
            self.readings_lost.get(),
        );
        counter(
            "sentinel_alarm_events_stored_total",
            "Alarm events committed to the journal.",
            "counter",
            self.events_stored.get(),
        );
        counter(
            "sentinel_alarm_events_lost_total",
            "Alarm events that could not be stored at shutdown.",
            "counter",
            self.events_lost.get(),
        );
        counter(
            "sentinel_store_errors_total",
            "Failed store transactions (each retried).",
            "counter",
            self.store_errors.get(),
        );
        counter(
            "sentinel_engine_queue_depth",
            "Field events waiting for the engine.",
            "gauge",
            self.engine_queue_depth.get(),
        );
        let _ = writeln!(
            out,
            "# HELP sentinel_store_commit_seconds Time to commit a store transaction.\n# TYPE sentinel_store_commit_seconds summary\nsentinel_store_commit_seconds_sum {}\nsentinel_store_commit_seconds_count {}",
            self.store_commit_seconds.micros.load(Ordering::Relaxed) as f64 / 1e6,
            self.store_commit_seconds.count.load(Ordering::Relaxed)
        );
        labelled(
            &mut out,
            "sentinel_alarm_events_total",
            "Alarm events by kind and transition.",
            "counter",
            ["kind", "transition"],
            &self.alarm_events,
        );
        labelled(
            &mut out,
            "sentinel_deliveries_total",
            "Notification delivery attempts by channel and outcome.",
            "counter",
            ["channel", "outcome"],
            &self.deliveries,
        );
        let pending = self.outbox_pending.snapshot();
        let _ = writeln!(
            out,
            "# HELP sentinel_outbox_pending Notifications waiting for delivery.\n# TYPE sentinel_outbox_pending gauge"
        );
        for ((channel, _), v) in pending {
            let _ = writeln!(
                out,
                "sentinel_outbox_pending{{channel=\"{}\"}} {v}",
                escape(&channel)
            );
        }
        self.render_devices(&mut out);
        metrics_mqtt::render(&self.mqtt, &mut out);
        self.render_sinks(&mut out);
        out
    }

    fn render_sinks(&self, out: &mut String) {
        let s = &self.sinks;
        let one = |out: &mut String,
                   name: &str,
                   help: &str,
                   kind: &str,
                   label: &str,
                   c: &LabelledCounter| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for ((a, _), v) in c.snapshot() {
                let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {v}", escape(&a));
            }
        };
        one(
            out,
            "sentinel_sink_points_sent_total",
            "Points accepted by an upstream sink.",
            "counter",
            "sink",
            &s.points_sent,
        );
        labelled(
            out,
            "sentinel_sink_requests_total",
            "Upstream write requests by sink and outcome.",
            "counter",
            ["sink", "outcome"],
            &s.requests,
        );
        one(
            out,
            "sentinel_sink_backlog_points",
            "Stored readings not yet forwarded, by sink.",
            "gauge",
            "sink",
            &s.backlog,
        );
        one(
            out,
            "sentinel_sink_failing",
            "1 while a sink's last write attempt failed.",
            "gauge",
            "sink",
            &s.failing,
        );
        one(
            out,
            "sentinel_sink_dead_letter_points_total",
            "Points refused upstream and kept in the dead-letter table.",
            "counter",
            "sink",
            &s.dead_letter_points,
        );
        one(
            out,
            "sentinel_readings_dropped_total",
            "Readings the store gave up, by reason.",
            "counter",
            "reason",
            &s.readings_dropped,
        );
        let _ = writeln!(
            out,
            "# HELP sentinel_store_over_budget 1 while the store is over its disk budget.\n# TYPE sentinel_store_over_budget gauge\nsentinel_store_over_budget {}\n# HELP sentinel_store_used_bytes Bytes used by the store's live pages.\n# TYPE sentinel_store_used_bytes gauge\nsentinel_store_used_bytes {}",
            s.store_over_budget.get(),
            s.store_used_bytes.get()
        );
    }

    /// Why the gateway is not ready, if it is not: a failing sink, a store over budget, or a
    /// loss (dead letter, dropped readings) within the last `window_ms`.
    pub fn not_ready_reasons(&self, now_ms: i64, window_ms: i64) -> Vec<String> {
        let s = &self.sinks;
        let mut reasons = Vec::new();
        for ((sink, _), v) in s.failing.snapshot() {
            if v > 0 {
                reasons.push(format!("sink {sink} is failing"));
            }
        }
        if s.store_over_budget.get() > 0 {
            reasons.push("the store is over its disk budget".to_owned());
        }
        let last = s.last_loss_ms.get() as i64;
        if last > 0 && now_ms - last < window_ms {
            reasons.push("data was dead-lettered or dropped recently (see sentinel_readings_dropped_total, sentinel_sink_dead_letter_points_total)".to_owned());
        }
        reasons
    }

    fn render_devices(&self, out: &mut String) {
        let devices = self
            .devices
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = writeln!(
            out,
            "# HELP sentinel_modbus_requests_total Modbus requests by device and outcome.\n# TYPE sentinel_modbus_requests_total counter"
        );
        for (name, m) in devices.iter() {
            let name = escape(name);
            for (outcome, v) in [
                ("ok", &m.requests_ok),
                ("timeout", &m.requests_timeout),
                ("transport_error", &m.requests_transport_error),
                ("exception", &m.requests_exception),
            ] {
                let _ = writeln!(
                    out,
                    "sentinel_modbus_requests_total{{device=\"{name}\",outcome=\"{outcome}\"}} {}",
                    v.load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP sentinel_modbus_connects_total Connection attempts by device and outcome.\n# TYPE sentinel_modbus_connects_total counter"
        );
        for (name, m) in devices.iter() {
            let name = escape(name);
            let _ = writeln!(
                out,
                "sentinel_modbus_connects_total{{device=\"{name}\",outcome=\"ok\"}} {}",
                m.connects.load(Ordering::Relaxed)
            );
            let _ = writeln!(
                out,
                "sentinel_modbus_connects_total{{device=\"{name}\",outcome=\"failed\"}} {}",
                m.connect_failures.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP sentinel_modbus_request_seconds Modbus request latency.\n# TYPE sentinel_modbus_request_seconds summary"
        );
        for (name, m) in devices.iter() {
            let name = escape(name);
            let _ = writeln!(
                out,
                "sentinel_modbus_request_seconds_sum{{device=\"{name}\"}} {}",
                m.latency_us_sum.load(Ordering::Relaxed) as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "sentinel_modbus_request_seconds_count{{device=\"{name}\"}} {}",
                m.latency_count.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP sentinel_driver_restarts_total Poll tasks restarted by their supervisor.\n# TYPE sentinel_driver_restarts_total counter"
        );
        for (name, m) in devices.iter() {
            let _ = writeln!(
                out,
                "sentinel_driver_restarts_total{{device=\"{}\"}} {}",
                escape(name),
                m.restarts.load(Ordering::Relaxed)
            );
        }
    }
}

fn labelled(
    out: &mut String,
    name: &str,
    help: &str,
    kind: &str,
    labels: [&str; 2],
    c: &LabelledCounter,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for ((a, b), v) in c.snapshot() {
        let _ = writeln!(
            out,
            "{name}{{{}=\"{}\",{}=\"{}\"}} {v}",
            labels[0],
            escape(&a),
            labels[1],
            escape(&b)
        );
    }
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
