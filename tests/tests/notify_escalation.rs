//! Escalation along a three-tier responsibility chain with short, controlled delays (tiers at
//! 0, 3 and 6 s after the raise); the gateway is killed (SIGKILL) between tier 2 and tier 3 and
//! started again on the same store: tier 3 still goes out on time, no tier is lost or sent
//! twice; then the alarm returns to normal unacknowledged and everyone told hears so.
#![allow(clippy::unwrap_used)] // a test: a panic is a failed test

mod notify_common;

use std::collections::BTreeMap;
use std::time::Duration;

use notify_common::Smtp;
use sentinel_tests::{PyModbusDevice, Sentinel, wait_for};

fn config(device_port: u16, smtp_port: u16) -> String {
    format!(
        r#"
[site]
id = "tank-farm"
name = "Tank farm"

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

[[points]]
tag = "LT-301"
name = "Tank 3 level"
device = "plc"
kind = "level"
unit = "m"
span = [0.0, 20.0]
area = "tank-3"
register = {{ table = "holding", address = 3 }}
limits = {{ levels = [{{ level = "HH", setpoint = 15.0, priority = "critical" }}] }}

[notify.email]
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
from = "sentinel@tank-farm.example"
language = "en"
max_backoff_secs = 1

[[contacts]]
name = "op"
email = "op@tank-farm.example"

[[contacts]]
name = "tech"
email = "tech@tank-farm.example"

[[contacts]]
name = "boss"
email = "boss@tank-farm.example"
language = "zh"

[[responsibility]]
name = "tank-3"
points = ["LT-301"]
tiers = [
    {{ role = "operational", contacts = ["op"] }},
    {{ role = "technical", contacts = ["tech"], after_secs = 3 }},
    {{ role = "main", contacts = ["boss"], after_secs = 6 }},
]
"#
    )
}

/// Messages per recipient (by local part).
async fn count(smtp: &Smtp) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for m in smtp.messages().await {
        // `name <local@domain>`: the local part names the contact.
        let addr = m.to.rsplit('<').next().unwrap_or_default();
        let who = addr.split('@').next().unwrap_or_default().to_owned();
        *out.entry(who).or_insert(0) += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_tiers_survive_a_restart_without_loss_or_repeat() {
    let Some(device) = PyModbusDevice::start(&[]).await else {
        return;
    };
    let Some(smtp) = Smtp::started().await else {
        return;
    };
    let cfg = config(device.port, smtp.port);
    let sentinel = Sentinel::start(&cfg).await;
    let t = Duration::from_secs(15);

    device.write_register(3, 18).await;
    let started = tokio::time::Instant::now();
    let first = smtp.wait_mail("op@", "LT-301", t).await;
    assert!(first.subject.starts_with("[Alarm]"), "{}", first.subject);
    let second = smtp.wait_mail("tech@", "LT-301", t).await;
    assert!(
        second.subject.starts_with("[Escalated to tier 2]"),
        "{}",
        second.subject
    );
    let at_tier2 = started.elapsed();
    assert!(
        at_tier2 >= Duration::from_millis(2500),
        "tier 2 not before its delay: {at_tier2:?}"
    );

    // Killed between tier 2 and tier 3 with no chance to tidy up; started again on its store.
    let dir = sentinel.kill9().await;
    let db_path = dir.path().join("data").join("sentinel.db");
    {
        let db = rusqlite::Connection::open(&db_path).unwrap();
        let (next, due): (i64, Option<i64>) = db
            .query_row("SELECT next_tier, due_ms FROM escalations", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(next, 2, "the table says tier 3 is next");
        assert!(due.is_some());
    }
    let sentinel = Sentinel::start_in(&cfg, dir).await;
    let third = smtp.wait_mail("boss@", "LT-301", t).await;
    assert!(
        third.subject.starts_with("【升级至第3级】"),
        "Chinese for this contact: {}",
        third.subject
    );
    assert!(third.text.contains("主要负责人"), "{}", third.text);
    let at_tier3 = started.elapsed();
    assert!(
        at_tier3 >= Duration::from_millis(5500),
        "tier 3 not before its delay: {at_tier3:?}"
    );

    // Nothing lost, nothing repeated across the restart.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counts = count(&smtp).await;
    assert_eq!(counts.get("op"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("tech"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("boss"), Some(&1), "{counts:?}");

    // Back to normal before anyone acknowledged: all three hear it, and escalation ends.
    device.write_register(3, 5).await;
    for who in ["op@", "tech@"] {
        let m = smtp.wait_mail(who, "[Returned to normal", t).await;
        assert!(m.text.contains("Returned at"), "{}", m.text);
    }
    smtp.wait_mail("boss@", "【已恢复正常", t).await;
    let db = rusqlite::Connection::open(&db_path).unwrap();
    wait_for("the escalation row to go", t, || async {
        let n: i64 = db
            .query_row("SELECT COUNT(*) FROM escalations", [], |r| r.get(0))
            .unwrap();
        (n == 0).then_some(())
    })
    .await;
    let (code, _) = sentinel.terminate().await;
    assert_eq!(code, Some(0));
}
