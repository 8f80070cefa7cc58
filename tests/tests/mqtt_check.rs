//! `sentinel check` on MQTT settings: everything the client library would panic on, and every
//! mapping mistake, is reported with its path before the daemon starts.
#![allow(clippy::unwrap_used)] // tests: a panic is a failed test

use std::process::Command;

use sentinel_tests::sentinel_bin;

fn check(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(sentinel_bin())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const SITE: &str = "[site]\nid = \"s\"\nname = \"S\"\n";

#[test]
fn mqtt_check_accepts_a_good_mqtt_configuration() {
    let text = format!(
        r#"{SITE}
[[devices]]
name = "m"
protocol = "mqtt"
broker = {{ host = "127.0.0.1", mqtt_version = 5, keep_alive_secs = 5 }}
topics = ["plant/+/gas", "plant/status/#"]
topic_template = "site/{{area}}/{{point}}"
timestamp_pointer = "/ts"

[[points]]
tag = "A"
device = "m"
kind = "toxic_gas"
topic = "plant/+/gas"
json_pointer = "/nh3"
stale_after_ms = 5000
data_interruption_after_ms = 30000

[[points]]
tag = "B"
device = "m"
kind = "level"
topic_point = "level-b"

[notify.mqtt]
broker = {{ host = "127.0.0.1" }}
"#
    );
    let (code, err) = check(&text);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn mqtt_check_rejects_values_that_would_panic_and_bad_mappings() {
    let text = format!(
        r#"{SITE}
[[devices]]
name = "m"
protocol = "mqtt"
broker = {{ host = "127.0.0.1", keep_alive_secs = 0, inflight = 0, mqtt_version = 3, tls = {{ ca_file = "/nonexistent/ca.pem" }} }}
topics = ["a/#/b", "a+/c"]
topic_template = "x/{{device}}"
quality_pointer = "status"

[[devices]]
name = "plc"
protocol = "modbus_tcp"
host = "127.0.0.1"

[[points]]
tag = "A"
device = "m"
kind = "level"
json_pointer = "nh3"
register = {{ table = "holding", address = 0 }}
topic_point = "x"

[[points]]
tag = "B"
device = "plc"
kind = "level"
json_pointer = "/x"

[notify.mqtt]
broker = {{ host = "", mqtt_version = 5, keep_alive_secs = 2 }}
topic_prefix = "sentinel/#"
"#
    );
    let (code, err) = check(&text);
    assert_eq!(code, 64, "{err}");
    for path in [
        "devices[0].broker.keep_alive_secs",
        "devices[0].broker.inflight",
        "devices[0].broker.mqtt_version",
        "devices[0].broker.tls.ca_file",
        "devices[0].topics[0]",
        "devices[0].topics[1]",
        "devices[0].topic_template",
        "devices[0].quality_pointer",
        "points[0].json_pointer",
        "points[0].register",
        "points[1].register",
        "points[1].json_pointer",
        "notify.mqtt.broker.host",
        "notify.mqtt.broker.keep_alive_secs",
        "notify.mqtt.topic_prefix",
    ] {
        assert!(
            err.contains(&format!("{path}:")),
            "{path} not reported in:\n{err}"
        );
    }
}

#[test]
fn mqtt_check_rejects_a_misspelt_key() {
    let text = format!(
        "{SITE}\n[[devices]]\nname = \"m\"\nprotocol = \"mqtt\"\nbroker = {{ host = \"h\", keepalive_secs = 5 }}\ntopics = [\"t\"]\n"
    );
    let (code, err) = check(&text);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("keepalive_secs"), "{err}");
}
