//! An alarm storm over a slow link to the MQTT broker, run by hand (docs/benchmarks.md,
//! "Alarm storm over a slow link"):
//!
//! ```sh
//! SENTINEL_TEST_MQTT=127.0.0.1:1883 \
//! cargo test -p sentinel-tests --test notify_storm -- --ignored --nocapture
//! ```
//!
//! `SENTINEL_BENCH_ALARMS` points (default 200) cross their limit in one MQTT message; the
//! notifier's broker sits behind a proxy that delays every byte by `SENTINEL_BENCH_DELAY_MS`
//! each way (default 50, so a 100 ms round trip, as on a mobile or satellite uplink). For each
//! `max_in_flight` in `SENTINEL_BENCH_IN_FLIGHT` (default "1 16") it measures the time from the
//! message to the last raised event reaching a subscriber on the broker.
#![allow(clippy::unwrap_used)] // a test: a panic is a failed test

use std::time::{Duration, Instant};

use sentinel_tests::mqtt::{
    Mosquitto, Subscriber, publish, shared_broker, storm_message, storm_plant, unique,
};
use sentinel_tests::{Sentinel, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// Copy `from` to `to`, each chunk delivered `delay` after it was read, in order.
async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due.into()).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0
            || tx
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
        {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// A TCP proxy to `upstream` that delays each direction by `delay`; returns its port.
async fn slow_link(upstream: u16, delay: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                continue;
            };
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(delayed_copy(cr, sw, delay));
            tokio::spawn(delayed_copy(sr, cw, delay));
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run by hand, see the module comment"]
async fn alarm_storm_over_a_slow_link() {
    let alarms: usize = env_or("SENTINEL_BENCH_ALARMS", "200").parse().unwrap();
    let delay = Duration::from_millis(env_or("SENTINEL_BENCH_DELAY_MS", "50").parse().unwrap());
    let Some(broker) = Mosquitto::start("allow_anonymous true").await else {
        return;
    };
    let Some((_, ingest)) = shared_broker() else {
        return;
    };
    let proxy = slow_link(broker.port, delay).await;
    println!(
        "{alarms} alarms, {} ms each way to the broker",
        delay.as_millis()
    );
    for in_flight in env_or("SENTINEL_BENCH_IN_FLIGHT", "1 16").split_whitespace() {
        let base = unique("storm-bench");
        let plant = storm_plant(&base, ingest, alarms);
        let config = format!(
            r#"
[site]
id = "{base}"
name = "Storm bench"

[store]
data_dir = "{{data_dir}}"

{plant}
[notify.mqtt]
broker = {{ host = "127.0.0.1", port = {proxy} }}
max_in_flight = {in_flight}
"#
        );
        let topic = format!("sentinel/v1/{base}/alarms");
        let sub = Subscriber::start(broker.port, &topic, &[]).await;
        let s = Sentinel::start(&config).await;
        wait_for("connected", Duration::from_secs(20), || async {
            (s.metric("sentinel_mqtt_connected{device=\"src\"}").await == Some(1.0)).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let body = storm_message(alarms, 2.5);
        let started = Instant::now();
        publish(ingest, &format!("{base}/v"), body.as_bytes(), 1, false, &[]).await;
        let raised = || {
            sub.lines()
                .iter()
                .filter(|l| l.contains("\"transition\":\"raised\""))
                .count()
        };
        wait_for(
            "every raise on the broker",
            Duration::from_secs(600),
            || async { (raised() >= alarms).then_some(()) },
        )
        .await;
        let took = started.elapsed();
        println!(
            "max_in_flight = {in_flight:>3}: {alarms} raised events on the broker after {:.2} s ({:.0} a second)",
            took.as_secs_f64(),
            alarms as f64 / took.as_secs_f64()
        );
        sub.stop().await;
        let (code, _) = s.terminate().await;
        assert_eq!(code, Some(0));
    }
}
