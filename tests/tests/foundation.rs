//! The foundation path end to end: a pymodbus device → the real sentinel binary → alarm in the
//! API, at a webhook receiver and in the store; deadband on clearing; communication loss when
//! the device dies; a clean exit on SIGTERM.

use std::time::Duration;

use sentinel_tests::{PyModbusDevice, Sentinel, WebhookReceiver, wait_for};
use serde_json::Value;

fn config(device_port: u16, webhook: &str) -> String {
    format!(
        r#"
[site]
id = "e2e"
name = "End-to-end test site"

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
poll_interval_ms = 200
timeout_ms = 300
comm_loss_after_secs = 2

[[points]]
tag = "TT-1"
device = "plc1"
kind = "temperature"
unit = "°C"
span = [0.0, 100.0]
register = {{ table = "holding", address = 10 }}
limits = {{ deadband = 5.0, levels = [{{ level = "H", setpoint = 50.0, priority = "high" }}] }}

[[notify.webhook]]
name = "receiver"
url = "{webhook}"
timeout_ms = 2000
max_backoff_secs = 1
"#
    )
}

async fn point(s: &Sentinel, tag: &str) -> Value {
    let points = s.get("/api/v1/points").await;
    points
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["tag"] == tag)
        .cloned()
        .unwrap()
}

async fn alarms_of(s: &Sentinel, state: &str, point: &str) -> Vec<Value> {
    let all = s.get(&format!("/api/v1/alarms?state={state}")).await;
    all.as_array()
        .unwrap()
        .iter()
        .filter(|a| a["point"] == point)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_to_delivered_alarm_and_back() {
    let Some(device) = PyModbusDevice::start(&[]).await else {
        return;
    };
    let hook = WebhookReceiver::start().await;
    let sentinel = Sentinel::start(&config(device.port, &hook.url())).await;
    let t = Duration::from_secs(10);

    // A good value arrives.
    device.write_register(10, 20).await;
    wait_for("TT-1 = 20, good", t, || async {
        let p = point(&sentinel, "TT-1").await;
        (p["quality"] == "good" && p["value"] == 20.0).then_some(())
    })
    .await;

    // Over the limit: the alarm is in the API, at the receiver, and in the store.
    device.write_register(10, 60).await;
    let alarm = wait_for("an active TT-1 alarm", t, || async {
        alarms_of(&sentinel, "active", "TT-1")
            .await
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(alarm["state"], "active_unacked");
    assert_eq!(alarm["level"], "H");
    assert_eq!(alarm["priority"], "high");
    assert_eq!(alarm["value"], 60.0);
    let raised = hook.wait_event("TT-1", "raised", t).await;
    assert_eq!(raised["site"], "e2e");
    assert_eq!(raised["limit"], 50.0);
    assert_eq!(raised["alarm_id"], alarm["alarm_id"]);
    let id = raised["id"].as_str().unwrap().to_owned();
    {
        let headers = &hook.received.lock().unwrap()[0].0;
        assert_eq!(headers["idempotency-key"], id.as_str());
    }
    let db = rusqlite::Connection::open(sentinel.data_dir().join("sentinel.db")).unwrap();
    let in_journal: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM journal WHERE event_id = ?1",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(in_journal, 1, "the raised event is in the journal");
    let stored: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM readings r JOIN points p ON p.id = r.point WHERE p.tag = 'TT-1' AND r.value = 60.0",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(stored >= 1, "the reading that raised the alarm is stored");

    // Inside the deadband (45..50) the alarm stays active.
    device.write_register(10, 47).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        alarms_of(&sentinel, "active", "TT-1").await.len(),
        1,
        "cleared inside the deadband"
    );
    assert!(hook.bodies().iter().all(|b| b["transition"] != "cleared"));

    // Below limit minus deadband it clears (returned, unacknowledged) and the receiver hears it.
    device.write_register(10, 44).await;
    hook.wait_event("TT-1", "cleared", t).await;
    let open = alarms_of(&sentinel, "open", "TT-1").await;
    assert_eq!(open.len(), 1);
    assert_eq!(open[0]["state"], "returned_unacked");

    // Acknowledged through the API: finished, journaled, announced.
    let alarm_id = open[0]["alarm_id"].as_u64().unwrap();
    let resp = sentinel
        .http
        .post(sentinel.url(&format!("/api/v1/alarms/{alarm_id}/ack")))
        .json(&serde_json::json!({ "by": "operator-wang", "comment": "checked on site" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let acked = hook.wait_event("TT-1", "acknowledged", t).await;
    assert_eq!(acked["by"], "operator-wang");
    assert!(alarms_of(&sentinel, "open", "TT-1").await.is_empty());
    let again = sentinel
        .http
        .post(sentinel.url(&format!("/api/v1/alarms/{alarm_id}/ack")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.status(),
        404,
        "a finished alarm cannot be acknowledged again"
    );

    // The device dies: its point turns comm_lost (last good time kept) and a comm-loss alarm rises.
    let before = point(&sentinel, "TT-1").await;
    device.kill().await;
    let lost = wait_for(
        "a communication-loss alarm",
        Duration::from_secs(15),
        || async {
            alarms_of(&sentinel, "active", "plc1")
                .await
                .into_iter()
                .find(|a| a["kind"] == "comm_loss")
        },
    )
    .await;
    assert_eq!(lost["state"], "active_unacked");
    hook.wait_event("plc1", "raised", t).await;
    let p = point(&sentinel, "TT-1").await;
    assert_eq!(p["quality"], "comm_lost");
    assert_eq!(p["value"], 44.0, "the last good value is kept");
    assert!(
        p["time"].as_str() >= before["time"].as_str(),
        "never re-stamped forward past the last good value"
    );

    // SIGTERM: clean exit.
    let (code, _dir) = sentinel.terminate().await;
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_refuses_bad_requests_clearly() {
    let Some(device) = PyModbusDevice::start(&[]).await else {
        return;
    };
    let sentinel = Sentinel::start(&config(device.port, "http://127.0.0.1:9/unused")).await;
    let c = &sentinel.http;
    let r = c
        .post(sentinel.url("/api/v1/alarms/999999/ack"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .post(sentinel.url("/api/v1/alarms/not-a-number/ack"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("not an alarm id"));
    let r = c
        .get(sentinel.url("/api/v1/alarms?state=bogus"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .post(sentinel.url("/api/v1/alarms/1/ack"))
        .header("content-type", "application/json")
        .body(vec![b'x'; 200_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = c.get(sentinel.url("/api/v1/nothing")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .get(sentinel.url("/api/v1/points/NOPE/history"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let health: Value = c
        .get(sentinel.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let metrics = c
        .get(sentinel.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("sentinel_readings_received_total"));
    assert!(metrics.contains("sentinel_modbus_requests_total{device=\"plc1\",outcome=\"ok\"}"));
    let (code, _) = sentinel.terminate().await;
    assert_eq!(code, Some(0));
    device.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_outage_delays_but_loses_nothing() {
    let Some(device) = PyModbusDevice::start(&[]).await else {
        return;
    };
    let hook = WebhookReceiver::start().await;
    hook.failing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let sentinel = Sentinel::start(&config(device.port, &hook.url())).await;
    let t = Duration::from_secs(10);

    // Three transitions happen while the receiver answers 503.
    device.write_register(10, 60).await;
    wait_for("an active alarm", t, || async {
        alarms_of(&sentinel, "active", "TT-1")
            .await
            .into_iter()
            .next()
    })
    .await;
    device.write_register(10, 10).await;
    wait_for("the alarm returned", t, || async {
        alarms_of(&sentinel, "open", "TT-1")
            .await
            .into_iter()
            .find(|a| a["state"] == "returned_unacked")
    })
    .await;
    let metrics = wait_for("failed deliveries counted", t, || async {
        let m = sentinel
            .http
            .get(sentinel.url("/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        m.contains("sentinel_deliveries_total{channel=\"webhook:receiver\",outcome=\"failed\"}")
            .then_some(m)
    })
    .await;
    assert!(metrics.contains("sentinel_outbox_pending{channel=\"webhook:receiver\"}"));
    assert!(hook.bodies().is_empty());

    // The receiver comes back: both events arrive, once each, in order.
    hook.failing
        .store(false, std::sync::atomic::Ordering::SeqCst);
    hook.wait_event("TT-1", "cleared", Duration::from_secs(15))
        .await;
    let bodies = hook.bodies();
    let transitions: Vec<&str> = bodies
        .iter()
        .map(|b| b["transition"].as_str().unwrap())
        .collect();
    assert_eq!(transitions, vec!["raised", "cleared"]);
    let ids: std::collections::HashSet<&str> =
        bodies.iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), bodies.len(), "no duplicates");

    let (code, _) = sentinel.terminate().await;
    assert_eq!(code, Some(0));
    device.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_open_alarms_and_the_journal_verifies() {
    let Some(device) = PyModbusDevice::start(&[]).await else {
        return;
    };
    let hook = WebhookReceiver::start().await;
    let cfg = config(device.port, &hook.url());
    let sentinel = Sentinel::start(&cfg).await;
    let t = Duration::from_secs(10);
    device.write_register(10, 70).await;
    let first = wait_for("an active alarm", t, || async {
        alarms_of(&sentinel, "active", "TT-1")
            .await
            .into_iter()
            .next()
    })
    .await;
    hook.wait_event("TT-1", "raised", t).await;
    let (code, dir) = sentinel.terminate().await;
    assert_eq!(code, Some(0));

    // Restarted on the same store while the value is still high: the same alarm, not a new one.
    let sentinel = Sentinel::start_in(&cfg, dir).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let active = alarms_of(&sentinel, "active", "TT-1").await;
    assert_eq!(active.len(), 1);
    assert_eq!(
        active[0]["alarm_id"], first["alarm_id"],
        "the open alarm was restored, not raised again"
    );
    let raised = hook
        .bodies()
        .iter()
        .filter(|b| b["transition"] == "raised" && b["point"] == "TT-1")
        .count();
    assert_eq!(raised, 1, "no duplicate announcement after restart");
    device.write_register(10, 10).await;
    hook.wait_event("TT-1", "cleared", t).await;

    let (code, dir) = sentinel.terminate().await;
    assert_eq!(code, Some(0));
    let out = std::process::Command::new(sentinel_tests::sentinel_bin())
        .args(["journal", "verify", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("journal intact"), "{stdout}");

    // Edit one record: verify names it and fails.
    let db = rusqlite::Connection::open(dir.path().join("data/sentinel.db")).unwrap();
    db.execute(
        "UPDATE journal SET body = replace(body, 'raised', 'cleared') WHERE seq = 1",
        [],
    )
    .unwrap();
    drop(db);
    let out = std::process::Command::new(sentinel_tests::sentinel_bin())
        .args(["journal", "verify", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("record 1 was edited"));
    device.kill().await;
}
