//! Bearer tokens with roles: 401 without a valid token, 403 when the role is too low, each
//! route's role, tokens from the file (as hashes) and from the environment, open health and
//! console files, and repeated failures answered more slowly.

use std::time::{Duration, Instant};

use sentinel_tests::Sentinel;
use sentinel_tests::api::{ADMIN, OPERATOR, VIEWER, call, comm_loss_alarm, config};

/// The admin token is in the file as its SHA-256; the others come from the environment.
fn config_with_tokens() -> String {
    use std::fmt::Write as _;
    let digest = sha256_hex(ADMIN);
    let mut extra = String::new();
    let _ = write!(
        extra,
        "\n[[security.tokens]]\nname = \"boss\"\nrole = \"admin\"\nsha256 = \"{digest}\"\n"
    );
    config(&extra)
}

fn sha256_hex(s: &str) -> String {
    let out = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().map(|mut i| i.write_all(s.as_bytes()));
            child.wait_with_output()
        })
        .unwrap_or_else(|e| panic!("sha256sum: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

async fn start() -> Sentinel {
    let env = format!("wall:viewer:{VIEWER};ops:operator:{OPERATOR}");
    Sentinel::start_with_env(&config_with_tokens(), &[("SENTINEL_API_TOKENS", &env)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_refusals() {
    let s = start().await;

    // Open without a token.
    for path in ["/healthz", "/metrics", "/", "/assets/app.js"] {
        let r = s
            .http
            .get(s.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 200, "{path}");
    }
    let (st, _) = call(&s, "GET", "/readyz", None, None).await;
    assert!(st == 200 || st == 503);

    // 401: missing, malformed, unknown. Each is JSON with a message.
    let (st, e) = call(&s, "GET", "/api/v1/points", None, None).await;
    assert_eq!(st, 401);
    assert!(
        e["error"].as_str().unwrap_or_default().contains("Bearer"),
        "{e}"
    );
    let r = s
        .http
        .get(s.url("/api/v1/points"))
        .header("authorization", format!("Basic {VIEWER}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 401);
    let (st, e) = call(&s, "GET", "/api/v1/points", Some("not-a-token"), None).await;
    assert_eq!((st, e["error"].as_str()), (401, Some("unknown token")));
    let (st, _) = call(&s, "GET", "/api/v1/events", None, None).await;
    assert_eq!(st, 401, "the event stream needs a token too");
    let (st, _) = call(&s, "GET", "/api/v1/tickets", None, None).await;
    assert_eq!(st, 401);

    // Viewer: every view, no action.
    for path in [
        "/api/v1/site",
        "/api/v1/points",
        "/api/v1/points/LT-1/history",
        "/api/v1/alarms",
        "/api/v1/modes",
        "/api/v1/risk",
        "/api/v1/kpi",
        "/api/v1/status",
        "/api/v1/tickets",
    ] {
        let (st, body) = call(&s, "GET", path, Some(VIEWER), None).await;
        assert_eq!(st, 200, "{path}: {body}");
    }
    let (st, who) = call(&s, "GET", "/api/v1/whoami", Some(VIEWER), None).await;
    assert_eq!(
        (st, who["name"].as_str(), who["role"].as_str()),
        (200, Some("wall"), Some("viewer"))
    );
    let id = comm_loss_alarm(&s, Some(VIEWER)).await;
    let ack = format!("/api/v1/alarms/{id}/ack");
    let (st, e) = call(&s, "POST", &ack, Some(VIEWER), Some("{}")).await;
    assert_eq!(st, 403, "{e}");
    assert!(
        e["error"].as_str().unwrap_or_default().contains("operator"),
        "{e}"
    );
    let (st, _) = call(
        &s,
        "POST",
        "/api/v1/tickets",
        Some(VIEWER),
        Some(r#"{"title":"x"}"#),
    )
    .await;
    assert_eq!(st, 403);
    let (st, _) = call(
        &s,
        "POST",
        &format!("/api/v1/alarms/{id}/comment"),
        Some(VIEWER),
        Some(r#"{"comment":"x"}"#),
    )
    .await;
    assert_eq!(st, 403);
    let (st, _) = call(
        &s,
        "GET",
        &format!("/api/v1/alarms/{id}/comments"),
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(st, 200);

    // Operator: alarm actions and tickets, not out-of-service or suppression.
    let (st, acked) = call(&s, "POST", &ack, Some(OPERATOR), Some("{}")).await;
    assert_eq!(st, 200, "{acked}");
    assert_eq!(acked["acked_by"], "ops", "the token's owner is on record");
    let (st, t) = call(
        &s,
        "POST",
        "/api/v1/tickets",
        Some(OPERATOR),
        Some(r#"{"title":"Gauge glass cracked"}"#),
    )
    .await;
    assert_eq!(st, 201, "{t}");
    let oos = r#"{"by":"li","reason":"calibration","for_secs":600}"#;
    let (st, _) = call(
        &s,
        "POST",
        "/api/v1/points/TT-2/out-of-service",
        Some(OPERATOR),
        Some(oos),
    )
    .await;
    assert_eq!(st, 403);
    let (st, _) = call(
        &s,
        "POST",
        "/api/v1/points/TT-2/suppress",
        Some(OPERATOR),
        Some(r#"{"by":"li","reason":"r"}"#),
    )
    .await;
    assert_eq!(st, 403);

    // Admin (from the file's hash): everything.
    let (st, body) = call(
        &s,
        "POST",
        "/api/v1/points/TT-2/out-of-service",
        Some(ADMIN),
        Some(oos),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let (st, who) = call(&s, "GET", "/api/v1/whoami", Some(ADMIN), None).await;
    assert_eq!((st, who["role"].as_str()), (200, Some("admin")));

    // 403 is answered before the body is looked at: a viewer learns nothing about ids.
    let (st, _) = call(
        &s,
        "POST",
        "/api/v1/alarms/abc/ack",
        Some(VIEWER),
        Some("{bad"),
    )
    .await;
    assert_eq!(st, 403);

    let _ = s.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_are_slowed_down() {
    let s = start().await;
    let mut times = Vec::new();
    for _ in 0..6 {
        let started = Instant::now();
        let (st, _) = call(&s, "GET", "/api/v1/points", Some("guess"), None).await;
        assert_eq!(st, 401);
        times.push(started.elapsed());
    }
    assert!(times[0] < Duration::from_millis(200), "{times:?}");
    assert!(
        times[5] >= Duration::from_millis(450),
        "the sixth failure should wait: {times:?}"
    );
    // A valid token is not slowed down by others' failures.
    let started = Instant::now();
    let (st, _) = call(&s, "GET", "/api/v1/site", Some(VIEWER), None).await;
    assert_eq!(st, 200);
    assert!(started.elapsed() < Duration::from_millis(200));
    assert!(s.log().contains("unknown token was refused"));
    let _ = s.terminate().await;
}
