//! The InfluxDB sink against a real VictoriaMetrics (line protocol on /api/v2/write) and against a
//! scripted HTTP upstream: every reading lands with the right tags; an outage and a kill -9 lose
//! nothing and duplicate nothing; refused batches are kept in the dead-letter table; 429, 413
//! and 5xx are retried or split without loss.
//!
//! The automated outage lasts 12 s to keep the suite short; `SENTINEL_OUTAGE_SECS=60` runs the
//! 60 s version by hand.
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sentinel_tests::{
    PyModbusDevice, Sentinel, VictoriaMetrics, store_counts, unique_site, vm_export,
    vm_wait_counts, wait_for,
};

const KINDS: [(&str, &str); 3] = [
    ("LT-1", "level"),
    ("GT-2", "toxic_gas"),
    ("PT-3", "pressure"),
];

fn config(site: &str, device_port: u16, upstream: &str) -> String {
    format!(
        r#"
[site]
id = "{site}"
name = "Sink test site"

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
timeout_ms = 1000
comm_loss_after_secs = 5

[[points]]
tag = "LT-1"
device = "plc1"
kind = "level"
unit = "m"
area = "tank-farm"
register = {{ table = "holding", address = 10 }}

[[points]]
tag = "GT-2"
device = "plc1"
kind = "toxic_gas"
unit = "ppm"
area = "unit a"
register = {{ table = "holding", address = 11 }}

[[points]]
tag = "PT-3"
device = "plc1"
kind = "pressure"
register = {{ table = "holding", address = 12 }}

{upstream}
"#
    )
}

fn vm_upstream(url: &str) -> String {
    format!(
        r#"
[upstream.influxdb]
url = "{url}"
org = "sentinel"
bucket = "tests"
batch_max_points = 500
batch_max_wait_ms = 200
max_backoff_secs = 1
timeout_ms = 2000
"#
    )
}

fn selector(site: &str) -> String {
    format!(r#"{{__name__=~".+",site="{site}"}}"#)
}

async fn ready_status(s: &Sentinel) -> u16 {
    s.http
        .get(s.url("/readyz"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn device_with_values() -> Option<PyModbusDevice> {
    let device = PyModbusDevice::start(&[]).await?;
    device.write_registers(10, &[1234, 7, 300]).await;
    Some(device)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influx_every_reading_lands_with_its_tags() {
    // A private VictoriaMetrics: the shared one is busy with every other test of the suite.
    let Some(mut private_vm) = VictoriaMetrics::start_private(&[]).await else {
        return;
    };
    let vm = private_vm.url();
    let Some(device) = device_with_values().await else {
        return;
    };
    let site = unique_site("influx-tags");
    let sentinel = Sentinel::start(&config(&site, device.port, &vm_upstream(&vm))).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (code, dir) = sentinel.terminate().await;
    assert_eq!(code, Some(0));
    device.kill().await;

    let expected = store_counts(&dir.path().join("data"), &KINDS);
    assert_eq!(
        expected.len(),
        6,
        "every point stored readings: {expected:?}"
    );
    assert!(
        expected.values().all(|&n| n >= 10),
        "a few readings per point: {expected:?}"
    );
    let got = vm_wait_counts(&vm, &selector(&site), &expected, Duration::from_secs(20)).await;
    assert_eq!(
        got, expected,
        "VictoriaMetrics holds exactly the stored readings"
    );

    // Tags and values.
    let http = reqwest::Client::new();
    let body = http
        .get(format!("{vm}/api/v1/export"))
        .query(&[("match[]", format!(r#"level_value{{site="{site}"}}"#))])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let first: serde_json::Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
    let m = &first["metric"];
    assert_eq!(m["site"], site.as_str());
    assert_eq!(m["area"], "tank-farm");
    assert_eq!(m["device"], "plc1");
    assert_eq!(m["point"], "LT-1");
    assert_eq!(m["unit"], "m");
    let series = vm_export(&vm, &selector(&site)).await;
    assert!(
        series["level_value{LT-1}"]
            .iter()
            .all(|&(_, v)| v == 1234.0)
    );
    assert!(
        series["toxic_gas_value{GT-2}"]
            .iter()
            .all(|&(_, v)| v == 7.0)
    );
    // Quality codes (0 = good); a loaded machine may add the odd timeout (4 = comm_lost).
    let quality = &series["level_quality{LT-1}"];
    assert!(
        quality
            .iter()
            .all(|&(_, v)| (0.0..=7.0).contains(&v) && v.fract() == 0.0)
    );
    assert!(quality.iter().any(|&(_, v)| v == 0.0));
    // A tag value with a space arrives intact; an empty unit is left out.
    let body = http
        .get(format!("{vm}/api/v1/export"))
        .query(&[(
            "match[]",
            format!(r#"{{__name__=~"toxic_gas_value|pressure_value",site="{site}"}}"#),
        )])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in body.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        match v["metric"]["point"].as_str().unwrap() {
            "GT-2" => assert_eq!(v["metric"]["area"], "unit a"),
            "PT-3" => assert!(v["metric"].get("unit").is_none()),
            other => panic!("unexpected point {other}"),
        }
    }
    private_vm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influx_outage_then_exact_counts() {
    let Some(mut vm) = VictoriaMetrics::start_private(&[]).await else {
        return;
    };
    let Some(device) = device_with_values().await else {
        return;
    };
    let outage: u64 = std::env::var("SENTINEL_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let site = unique_site("influx-outage");
    let sentinel = Sentinel::start(&config(&site, device.port, &vm_upstream(&vm.url()))).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    vm.stop().await;
    // The sink notices, says so on /readyz, and keeps everything in the store meanwhile.
    wait_for(
        "/readyz to report the failing sink",
        Duration::from_secs(10),
        || async { (ready_status(&sentinel).await == 503).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(outage)).await;
    vm.start().await;
    wait_for(
        "/readyz to recover after the outage",
        Duration::from_secs(30),
        || async { (ready_status(&sentinel).await == 200).then_some(()) },
    )
    .await;
    let (code, dir) = sentinel.terminate().await;
    assert_eq!(code, Some(0));
    device.kill().await;

    let expected = store_counts(&dir.path().join("data"), &KINDS);
    let produced: usize = expected.values().sum();
    assert!(
        produced >= 6 * (outage as usize) * 5,
        "readings kept coming during the outage: {expected:?}"
    );
    let got = vm_wait_counts(
        &vm.url(),
        &selector(&site),
        &expected,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(got, expected, "after the drain: no loss, no duplicates");
    vm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influx_kill9_and_restart_lose_nothing() {
    // Deduplication of identical samples: the one batch that may be in flight when the process
    // is killed is sent again after the restart, with the same timestamps.
    let Some(mut vm) = VictoriaMetrics::start_private(&["-dedup.minScrapeInterval=1ms"]).await
    else {
        return;
    };
    let Some(device) = device_with_values().await else {
        return;
    };
    let site = unique_site("influx-kill9");
    let text = config(&site, device.port, &vm_upstream(&vm.url()));
    let sentinel = Sentinel::start(&text).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let dir = sentinel.kill9().await;
    let before = store_counts(&dir.path().join("data"), &KINDS);
    let sentinel = Sentinel::start_in(&text, dir).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (code, dir) = sentinel.terminate().await;
    assert_eq!(code, Some(0));
    device.kill().await;

    let expected = store_counts(&dir.path().join("data"), &KINDS);
    for (k, n) in &before {
        assert!(expected[k] > *n, "the second run added readings to {k}");
    }
    let got = vm_wait_counts(
        &vm.url(),
        &selector(&site),
        &expected,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        got, expected,
        "every reading stored before and after the kill arrived"
    );
    vm.stop().await;
}

/// One scripted answer: status, headers, body.
type Answer = (u16, Vec<(&'static str, &'static str)>, &'static str);

/// An upstream that answers from a script, then 204; it records the lines it accepted.
#[derive(Clone, Default)]
struct ScriptedUpstream {
    script: Arc<Mutex<Vec<Answer>>>,
    accepted: Arc<Mutex<Vec<String>>>,
    requests: Arc<Mutex<Vec<(u16, usize)>>>,
}

impl ScriptedUpstream {
    async fn start(script: Vec<Answer>) -> (ScriptedUpstream, String) {
        use axum::routing::post;
        let up = ScriptedUpstream {
            script: Arc::new(Mutex::new(script)),
            ..Default::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = up.clone();
        let app = axum::Router::new().route(
            "/api/v2/write",
            post(move |body: String| {
                let up = state.clone();
                async move {
                    let lines = body.lines().count();
                    let next = {
                        let mut s = up.script.lock().unwrap();
                        if s.is_empty() {
                            None
                        } else {
                            Some(s.remove(0))
                        }
                    };
                    let (status, headers, text) = next.unwrap_or((204, vec![], ""));
                    up.requests.lock().unwrap().push((status, lines));
                    if status == 204 {
                        up.accepted
                            .lock()
                            .unwrap()
                            .extend(body.lines().map(str::to_owned));
                    }
                    let mut resp = axum::response::Response::builder().status(status);
                    for (k, v) in headers {
                        resp = resp.header(k, v);
                    }
                    resp.body(axum::body::Body::from(text)).unwrap()
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (up, format!("http://{addr}"))
    }
}

fn scripted_upstream_config(url: &str) -> String {
    format!(
        r#"
[upstream.influxdb]
url = "{url}"
org = "sentinel"
bucket = "tests"
gzip = false
batch_max_points = 40
batch_max_wait_ms = 300
max_backoff_secs = 1
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influx_rejected_batch_goes_to_dead_letter() {
    let Some(device) = device_with_values().await else {
        return;
    };
    let (up, url) = ScriptedUpstream::start(vec![(
        400,
        vec![("content-type", "application/json")],
        r#"{"code":"invalid","message":"partial write: field type conflict"}"#,
    )])
    .await;
    let site = unique_site("influx-dead");
    let sentinel =
        Sentinel::start(&config(&site, device.port, &scripted_upstream_config(&url))).await;
    let db = rusqlite::Connection::open(sentinel.data_dir().join("sentinel.db")).unwrap();
    let (status, error, points, body): (i64, String, i64, String) =
        wait_for("a dead letter", Duration::from_secs(10), || {
            let row = db
                .query_row(
                    "SELECT status, error, points, body FROM dead_letter WHERE sink = 'influxdb'",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .ok();
            async move { row }
        })
        .await;
    assert_eq!(status, 400);
    assert!(error.contains("field type conflict"), "{error}");
    assert_eq!(body.lines().count() as i64, points);
    assert!(body.contains(&format!("site={site}")));
    // The alarm: /readyz says what happened, the metrics count it, the log has it at ERROR.
    let r = sentinel
        .http
        .get(sentinel.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let why: serde_json::Value = r.json().await.unwrap();
    assert!(
        why["reasons"].to_string().contains("dead-lettered"),
        "{why}"
    );
    let metrics = sentinel
        .http
        .get(sentinel.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "sentinel_sink_dead_letter_points_total{{sink=\"influxdb\"}} {points}"
        )),
        "{metrics}"
    );
    assert!(sentinel.log().contains("dead_letter"));
    // And an alarm someone must acknowledge: raised by the refusal, cleared (but still
    // unacknowledged) once upstream accepts batches again.
    let alarm = wait_for(
        "the upstream-rejected alarm",
        Duration::from_secs(5),
        || {
            let s = &sentinel;
            async move {
                let all = s.get("/api/v1/alarms?state=all&kind=system").await;
                all.as_array()?
                    .iter()
                    .find(|a| a["point"] == "upstream_rejected")
                    .cloned()
            }
        },
    )
    .await;
    assert_eq!(alarm["priority"], "high", "{alarm}");
    assert!(
        alarm["message"].as_str().unwrap().contains("dead-letter"),
        "{alarm}"
    );
    // Delivery goes on after the refused batch.
    wait_for("later batches accepted", Duration::from_secs(10), || {
        let n = up.accepted.lock().unwrap().len();
        async move { (n > 0).then_some(()) }
    })
    .await;
    let returned = wait_for(
        "the alarm returned to normal",
        Duration::from_secs(5),
        || {
            let s = &sentinel;
            async move {
                let open = s.get("/api/v1/alarms?kind=system").await;
                open.as_array()?
                    .iter()
                    .find(|a| a["point"] == "upstream_rejected" && a["state"] == "returned_unacked")
                    .cloned()
            }
        },
    )
    .await;
    assert_eq!(returned["alarm_id"], alarm["alarm_id"]);
    let (code, dir) = sentinel.terminate().await;
    assert_eq!(code, Some(0));
    device.kill().await;
    let stored: usize = store_counts(&dir.path().join("data"), &KINDS)
        .iter()
        .filter(|(k, _)| k.contains("_quality"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        up.accepted.lock().unwrap().len() + points as usize,
        stored,
        "every reading is upstream or dead-lettered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influx_throttling_too_large_and_server_errors_lose_nothing() {
    let Some(device) = device_with_values().await else {
        return;
    };
    let (up, url) = ScriptedUpstream::start(vec![
        (429, vec![("retry-after", "1")], "slow down"),
        (413, vec![], "too large"),
        (503, vec![], "unavailable"),
        // A bucket that does not exist (yet): a configuration fault, retried, not dead-lettered.
        (
            404,
            vec![],
            r#"{"code":"not found","message":"bucket \"plant\" not found"}"#,
        ),
        (413, vec![], "too large"),
    ])
    .await;
    let site = unique_site("influx-retry");
    let sentinel =
        Sentinel::start(&config(&site, device.port, &scripted_upstream_config(&url))).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (code, dir) = sentinel.terminate().await;
    assert_eq!(code, Some(0));
    device.kill().await;

    let requests = up.requests.lock().unwrap().clone();
    assert_eq!(
        &requests[..5].iter().map(|r| r.0).collect::<Vec<_>>(),
        &[429, 413, 503, 404, 413]
    );
    // A retry reads again from the cursor: the same first reading, plus whatever arrived.
    assert!(requests[1].1 >= requests[0].1, "{requests:?}");
    assert!(
        requests[2].1 < requests[1].1,
        "a 413 halves the batch: {requests:?}"
    );
    let db = rusqlite::Connection::open(dir.path().join("data").join("sentinel.db")).unwrap();
    let dead: i64 = db
        .query_row("SELECT COUNT(*) FROM dead_letter", [], |r| r.get(0))
        .unwrap();
    assert_eq!(dead, 0);
    // Exactly once and in order of storage: the cursor only moves after a 2xx.
    let accepted = up.accepted.lock().unwrap().clone();
    let mut per_point: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for line in &accepted {
        let point = line
            .split(',')
            .find_map(|kv| kv.strip_prefix("point="))
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        let ts: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        per_point.entry(point.to_owned()).or_default().push(ts);
    }
    let stored = store_counts(&dir.path().join("data"), &KINDS);
    for (tag, kind) in KINDS {
        let ts = &per_point[tag];
        assert!(
            ts.windows(2).all(|w| w[0] < w[1]),
            "{tag}: in order, no duplicates"
        );
        assert_eq!(
            ts.len(),
            stored[&format!("{kind}_quality{{{tag}}}")],
            "{tag}: nothing lost"
        );
    }
}
