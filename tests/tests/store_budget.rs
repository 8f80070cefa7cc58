//! The store's disk budget, end to end: a flood of MQTT readings into a store allowed 1 MB.
//! Invariant: the oldest readings are dropped, counted and recorded, an alarm is raised, and the
//! journal (every alarm event) is untouched.
#![allow(clippy::unwrap_used)] // tests: a panic is a failed test

use std::time::Duration;

use sentinel_tests::mqtt::{publish_lines, shared_broker, unique};
use sentinel_tests::{Sentinel, wait_for};

// Few, large messages: Mosquitto queues at most 1,000 QoS 1 messages for a subscriber by
// default and drops the rest, so a flood of small ones would not all arrive on a slow machine.
const POINTS: usize = 100;
const MESSAGES: usize = 600;

fn config(port: u16, topic: &str) -> String {
    let mut c = format!(
        r#"
[site]
id = "budget"
name = "Disk budget test site"

[store]
data_dir = "{{data_dir}}"
flush_interval_ms = 50
disk_budget_mb = 1

[engine]
tick_ms = 50

[[devices]]
name = "flood"
protocol = "mqtt"
broker = {{ host = "127.0.0.1", port = {port} }}
topics = ["{topic}"]
max_payload_bytes = 65536
"#
    );
    for p in 0..POINTS {
        c.push_str(&format!(
            "\n[[points]]\ntag = \"L{p}\"\ndevice = \"flood\"\nkind = \"level\"\ntopic = \"{topic}\"\njson_pointer = \"/p{p}\"\nlimits = {{ levels = [{{ level = \"H\", setpoint = 1e9 }}] }}\n"
        ));
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_budget_drops_the_oldest_readings_and_raises_an_alarm() {
    let Some((_, port)) = shared_broker() else {
        return;
    };
    let topic = unique("budget");
    let sentinel = Sentinel::start(&config(port, &topic)).await;
    wait_for("the MQTT subscription", Duration::from_secs(10), || {
        let s = &sentinel;
        async move {
            let m = s.metrics_text().await;
            m.contains("sentinel_mqtt_connected{device=\"flood\"} 1")
                .then_some(())
        }
    })
    .await;
    // The subscription is made after the connection: probe until a message gets through, so
    // that the flood is not published before the broker knows where to send it.
    wait_for(
        "a probe reading through the broker",
        Duration::from_secs(10),
        || {
            let s = &sentinel;
            let topic = topic.clone();
            async move {
                publish_lines(port, &topic, "{\"p0\": 1.5}\n", 1).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                let p = s.point("L0").await?;
                (p["value"].as_f64() == Some(1.5)).then_some(())
            }
        },
    )
    .await;
    // 60,000 distinct readings, about 2.5 MB of rows: more than twice the budget.
    let mut lines = String::new();
    for m in 0..MESSAGES {
        let fields: Vec<String> = (0..POINTS)
            .map(|p| format!("\"p{p}\":{}.{}", (m * 7 + p * 13) % 1000, m % 10))
            .collect();
        lines.push_str(&format!("{{{}}}\n", fields.join(",")));
    }
    publish_lines(port, &topic, &lines, 1).await;

    let alarm = wait_for("the disk-budget alarm", Duration::from_secs(60), || {
        let s = &sentinel;
        async move {
            let open = s.get("/api/v1/alarms?kind=system").await;
            open.as_array()?
                .iter()
                .find(|a| a["point"] == "disk_budget")
                .cloned()
        }
    })
    .await;
    assert_eq!(alarm["state"], "active_unacked", "{alarm}");
    assert_eq!(alarm["priority"], "high", "{alarm}");
    assert!(
        alarm["message"].as_str().unwrap().contains("disk budget"),
        "{alarm}"
    );
    let metrics = sentinel.metrics_text().await;
    assert!(
        metrics.contains("sentinel_readings_dropped_total{reason=\"disk_budget\"}"),
        "{metrics}"
    );

    let (code, dir) = sentinel.terminate().await;
    assert_eq!(code, Some(0));
    let db = rusqlite::Connection::open(dir.path().join("data").join("sentinel.db")).unwrap();
    let (losses, dropped): (i64, i64) = db
        .query_row(
            "SELECT COUNT(*), COALESCE(SUM(readings), 0) FROM store_losses WHERE reason = 'disk_budget'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(
        losses > 0 && dropped > 0,
        "{losses} losses, {dropped} readings"
    );
    // The alarm itself is in the journal, which the budget never touches.
    let raised: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM journal WHERE body LIKE '%disk_budget%' AND body LIKE '%\"raised\"%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(raised, 1);
    let (intact, text) = sentinel_tests::journal_verify(&dir.path().join("data"));
    assert!(intact, "{text}");
}
