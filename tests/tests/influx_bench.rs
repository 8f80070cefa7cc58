//! Drain rate to VictoriaMetrics after an outage, by hand (numbers in docs/benchmarks.md):
//!
//! ```sh
//! cargo build --release -p sentinel-gateway
//! SENTINEL_BIN=$PWD/target/release/sentinel \
//! SENTINEL_TEST_CMD='cargo test --release -p sentinel-tests --test influx_bench -- --ignored --nocapture' \
//!     bash tests/run.sh
//! ```
//!
//! A store holding a backlog (readings of 15 points, as after a long outage) meets a
//! VictoriaMetrics that is up again; the time until the backlog is empty gives the rate, and the
//! exact count in VictoriaMetrics is checked afterwards.

use std::time::{Duration, Instant};

use sentinel_tests::{Sentinel, VictoriaMetrics, unique_site, vm_counts, wait_for};

const POINTS: usize = 15;

fn config(site: &str, vm: &str) -> String {
    let mut text = format!(
        r#"
[site]
id = "{site}"
name = "Drain benchmark"

[store]
data_dir = "{{data_dir}}"

[[devices]]
name = "plc1"
protocol = "modbus_tcp"
host = "127.0.0.1"
port = 1
poll_interval_ms = 600000
comm_loss_after_secs = 3600

[upstream.influxdb]
url = "{vm}"
org = "sentinel"
bucket = "bench"
batch_max_points = 20000
batch_max_wait_ms = 100
max_backoff_secs = 1
"#
    );
    for p in 0..POINTS {
        text.push_str(&format!(
            "\n[[points]]\ntag = \"P{p}\"\ndevice = \"plc1\"\nkind = \"level\"\nunit = \"m\"\narea = \"tank-farm\"\nregister = {{ table = \"holding\", address = {p} }}\n"
        ));
    }
    text
}

async fn backlog(s: &Sentinel) -> Option<u64> {
    let text = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("sentinel_sink_backlog_points{sink=\"influxdb\"} "))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: run by hand (see the file's header)"]
async fn influx_drain_rate_after_an_outage() {
    let per_point: i64 = std::env::var("SENTINEL_BENCH_PER_POINT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let Some(mut vm) = VictoriaMetrics::start_private(&[]).await else {
        return;
    };
    let site = unique_site("drain");
    let text = config(&site, &vm.url());
    // First run: the store and its points exist; VictoriaMetrics is down meanwhile.
    vm.stop().await;
    let sentinel = Sentinel::start(&text).await;
    let (_, dir) = sentinel.terminate().await;

    // The backlog an outage leaves behind, one reading per point and second.
    let db = rusqlite::Connection::open(dir.path().join("data/sentinel.db")).unwrap();
    let ids: Vec<i64> = {
        let mut stmt = db.prepare("SELECT id FROM points ORDER BY id").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let start = now - per_point * 1000 - 60_000;
    db.execute_batch("BEGIN").unwrap();
    {
        let mut ins = db
            .prepare("INSERT INTO readings (point, ts_ms, value, quality) VALUES (?1, ?2, ?3, 0)")
            .unwrap();
        for i in 0..per_point {
            for (k, id) in ids.iter().enumerate() {
                ins.execute(rusqlite::params![
                    id,
                    start + i * 1000,
                    10.0 + k as f64 + (i % 100) as f64 * 0.01
                ])
                .unwrap();
            }
        }
    }
    db.execute_batch("COMMIT").unwrap();
    let total: i64 = db
        .query_row("SELECT COUNT(*) FROM readings", [], |r| r.get(0))
        .unwrap();
    drop(db);

    vm.start().await;
    // Timed from the start of the process, so start-up counts against the rate.
    let began = Instant::now();
    let sentinel = Sentinel::start_in(&text, dir).await;
    wait_for("the backlog to drain", Duration::from_secs(600), || async {
        (backlog(&sentinel).await == Some(0)).then_some(())
    })
    .await;
    let secs = began.elapsed().as_secs_f64();
    println!(
        "drain: {total} points in {secs:.2} s = {:.0} points/s (includes start-up)",
        total as f64 / secs
    );
    let (_, _dir) = sentinel.terminate().await;
    let selector = format!(r#"{{__name__="level_value",site="{site}"}}"#);
    let got: usize = vm_counts(&vm.url(), &selector).await.values().sum();
    println!(
        "VictoriaMetrics holds {got} level_value samples (of {} with a value)",
        per_point as usize * POINTS
    );
    vm.stop().await;
}
