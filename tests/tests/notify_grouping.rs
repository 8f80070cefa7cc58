//! Sparing people a flood without delaying safety: two medium alarms reach a person as one
//! summary after the chain's `group_wait_secs`, a critical alarm at once on its own; a person in
//! quiet hours gets the critical alarm at once and the medium ones only after the quiet hours.
#![allow(clippy::unwrap_used)] // a test: a panic is a failed test

mod notify_common;

use std::time::Duration;

use notify_common::Smtp;
use sentinel_tests::{PyModbusDevice, Sentinel};

/// A quiet window around now (UTC+8, as configured), so the test never depends on the hour.
fn quiet_window_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let minute = ((now / 60) + 8 * 60).rem_euclid(1440);
    let fmt = |m: i64| {
        format!(
            "{:02}:{:02}",
            m.rem_euclid(1440) / 60,
            m.rem_euclid(1440) % 60
        )
    };
    format!("{}-{}", fmt(minute - 60), fmt(minute + 60))
}

fn config(device_port: u16, smtp_port: u16) -> String {
    let point = |tag: &str, addr: u16, priority: &str| {
        format!(
            r#"
[[points]]
tag = "{tag}"
device = "plc"
kind = "temperature"
unit = "°C"
area = "furnace-1"
register = {{ table = "holding", address = {addr} }}
limits = {{ levels = [{{ level = "H", setpoint = 50.0, priority = "{priority}" }}] }}
"#
        )
    };
    format!(
        r#"
[site]
id = "foundry"
name = "Foundry"

[store]
data_dir = "{{data_dir}}"
flush_interval_ms = 50

[engine]
tick_ms = 50

[[devices]]
name = "plc"
protocol = "modbus_tcp"
host = "127.0.0.1"
port = {device_port}
poll_interval_ms = 100
timeout_ms = 500
comm_loss_after_secs = 30
{p1}{p2}{p3}
[notify.email]
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
from = "sentinel@foundry.example"
language = "en"
max_backoff_secs = 1

[[contacts]]
name = "op"
email = "op@foundry.example"

[[contacts]]
name = "night"
email = "night@foundry.example"
quiet_hours = "{quiet}"

[[responsibility]]
name = "furnace-1"
areas = ["furnace-1"]
group_wait_secs = 2
tiers = [{{ role = "operational", contacts = ["op", "night"] }}]
"#,
        p1 = point("TT-1", 0, "medium"),
        p2 = point("TT-2", 1, "medium"),
        p3 = point("TT-3", 2, "critical"),
        quiet = quiet_window_now(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn medium_alarms_are_grouped_and_quiet_hours_never_hold_a_critical_one() {
    let Some(device) = PyModbusDevice::start(&[]).await else {
        return;
    };
    let Some(smtp) = Smtp::started().await else {
        return;
    };
    let sentinel = Sentinel::start(&config(device.port, smtp.port)).await;
    let t = Duration::from_secs(15);

    device.write_registers(0, &[60, 60]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    device.write_register(2, 60).await;
    let started = tokio::time::Instant::now();

    // The critical alarm is not held by grouping, nor by quiet hours.
    let critical = smtp.wait_mail("op@", "TT-3", t).await;
    assert!(
        critical.subject.starts_with("[Alarm]"),
        "{}",
        critical.subject
    );
    smtp.wait_mail("night@", "TT-3", t).await;
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "not delayed: {:?}",
        started.elapsed()
    );

    // The two medium ones arrive together, once, after the group wait.
    let summary = smtp.wait_mail("op@", "[Summary] 2 alarm notices", t).await;
    assert!(
        summary.text.contains("TT-1") && summary.text.contains("TT-2"),
        "{}",
        summary.text
    );
    let to_op = smtp
        .messages()
        .await
        .into_iter()
        .filter(|m| m.to.contains("op@"))
        .count();
    assert_eq!(to_op, 2, "one critical alarm, one summary");

    // The person in quiet hours has not had them; they wait in the outbox until it ends.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let to_night: Vec<String> = smtp
        .messages()
        .await
        .into_iter()
        .filter(|m| m.to.contains("night@"))
        .map(|m| m.subject)
        .collect();
    assert_eq!(to_night.len(), 1, "{to_night:?}");
    let db = rusqlite::Connection::open(sentinel.data_dir().join("sentinel.db")).unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let held: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM outbox WHERE channel = 'email' AND delivered_ms IS NULL AND next_attempt_ms > ?1",
            [now_ms + 30 * 60_000],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(held, 2, "held until the quiet hours end");
    sentinel.terminate().await;
}
