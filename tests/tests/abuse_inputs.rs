//! Abuse from outside: path tricks on the static files, slow and stalled HTTP clients, too many
//! live-event streams, webhook replays, and a Modbus device that answers garbage. Each test
//! states its invariant; see docs/reliability.md for the whole table.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sentinel_tests::{PyModbusDevice, Sentinel, service, wait_for};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const T: Duration = Duration::from_secs(15);

fn config(extra: &str) -> String {
    format!(
        r#"
[site]
id = "abuse"
name = "Abuse"

[store]
data_dir = "{{data_dir}}"
flush_interval_ms = 100

[engine]
tick_ms = 100

[http]
request_timeout_secs = 2
max_event_streams = 3
{extra}
"#
    )
}

fn modbus_device(name: &str, port: u16, tag: &str) -> String {
    format!(
        r#"
[[devices]]
name = "{name}"
protocol = "modbus_tcp"
host = "127.0.0.1"
port = {port}
poll_interval_ms = 100
timeout_ms = 300
comm_loss_after_secs = 2

[[points]]
tag = "{tag}"
device = "{name}"
kind = "temperature"
unit = "°C"
span = [0.0, 100.0]
register = {{ table = "holding", address = 10 }}
limits = {{ deadband = 1.0, levels = [{{ level = "H", setpoint = 50.0, priority = "high" }}] }}
"#
    )
}

/// Send `request` as raw bytes (no URL normalisation on our side) and read the answer until the
/// server closes; returns the status code (0 when none) and the whole response text.
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes()
}

/// Invariant: no request path reaches a file outside the console's built-in assets. Traversal
/// in plain, percent-encoded and backslash forms, and paths of 10 KB and 100 KB, are answered
/// with a client error and never with the content of /etc/passwd; the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_file_paths_cannot_escape() {
    let s = Sentinel::start(&config("")).await;
    let long = "a".repeat(10_000);
    let very_long = "b/".repeat(50_000);
    let paths = [
        "/assets/../../etc/passwd".to_owned(),
        "/assets/../../../../../../etc/passwd".to_owned(),
        "/../../etc/passwd".to_owned(),
        "/assets/%2e%2e/%2e%2e/etc/passwd".to_owned(),
        "/assets/%2e%2e%2f%2e%2e%2fetc%2fpasswd".to_owned(),
        "/assets/..%2f..%2f..%2fetc%2fpasswd".to_owned(),
        "/assets/%252e%252e%252fetc%252fpasswd".to_owned(),
        "/assets/..%5c..%5cetc%5cpasswd".to_owned(),
        "/assets/%c0%ae%c0%ae/etc/passwd".to_owned(),
        "/assets/%00../etc/passwd".to_owned(),
        "/assets//etc/passwd".to_owned(),
        "/assets/./../etc/passwd".to_owned(),
        format!("/assets/{long}"),
        format!("/assets/{very_long}"),
    ];
    for path in &paths {
        let (status, text) = raw(s.addr, &get(path)).await;
        let shown: String = path.chars().take(60).collect();
        assert!(
            !text.contains("root:"),
            "{shown}: the answer holds /etc/passwd"
        );
        assert!(
            status == 0 || (400..500).contains(&status),
            "{shown}: status {status}, want a client error"
        );
    }
    assert_eq!(s.get("/healthz").await["status"], "ok");
    let (code, _) = s.terminate().await;
    assert_eq!(code, Some(0));
}

/// Invariant: clients that send half a request and stall do not stop anyone else being served,
/// and are cut off by the server (`http.request_timeout_secs` = 2 here) rather than held open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_do_not_block_others_and_are_cut_off() {
    let s = Sentinel::start(&config("")).await;
    let mut stalled = Vec::new();
    for _ in 0..200 {
        let mut tcp = TcpStream::connect(s.addr).await.unwrap();
        tcp.write_all(b"GET /api/v1/points HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        stalled.push(tcp);
    }
    // A body that never completes, too.
    let mut slow_body = TcpStream::connect(s.addr).await.unwrap();
    slow_body
        .write_all(b"POST /api/v1/alarms/1/ack HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"by\":")
        .await
        .unwrap();

    // Everyone else is served at once.
    for _ in 0..10 {
        let started = Instant::now();
        assert_eq!(s.get("/healthz").await["status"], "ok");
        // Well under the 2 s a stalled client is allowed: nobody waited for one.
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "a request took {:?}",
            started.elapsed()
        );
    }

    // The stalled ones are closed by the server within the timeout and a margin.
    let started = Instant::now();
    let mut closed = 0;
    for tcp in stalled.iter_mut().take(20) {
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_secs(6), tcp.read(&mut buf)).await {
            Ok(Ok(_)) | Ok(Err(_)) => closed += 1,
            Err(_) => {}
        }
    }
    assert_eq!(
        closed,
        20,
        "stalled header senders still open after {:?}",
        started.elapsed()
    );
    let mut buf = [0u8; 512];
    let body_answer = tokio::time::timeout(Duration::from_secs(6), slow_body.read(&mut buf)).await;
    assert!(
        body_answer.is_ok(),
        "a stalled body was held open for more than 6 s"
    );
    assert_eq!(s.get("/healthz").await["status"], "ok");
    let (code, _) = s.terminate().await;
    assert_eq!(code, Some(0));
}

/// Invariant: live-event streams are capped (`http.max_event_streams` = 3 here): the fourth
/// gets 503 with a JSON error, the rest of the API keeps answering, and a closed stream frees
/// its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_event_streams_are_capped() {
    let s = Sentinel::start(&config("")).await;
    let url = s.url("/api/v1/events");
    let mut open = Vec::new();
    for i in 0..3 {
        let r = s.http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "stream {i}");
        open.push(r);
    }
    let r = s.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 503, "the fourth stream");
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].as_str().is_some(), "{body}");
    assert_eq!(s.get("/healthz").await["status"], "ok");
    assert!(s.get("/api/v1/points").await.is_array());

    drop(open.pop());
    let again = wait_for("a freed stream place", Duration::from_secs(5), || async {
        let r = s.http.get(&url).send().await.ok()?;
        (r.status() == 200).then_some(r)
    })
    .await;
    drop(again);
    drop(open);
    let (code, _) = s.terminate().await;
    assert_eq!(code, Some(0));
}

/// The documented receiver check (docs/notifications.md, "Webhook signatures"), run by Python's
/// own hmac and hashlib, so the test does not reuse Sentinel's code: exit 0 accepted, 1 refused.
const VERIFIER: &str = r#"
import hmac, hashlib, sys
secret, header, body_path, now = sys.argv[1].encode(), sys.argv[2], sys.argv[3], int(sys.argv[4])
body = open(body_path, "rb").read()
try:
    parts = dict(p.split("=", 1) for p in header.split(","))
    t = int(parts["t"])
except Exception:
    sys.exit(1)
if abs(now - t) > 300:
    sys.exit(1)
want = hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
sys.exit(0 if hmac.compare_digest(want, parts.get("v1", "")) else 1)
"#;

fn verify(python: &str, secret: &str, header: &str, body: &[u8], now: i64) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("body");
    std::fs::write(&path, body).unwrap();
    std::process::Command::new(python)
        .args(["-c", VERIFIER, secret, header])
        .arg(&path)
        .arg(now.to_string())
        .status()
        .unwrap()
        .success()
}

/// Invariant: a signed webhook cannot be replayed outside the signature's time window, nor
/// re-dated, nor altered. Sentinel's real signed request is accepted by the documented check at
/// its own time; the same bytes presented 301 s later are refused; the header re-dated to "now"
/// is refused (the HMAC covers the time); one changed body byte is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_replay_outside_the_window_is_refused() {
    let Some(python) = service("SENTINEL_TEST_PYTHON") else {
        return;
    };
    let Some(dev) = PyModbusDevice::start(&[]).await else {
        return;
    };
    // A receiver that keeps the raw bytes, since the signature is over them.
    type Seen = Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;
    let seen: Seen = Arc::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = {
        let seen = Arc::clone(&seen);
        axum::Router::new().route(
            "/hook",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let seen = Arc::clone(&seen);
                    async move {
                        let sig = headers
                            .get("x-sentinel-signature")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        seen.lock().unwrap().push((sig, body.to_vec()));
                        axum::http::StatusCode::NO_CONTENT
                    }
                },
            ),
        )
    };
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let secret = "replay-test-secret-0123456789";
    let extra = format!(
        "{}\n[[notify.webhook]]\nname = \"receiver\"\nurl = \"{hook}\"\nsecret = \"{secret}\"\ntimeout_ms = 2000\nmax_backoff_secs = 1\n",
        modbus_device("plc", dev.port, "TT-R")
    );
    let s = Sentinel::start(&config(&extra)).await;
    dev.write_register(10, 80).await;
    let (header, body) = wait_for("a signed webhook", T, || async {
        seen.lock()
            .unwrap()
            .iter()
            .find(|(h, _)| !h.is_empty())
            .cloned()
    })
    .await;
    let t: i64 = header
        .split(',')
        .find_map(|p| p.strip_prefix("t="))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no t= in {header:?}"));

    assert!(
        verify(&python, secret, &header, &body, t + 5),
        "the genuine request is accepted"
    );
    assert!(
        !verify(&python, secret, &header, &body, t + 301),
        "a replay 301 s later is refused"
    );
    assert!(
        !verify(&python, secret, &header, &body, t - 301),
        "a request from the future is refused"
    );
    let redated = header.replacen(&format!("t={t}"), &format!("t={}", t + 400), 1);
    assert!(
        !verify(&python, secret, &redated, &body, t + 400),
        "a re-dated header is refused"
    );
    let mut altered = body.clone();
    let last = altered.len() - 2;
    altered[last] ^= 1;
    assert!(
        !verify(&python, secret, &header, &altered, t + 5),
        "an altered body is refused"
    );
    assert!(
        !verify(&python, "another-secret", &header, &body, t + 5),
        "another key is refused"
    );

    let (code, _) = s.terminate().await;
    assert_eq!(code, Some(0));
    dev.kill().await;
}

/// A Modbus TCP "device" that answers every request with garbage, a different kind on each
/// connection: random bytes, a well-formed answer with the wrong transaction id, a short frame
/// then close, a header announcing 65535 bytes, and an exception to a function never asked.
async fn garbage_device() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let answered = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&answered);
    tokio::spawn(async move {
        let mut conn = 0u64;
        while let Ok((mut tcp, _)) = listener.accept().await {
            conn += 1;
            let kind = conn % 5;
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let mut req = [0u8; 260];
                let mut seed = conn.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                loop {
                    let Ok(n) = tcp.read(&mut req).await else {
                        return;
                    };
                    if n < 8 {
                        return;
                    }
                    let (tid, unit, fc) = ([req[0], req[1]], req[6], req[7]);
                    let answer: Vec<u8> = match kind {
                        0 => (0..37)
                            .map(|_| {
                                seed ^= seed << 13;
                                seed ^= seed >> 7;
                                seed ^= seed << 17;
                                seed as u8
                            })
                            .collect(),
                        1 => {
                            let wrong = [tid[0] ^ 0x55, tid[1].wrapping_add(1)];
                            vec![wrong[0], wrong[1], 0, 0, 0, 5, unit, fc, 2, 0x00, 0x2a]
                        }
                        2 => vec![tid[0], tid[1], 0, 0],
                        3 => vec![tid[0], tid[1], 0, 0, 0xff, 0xff, unit, fc, 0xfe, 1, 2, 3],
                        _ => vec![tid[0], tid[1], 0, 0, 0, 3, unit, 0x90 | 0x0b, 0x04],
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    if tcp.write_all(&answer).await.is_err() || kind == 2 {
                        return;
                    }
                }
            });
        }
    });
    (port, answered)
}

/// Invariant: whatever a device sends back, Sentinel does not panic, never shows a good value
/// for it, counts the failed requests, raises comm-loss for it, and keeps polling an honest
/// device beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_a_modbus_device_is_bad_quality_and_counted() {
    let Some(good) = PyModbusDevice::start(&[]).await else {
        return;
    };
    let (port, answered) = garbage_device().await;
    let extra = format!(
        "{}{}",
        modbus_device("junk", port, "TT-JUNK"),
        modbus_device("good", good.port, "TT-OK")
    );
    let mut s = Sentinel::start(&config(&extra)).await;
    good.write_register(10, 33).await;

    // Every kind of garbage at least once (one kind per connection; reconnects back off).
    wait_for(
        "garbage answered on five connections",
        Duration::from_secs(30),
        || async { (answered.load(Ordering::SeqCst) >= 5).then_some(()) },
    )
    .await;
    let points = s.get("/api/v1/points").await;
    let junk = points
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["tag"] == "TT-JUNK")
        .cloned()
        .unwrap();
    assert_ne!(
        junk["quality"], "good",
        "a garbage answer shown as good: {junk}"
    );
    let text = s.metrics_text().await;
    let failed: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("sentinel_modbus_requests_total{device=\"junk\"")
                && !l.contains("outcome=\"ok\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(failed >= 3.0, "failed requests counted: {failed}\n{text}");
    wait_for("comm-loss for the garbage device", T, || async {
        let all = s.get("/api/v1/alarms?state=active").await;
        all.as_array()?
            .iter()
            .find(|a| a["kind"] == "comm_loss" && a["point"] == "junk")
            .cloned()
    })
    .await;
    wait_for("the honest device's value", T, || async {
        let p = s.get("/api/v1/points").await;
        p.as_array()?
            .iter()
            .find(|p| p["tag"] == "TT-OK" && p["quality"] == "good" && p["value"] == 33.0)
            .cloned()
    })
    .await;
    assert!(s.is_running());
    let log = s.log();
    assert!(
        !log.contains("panicked"),
        "a panic on garbage input:\n{log}"
    );
    let (code, dir) = s.terminate().await;
    assert_eq!(code, Some(0));
    // Not one value from the garbage reached the store (the wrong-transaction answer carries a
    // plausible 42).
    let db = rusqlite::Connection::open(dir.path().join("data/sentinel.db")).unwrap();
    let (all, with_value): (i64, i64) = db
        .query_row(
            "SELECT COUNT(*), COUNT(r.value) FROM readings r JOIN points p ON p.id = r.point WHERE p.tag = 'TT-JUNK'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        with_value, 0,
        "{with_value} of {all} stored TT-JUNK readings carry a value"
    );
    good.kill().await;
}
