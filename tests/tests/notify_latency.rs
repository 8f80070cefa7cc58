//! Alarm delivery latency, run by hand (docs/benchmarks.md, "Alarm delivery latency"):
//!
//! ```sh
//! SENTINEL_TEST_PYTHON=$PWD/tests/.venv/bin/python \
//! SENTINEL_TEST_PYMODBUS_DEVICE=$PWD/tests/devices/pymodbus_device.py \
//! cargo test -p sentinel-tests --test notify_latency -- --ignored --nocapture
//! ```
//!
//! A pymodbus device polled every 10 ms; the test drives `SENTINEL_BENCH_ALARMS` (default
//! 1000) limit crossings, one at a time, and a webhook receiver on loopback stamps each raised
//! event's arrival. Latency is measured from the timestamp of the reading that crossed the
//! limit (when Sentinel read it, from the history API) to the arrival, so the poll interval
//! (the wait between the value changing in the device and the next read) is not counted.
#![allow(clippy::unwrap_used)] // a test: a panic is a failed test

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sentinel_tests::{PyModbusDevice, Sentinel, wait_for};
use serde_json::Value;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn config(device_port: u16, hook: &str) -> String {
    format!(
        r#"
[site]
id = "bench"
name = "Latency bench"

[store]
data_dir = "{{data_dir}}"

[engine]
tick_ms = 100

[[devices]]
name = "plc"
protocol = "modbus_tcp"
host = "127.0.0.1"
port = {device_port}
poll_interval_ms = 10
timeout_ms = 500
comm_loss_after_secs = 30

[[points]]
tag = "TT-1"
device = "plc"
kind = "temperature"
unit = "°C"
span = [0.0, 100.0]
register = {{ table = "holding", address = 0 }}
limits = {{ levels = [{{ level = "H", setpoint = 50.0, priority = "high" }}] }}

[[notify.webhook]]
name = "bench"
url = "{hook}"
max_backoff_secs = 1
"#
    )
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run by hand, see the module comment"]
async fn alarm_delivery_latency() {
    let Some(device) = PyModbusDevice::start(&[]).await else {
        return;
    };
    let arrivals: Arc<Mutex<Vec<(i64, Value)>>> = Arc::default();
    let a = Arc::clone(&arrivals);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let at = now_ms();
            let a = Arc::clone(&a);
            async move {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                a.lock().unwrap().push((at, v));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let sentinel = Sentinel::start(&config(device.port, &hook)).await;
    let n: usize = std::env::var("SENTINEL_BENCH_ALARMS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let t = Duration::from_secs(10);

    device.write_register(0, 20).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut from_reading = Vec::with_capacity(n);
    let mut from_write = Vec::with_capacity(n);
    for i in 0..n {
        let before = now_ms();
        device.write_register(0, 60).await;
        let (arrived, _event) = wait_for("a raised event", t, || {
            let found = arrivals
                .lock()
                .unwrap()
                .iter()
                .find(|(_, v)| {
                    v["transition"] == "raised" && v["seq"] == 1 && v["alarm_id"] == (i + 1) as u64
                })
                .cloned();
            async move { found }
        })
        .await;
        let history = sentinel
            .get(&format!(
                "/api/v1/points/TT-1/history?from_ms={}",
                before - 50
            ))
            .await;
        let read_at = history
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["value"].as_f64().is_some_and(|v| v >= 50.0))
            .and_then(|r| r["ts_ms"].as_i64())
            .expect("the crossing reading is stored");
        from_reading.push(arrived - read_at);
        // Back below the limit; wait for the clear so the next crossing raises a new alarm.
        device.write_register(0, 20).await;
        wait_for("a cleared event", t, || {
            let found = arrivals
                .lock()
                .unwrap()
                .iter()
                .any(|(_, v)| v["transition"] == "cleared" && v["alarm_id"] == (i + 1) as u64);
            async move { found.then_some(()) }
        })
        .await;
        // Acknowledge so the alarm finishes and the next crossing is a new alarm.
        let _ = sentinel
            .http
            .post(sentinel.url(&format!("/api/v1/alarms/{}/ack", i + 1)))
            .send()
            .await;
        from_write.push(arrived - before);
    }
    from_reading.sort_unstable();
    from_write.sort_unstable();
    println!(
        "alarms={n} reading→webhook ms: p50={} p90={} p99={} max={} | write→webhook ms (includes the 10 ms poll): p50={} p99={}",
        percentile(&from_reading, 0.5),
        percentile(&from_reading, 0.9),
        percentile(&from_reading, 0.99),
        from_reading.last().unwrap(),
        percentile(&from_write, 0.5),
        percentile(&from_write, 0.99),
    );
    sentinel.terminate().await;
}
