//! The least a gateway can spend on the peer benchmark's I/O (issue #11): the `floor` peer of
//! `bench/bench.py`. It does only what every peer must do, in the cheapest way we know, and
//! nothing else: one Modbus FC3 request per device per interval (all devices at the same
//! instant, one persistent connection each, on one thread), one uncompressed line-protocol
//! POST of everything read to VictoriaMetrics per interval, and a QoS 0 MQTT publish per alarm
//! transition (raise above `--alarm-high`, clear below `--alarm-clear`), with hand-written
//! framing for all three protocols. No store, no journal, no retries beyond reconnecting, no
//! logging. Its CPU time per point is what the kernel and a minimal user space charge for the
//! benchmark's sockets: a lower bound for any gateway on the same box, Sentinel included.
//!
//! ```sh
//! cargo build --release -p sentinel-tests --example io_floor
//! bench/.venv/bin/python bench/bench.py --peer floor -D 300 -R 50
//! ```
//!
//! Arguments mirror `bench/peer_python.py`: `-D`, `-R`, `--interval` (s), `--base-port`,
//! `--mqtt-port`, `--write-url`, `--run-tag`. Line format and alarm payloads are the Python
//! peer's, so the bench scores both the same way.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, MissedTickBehavior};

struct Args {
    devices: usize,
    registers: usize,
    interval: Duration,
    base_port: u16,
    mqtt_port: u16,
    write_host: String,
    write_path: String,
    run_tag: String,
    alarm_high: u16,
    alarm_clear: u16,
}

fn args() -> Args {
    let argv: Vec<String> = std::env::args().collect();
    let get = |names: &[&str], default: &str| -> String {
        argv.iter()
            .position(|a| names.contains(&a.as_str()))
            .and_then(|i| argv.get(i + 1))
            .cloned()
            .unwrap_or_else(|| default.to_string())
    };
    let num = |names: &[&str], default: &str| -> u64 { get(names, default).parse().unwrap_or(0) };
    let url = get(&["--write-url"], "http://127.0.0.1:8428/api/v2/write");
    let rest = url.strip_prefix("http://").unwrap_or(&url);
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    Args {
        devices: num(&["-D", "--devices"], "10") as usize,
        registers: (num(&["-R", "--registers"], "20") as usize).clamp(1, 125),
        interval: Duration::from_secs_f64(get(&["--interval"], "1.0").parse().unwrap_or(1.0)),
        base_port: num(&["--base-port"], "15020") as u16,
        mqtt_port: num(&["--mqtt-port"], "1883") as u16,
        write_host: host.to_string(),
        write_path: format!("{path}?org=edge&bucket=plant&precision=ms"),
        run_tag: get(&["--run-tag"], ""),
        alarm_high: num(&["--alarm-high"], "900") as u16,
        alarm_clear: num(&["--alarm-clear"], "850") as u16,
    }
}

/// What the device tasks hand to the two writers; one thread, so a `RefCell` is enough.
#[derive(Default)]
struct Outgoing {
    lines: Vec<u8>,
    mqtt: Vec<u8>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// MQTT's variable-length "remaining length".
fn put_len(buf: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n % 128) as u8;
        n /= 128;
        buf.push(if n > 0 { byte | 0x80 } else { byte });
        if n == 0 {
            break;
        }
    }
}

fn put_str(buf: &mut Vec<u8>, s: &[u8]) {
    buf.extend_from_slice(&(s.len() as u16).to_be_bytes());
    buf.extend_from_slice(s);
}

fn publish_qos0(buf: &mut Vec<u8>, topic: &str, payload: &str) {
    buf.push(0x30);
    put_len(buf, 2 + topic.len() + payload.len());
    put_str(buf, topic.as_bytes());
    buf.extend_from_slice(payload.as_bytes());
}

async fn poll_device(
    a: Rc<Args>,
    d: usize,
    start: Instant,
    out: Rc<RefCell<Outgoing>>,
    wake_mqtt: Rc<Notify>,
) {
    let prefixes: Vec<Vec<u8>> = (0..a.registers)
        .map(|r| {
            let tag = if a.run_tag.is_empty() {
                String::new()
            } else {
                format!(",run={}", a.run_tag)
            };
            format!("modbus,device=dev{d:03},reg=r{r:02}{tag} value=").into_bytes()
        })
        .collect();
    let mut active = vec![false; a.registers];
    let want = 9 + 2 * a.registers;
    let mut response = vec![0u8; 512];
    let mut tick = tokio::time::interval_at(start, a.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut tid: u16 = 0;
    let mut link: Option<TcpStream> = None;
    loop {
        tick.tick().await;
        if link.is_none() {
            link = TcpStream::connect(("127.0.0.1", a.base_port + d as u16))
                .await
                .ok();
            if let Some(s) = &link {
                let _ = s.set_nodelay(true);
            }
        }
        let Some(stream) = link.as_mut() else {
            continue;
        };
        tid = tid.wrapping_add(1);
        let [t0, t1] = tid.to_be_bytes();
        let [c0, c1] = (a.registers as u16).to_be_bytes();
        let request = [t0, t1, 0, 0, 0, 6, 1, 3, 0, 0, c0, c1];
        let ts = now_ms();
        let answer = tokio::time::timeout(Duration::from_secs(1), async {
            stream.write_all(&request).await?;
            let mut got = 0;
            while got < want {
                let n = stream.read(&mut response[got..want]).await?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                got += n;
            }
            io::Result::Ok(())
        })
        .await;
        if !matches!(answer, Ok(Ok(()))) || response[7] != 3 || response[0..2] != [t0, t1] {
            link = None;
            continue;
        }
        let mut o = out.borrow_mut();
        let mut publish = false;
        for (r, prefix) in prefixes.iter().enumerate() {
            let v = u16::from_be_bytes([response[9 + 2 * r], response[10 + 2 * r]]);
            o.lines.extend_from_slice(prefix);
            o.lines.extend_from_slice(format!("{v}i {ts}\n").as_bytes());
            let state = if !active[r] && v > a.alarm_high {
                "raise"
            } else if active[r] && v < a.alarm_clear {
                "clear"
            } else {
                continue;
            };
            active[r] = state == "raise";
            let payload = format!(
                r#"{{"device":"dev{d:03}","reg":"r{r:02}","value":{v},"state":"{state}","ts":{ts}}}"#
            );
            publish_qos0(&mut o.mqtt, &format!("alarms/dev{d:03}/r{r:02}"), &payload);
            publish = true;
        }
        if publish {
            wake_mqtt.notify_one();
        }
    }
}

async fn mqtt_writer(port: u16, out: Rc<RefCell<Outgoing>>, wake: Rc<Notify>) -> io::Result<()> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_nodelay(true)?;
    let mut connect = vec![0x10];
    let client_id = format!("io-floor-{}", std::process::id());
    put_len(&mut connect, 10 + 2 + client_id.len());
    // protocol "MQTT", level 4, clean session, keep-alive 0 (off: the benchmark runs minutes)
    connect.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 0]);
    put_str(&mut connect, client_id.as_bytes());
    stream.write_all(&connect).await?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).await?;
    if connack[3] != 0 {
        return Err(io::Error::other("CONNACK refused"));
    }
    loop {
        wake.notified().await;
        let batch = std::mem::take(&mut out.borrow_mut().mqtt);
        stream.write_all(&batch).await?;
    }
}

async fn http_writer(a: Rc<Args>, out: Rc<RefCell<Outgoing>>, start: Instant) -> io::Result<()> {
    let mut stream = TcpStream::connect(a.write_host.as_str()).await?;
    stream.set_nodelay(true)?;
    // flush half an interval after the polls, when the turn's answers are in
    let mut tick = tokio::time::interval_at(start + a.interval / 2, a.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut reply = vec![0u8; 4096];
    loop {
        tick.tick().await;
        let body = std::mem::take(&mut out.borrow_mut().lines);
        if body.is_empty() {
            continue;
        }
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            a.write_path,
            a.write_host,
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        // the answer is a 204 with no body, or an error with a short one: read to the blank line
        // and then whatever Content-Length says
        let mut got = 0;
        let end = loop {
            let n = stream.read(&mut reply[got..]).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            got += n;
            if let Some(p) = reply[..got].windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            if got == reply.len() {
                return Err(io::Error::other("HTTP reply head too long"));
            }
        };
        let head = String::from_utf8_lossy(&reply[..end]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 2") {
            return Err(io::Error::other(
                head.lines().next().unwrap_or("").to_string(),
            ));
        }
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let mut rest = (end + length).saturating_sub(got);
        while rest > 0 {
            let n = stream.read(&mut reply[..rest.min(4096)]).await?;
            if n == 0 {
                break;
            }
            rest -= n;
        }
    }
}

fn main() -> io::Result<()> {
    let a = Rc::new(args());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let out = Rc::new(RefCell::new(Outgoing::default()));
        let wake = Rc::new(Notify::new());
        let start = Instant::now() + Duration::from_millis(200);
        for d in 0..a.devices {
            tokio::task::spawn_local(poll_device(a.clone(), d, start, out.clone(), wake.clone()));
        }
        let mqtt = tokio::task::spawn_local(mqtt_writer(a.mqtt_port, out.clone(), wake));
        let http = tokio::task::spawn_local(http_writer(a.clone(), out, start));
        eprintln!(
            "io_floor: polling {} devices x {} registers every {:?}",
            a.devices, a.registers, a.interval
        );
        tokio::select! {
            r = mqtt => r.map_err(io::Error::other)?,
            r = http => r.map_err(io::Error::other)?,
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}
