//! Load test of `sentinel hub`: N simulated sites (lightweight publishers in this process, one
//! MQTT connection each) publish at realistic rates to a broker; the hub's CPU, peak RSS and the
//! end-to-end delay of colour changes are measured. Run by hand (not part of the test suite):
//!
//! ```sh
//! cargo build -p sentinel-gateway --release
//! cargo run -p sentinel-tests --release --example hub_load -- --broker-port 1883 --sites 200 --secs 60
//! ```
//!
//! Rates per site, as a gateway publishes them: its retained status every 10 s (and at once on
//! a change), an alarm event every ~60 s on average. Every 250 ms one random site changes colour;
//! the delay from that publish to the hub's API showing it is recorded.

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, MqttOptions, QoS};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn status(site: usize, colour: &str, seq: u64) -> Vec<u8> {
    serde_json::json!({
        "site": format!("load-{site}"), "name": format!("Load site {site}"), "online": true, "colour": colour,
        "points_online": 120, "points_total": 125, "active_alarms": [0, 1, 0, 0], "unacknowledged": 0, "seq": seq,
    })
    .to_string()
    .into_bytes()
}

fn proc_stat(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (ticks / 100.0, hwm)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port = arg("--broker-port", 1883) as u16;
    let sites = arg("--sites", 200) as usize;
    let secs = arg("--secs", 60);
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/sentinel");
    let dir = tempfile::tempdir()?;
    let config = format!(
        "offline_after_secs = 60\n[hub]\nid = \"load\"\nname = \"Load test\"\n[broker]\nhost = \"127.0.0.1\"\nport = {port}\nclient_id = \"hub-load-{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n",
        std::process::id()
    );
    std::fs::write(dir.path().join("hub.toml"), config)?;
    let ready = dir.path().join("ready");
    let mut hub = tokio::process::Command::new(&bin)
        .args(["hub", "-c"])
        .arg(dir.path().join("hub.toml"))
        .arg("--ready-file")
        .arg(&ready)
        .env("SENTINEL_LOG", "warn")
        .kill_on_drop(true)
        .spawn()?;
    let addr = loop {
        if let Ok(a) = std::fs::read_to_string(&ready) {
            if !a.is_empty() {
                break a;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let pid = hub.id().unwrap_or(0);

    let mut clients = Vec::with_capacity(sites);
    for i in 0..sites {
        let mut opts = MqttOptions::new(
            format!("load-site-{i}-{}", std::process::id()),
            "127.0.0.1",
            port,
        );
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut events) = AsyncClient::new(opts, 64);
        tokio::spawn(async move { while events.poll().await.is_ok() {} });
        clients.push(client);
    }
    for (i, c) in clients.iter().enumerate() {
        c.publish(
            format!("sentinel/v1/load-{i}/status"),
            QoS::AtLeastOnce,
            true,
            status(i, "blue", 0),
        )
        .await?;
    }
    let http = reqwest::Client::new();
    let (cpu0, _) = proc_stat(pid);
    let started = Instant::now();
    let mut delays = Vec::new();
    let mut sent = 0u64;
    let mut seq = 0u64;
    let mut next_status = Instant::now();
    while started.elapsed() < Duration::from_secs(secs) {
        // Periodic statuses, spread over 10 s.
        if Instant::now() >= next_status {
            next_status += Duration::from_millis(10_000 / sites.max(1) as u64);
            let i = (seq as usize) % sites;
            clients[i]
                .publish(
                    format!("sentinel/v1/load-{i}/status"),
                    QoS::AtLeastOnce,
                    true,
                    status(i, "blue", seq),
                )
                .await?;
            sent += 1;
        }
        // Alarm events: about one per site per minute.
        if fastrand::u32(..(60_000 / sites.max(1) as u32).max(1) / 25 + 1) == 0 {
            let i = fastrand::usize(..sites);
            let event = serde_json::json!({"id": format!("load-{i}-{seq}-1"), "alarm_id": seq, "seq": 1, "site": format!("load-{i}"),
                "transition": "raised", "state": "active_unacked", "priority": "high", "point": "GT-1", "raised_at": "2026-01-01T00:00:00.000Z"});
            clients[i]
                .publish(
                    format!("sentinel/v1/load-{i}/alarms"),
                    QoS::AtLeastOnce,
                    false,
                    event.to_string().into_bytes(),
                )
                .await?;
            sent += 1;
        }
        // Every 250 ms: one site changes colour; time until the hub shows it.
        if seq % 10 == 0 {
            let i = fastrand::usize(..sites);
            let colour = ["yellow", "orange", "red"][fastrand::usize(..3)];
            let t0 = Instant::now();
            clients[i]
                .publish(
                    format!("sentinel/v1/load-{i}/status"),
                    QoS::AtLeastOnce,
                    true,
                    status(i, colour, seq),
                )
                .await?;
            sent += 1;
            loop {
                let s: serde_json::Value = http
                    .get(format!("http://{addr}/api/v1/sites"))
                    .send()
                    .await?
                    .json()
                    .await?;
                let shown = s.as_array().and_then(|a| {
                    a.iter()
                        .find(|x| x["id"] == format!("load-{i}"))
                        .map(|x| x["colour"] == colour)
                });
                if shown == Some(true) || t0.elapsed() > Duration::from_secs(5) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            delays.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        seq += 1;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (cpu1, hwm_kb) = proc_stat(pid);
    delays.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        delays
            .get(((delays.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let sites_seen: serde_json::Value = http
        .get(format!("http://{addr}/api/v1/sites"))
        .send()
        .await?
        .json()
        .await?;
    println!(
        "sites                {sites} (hub sees {})",
        sites_seen.as_array().map_or(0, Vec::len)
    );
    println!("duration             {elapsed:.1} s");
    println!(
        "messages published   {sent} ({:.1}/s)",
        sent as f64 / elapsed
    );
    println!("hub CPU              {:.3} cores", (cpu1 - cpu0) / elapsed);
    println!("hub peak RSS         {:.1} MiB", hwm_kb as f64 / 1024.0);
    println!(
        "colour change delay  p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} changes (API polled every 5 ms)",
        pct(0.5),
        pct(0.99),
        pct(1.0),
        delays.len()
    );
    let _ = hub.kill().await;
    Ok(())
}
