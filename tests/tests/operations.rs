//! Operator actions end to end: shelving and out-of-service hide alarms from people but never
//! from the record; returning to service announces what is still wrong; conditions over several
//! points and suppression by design work on the real binary.

use std::time::Duration;

use sentinel_tests::{PyModbusDevice, Sentinel, WebhookReceiver, wait_for};
use serde_json::{Value, json};

fn config(device_port: u16, webhook: &str) -> String {
    format!(
        r#"
[site]
id = "ops"
name = "Operations test site"
risk_colour = "blue"

[store]
data_dir = "{{data_dir}}"
flush_interval_ms = 100

[engine]
tick_ms = 100
max_shelve_secs = 3600

[[devices]]
name = "plc1"
protocol = "modbus_tcp"
host = "127.0.0.1"
port = {device_port}
poll_interval_ms = 200
timeout_ms = 300
comm_loss_after_secs = 5

[[points]]
tag = "TT-1"
device = "plc1"
kind = "temperature"
unit = "°C"
area = "unit-a"
span = [0.0, 100.0]
register = {{ table = "holding", address = 10 }}
limits = {{ deadband = 1.0, levels = [{{ level = "H", setpoint = 50.0, priority = "high" }}] }}

[[points]]
tag = "TT-2"
device = "plc1"
kind = "temperature"
unit = "°C"
area = "unit-b"
span = [0.0, 100.0]
register = {{ table = "holding", address = 11 }}
limits = {{ deadband = 1.0, levels = [{{ level = "H", setpoint = 50.0, priority = "high" }}] }}

[[points]]
tag = "RUN"
device = "plc1"
kind = "state"
register = {{ table = "holding", address = 12 }}

[[points]]
tag = "TT-3"
device = "plc1"
kind = "temperature"
unit = "°C"
area = "unit-b"
span = [0.0, 100.0]
register = {{ table = "holding", address = 13 }}
suppress_when = "RUN < 1"
limits = {{ deadband = 1.0, levels = [{{ level = "H", setpoint = 50.0, priority = "high" }}] }}

[[conditions]]
name = "Both temperatures high"
when = "TT-1 > 40 && TT-2 > 40"
priority = "critical"
area = "unit-a"

[[risk_units]]
id = "unit-a"
name = "Unit A"
colour = "yellow"
areas = ["unit-a"]

[[notify.webhook]]
name = "receiver"
url = "{webhook}"
timeout_ms = 2000
max_backoff_secs = 1
"#
    )
}

async fn post(s: &Sentinel, path: &str, body: Value) -> (u16, Value) {
    let r = s.http.post(s.url(path)).json(&body).send().await.unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

async fn open_of(s: &Sentinel, point: &str) -> Vec<Value> {
    let all = s.get("/api/v1/alarms?state=open").await;
    all.as_array()
        .unwrap()
        .iter()
        .filter(|a| a["point"] == point)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shelving_and_out_of_service_are_journaled_but_not_announced() {
    let Some(device) = PyModbusDevice::start(&[]).await else {
        return;
    };
    let hook = WebhookReceiver::start().await;
    let sentinel = Sentinel::start(&config(device.port, &hook.url())).await;
    let t = Duration::from_secs(10);
    device.write_registers(10, &[20, 20, 1, 20]).await;
    wait_for("TT-1 good", t, || async {
        let p = sentinel.get("/api/v1/points").await;
        p.as_array()?
            .iter()
            .find(|p| p["tag"] == "TT-1" && p["quality"] == "good")
            .map(|_| ())
    })
    .await;

    // TT-1 alarms; it is shelved: hidden, but on record.
    device.write_register(10, 60).await;
    hook.wait_event("TT-1", "raised", t).await;
    let id = open_of(&sentinel, "TT-1").await[0]["alarm_id"]
        .as_u64()
        .unwrap();
    let (code, body) = post(
        &sentinel,
        &format!("/api/v1/alarms/{id}/shelve"),
        json!({"by": "wang", "reason": "sensor being recalibrated"}),
    )
    .await;
    assert_eq!(code, 400, "duration is required: {body}");
    let (code, body) = post(
        &sentinel,
        &format!("/api/v1/alarms/{id}/shelve"),
        json!({"by": "wang", "reason": "r", "duration_secs": 99999}),
    )
    .await;
    assert_eq!(code, 400, "longer than the maximum: {body}");
    let (code, body) = post(
        &sentinel,
        &format!("/api/v1/alarms/{id}/shelve"),
        json!({"by": "", "reason": "r", "duration_secs": 60}),
    )
    .await;
    assert_eq!(code, 400, "who is required: {body}");
    let (code, _) = post(
        &sentinel,
        "/api/v1/alarms/987654/shelve",
        json!({"by": "wang", "reason": "r", "duration_secs": 60}),
    )
    .await;
    assert_eq!(code, 404);
    let (code, body) = post(
        &sentinel,
        &format!("/api/v1/alarms/{id}/shelve"),
        json!({"by": "wang", "reason": "sensor being recalibrated", "duration_secs": 600}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(open_of(&sentinel, "TT-1").await[0]["state"], "shelved");
    let modes = sentinel.get("/api/v1/modes").await;
    assert!(
        modes
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mode"] == "shelved" && m["by"] == "wang"),
        "{modes}"
    );

    // TT-2 out of service, then it goes high: nobody is told.
    let (code, body) = post(
        &sentinel,
        "/api/v1/points/TT-2/out-of-service",
        json!({"by": "li", "reason": "transmitter replaced", "for_secs": 600}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (code, _) = post(
        &sentinel,
        "/api/v1/points/NOPE/out-of-service",
        json!({"by": "li", "reason": "x", "for_secs": 60}),
    )
    .await;
    assert_eq!(code, 404);
    device.write_register(11, 70).await;
    let hidden = wait_for("TT-2 alarm hidden as out of service", t, || async {
        open_of(&sentinel, "TT-2")
            .await
            .into_iter()
            .find(|a| a["state"] == "out_of_service")
    })
    .await;
    assert_eq!(hidden["priority"], "high");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        !hook.bodies().iter().any(|b| b["point"] == "TT-2"),
        "an out-of-service alarm reached the webhook"
    );

    // Back in service while still high: now it is announced.
    let (code, body) = post(
        &sentinel,
        "/api/v1/points/TT-2/return-to-service",
        json!({"by": "li", "reason": "done"}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let back = hook.wait_event("TT-2", "returned_to_service", t).await;
    assert_eq!(back["state"], "active_unacked");

    // The condition over both points holds and raises its own (critical) alarm; the unit turns red.
    let both = hook.wait_event("Both temperatures high", "raised", t).await;
    assert_eq!(both["priority"], "critical");
    assert_eq!(both["kind"], "condition");
    let risk = wait_for("unit A red", t, || async {
        let r = sentinel.get("/api/v1/risk").await;
        (r["units"][0]["colour"] == "red").then_some(r)
    })
    .await;
    assert_eq!(
        risk["colour"], "red",
        "the site takes its worst unit's colour"
    );

    // Suppression by design: TT-3 high while RUN = 0 is suppressed, never announced.
    device.write_register(12, 0).await;
    device.write_register(13, 80).await;
    wait_for("TT-3 suppressed by design", t, || async {
        open_of(&sentinel, "TT-3")
            .await
            .into_iter()
            .find(|a| a["state"] == "suppressed_by_design")
    })
    .await;
    assert!(!hook.bodies().iter().any(|b| b["point"] == "TT-3"));

    // A restart keeps the shelving: the alarm comes back shelved, and nobody is told again.
    let raised_before = hook
        .bodies()
        .iter()
        .filter(|b| b["point"] == "TT-1" && b["transition"] == "raised")
        .count();
    let cfg = config(device.port, &hook.url());
    let (code, dir) = sentinel.terminate().await;
    assert_eq!(code, Some(0));
    let sentinel = Sentinel::start_in(&cfg, dir).await;
    let modes = wait_for("the shelving restored", t, || async {
        let m = sentinel.get("/api/v1/modes").await;
        m.as_array()?
            .iter()
            .any(|m| m["mode"] == "shelved" && m["by"] == "wang")
            .then_some(m)
    })
    .await;
    assert!(
        modes
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["reason"] == "sensor being recalibrated"),
        "{modes}"
    );
    wait_for("TT-1 shelved after restart", t, || async {
        open_of(&sentinel, "TT-1")
            .await
            .into_iter()
            .find(|a| a["state"] == "shelved")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let raised_after = hook
        .bodies()
        .iter()
        .filter(|b| b["point"] == "TT-1" && b["transition"] == "raised")
        .count();
    assert_eq!(
        raised_after, raised_before,
        "a shelved alarm was announced again after a restart"
    );

    // Everything above is in the journal, chained.
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
    let has = |needle: &str| bodies.iter().any(|b| b.contains(needle));
    assert!(has("\"mode\":\"shelved\""), "shelving is journaled");
    assert!(
        has("\"mode\":\"out_of_service\""),
        "out of service is journaled"
    );
    assert!(has("sensor being recalibrated"), "with the reason");
    assert!(
        has("\"kind\":\"risk_colour\""),
        "colour changes are journaled"
    );
    drop(db);
    let (intact, text) = sentinel_tests::journal_verify(&dir.path().join("data"));
    assert!(intact, "{text}");
    device.kill().await;
}
