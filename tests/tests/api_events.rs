//! The live-event stream (`/api/v1/events`): the status on connect, alarm and colour events as
//! they are committed, the cap on concurrent streams; and a client that sends its request too
//! slowly is disconnected.

use std::time::Duration;

use sentinel_tests::Sentinel;
use sentinel_tests::api::{call, config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Read the stream until `f` finds what it wants in the text so far.
async fn read_until(
    res: &mut reqwest::Response,
    what: &str,
    timeout: Duration,
    f: impl Fn(&str) -> bool,
) -> String {
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while !f(&text) {
        let chunk = tokio::time::timeout_at(deadline, res.chunk())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}; got:\n{text}"))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("stream ended waiting for {what}; got:\n{text}"));
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_status_alarms_and_colours() {
    let s = Sentinel::start(&config("\n[http]\nmax_event_streams = 2\n")).await;
    let mut res = s
        .http
        .get(s.url("/api/v1/events"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let first = read_until(&mut res, "the first status", Duration::from_secs(5), |t| {
        t.contains("\n\n")
    })
    .await;
    assert!(first.starts_with("event: status\ndata: {"), "{first}");
    assert!(first.contains(r#""site":"api""#));

    // The device is absent: the comm-loss alarm (critical) is raised and the tank unit turns red.
    let text = read_until(
        &mut res,
        "the alarm and colour events",
        Duration::from_secs(15),
        |t| t.contains("event: alarm\n") && t.contains("event: risk_colour\n"),
    )
    .await;
    let alarm = text
        .split("\n\n")
        .find(|e| e.contains("event: alarm\n"))
        .and_then(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .unwrap_or_else(|| panic!("{text}"));
    let alarm: serde_json::Value =
        serde_json::from_str(alarm).unwrap_or_else(|e| panic!("{e}: {alarm}"));
    assert_eq!(
        (
            alarm["kind"].as_str(),
            alarm["transition"].as_str(),
            alarm["point"].as_str()
        ),
        (Some("comm_loss"), Some("raised"), Some("plc1"))
    );
    assert!(text.contains(r#""unit":"tank""#), "{text}");

    // A second stream is allowed, a third is refused until one closes.
    let second = s
        .http
        .get(s.url("/api/v1/events"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(second.status(), 200);
    let (st, e) = call(&s, "GET", "/api/v1/events", None, None).await;
    assert_eq!(st, 503, "{e}");
    drop(second);
    let reopened = sentinel_tests::wait_for(
        "a stream slot to free up",
        Duration::from_secs(5),
        || async {
            let r = s.http.get(s.url("/api/v1/events")).send().await.ok()?;
            (r.status() == 200).then_some(r)
        },
    )
    .await;
    drop(reopened);

    // Streams end at shutdown: the server stops promptly with them open.
    let started = std::time::Instant::now();
    let (code, _) = s.terminate().await;
    assert_eq!(code, Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_disconnected() {
    let s = Sentinel::start(&config("\n[http]\nrequest_timeout_secs = 1\n")).await;
    let mut tcp = tokio::net::TcpStream::connect(s.addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the connection should be closed after the header deadline"
    );
    // Whatever was answered (408 or nothing), it was not a 200.
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
    // A prompt client on the same server is served.
    let (st, _) = call(&s, "GET", "/healthz", None, None).await;
    assert_eq!(st, 200);
    let _ = s.terminate().await;
}
