//! Polling cost of the Modbus driver: CPU time and peak memory of the polling process while it
//! reads many simulated devices at 1 s.
//!
//! ```sh
//! cargo bench -p drivers --bench modbus_poll -- --devices 500 --registers 30 --per-request 1
//! cargo bench -p drivers --bench modbus_poll -- --devices 500 --registers 30 --per-request 125
//! ```
//!
//! The simulated devices ([`drivers::sim::SimDevice`], one TCP listener each) run in a child
//! process (this binary re-run with `--serve`), so the numbers are the poller's alone: the
//! poll tasks, the tokio runtime, and a consumer that drains the readings channel as the
//! engine would. CPU is `utime + stime` from `/proc/self/stat` over the measuring window (after
//! a warm-up), peak memory is `VmHWM` from `/proc/self/status`.
//!
//! Run by `cargo test --all-targets` (no `--bench` argument) it does a two-second smoke run.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use alert_rules::{DeviceId, PointId};
use drivers::FieldEvent;
use drivers::modbus::{
    DataType, DeviceMetrics, DeviceSettings, Endpoint, PolledPoint, RegisterSpec, Table,
    spawn_supervised,
};
use drivers::sim::SimDevice;
use tokio_util::sync::CancellationToken;

struct Options {
    devices: usize,
    registers: u16,
    per_request: u16,
    /// Requests in flight per connection (`max_in_flight`).
    in_flight: u16,
    interval_ms: u64,
    warmup_secs: u64,
    secs: u64,
    /// Poll on a single-threaded runtime instead of the multi-threaded default.
    current_thread: bool,
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--serve") {
        serve(arg(&args, "--serve", 1), arg(&args, "--registers", 30));
        return;
    }
    let benching = args.iter().any(|a| a == "--bench");
    let options = if benching {
        Options {
            devices: arg(&args, "--devices", 500),
            registers: arg(&args, "--registers", 30),
            per_request: arg(&args, "--per-request", 1),
            in_flight: arg(&args, "--in-flight", 1),
            interval_ms: arg(&args, "--interval-ms", 1000),
            warmup_secs: arg(&args, "--warmup-secs", 5),
            secs: arg(&args, "--secs", 30),
            current_thread: args.iter().any(|a| a == "--current-thread"),
        }
    } else {
        Options {
            devices: 5,
            registers: 30,
            per_request: 1,
            // The smoke run also covers the pipelined path against the simulator.
            in_flight: 4,
            interval_ms: 200,
            warmup_secs: 1,
            secs: 1,
            current_thread: false,
        }
    };
    measure(&options);
}

/// The simulator farm: `devices` SimDevices with `registers` holding registers each; prints
/// their ports on one line and serves until stdin closes.
fn serve(devices: usize, registers: u16) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let sims: Vec<SimDevice> = runtime.block_on(async {
        (0..devices)
            .map(|d| {
                let sim = SimDevice::bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
                for r in 0..registers {
                    sim.set_holding(1, r, (d as u16).wrapping_mul(7).wrapping_add(r))
                        .expect("register in range");
                }
                sim
            })
            .collect()
    });
    let ports: Vec<String> = sims
        .iter()
        .map(|s| s.local_addr().port().to_string())
        .collect();
    let mut out = std::io::stdout().lock();
    writeln!(out, "PORTS {}", ports.join(" ")).expect("stdout");
    out.flush().expect("stdout");
    drop(out);
    // Serve until the parent closes our stdin (or dies).
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop(sims);
}

/// (user, system) CPU ticks of this process so far.
fn cpu_ticks() -> (u64, u64) {
    cpu_ticks_of("self")
}

/// (user, system) CPU ticks of process `pid` ("self" or a number) so far.
fn cpu_ticks_of(pid: &str) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at `) `.
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field(11), field(12))
}

fn status_kb(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Clock ticks per second of `/proc/self/stat` (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

fn measure(o: &Options) {
    let exe = std::env::current_exe().expect("current exe");
    let mut farm = Command::new(exe)
        .args([
            "--serve",
            &o.devices.to_string(),
            "--registers",
            &o.registers.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the simulator farm");
    let mut line = String::new();
    BufReader::new(farm.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("farm ports");
    let ports: Vec<u16> = line
        .trim()
        .strip_prefix("PORTS ")
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert_eq!(ports.len(), o.devices, "farm announced {line:?}");

    let runtime = if o.current_thread {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    } else {
        tokio::runtime::Runtime::new().expect("runtime")
    };
    let readings = Arc::new(AtomicU64::new(0));
    let shutdown = CancellationToken::new();
    let metrics: Vec<Arc<DeviceMetrics>> = (0..o.devices).map(|_| Arc::default()).collect();
    let farm_pid = farm.id().to_string();
    let (before, after, elapsed, farm_ticks) = runtime.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<FieldEvent>(8192);
        let counter = Arc::clone(&readings);
        let drain = tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                if matches!(event, FieldEvent::Reading(r) if r.quality.is_good()) {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let mut tasks = Vec::new();
        for (d, port) in ports.iter().enumerate() {
            let points = (0..o.registers)
                .map(|r| {
                    PolledPoint::new(
                        PointId((d * usize::from(o.registers) + usize::from(r)) as u32),
                        RegisterSpec::new(Table::Holding, r, DataType::U16),
                    )
                })
                .collect();
            let settings = DeviceSettings {
                id: DeviceId(d as u32),
                name: format!("sim{d}"),
                endpoint: Endpoint::Tcp {
                    host: "127.0.0.1".to_owned(),
                    port: *port,
                },
                unit_id: 1,
                poll_interval: Duration::from_millis(o.interval_ms),
                timeout: Duration::from_secs(1),
                points,
                max_registers_per_request: o.per_request,
                max_gap: 10,
                frame_gap: Duration::ZERO,
                max_in_flight: o.in_flight,
            };
            tasks.push(spawn_supervised(
                settings,
                tx.clone(),
                Arc::clone(&metrics[d]),
                shutdown.clone(),
            ));
        }
        drop(tx);
        tokio::time::sleep(Duration::from_secs(o.warmup_secs)).await;
        let requests = || -> u64 {
            metrics
                .iter()
                .map(|m| m.requests_ok.load(Ordering::Relaxed))
                .sum()
        };
        let farm_before = cpu_ticks_of(&farm_pid);
        let before = (
            cpu_ticks(),
            readings.load(Ordering::Relaxed),
            requests(),
            Instant::now(),
        );
        tokio::time::sleep(Duration::from_secs(o.secs)).await;
        let after = (
            cpu_ticks(),
            readings.load(Ordering::Relaxed),
            requests(),
            Instant::now(),
        );
        let farm_after = cpu_ticks_of(&farm_pid);
        shutdown.cancel();
        for t in tasks {
            let _ = t.await;
        }
        let _ = drain.await;
        let elapsed = after.3.duration_since(before.3).as_secs_f64();
        let farm_ticks = (farm_after.0 + farm_after.1) - (farm_before.0 + farm_before.1);
        (before, after, elapsed, farm_ticks)
    });
    drop(farm.stdin.take());
    let _ = farm.wait();

    let user = (after.0.0 - before.0.0) as f64 / TICKS_PER_SEC / elapsed;
    let system = (after.0.1 - before.0.1) as f64 / TICKS_PER_SEC / elapsed;
    let cores = user + system;
    let readings_per_sec = (after.1 - before.1) as f64 / elapsed;
    let requests_per_sec = (after.2 - before.2) as f64 / elapsed;
    let expected = o.devices as f64 * f64::from(o.registers) * 1000.0 / o.interval_ms as f64;
    println!(
        "devices={} registers={} per_request={} in_flight={} interval_ms={}: cpu={:.3} cores (user {:.3}, system {:.3}), peak_rss={:.1} MiB, simulator_cpu={:.3} cores, \
         readings/s={:.0} (expected {:.0}), requests/s={:.0}, window={:.1}s",
        o.devices,
        o.registers,
        o.per_request,
        o.in_flight,
        o.interval_ms,
        cores,
        user,
        system,
        status_kb("VmHWM:") as f64 / 1024.0,
        farm_ticks as f64 / TICKS_PER_SEC / elapsed,
        readings_per_sec,
        expected,
        requests_per_sec,
        elapsed,
    );
}
