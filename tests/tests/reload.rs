//! SIGHUP: a changed limit takes effect without losing a reading or an alarm; a broken file is
//! refused, recorded, and the running configuration stays.

use std::time::Duration;

use sentinel_tests::{PyModbusDevice, Sentinel, wait_for};
use serde_json::Value;

fn config(device_port: u16, limit: f64, extra_point: bool) -> String {
    let extra = if extra_point {
        r#"
[[points]]
tag = "TT-9"
device = "plc1"
kind = "temperature"
register = { table = "holding", address = 19 }
"#
    } else {
        ""
    };
    format!(
        r#"
[site]
id = "reload"
name = "Reload test site"

[store]
data_dir = "{{data_dir}}"
flush_interval_ms = 100

[engine]
tick_ms = 100

[[devices]]
name = "plc1"
protocol = "modbus_tcp"
host = "127.0.0.1"
port = {device_port}
poll_interval_ms = 100
timeout_ms = 300
comm_loss_after_secs = 5

[[points]]
tag = "TT-1"
device = "plc1"
kind = "temperature"
register = {{ table = "holding", address = 10 }}
limits = {{ deadband = 1.0, levels = [{{ level = "H", setpoint = {limit:.1}, priority = "high" }}] }}

[[points]]
tag = "TT-2"
device = "plc1"
kind = "temperature"
register = {{ table = "holding", address = 11 }}
limits = {{ deadband = 1.0, levels = [{{ level = "H", setpoint = 50.0, priority = "high" }}] }}
{extra}"#
    )
}

async fn active(s: &Sentinel, point: &str) -> Vec<Value> {
    let all = s.get("/api/v1/alarms?state=active").await;
    all.as_array()
        .unwrap()
        .iter()
        .filter(|a| a["point"] == point)
        .cloned()
        .collect()
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_new_limit_and_refuses_a_broken_file() {
    let Some(device) = PyModbusDevice::start(&[]).await else {
        return;
    };
    let mut sentinel = Sentinel::start(&config(device.port, 50.0, false)).await;
    let t = Duration::from_secs(10);
    device.write_registers(10, &[45, 60]).await;
    // TT-2 is over its limit before the reload: that alarm must survive the reload unchanged.
    let before = wait_for("TT-2 alarm", t, || async {
        active(&sentinel, "TT-2").await.into_iter().next()
    })
    .await;
    assert!(
        active(&sentinel, "TT-1").await.is_empty(),
        "45 is below the first limit"
    );

    // Lower TT-1's limit and add a point: the alarm rises, TT-2's alarm is the same one.
    sentinel.reload(&config(device.port, 40.0, true));
    wait_for("TT-1 alarm after reload", t, || async {
        active(&sentinel, "TT-1").await.into_iter().next()
    })
    .await;
    let after = active(&sentinel, "TT-2").await;
    assert_eq!(after.len(), 1);
    assert_eq!(
        after[0]["alarm_id"], before["alarm_id"],
        "alarm state carried across the reload"
    );
    device.write_register(19, 7).await;
    wait_for("the added point reads", t, || async {
        let p = sentinel.get("/api/v1/points").await;
        p.as_array()?
            .iter()
            .find(|p| p["tag"] == "TT-9" && p["value"] == 7.0)
            .map(|_| ())
    })
    .await;

    // A broken file: refused, the process keeps running with the last good configuration.
    sentinel.reload("[site]\nid = \"reload\"\nname = \"x\"\n[[points]]\ntag = 5\n");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        sentinel.is_running(),
        "a broken configuration must not stop the gateway"
    );
    assert_eq!(
        active(&sentinel, "TT-1").await.len(),
        1,
        "the running configuration stays"
    );
    assert!(
        sentinel.log().contains("reload refused"),
        "{}",
        sentinel.log()
    );

    // No reading lost: the history around the reloads has no gap longer than a few polls...
    tokio::time::sleep(Duration::from_millis(500)).await;
    let history = sentinel
        .get("/api/v1/points/TT-1/history?limit=100000")
        .await;
    let times: Vec<i64> = history
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["ts_ms"].as_i64())
        .collect();
    assert!(
        times.len() >= 10,
        "{} rows over {} ms: {history}",
        times.len(),
        times.last().unwrap_or(&0) - times.first().unwrap_or(&0)
    );
    let widest = times.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(widest < 1500, "a gap of {widest} ms in TT-1's history");
    // ...and everything received was stored.
    let m = sentinel
        .http
        .get(sentinel.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let received = metric(&m, "sentinel_readings_received_total");
    assert!(received > 0);
    let (code, dir) = sentinel.terminate().await;
    assert_eq!(code, Some(0));
    let db = rusqlite::Connection::open(dir.path().join("data/sentinel.db")).unwrap();
    let bodies: Vec<String> = db
        .prepare("SELECT body FROM journal ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        bodies
            .iter()
            .any(|b| b.contains("\"kind\":\"config_reload\"") && b.contains("TT-9"))
    );
    assert!(
        bodies
            .iter()
            .any(|b| b.contains("\"kind\":\"config_reload_refused\""))
    );
    let log = std::fs::read_to_string(dir.path().join("sentinel.log")).unwrap();
    let stopped = log
        .lines()
        .find(|l| l.contains("Sentinel stopped."))
        .unwrap_or_default()
        .to_owned();
    assert!(stopped.contains("readings_lost=0"), "{stopped}");
    let stored: u64 = stopped
        .split_whitespace()
        .find_map(|w| w.strip_prefix("readings_stored="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(stored >= received, "stored {stored} of {received} received");
    device.kill().await;
}
