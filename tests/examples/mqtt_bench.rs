//! Sustained MQTT ingest benchmark: Mosquitto → sentinel (ingest, engine, store).
//!
//! ```sh
//! cargo build --release -p sentinel-gateway
//! cargo run --release -p sentinel-tests --example mqtt_bench -- [messages] [points_per_message] [topics] [qos] [cpu]
//! ```
//!
//! Starts a private Mosquitto (`mosquitto` from PATH) and the release `sentinel` pinned to one
//! CPU (`taskset -c <cpu>`, default 0), publishes `messages` JSON messages of
//! `points_per_message` values each, spread over `topics` topics with one `mosquitto_pub -l` per
//! topic, and waits until every point is committed to the store
//! (`sentinel_readings_stored_total`). Prints messages/s, points/s, sentinel's CPU time (from
//! /proc/PID/stat) and its peak RSS (VmHWM).
#![allow(clippy::unwrap_used)]
// a benchmark tool: a panic is a failed run
// A synchronous command-line tool with no async runtime: blocking sleeps are what it needs.
#![allow(clippy::disallowed_methods)]

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn arg(i: usize, default: u64) -> u64 {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn metric(addr: &str, sample: &str) -> Option<f64> {
    let out = Command::new("curl")
        .args(["-fsS", &format!("http://{addr}/metrics")])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        l.strip_prefix(sample)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn status_kb(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn main() {
    let messages = arg(1, 200_000);
    let per_message = arg(2, 10);
    let topics = arg(3, 4).max(1);
    let qos = arg(4, 1);
    let cpu = arg(5, 0);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin = root.join("target/release/sentinel");
    assert!(
        bin.exists(),
        "build it first: cargo build --release -p sentinel-gateway"
    );
    let dir = tempfile::tempdir().unwrap();

    let mqtt_port = free_port();
    let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    std::fs::write(
        dir.path().join("mosquitto.conf"),
        format!(
            "listener {mqtt_port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000000\nmax_inflight_messages 100\nuser {}\n",
            user.trim()
        ),
    )
    .unwrap();
    let mut broker = Command::new("mosquitto")
        .arg("-c")
        .arg(dir.path().join("mosquitto.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto on PATH (it is in /usr/sbin on Debian)");
    wait_port(mqtt_port);

    let mut config = format!(
        r#"
[site]
id = "bench"
name = "MQTT benchmark"

[store]
data_dir = "{}"

[[devices]]
name = "bench"
protocol = "mqtt"
broker = {{ host = "127.0.0.1", port = {mqtt_port} }}
topics = ["bench/+"]
max_payload_bytes = 65536
"#,
        dir.path().join("data").display()
    );
    for t in 0..topics {
        for p in 0..per_message {
            config.push_str(&format!(
                "\n[[points]]\ntag = \"T{t}-P{p}\"\ndevice = \"bench\"\nkind = \"level\"\ntopic = \"bench/t{t}\"\njson_pointer = \"/p{p}\"\nlimits = {{ levels = [{{ level = \"H\", setpoint = 1e9 }}] }}\n"
            ));
        }
    }
    std::fs::write(dir.path().join("sentinel.toml"), &config).unwrap();
    let ready = dir.path().join("ready");
    let log = std::fs::File::create(dir.path().join("sentinel.log")).unwrap();
    let mut sentinel = Command::new("taskset")
        .args(["-c", &cpu.to_string()])
        .arg(&bin)
        .args(["run", "-c"])
        .arg(dir.path().join("sentinel.toml"))
        .arg("--ready-file")
        .arg(&ready)
        .env("SENTINEL__HTTP__LISTEN", "127.0.0.1:0")
        .env("SENTINEL_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let pid = sentinel.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        if let Ok(a) = std::fs::read_to_string(&ready)
            && !a.trim().is_empty()
        {
            break a.trim().to_owned();
        }
        assert!(Instant::now() < deadline, "sentinel did not start");
        std::thread::sleep(Duration::from_millis(50));
    };
    while metric(&addr, "sentinel_mqtt_connected{device=\"bench\"}") != Some(1.0) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));

    // Payloads prepared up front so the publishers only write.
    let per_topic = messages / topics;
    let mut files = Vec::new();
    for t in 0..topics {
        let path = dir.path().join(format!("t{t}.txt"));
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        for m in 0..per_topic {
            let fields: Vec<String> = (0..per_message)
                .map(|p| format!("\"p{p}\":{}.{}", (m + p) % 1000, m % 10))
                .collect();
            writeln!(f, "{{{}}}", fields.join(",")).unwrap();
        }
        f.flush().unwrap();
        files.push(path);
    }
    let total_points = per_topic * topics * per_message;
    let stored0 = metric(&addr, "sentinel_readings_stored_total").unwrap_or(0.0);
    let cpu0 = cpu_secs(pid);
    let start = Instant::now();
    let publishers: Vec<_> = files
        .iter()
        .enumerate()
        .map(|(t, path)| {
            Command::new("taskset")
                .args(["-c", &((cpu + 1) % 2).to_string()])
                .args([
                    "mosquitto_pub",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &mqtt_port.to_string(),
                    "-q",
                    &qos.to_string(),
                ])
                .args(["-t", &format!("bench/t{t}"), "-l"])
                .stdin(std::fs::File::open(path).unwrap())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut p in publishers {
        p.wait().unwrap();
    }
    let published = start.elapsed();
    let mut last = stored0;
    let mut last_change = Instant::now();
    let done_at = loop {
        let stored = metric(&addr, "sentinel_readings_stored_total").unwrap_or(0.0);
        if stored - stored0 >= total_points as f64 {
            break start.elapsed();
        }
        if stored != last {
            last = stored;
            last_change = Instant::now();
        } else if last_change.elapsed() > Duration::from_secs(20) {
            eprintln!("stalled at {} of {total_points} points", stored - stored0);
            for m in [
                "sentinel_mqtt_acks_waiting",
                "sentinel_mqtt_connection_errors_total",
                "sentinel_mqtt_messages_total",
            ] {
                eprintln!(
                    "{m} {:?}",
                    metric(&addr, &format!("{m}{{device=\"bench\"}}"))
                );
            }
            eprintln!(
                "{}",
                std::fs::read_to_string(dir.path().join("sentinel.log")).unwrap_or_default()
            );
            break last_change.duration_since(start);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let cpu_used = cpu_secs(pid) - cpu0;
    let stored = metric(&addr, "sentinel_readings_stored_total").unwrap_or(0.0) - stored0;
    let bad: f64 = ["not_json", "missing_field", "unmapped"]
        .iter()
        .filter_map(|r| {
            metric(
                &addr,
                &format!("sentinel_mqtt_bad_payloads_total{{device=\"bench\",reason=\"{r}\"}}"),
            )
        })
        .sum();
    let secs = done_at.as_secs_f64();
    println!("messages           {}", per_topic * topics);
    println!("points/message     {per_message}");
    println!("publish qos        {qos}");
    println!("published in       {:.2} s", published.as_secs_f64());
    println!("all stored after   {secs:.2} s");
    println!("points stored      {stored}");
    println!("bad payloads       {bad}");
    println!(
        "messages/s         {:.0}",
        (per_topic * topics) as f64 / secs
    );
    println!("points/s           {:.0}", stored / secs);
    println!(
        "sentinel CPU       {cpu_used:.2} s ({:.0} % of one core)",
        100.0 * cpu_used / secs
    );
    println!(
        "sentinel RSS       {} MiB now, {} MiB peak",
        status_kb(pid, "VmRSS:") / 1024,
        status_kb(pid, "VmHWM:") / 1024
    );
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = sentinel.wait();
    let _ = broker.kill();
    let _ = broker.wait();
}
