//! The regional hub end to end: three real gateways publish over a real Mosquitto; the hub
//! shows each site's colour within 2 s of a change, turns a killed gateway's site grey, and
//! receives the alarms a gateway raised while the broker was down once it is back. With a
//! `[tsdb]` section, the hub writes statuses, alarm events, offline alarms and downsampled
//! readings to a real VictoriaMetrics, across an outage of the store.
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::process::Stdio;
use std::time::{Duration, Instant};

use sentinel_tests::mqtt::Mosquitto;
use sentinel_tests::{PyModbusDevice, Sentinel, sentinel_bin, wait_for};
use serde_json::Value;

fn gateway(site: &str, device_port: u16, register: u16, broker_port: u16) -> String {
    format!(
        r#"
[site]
id = "{site}"
name = "Plant {site}"
risk_colour = "blue"

[store]
data_dir = "{{data_dir}}"
flush_interval_ms = 100

[engine]
tick_ms = 100

[[devices]]
name = "plc"
protocol = "modbus_tcp"
host = "127.0.0.1"
port = {device_port}
poll_interval_ms = 200
timeout_ms = 300
comm_loss_after_secs = 10

[[points]]
tag = "GT-1"
device = "plc"
kind = "combustible_gas"
unit = "%LEL"
area = "dike"
span = [0.0, 100.0]
register = {{ table = "holding", address = {register} }}
limits = {{ deadband = 2.0, levels = [{{ level = "H", setpoint = 25.0, priority = "high" }}, {{ level = "HH", setpoint = 50.0, priority = "critical" }}] }}

[[risk_units]]
id = "dike"
name = "Tank dike"
colour = "blue"
areas = ["dike"]

[notify.mqtt]
broker = {{ host = "127.0.0.1", port = {broker_port}, reconnect_max_secs = 1 }}
status_interval_secs = 1
puback_timeout_ms = 2000
max_backoff_secs = 1
"#
    )
}

fn hub_config(broker_port: u16) -> String {
    format!(
        r#"
offline_after_secs = 4

[hub]
id = "test-region"
name = "Test region"

[broker]
host = "127.0.0.1"
port = {broker_port}
reconnect_max_secs = 1

[http]
listen = "127.0.0.1:0"

[[sites]]
id = "site-1"
name = "Plant one"
sector = "hazardous_chemicals"
major_hazard_grade = 2
latitude = 30.1
longitude = 114.1

[[sites]]
id = "site-2"
name = "Plant two"
sector = "hazardous_chemicals"
major_hazard_grade = 3
latitude = 30.3
longitude = 114.4

[[sites]]
id = "site-3"
name = "Plant three"
sector = "molten_metal"
latitude = 30.2
longitude = 114.2
"#
    )
}

struct Hub {
    child: tokio::process::Child,
    addr: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Hub {
    async fn start(config: &str) -> Hub {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        std::fs::write(&path, config).unwrap();
        let ready = dir.path().join("ready");
        let log = std::fs::File::create(dir.path().join("hub.log")).unwrap();
        let child = tokio::process::Command::new(sentinel_bin())
            .args(["hub", "-c"])
            .arg(&path)
            .arg("--ready-file")
            .arg(&ready)
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let addr = wait_for("the hub to listen", Duration::from_secs(20), || {
            let ready = ready.clone();
            async move {
                std::fs::read_to_string(&ready)
                    .ok()
                    .filter(|s| !s.is_empty())
            }
        })
        .await;
        Hub {
            child,
            addr,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("hub.log")).unwrap_or_default()
    }

    async fn get(&self, path: &str) -> Option<Value> {
        self.http
            .get(format!("http://{}{path}", self.addr))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()
    }

    async fn site(&self, id: &str) -> Option<Value> {
        let sites = self.get("/api/v1/sites").await?;
        sites.as_array()?.iter().find(|s| s["id"] == id).cloned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_follows_three_gateways_through_changes_kills_and_outages() {
    let Some(mut broker) = Mosquitto::start("allow_anonymous true").await else {
        return;
    };
    let Some(device) = PyModbusDevice::start(&[]).await else {
        return;
    };
    device.write_registers(10, &[5, 5, 5]).await;
    let mut gateways = Vec::new();
    for (i, site) in ["site-1", "site-2", "site-3"].iter().enumerate() {
        gateways
            .push(Sentinel::start(&gateway(site, device.port, 10 + i as u16, broker.port)).await);
    }
    let hub = Hub::start(&hub_config(broker.port)).await;
    let t = Duration::from_secs(15);

    // Every site reports, online, in its colour.
    for site in ["site-1", "site-2", "site-3"] {
        wait_for(&format!("{site} online at the hub"), t, || async {
            let s = hub.site(site).await?;
            (s["online"] == true && s["colour"] == "blue").then_some(())
        })
        .await;
    }
    let filtered = hub.get("/api/v1/sites?sector=molten_metal").await.unwrap();
    assert_eq!(filtered.as_array().unwrap().len(), 1);
    let graded = hub.get("/api/v1/sites?grade=2").await.unwrap();
    assert_eq!(graded.as_array().unwrap()[0]["id"], "site-1");

    // A second-level gas alarm at site 2: the hub shows the colour within 2 s.
    let changed = Instant::now();
    device.write_register(11, 60).await;
    let s = wait_for(
        "site-2 turns red at the hub",
        Duration::from_secs(5),
        || async {
            let s = hub.site("site-2").await?;
            (s["colour"] == "red").then_some(s)
        },
    )
    .await;
    let took = changed.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "the hub showed the change after {took:?}; {s}"
    );
    // The colour rides on the status, published at once; the alarm follows on its own topic
    // once it is committed, a moment later.
    wait_for("site-2's alarm at the hub", t, || async {
        let s = hub.site("site-2").await?;
        (s["unacknowledged"].as_u64() >= Some(1)).then_some(())
    })
    .await;
    let detail = hub.get("/api/v1/sites/site-2").await.unwrap();
    assert!(
        detail["alarms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["point"] == "GT-1"),
        "{detail}"
    );
    let map = hub
        .http
        .get(format!("http://{}/", hub.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(map.contains("Regional risk map"));

    // Gateway 3 is killed: its site goes grey (Last Will, or silence) and an offline alarm rises.
    let g3 = gateways.pop().unwrap();
    let _ = g3.kill9().await;
    wait_for("site-3 offline at the hub", t, || async {
        let s = hub.site("site-3").await?;
        (s["colour"] == "grey" && s["online"] == false).then_some(())
    })
    .await;
    let offline = hub.get("/api/v1/offline").await.unwrap();
    assert!(
        offline
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["site"] == "site-3"),
        "{offline}"
    );

    // The broker goes down; site 1 raises an alarm meanwhile; nothing is lost once it is back.
    broker.stop().await;
    device.write_register(10, 70).await;
    wait_for("site-1 raises its alarm locally", t, || async {
        let a = gateways[0].get("/api/v1/alarms?state=active").await;
        a.as_array()?
            .iter()
            .find(|a| a["point"] == "GT-1" && a["level"] == "HH")
            .cloned()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    broker.restart().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let arrived = loop {
        let found = hub.get("/api/v1/alarms").await.and_then(|alarms| {
            alarms
                .as_array()?
                .iter()
                .find(|a| a["site"] == "site-1" && a["level"] == "HH")
                .cloned()
        });
        if let Some(a) = found {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "site-1's alarm did not reach the hub after the outage.\n--- gateway:\n{}\n--- hub:\n{}\n--- broker:\n{}",
            gateways[0]
                .log()
                .lines()
                .filter(|l| !l.contains("DEBUG"))
                .collect::<Vec<_>>()
                .join("\n"),
            hub.log(),
            broker
                .log()
                .lines()
                .rev()
                .take(60)
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(arrived["transition"], "raised");

    let mut hub = hub;
    let _ = hub.child.kill().await;
    for g in gateways {
        let (code, _) = g.terminate().await;
        assert_eq!(code, Some(0));
    }
    device.kill().await;
}

fn tsdb_hub_config(broker_port: u16, vm: &str) -> String {
    format!(
        r#"
offline_after_secs = 30

[hub]
id = "tsdb-region"
name = "TSDB region"

[broker]
host = "127.0.0.1"
port = {broker_port}
reconnect_max_secs = 1

[http]
listen = "127.0.0.1:0"

[tsdb]
url = "{vm}"
org = "region"
bucket = "hub"
flush_interval_ms = 200
status_interval_secs = 2
timeout_ms = 1000
max_backoff_secs = 1

[[sites]]
id = "ts-1"
name = "Tank farm"
sector = "hazardous_chemicals"
major_hazard_grade = 1
"#
    )
}

/// Every value of the series matching `selector`, oldest first, after a flush.
async fn vm_values(vm: &str, selector: &str) -> Vec<(i64, f64)> {
    let mut all: Vec<(i64, f64)> = sentinel_tests::vm_export(vm, selector)
        .await
        .into_values()
        .flatten()
        .collect();
    all.sort_by_key(|(t, _)| *t);
    all
}

async fn hub_metric(hub: &Hub, series: &str) -> Option<f64> {
    let text = hub
        .http
        .get(format!("http://{}/metrics", hub.addr))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_writes_statuses_alarms_and_offline_alarms_to_the_regional_tsdb() {
    let Some(mut vm) = sentinel_tests::VictoriaMetrics::start_private(&[]).await else {
        return;
    };
    let Some(broker) = Mosquitto::start("allow_anonymous true").await else {
        return;
    };
    let Some(device) = PyModbusDevice::start(&[]).await else {
        return;
    };
    device.write_register(20, 5).await;
    let url = vm.url();
    // The store is down when the hub starts: writes fail, are counted and retried.
    vm.stop().await;
    // With downsampled readings on the uplink, every second.
    let config = gateway("ts-1", device.port, 20, broker.port).replace(
        "status_interval_secs = 1",
        "status_interval_secs = 1\nreadings_every_secs = 1",
    );
    let gateway = Sentinel::start(&config).await;
    let hub = Hub::start(&tsdb_hub_config(broker.port, &url)).await;
    let t = Duration::from_secs(15);
    // With its point online too: the data-quality series checked below is weighted from here.
    wait_for("ts-1 online at the hub", t, || async {
        let s = hub.site("ts-1").await?;
        (s["online"] == true && s["colour"] == "blue" && s["points_online"] == 1).then_some(())
    })
    .await;
    wait_for("a failed write counted", t, || async {
        let n = hub_metric(&hub, "sentinel_hub_tsdb_write_failures_total").await?;
        (n >= 1.0).then_some(())
    })
    .await;
    assert_eq!(
        hub_metric(&hub, "sentinel_hub_tsdb_failing").await,
        Some(1.0)
    );
    let down_until = drivers_now_ms();
    vm.start().await;

    // A critical alarm: red; then the gateway dies: grey and an offline alarm.
    device.write_register(20, 60).await;
    wait_for("ts-1 red at the hub", t, || async {
        let s = hub.site("ts-1").await?;
        (s["colour"] == "red").then_some(())
    })
    .await;
    // The downsampled readings carry the new value within a window or two.
    let reading = r#"site="ts-1",hub="tsdb-region",point="GT-1""#;
    wait_for("60 %LEL in the downsampled readings", t, || async {
        let max = vm_values(&url, &format!("site_reading_max{{{reading}}}")).await;
        max.iter().any(|(_, x)| *x == 60.0).then_some(())
    })
    .await;
    let _ = gateway.kill9().await;
    wait_for("ts-1 grey at the hub", t, || async {
        let s = hub.site("ts-1").await?;
        (s["colour"] == "grey").then_some(())
    })
    .await;

    let site = r#"site="ts-1",hub="tsdb-region",sector="hazardous_chemicals",grade="1""#;
    let colours = wait_for("the colours in VictoriaMetrics", t, || async {
        let v = vm_values(&url, &format!("site_status_colour{{{site}}}")).await;
        let seen: Vec<f64> = v.iter().map(|(_, x)| *x).collect();
        // blue (1), red (4), grey (0), in that order.
        let blue = seen.iter().position(|x| *x == 1.0)?;
        let red = seen.iter().rposition(|x| *x == 4.0)?;
        let grey = seen.iter().rposition(|x| *x == 0.0)?;
        (blue < red && red < grey).then_some(v)
    })
    .await;
    assert!(
        colours[0].0 < down_until,
        "statuses queued while the store was down were written later: {colours:?}"
    );
    let last = |v: Vec<(i64, f64)>| v.last().map(|(_, x)| *x);
    let online = vm_values(&url, &format!("site_status_online{{{site}}}")).await;
    assert!(online.iter().any(|(_, x)| *x == 1.0), "{online:?}");
    assert_eq!(last(online), Some(0.0));
    let critical = vm_values(&url, &format!("site_status_alarms_critical{{{site}}}")).await;
    assert!(critical.iter().any(|(_, x)| *x == 1.0), "{critical:?}");
    let high = vm_values(&url, &format!("site_status_alarms_high{{{site}}}")).await;
    assert!(high.iter().any(|(_, x)| *x == 1.0), "{high:?}");
    let unacked = vm_values(&url, &format!("site_status_unacknowledged{{{site}}}")).await;
    assert!(unacked.iter().any(|(_, x)| *x >= 1.0), "{unacked:?}");
    assert_eq!(
        last(vm_values(&url, &format!("site_status_points_total{{{site}}}")).await),
        Some(1.0)
    );
    let quality = vm_values(&url, &format!("site_status_data_quality_pct{{{site}}}")).await;
    // Time-weighted since the hub started (the first status may count no point online yet).
    assert!(
        quality.iter().all(|(_, x)| (0.0..=100.0).contains(x))
            && quality.iter().any(|(_, x)| *x > 0.0),
        "{quality:?}"
    );

    // The alarm events, with their labels and values.
    let raised = vm_values(
        &url,
        r#"site_alarm_value{site="ts-1",point="GT-1",priority="critical",level="HH",transition="raised",kind="limit"}"#,
    )
    .await;
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0].1, 60.0);
    let active = vm_values(
        &url,
        r#"site_alarm_active{site="ts-1",priority="high",level="H",transition="raised"}"#,
    )
    .await;
    assert_eq!(active.iter().map(|(_, x)| *x).collect::<Vec<_>>(), [1.0]);
    let limit = vm_values(&url, r#"site_alarm_limit{site="ts-1",level="HH"}"#).await;
    assert_eq!(limit.last().map(|(_, x)| *x), Some(50.0));

    // The downsampled readings: 5 %LEL before the alarm, 60 after, in windows of a second.
    let max = vm_values(&url, &format!("site_reading_max{{{reading}}}")).await;
    let min = vm_values(&url, &format!("site_reading_min{{{reading}}}")).await;
    assert!(min.iter().any(|(_, x)| *x == 5.0), "{min:?}");
    assert!(max.iter().any(|(_, x)| *x == 60.0), "{max:?}");
    let n = vm_values(&url, &format!("site_reading_n{{{reading}}}")).await;
    assert!(!n.is_empty() && n.iter().all(|(_, x)| *x >= 1.0), "{n:?}");
    let mean = vm_values(&url, &format!("site_reading_mean{{{reading}}}")).await;
    assert!(
        mean.iter().all(|(_, x)| (5.0..=60.0).contains(x)),
        "{mean:?}"
    );

    // The hub's offline alarm.
    let offline = wait_for("the offline alarm in VictoriaMetrics", t, || async {
        let v = vm_values(
            &url,
            r#"site_offline_active{site="ts-1",hub="tsdb-region"}"#,
        )
        .await;
        (!v.is_empty()).then_some(v)
    })
    .await;
    assert_eq!(offline.last().map(|(_, x)| *x), Some(1.0));

    // Counted: everything written once the store was back, nothing dropped.
    wait_for("the queue empties", t, || async {
        let q = hub_metric(&hub, "sentinel_hub_tsdb_queue_lines").await?;
        (q == 0.0).then_some(())
    })
    .await;
    assert!(
        hub_metric(&hub, "sentinel_hub_tsdb_lines_written_total")
            .await
            .unwrap()
            > 5.0
    );
    assert_eq!(
        hub_metric(
            &hub,
            r#"sentinel_hub_tsdb_lines_dropped_total{reason="queue_full"}"#
        )
        .await,
        Some(0.0)
    );
    assert_eq!(
        hub_metric(&hub, "sentinel_hub_tsdb_failing").await,
        Some(0.0)
    );
    assert!(
        hub.log()
            .contains("Writing to the time-series store failed; will retry."),
        "{}",
        hub.log()
    );
    device.kill().await;
}

fn drivers_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
