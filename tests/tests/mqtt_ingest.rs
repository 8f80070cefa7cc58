//! MQTT end to end: the real binary against real Mosquitto brokers (the shared one from
//! tests/run.sh, and private ones for restarts, TLS and passwords).
#![allow(clippy::unwrap_used)] // tests: a panic is a failed test

use std::time::Duration;

use sentinel_tests::mqtt::{
    self, Mosquitto, Subscriber, make_certs, publish, publish_lines, shared_broker, unique,
};
use sentinel_tests::{Sentinel, wait_for};

const WAIT: Duration = Duration::from_secs(20);

fn site(extra: &str) -> String {
    format!(
        r#"
[site]
id = "mq"
name = "MQTT test site"

[store]
data_dir = "{{data_dir}}"
flush_interval_ms = 50

[engine]
tick_ms = 50
{extra}
"#
    )
}

async fn value_of(s: &Sentinel, tag: &str) -> Option<(f64, String)> {
    let p = s.point(tag).await?;
    Some((p["value"].as_f64()?, p["quality"].as_str()?.to_owned()))
}

async fn wait_value(s: &Sentinel, tag: &str, want: f64) {
    wait_for(&format!("{tag} = {want}"), WAIT, || async {
        value_of(s, tag)
            .await
            .filter(|(v, q)| *v == want && q == "good")
            .map(drop)
    })
    .await;
}

#[tokio::test]
async fn mqtt_plain_json_and_template_mappings() {
    let Some((_, port)) = shared_broker() else {
        return;
    };
    let base = unique("map");
    let config = site(&format!(
        r#"
[[devices]]
name = "plain"
protocol = "mqtt"
broker = {{ host = "127.0.0.1", port = {port} }}
topics = ["{base}/plain/nh3"]

[[devices]]
name = "json"
protocol = "mqtt"
broker = {{ host = "127.0.0.1", port = {port}, mqtt_version = 5 }}
topics = ["{base}/json/+"]
timestamp_pointer = "/ts"
quality_pointer = "/status"

[[devices]]
name = "tmpl"
protocol = "mqtt"
broker = {{ host = "127.0.0.1", port = {port} }}
topic_template = "{base}/site/{{device}}/{{point}}"

[[points]]
tag = "NH3-1"
device = "plain"
kind = "toxic_gas"

[[points]]
tag = "NH3-2"
device = "json"
kind = "toxic_gas"
json_pointer = "/gas/nh3"

[[points]]
tag = "CH4-2"
device = "json"
kind = "combustible_gas"
json_pointer = "/gas/ch4"

[[points]]
tag = "LT-3"
device = "tmpl"
kind = "level"
topic_point = "level-3"

[[points]]
tag = "PT-3"
device = "tmpl"
kind = "pressure"
"#
    ));
    let s = Sentinel::start(&config).await;
    for device in ["plain", "json", "tmpl"] {
        wait_for(&format!("{device} connected"), WAIT, || async {
            (s.metric(&format!("sentinel_mqtt_connected{{device=\"{device}\"}}"))
                .await
                == Some(1.0))
            .then_some(())
        })
        .await;
    }
    // Subscriptions are queued on connect; give the broker a moment to register them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish(port, &format!("{base}/plain/nh3"), b"12.5", 1, false, &[]).await;
    wait_value(&s, "NH3-1", 12.5).await;

    // Epoch seconds, a minute ago: a device's own stamp, kept as it is.
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let ts = now_s - 60;
    let body = format!(r#"{{"ts": {ts}, "status": "ok", "gas": {{"nh3": 7.25, "ch4": "3.5"}}}}"#);
    publish(
        port,
        &format!("{base}/json/gw1"),
        body.as_bytes(),
        1,
        false,
        &[],
    )
    .await;
    wait_value(&s, "NH3-2", 7.25).await;
    wait_value(&s, "CH4-2", 3.5).await;
    let history = s
        .get(&format!(
            "/api/v1/points/NH3-2/history?from_ms={}&to_ms={}",
            ts * 1000 - 1,
            ts * 1000 + 1
        ))
        .await;
    wait_for("the payload's timestamp in the store", WAIT, || async {
        let h = s
            .get(&format!(
                "/api/v1/points/NH3-2/history?from_ms={}&to_ms={}",
                ts * 1000 - 1,
                ts * 1000 + 1
            ))
            .await;
        (h.as_array()
            .is_some_and(|a| a.iter().any(|r| r["ts_ms"] == ts * 1000)))
        .then_some(())
    })
    .await;
    drop(history);
    // A device clock a day ahead: the value is kept, stamped with its arrival, and counted.
    let ahead = format!(
        r#"{{"ts": {}, "status": "ok", "gas": {{"nh3": 7.5, "ch4": 3.5}}}}"#,
        now_s + 86_400
    );
    publish(
        port,
        &format!("{base}/json/gw1"),
        ahead.as_bytes(),
        1,
        false,
        &[],
    )
    .await;
    wait_value(&s, "NH3-2", 7.5).await;
    wait_for("7.5 stored at its arrival time", WAIT, || async {
        let h = s
            .get(&format!(
                "/api/v1/points/NH3-2/history?from_ms={}&to_ms={}",
                (now_s - 5) * 1000,
                (now_s + 600) * 1000
            ))
            .await;
        h.as_array()
            .is_some_and(|a| a.iter().any(|r| r["value"] == 7.5))
            .then_some(())
    })
    .await;
    assert_eq!(
        s.metric("sentinel_mqtt_timestamps_replaced_total{device=\"json\"}")
            .await,
        Some(1.0)
    );
    // A clock that reset to 1970 in RFC 3339: not a measurement time, the message is refused.
    publish(
        port,
        &format!("{base}/json/gw1"),
        br#"{"ts": "1970-01-01T00:00:05Z", "status": "ok", "gas": {"nh3": 8, "ch4": 1}}"#,
        1,
        false,
        &[],
    )
    .await;
    wait_for("bad_timestamp counted", WAIT, || async {
        (s.metric("sentinel_mqtt_bad_payloads_total{device=\"json\",reason=\"bad_timestamp\"}")
            .await
            == Some(1.0))
        .then_some(())
    })
    .await;
    // A bad status field: the value arrives, with bad quality.
    let fault = format!(
        r#"{{"ts": {}, "status": "fault", "gas": {{"nh3": 9, "ch4": 1}}}}"#,
        now_s - 59
    );
    publish(
        port,
        &format!("{base}/json/gw1"),
        fault.as_bytes(),
        1,
        false,
        &[],
    )
    .await;
    wait_for("sensor_fault quality", WAIT, || async {
        value_of(&s, "NH3-2")
            .await
            .filter(|(_, q)| q == "sensor_fault")
            .map(drop)
    })
    .await;

    publish(
        port,
        &format!("{base}/site/tank-farm/level-3"),
        b"4.75",
        1,
        false,
        &[],
    )
    .await;
    publish(
        port,
        &format!("{base}/site/tank-farm/PT-3"),
        b"0.6",
        0,
        false,
        &[],
    )
    .await;
    wait_value(&s, "LT-3", 4.75).await;
    wait_value(&s, "PT-3", 0.6).await;
    // A topic that names no point is counted, not guessed at.
    publish(
        port,
        &format!("{base}/site/tank-farm/unknown"),
        b"1",
        1,
        false,
        &[],
    )
    .await;
    wait_for("unmapped counted", WAIT, || async {
        (s.metric("sentinel_mqtt_bad_payloads_total{device=\"tmpl\",reason=\"unmapped\"}")
            .await
            >= Some(1.0))
        .then_some(())
    })
    .await;
    let (code, _) = s.terminate().await;
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn mqtt_garbage_and_malformed_flood_leave_sentinel_running() {
    let Some((_, port)) = shared_broker() else {
        return;
    };
    let base = unique("flood");
    let config = site(&format!(
        r#"
[[devices]]
name = "flood"
protocol = "mqtt"
broker = {{ host = "127.0.0.1", port = {port} }}
topics = ["{base}/#"]

[[points]]
tag = "V-1"
device = "flood"
kind = "level"
topic = "{base}/plain"

[[points]]
tag = "V-2"
device = "flood"
kind = "level"
topic = "{base}/json"
json_pointer = "/v"
"#
    ));
    let mut s = Sentinel::start(&config).await;
    wait_for("connected", WAIT, || async {
        (s.metric("sentinel_mqtt_connected{device=\"flood\"}").await == Some(1.0)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // 1 MiB of bytes that are neither UTF-8 nor JSON.
    let garbage: Vec<u8> = (0..1024 * 1024)
        .map(|i| (i * 7 + 0x80) as u8 | 0x80)
        .collect();
    publish(port, &format!("{base}/json"), &garbage, 1, false, &[]).await;
    // 10,000 malformed messages: half not numbers, half broken or incomplete JSON.
    let mut plain = String::new();
    let mut json = String::new();
    for i in 0..5000 {
        plain.push_str(match i % 3 {
            0 => "NaN\n",
            1 => "twelve\n",
            _ => "inf\n",
        });
        json.push_str(match i % 3 {
            0 => "{\"v\": \n",
            1 => "{\"w\": 1}\n",
            _ => "{\"v\": \"x\"}\n",
        });
    }
    let started = std::time::Instant::now();
    let (plain_topic, json_topic) = (format!("{base}/plain"), format!("{base}/json"));
    tokio::join!(
        publish_lines(port, &plain_topic, &plain, 0),
        publish_lines(port, &json_topic, &json, 0)
    );
    eprintln!(
        "10,000 malformed messages published in {:?}",
        started.elapsed()
    );
    let bad = |reason: &'static str| {
        let s = &s;
        async move {
            s.metric(&format!(
                "sentinel_mqtt_bad_payloads_total{{device=\"flood\",reason=\"{reason}\"}}"
            ))
            .await
            .unwrap_or(0.0)
        }
    };
    wait_for(
        "every malformed message counted",
        Duration::from_secs(30),
        || async {
            let total = bad("not_finite").await
                + bad("not_a_number").await
                + bad("not_json").await
                + bad("missing_field").await;
            (total >= 10_000.0).then_some(())
        },
    )
    .await;
    assert_eq!(bad("oversized").await, 1.0);
    assert!(bad("not_finite").await >= 3333.0);
    assert!(bad("missing_field").await >= 1666.0);
    assert!(s.is_running(), "sentinel died; log:\n{}", s.log());
    // Still ingesting, and nothing bad became a value.
    publish(
        port,
        &format!("{base}/json"),
        br#"{"v": 42}"#,
        1,
        false,
        &[],
    )
    .await;
    wait_value(&s, "V-2", 42.0).await;
    let history = s.get("/api/v1/points/V-1/history").await;
    assert!(
        history
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["quality"] != "good"),
        "{history}"
    );
    // Warnings are rate-limited: far fewer log lines than bad messages.
    let warnings = s.log().matches("Bad MQTT payload ignored").count();
    assert!(warnings < 50, "{warnings} warnings logged");
    let (code, _) = s.terminate().await;
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn mqtt_silent_topic_turns_stale_and_raises_data_interruption() {
    let Some((_, port)) = shared_broker() else {
        return;
    };
    let base = unique("silent");
    let config = site(&format!(
        r#"
[[devices]]
name = "quiet"
protocol = "mqtt"
broker = {{ host = "127.0.0.1", port = {port} }}
topics = ["{base}/t"]

[[points]]
tag = "FT-9"
device = "quiet"
kind = "flow"
stale_after_ms = 400
data_interruption_after_ms = 1500
data_interruption_priority = "high"
"#
    ));
    let s = Sentinel::start(&config).await;
    wait_for("connected", WAIT, || async {
        (s.metric("sentinel_mqtt_connected{device=\"quiet\"}").await == Some(1.0)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish(port, &format!("{base}/t"), b"3.0", 1, false, &[]).await;
    wait_value(&s, "FT-9", 3.0).await;
    let silent_from = std::time::Instant::now();
    wait_for("FT-9 stale", WAIT, || async {
        value_of(&s, "FT-9")
            .await
            .filter(|(v, q)| *v == 3.0 && q == "stale")
            .map(drop)
    })
    .await;
    let alarm = wait_for("a data-interruption alarm", WAIT, || async {
        let alarms = s.get("/api/v1/alarms").await;
        alarms
            .as_array()?
            .iter()
            .find(|a| a["kind"] == "data_interruption" && a["point"] == "FT-9")
            .cloned()
    })
    .await;
    assert!(
        silent_from.elapsed() >= Duration::from_millis(1000),
        "raised too early: {alarm}"
    );
    assert_eq!(alarm["priority"], "high");
    // Data again: the alarm clears.
    publish(port, &format!("{base}/t"), b"3.5", 1, false, &[]).await;
    wait_for("the alarm to return to normal", WAIT, || async {
        let alarms = s.get("/api/v1/alarms?state=active").await;
        (!alarms
            .as_array()?
            .iter()
            .any(|a| a["kind"] == "data_interruption"))
        .then_some(())
    })
    .await;
    let (code, _) = s.terminate().await;
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn mqtt_qos1_messages_published_while_stopped_arrive_after_restart() {
    let Some((_, port)) = shared_broker() else {
        return;
    };
    let base = unique("offline");
    let config = site(&format!(
        r#"
[[devices]]
name = "persist"
protocol = "mqtt"
broker = {{ host = "127.0.0.1", port = {port}, client_id = "{base}" }}
topics = ["{base}/v"]

[[points]]
tag = "LT-7"
device = "persist"
kind = "level"
"#
    ));
    let s = Sentinel::start(&config).await;
    wait_for("connected", WAIT, || async {
        (s.metric("sentinel_mqtt_connected{device=\"persist\"}")
            .await
            == Some(1.0))
        .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish(port, &format!("{base}/v"), b"1", 1, false, &[]).await;
    wait_value(&s, "LT-7", 1.0).await;
    let (code, dir) = s.terminate().await;
    assert_eq!(code, Some(0));
    // Sentinel is down; the broker holds these for its persistent session.
    for v in [101, 102, 103, 104, 105] {
        publish(
            port,
            &format!("{base}/v"),
            v.to_string().as_bytes(),
            1,
            false,
            &[],
        )
        .await;
    }
    let s = Sentinel::start_in(&config, dir).await;
    wait_for("all five held messages in the store", WAIT, || async {
        let h = s.get("/api/v1/points/LT-7/history").await;
        let values: Vec<f64> = h
            .as_array()?
            .iter()
            .filter_map(|r| r["value"].as_f64())
            .collect();
        [101.0, 102.0, 103.0, 104.0, 105.0]
            .iter()
            .all(|v| values.contains(v))
            .then_some(())
    })
    .await;
    let (code, _) = s.terminate().await;
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn mqtt_broker_restart_reconnects_resubscribes_and_restores_status() {
    let Some(mut broker) = Mosquitto::start("allow_anonymous true").await else {
        return;
    };
    let port = broker.port;
    let config = site(&format!(
        r#"
[[devices]]
name = "edge"
protocol = "mqtt"
broker = {{ host = "127.0.0.1", port = {port}, reconnect_max_secs = 1 }}
topics = ["plant/edge/nh3"]
comm_loss_after_secs = 30

[[points]]
tag = "NH3-5"
device = "edge"
kind = "toxic_gas"
limits = {{ levels = [{{ level = "H", setpoint = 25.0, priority = "high" }}] }}

[notify.mqtt]
broker = {{ host = "127.0.0.1", port = {port}, reconnect_max_secs = 1 }}
status_interval_secs = 60
"#
    ));
    let alarms = Subscriber::start(port, "sentinel/v1/mq/alarms", &[]).await;
    let mut s = Sentinel::start(&config).await;
    let status = wait_for("the retained status", WAIT, || async {
        let text = mqtt::retained(port, "sentinel/v1/mq/status", &[]).await?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        (v["online"] == true).then_some(v)
    })
    .await;
    assert_eq!(status["colour"], "blue", "{status}");
    publish(port, "plant/edge/nh3", b"5", 1, false, &[]).await;
    wait_value(&s, "NH3-5", 5.0).await;

    for round in 0..2 {
        broker.restart().await;
        // The broker kept the retained status across the restart, or Sentinel published it
        // again on reconnecting: either way it is there and says online.
        let status = wait_for("the status after the broker restart", WAIT, || async {
            let text = mqtt::retained(port, "sentinel/v1/mq/status", &[]).await?;
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            (v["online"] == true).then_some(v)
        })
        .await;
        assert_eq!(status["site"], "mq");
        wait_for("reconnected", WAIT, || async {
            (s.metric("sentinel_mqtt_connects_total{device=\"edge\"}")
                .await
                >= Some(2.0 + f64::from(round)))
            .then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let v = 6.0 + f64::from(round);
        publish(
            port,
            "plant/edge/nh3",
            v.to_string().as_bytes(),
            1,
            false,
            &[],
        )
        .await;
        wait_value(&s, "NH3-5", v).await;
    }
    // An alarm goes out over MQTT and counts as delivered only on PUBACK.
    let alarms = {
        drop(alarms);
        Subscriber::start(port, "sentinel/v1/mq/alarms", &[]).await
    };
    publish(port, "plant/edge/nh3", b"40", 1, false, &[]).await;
    let event = alarms
        .wait_json("the alarm event on MQTT", WAIT, |v| {
            v["transition"] == "raised" && v["point"] == "NH3-5"
        })
        .await;
    assert_eq!(event["kind"], "limit");
    wait_for("delivery counted", WAIT, || async {
        (s.metric("sentinel_deliveries_total{channel=\"mqtt\",outcome=\"delivered\"}")
            .await
            >= Some(1.0))
        .then_some(())
    })
    .await;
    let status = wait_for("the status showing the alarm", WAIT, || async {
        let text = mqtt::retained(port, "sentinel/v1/mq/status", &[]).await?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        (v["open_alarms"] == 1).then_some(v)
    })
    .await;
    // The site (blue, no risk units: one implicit unit) steps up one colour for a first-level
    // alarm: the risk map's rule, the same on the console, the API and the uplink.
    assert_eq!(status["colour"], "yellow", "{status}");
    assert!(s.is_running(), "{}", broker.log());
    alarms.stop().await;
    let (code, _) = s.terminate().await;
    assert_eq!(code, Some(0));
    let status = mqtt::retained(port, "sentinel/v1/mq/status", &[])
        .await
        .unwrap();
    assert!(status.contains("\"online\":false"), "{status}");
}

#[tokio::test]
async fn mqtt_undelivered_alarms_wait_in_the_outbox_across_restarts() {
    let Some(mut broker) = Mosquitto::start("allow_anonymous true").await else {
        return;
    };
    let port = broker.port;
    let ingest = shared_broker().map(|(_, p)| p).unwrap_or(port);
    let base = unique("outbox");
    let config = site(&format!(
        r#"
[[devices]]
name = "src"
protocol = "mqtt"
broker = {{ host = "127.0.0.1", port = {ingest}, client_id = "{base}" }}
topics = ["{base}/v"]

[[points]]
tag = "PT-1"
device = "src"
kind = "pressure"
limits = {{ levels = [{{ level = "H", setpoint = 1.0, priority = "critical" }}] }}

[notify.mqtt]
broker = {{ host = "127.0.0.1", port = {port}, reconnect_max_secs = 1 }}
puback_timeout_ms = 1000
"#
    ));
    let s = Sentinel::start(&config).await;
    wait_for("connected", WAIT, || async {
        (s.metric("sentinel_mqtt_connected{device=\"src\"}").await == Some(1.0)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The alarm broker goes away; the alarm is raised while it is down.
    broker.stop().await;
    publish(ingest, &format!("{base}/v"), b"2.5", 1, false, &[]).await;
    wait_for("the alarm pending in the outbox", WAIT, || async {
        (s.metric("sentinel_outbox_pending{channel=\"mqtt\"}").await >= Some(1.0)).then_some(())
    })
    .await;
    let (code, dir) = s.terminate().await;
    assert_eq!(code, Some(0));
    // The broker is back, Sentinel restarts from the same store, and the alarm goes out.
    broker.restart().await;
    let alarms = Subscriber::start(port, "sentinel/v1/mq/alarms", &[]).await;
    let s = Sentinel::start_in(&config, dir).await;
    let event = alarms
        .wait_json("the alarm after the restart", WAIT, |v| {
            v["transition"] == "raised" && v["point"] == "PT-1"
        })
        .await;
    assert_eq!(event["priority"], "critical");
    wait_for("the outbox empty", WAIT, || async {
        (s.metric("sentinel_outbox_pending{channel=\"mqtt\"}").await == Some(0.0)).then_some(())
    })
    .await;
    alarms.stop().await;
    let (code, _) = s.terminate().await;
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn mqtt_tls_with_client_certificate_and_password() {
    let Some(certs_dir) = tempfile::tempdir().ok() else {
        return;
    };
    let Some(certs) = make_certs(certs_dir.path()) else {
        eprintln!("skipped: openssl is not installed");
        return;
    };
    let passwords = certs_dir.path().join("passwd");
    let made = std::process::Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&passwords)
        .args(["sentinel", "s3cret-pw"])
        .status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("skipped: mosquitto_passwd is not available");
        return;
    }
    let extra = format!(
        "allow_anonymous false\npassword_file {}\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
        passwords.display(),
        certs.ca.display(),
        certs.server_cert.display(),
        certs.server_key.display()
    );
    let Some(broker) = Mosquitto::start(&extra).await else {
        return;
    };
    let port = broker.port;
    let config = site(&format!(
        r#"
[[devices]]
name = "secure"
protocol = "mqtt"
topics = ["secure/nh3"]

[devices.broker]
host = "127.0.0.1"
port = {port}
mqtt_version = 5
username_env = "TEST_MQTT_USER"
password_env = "TEST_MQTT_PASS"
tls = {{ ca_file = "{}", client_cert_file = "{}", client_key_file = "{}" }}

[[points]]
tag = "NH3-S"
device = "secure"
kind = "toxic_gas"
"#,
        certs.ca.display(),
        certs.client_cert.display(),
        certs.client_key.display()
    ));
    let s = Sentinel::start_with_env(
        &config,
        &[
            ("TEST_MQTT_USER", "sentinel"),
            ("TEST_MQTT_PASS", "s3cret-pw"),
        ],
    )
    .await;
    wait_for("connected over TLS", WAIT, || async {
        (s.metric("sentinel_mqtt_connected{device=\"secure\"}").await == Some(1.0)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ca = certs.ca.display().to_string();
    let cert = certs.client_cert.display().to_string();
    let key = certs.client_key.display().to_string();
    let tls_args = [
        "--cafile",
        &ca,
        "--cert",
        &cert,
        "--key",
        &key,
        "-u",
        "sentinel",
        "-P",
        "s3cret-pw",
    ];
    publish(port, "secure/nh3", b"3.25", 1, false, &tls_args).await;
    wait_value(&s, "NH3-S", 3.25).await;
    assert!(
        !s.log().contains("s3cret-pw"),
        "the password reached the log"
    );
    let (code, _) = s.terminate().await;
    assert_eq!(code, Some(0));

    // A wrong password: no connection, counted, no crash.
    let mut s = Sentinel::start_with_env(
        &config,
        &[("TEST_MQTT_USER", "sentinel"), ("TEST_MQTT_PASS", "wrong")],
    )
    .await;
    wait_for("failed attempts counted", WAIT, || async {
        (s.metric("sentinel_mqtt_connection_errors_total{device=\"secure\"}")
            .await
            >= Some(1.0))
        .then_some(())
    })
    .await;
    assert_eq!(
        s.metric("sentinel_mqtt_connected{device=\"secure\"}").await,
        Some(0.0)
    );
    assert!(s.is_running());
    let (code, _) = s.terminate().await;
    assert_eq!(code, Some(0));
    drop(broker);
}

#[tokio::test]
async fn mqtt_qos1_flood_is_fully_acknowledged() {
    // A broker of our own: Mosquitto's default queue of 1000 messages per client would drop
    // part of a burst this size before Sentinel could take it (the broker logs "Outgoing
    // messages are being dropped").
    let Some(broker) = Mosquitto::start("allow_anonymous true\nmax_queued_messages 100000").await
    else {
        return;
    };
    let port = broker.port;
    let base = unique("qos1flood");
    let config = site(&format!(
        r#"
[[devices]]
name = "burst"
protocol = "mqtt"
broker = {{ host = "127.0.0.1", port = {port} }}
topics = ["{base}/v"]

[[points]]
tag = "FT-1"
device = "burst"
kind = "flow"
"#
    ));
    let s = Sentinel::start(&config).await;
    wait_for("connected", WAIT, || async {
        (s.metric("sentinel_mqtt_connected{device=\"burst\"}").await == Some(1.0)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Far more messages than fit in the client's request queue at once: every one must be
    // acknowledged, or the broker's in-flight window would stall the subscription.
    let lines: String = (0..20_000).map(|i| format!("{i}\n")).collect();
    publish_lines(port, &format!("{base}/v"), &lines, 1).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while s
        .metric("sentinel_mqtt_readings_total{device=\"burst\"}")
        .await
        < Some(20_000.0)
    {
        if tokio::time::Instant::now() > deadline {
            let metrics = s.metrics_text().await;
            let mqtt: Vec<&str> = metrics
                .lines()
                .filter(|l| l.starts_with("sentinel_mqtt") || l.starts_with("sentinel_readings"))
                .collect();
            let log = s.log();
            panic!(
                "not all readings arrived:\n{}\n{}",
                mqtt.join("\n"),
                &log[log.len().saturating_sub(3000)..]
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_value(&s, "FT-1", 19_999.0).await;
    wait_for("no acknowledgement left waiting", WAIT, || async {
        (s.metric("sentinel_mqtt_acks_waiting{device=\"burst\"}")
            .await
            == Some(0.0))
        .then_some(())
    })
    .await;
    let (code, _) = s.terminate().await;
    assert_eq!(code, Some(0));
    drop(broker);
}

#[tokio::test]
async fn mqtt_alarm_raised_during_a_broker_outage_is_delivered_when_it_returns() {
    let Some(mut broker) = Mosquitto::start("allow_anonymous true").await else {
        return;
    };
    let port = broker.port;
    let Some((_, ingest)) = shared_broker() else {
        return;
    };
    let base = unique("outage");
    let config = site(&format!(
        r#"
[[devices]]
name = "src"
protocol = "mqtt"
broker = {{ host = "127.0.0.1", port = {ingest} }}
topics = ["{base}/v"]

[[points]]
tag = "PT-2"
device = "src"
kind = "pressure"
limits = {{ levels = [{{ level = "H", setpoint = 1.0, priority = "high" }}] }}

[notify.mqtt]
broker = {{ host = "127.0.0.1", port = {port}, reconnect_max_secs = 1 }}
status_interval_secs = 1
puback_timeout_ms = 2000
max_backoff_secs = 1
"#
    ));
    // A persistent subscriber: the broker keeps what is published for it while it is away.
    let sub_args = ["-c", "-i", base.as_str()];
    let first = Subscriber::start(port, "sentinel/v1/mq/alarms", &sub_args).await;
    let s = Sentinel::start(&config).await;
    wait_for("connected", WAIT, || async {
        (s.metric("sentinel_mqtt_connected{device=\"src\"}").await == Some(1.0)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    broker.stop().await;
    first.stop().await;
    publish(ingest, &format!("{base}/v"), b"2.5", 1, false, &[]).await;
    wait_for("the alarm raised locally", WAIT, || async {
        let a = s.get("/api/v1/alarms?state=active").await;
        a.as_array()?.iter().find(|a| a["point"] == "PT-2").cloned()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    broker.restart().await;
    let again = Subscriber::start(port, "sentinel/v1/mq/alarms", &sub_args).await;
    let event = again
        .wait_json("the alarm after the outage", Duration::from_secs(30), |v| {
            v["point"] == "PT-2"
        })
        .await;
    assert_eq!(event["transition"], "raised");
    again.stop().await;
    let (code, _) = s.terminate().await;
    assert_eq!(code, Some(0));
}

/// The ids of the `transition` events a subscriber got, each once, in order of first arrival.
fn arrived(sub: &Subscriber, transition: &str) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    sub.lines()
        .iter()
        .filter_map(|l| {
            let (_, payload) = l.split_once(' ')?;
            let v: serde_json::Value = serde_json::from_str(payload).ok()?;
            (v["transition"] == transition).then(|| v["id"].as_str().map(str::to_owned))?
        })
        .filter(|id| seen.insert(id.clone()))
        .collect()
}

#[tokio::test]
async fn mqtt_alarm_storm_arrives_whole_and_in_order_across_a_broker_restart() {
    const POINTS: usize = 150;
    let Some(mut broker) = Mosquitto::start("allow_anonymous true").await else {
        return;
    };
    let port = broker.port;
    let Some((_, ingest)) = shared_broker() else {
        return;
    };
    let base = unique("storm");
    let plant = mqtt::storm_plant(&base, ingest, POINTS);
    let config = site(&format!(
        r#"
{plant}
[notify.mqtt]
broker = {{ host = "127.0.0.1", port = {port}, reconnect_max_secs = 1 }}
puback_timeout_ms = 2000
max_backoff_secs = 1
"#
    ));
    // One message that sets every point.
    let topic = format!("{base}/v");
    let set_all = async |v: f64| {
        let body = mqtt::storm_message(POINTS, v);
        publish(ingest, &topic, body.as_bytes(), 1, false, &[]).await;
    };
    let sub = Subscriber::start(port, "sentinel/v1/mq/alarms", &[]).await;
    let s = Sentinel::start(&config).await;
    wait_for("connected", WAIT, || async {
        (s.metric("sentinel_mqtt_connected{device=\"src\"}").await == Some(1.0)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A storm: every point crosses its limit in the same message.
    set_all(2.5).await;
    wait_for("every raise on the broker", WAIT, || async {
        (arrived(&sub, "raised").len() == POINTS).then_some(())
    })
    .await;
    wait_for("the outbox empty", WAIT, || async {
        (s.metric("sentinel_outbox_pending{channel=\"mqtt\"}").await == Some(0.0)).then_some(())
    })
    .await;

    // The broker goes away; every alarm clears while it is down, and the backlog goes out
    // when it returns.
    broker.stop().await;
    sub.stop().await;
    set_all(0.0).await;
    wait_for("every clear pending in the outbox", WAIT, || async {
        (s.metric("sentinel_outbox_pending{channel=\"mqtt\"}").await >= Some(POINTS as f64))
            .then_some(())
    })
    .await;
    broker.restart().await;
    let again = Subscriber::start(port, "sentinel/v1/mq/alarms", &[]).await;
    wait_for(
        "every clear on the broker",
        Duration::from_secs(30),
        || async { (arrived(&again, "cleared").len() == POINTS).then_some(()) },
    )
    .await;
    wait_for("the outbox empty again", WAIT, || async {
        (s.metric("sentinel_outbox_pending{channel=\"mqtt\"}").await == Some(0.0)).then_some(())
    })
    .await;
    let cleared = arrived(&again, "cleared");
    again.stop().await;
    let (code, dir) = s.terminate().await;
    assert_eq!(code, Some(0));

    // The clears arrived in the order they were queued (the journal's), not just all of them.
    let db = rusqlite::Connection::open(dir.path().join("data").join("sentinel.db")).unwrap();
    let queued: Vec<String> = db
        .prepare("SELECT event_id FROM outbox WHERE channel = 'mqtt' ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .filter(|id| cleared.contains(id))
        .collect();
    assert_eq!(queued.len(), POINTS);
    assert_eq!(cleared, queued, "clears arrived out of order");
    let undelivered: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM outbox WHERE channel = 'mqtt' AND delivered_ms IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(undelivered, 0);
}
