//! Every endpoint of the API, with good and bad input, on a site without tokens (open because it
//! listens on loopback): status codes, JSON errors, the body limit, the console's files.

use std::time::Duration;

use sentinel_tests::Sentinel;
use sentinel_tests::api::{call, comm_loss_alarm, config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_with_good_and_bad_input() {
    let s = Sentinel::start(&config("")).await;

    // Health, metrics and the console are open.
    let (st, health) = call(&s, "GET", "/healthz", None, None).await;
    assert_eq!((st, health["site"].as_str()), (200, Some("api")));
    let (st, _) = call(&s, "GET", "/readyz", None, None).await;
    assert!(st == 200 || st == 503, "readyz {st}");
    assert!(s.metrics_text().await.contains("sentinel_"));
    let index = s.http.get(s.url("/")).send().await.unwrap();
    assert_eq!(index.status(), 200);
    assert!(
        index.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    let etag = index.headers()["etag"].clone();
    assert!(index.text().await.unwrap().contains("/assets/app.js"));
    let again = s
        .http
        .get(s.url("/"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.status(),
        304,
        "an unchanged console is not sent again"
    );
    for asset in [
        "app.js",
        "api.js",
        "map.js",
        "trend.js",
        "i18n.js",
        "app.css",
        "favicon.svg",
    ] {
        let r = s
            .http
            .get(s.url(&format!("/assets/{asset}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{asset}");
    }
    let (st, e) = call(&s, "GET", "/assets/nope.js", None, None).await;
    assert_eq!((st, e["error"].is_string()), (404, true));
    let (st, e) = call(&s, "GET", "/no/such/thing", None, None).await;
    assert_eq!((st, e["error"].as_str()), (404, Some("no such resource")));

    // Views.
    let (st, who) = call(&s, "GET", "/api/v1/whoami", None, None).await;
    assert_eq!((st, who["role"].as_str()), (200, Some("admin")));
    let (st, site) = call(&s, "GET", "/api/v1/site", None, None).await;
    assert_eq!((st, site["id"].as_str()), (200, Some("api")));
    let (st, e) = call(&s, "GET", "/api/v1/site/layout", None, None).await;
    assert_eq!(
        (st, e["error"].is_string()),
        (404, true),
        "no layout image configured"
    );
    let (st, points) = call(&s, "GET", "/api/v1/points", None, None).await;
    assert_eq!(st, 200);
    assert_eq!(points.as_array().map(Vec::len), Some(2));
    assert_eq!(points[0]["tag"], "LT-1");
    let (st, risk) = call(&s, "GET", "/api/v1/risk", None, None).await;
    assert_eq!(st, 200);
    assert_eq!(risk["unit_places"][0]["x_pct"], 30.0);
    assert_eq!(risk["unit_places"][1]["latitude"], 31.2);
    for path in [
        "/api/v1/status",
        "/api/v1/kpi",
        "/api/v1/modes",
        "/api/v1/tickets",
    ] {
        let (st, body) = call(&s, "GET", path, None, None).await;
        assert_eq!(st, 200, "{path}: {body}");
    }
    for state in ["open", "active", "recent", "all"] {
        let (st, _) = call(
            &s,
            "GET",
            &format!("/api/v1/alarms?state={state}"),
            None,
            None,
        )
        .await;
        assert_eq!(st, 200, "{state}");
    }
    let (st, e) = call(&s, "GET", "/api/v1/alarms?state=bogus", None, None).await;
    assert_eq!(st, 400);
    assert!(e["error"].as_str().unwrap().contains("bogus"));
    let (st, _) = call(&s, "GET", "/api/v1/alarms?colour=red", None, None).await;
    assert_eq!(st, 400, "unknown query parameter");

    // History: raw and downsampled, and bad ranges.
    let (st, raw) = call(&s, "GET", "/api/v1/points/LT-1/history", None, None).await;
    assert_eq!((st, raw.is_array()), (200, true));
    let (st, b) = call(
        &s,
        "GET",
        "/api/v1/points/LT-1/history?from_ms=0&to_ms=60000&bucket_ms=1000",
        None,
        None,
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(
        (b["bucket_ms"].as_i64(), b["buckets"].is_array()),
        (Some(1000), true)
    );
    for (query, status) in [
        ("from_ms=2000&to_ms=1000", 400),
        ("from_ms=-5&to_ms=1000", 400),
        ("from_ms=abc", 400),
        ("bucket_ms=0", 400),
        ("from_ms=0&to_ms=100000000&bucket_ms=1", 400),
        // All of time in 1 ms buckets: the bucket count must not wrap past the cap.
        ("from_ms=0&to_ms=9223372036854775807&bucket_ms=1", 400),
        ("bucket_ms=1000&limit=5", 400),
        ("what=1", 400),
    ] {
        let (st, e) = call(
            &s,
            "GET",
            &format!("/api/v1/points/LT-1/history?{query}"),
            None,
            None,
        )
        .await;
        assert_eq!(st, status, "{query}: {e}");
        assert!(e["error"].is_string(), "{query}: {e}");
    }
    let (st, e) = call(&s, "GET", "/api/v1/points/NOPE-1/history", None, None).await;
    assert_eq!(st, 404);
    assert!(e["error"].as_str().unwrap().contains("NOPE-1"));

    // Alarm actions: bad ids, bad bodies, unknown alarms, then the real comm-loss alarm.
    let (st, _) = call(&s, "POST", "/api/v1/alarms/abc/ack", None, Some("{}")).await;
    assert_eq!(st, 400);
    let (st, _) = call(&s, "POST", "/api/v1/alarms/999999/ack", None, Some("{}")).await;
    assert_eq!(st, 404);
    let (st, _) = call(&s, "POST", "/api/v1/alarms/1/ack", None, Some("{not json")).await;
    assert_eq!(st, 400);
    let (st, _) = call(
        &s,
        "POST",
        "/api/v1/alarms/1/ack",
        None,
        Some(r#"{"by":"x","extra":1}"#),
    )
    .await;
    assert_eq!(st, 400, "unknown field");
    let huge = format!(r#"{{"by":"x","comment":"{}"}}"#, "a".repeat(70 * 1024));
    let (st, e) = call(&s, "POST", "/api/v1/alarms/1/ack", None, Some(&huge)).await;
    assert_eq!(st, 413, "{e}");
    let (st, _) = call(
        &s,
        "POST",
        "/api/v1/alarms/1/shelve",
        None,
        Some(r#"{"by":"x"}"#),
    )
    .await;
    assert_eq!(st, 400, "reason missing");
    let (st, _) = call(
        &s,
        "POST",
        "/api/v1/alarms/999999/shelve",
        None,
        Some(r#"{"by":"x","reason":"r","duration_secs":60}"#),
    )
    .await;
    assert_eq!(st, 404);
    let (st, _) = call(
        &s,
        "POST",
        "/api/v1/points/NOPE-1/out-of-service",
        None,
        Some(r#"{"by":"x","reason":"r","for_secs":60}"#),
    )
    .await;
    assert_eq!(st, 404);
    let (st, _) = call(
        &s,
        "POST",
        "/api/v1/devices/nope/out-of-service",
        None,
        Some(r#"{"by":"x","reason":"r","for_secs":60}"#),
    )
    .await;
    assert_eq!(st, 404);
    let (st, _) = call(
        &s,
        "POST",
        "/api/v1/points/LT-1/out-of-service",
        None,
        Some(r#"{"by":"x","reason":"r"}"#),
    )
    .await;
    assert_eq!(st, 400, "until missing");
    let (st, _) = call(&s, "GET", "/api/v1/alarms/1/ack", None, None).await;
    assert_eq!(st, 405, "wrong method");

    let id = comm_loss_alarm(&s, None).await;
    let (st, acked) = call(
        &s,
        "POST",
        &format!("/api/v1/alarms/{id}/ack"),
        None,
        Some(r#"{"by":"wang","comment":"seen"}"#),
    )
    .await;
    assert_eq!(st, 200, "{acked}");
    assert_eq!(acked["acked_by"], "wang");
    let (st, _) = call(
        &s,
        "POST",
        &format!("/api/v1/alarms/{id}/ack"),
        None,
        Some("{}"),
    )
    .await;
    assert_eq!(st, 409, "already acknowledged");

    // Filters.
    let (st, list) = call(
        &s,
        "GET",
        "/api/v1/alarms?priority=critical,high&point=plc1&kind=comm_loss",
        None,
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let (_, list) = call(&s, "GET", "/api/v1/alarms?priority=low", None, None).await;
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
    let (_, list) = call(
        &s,
        "GET",
        "/api/v1/alarms?state=all&area=nowhere",
        None,
        None,
    )
    .await;
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
    let (st, e) = call(&s, "GET", "/api/v1/alarms?priority=urgent", None, None).await;
    assert_eq!(st, 400, "{e}");
    let (st, _) = call(&s, "GET", "/api/v1/alarms?limit=x", None, None).await;
    assert_eq!(st, 400);

    // Comments: into the journal, and read back.
    let (st, c) = call(
        &s,
        "POST",
        &format!("/api/v1/alarms/{id}/comment"),
        None,
        Some(r#"{"comment":"PLC cabinet breaker tripped","by":"zhao"}"#),
    )
    .await;
    assert_eq!(st, 201, "{c}");
    assert_eq!(
        (c["kind"].as_str(), c["by"].as_str(), c["alarm_id"].as_u64()),
        (Some("comment"), Some("zhao"), Some(id))
    );
    let (st, list) = call(
        &s,
        "GET",
        &format!("/api/v1/alarms/{id}/comments"),
        None,
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(list[0]["comment"], "PLC cabinet breaker tripped", "{list}");
    let (st, _) = call(
        &s,
        "POST",
        &format!("/api/v1/alarms/{id}/comment"),
        None,
        Some(r#"{"comment":"  "}"#),
    )
    .await;
    assert_eq!(st, 400, "empty comment");
    let (st, _) = call(
        &s,
        "POST",
        "/api/v1/alarms/999999/comment",
        None,
        Some(r#"{"comment":"x"}"#),
    )
    .await;
    assert_eq!(st, 404);
    let (st, _) = call(
        &s,
        "POST",
        "/api/v1/alarms/x/comment",
        None,
        Some(r#"{"comment":"x"}"#),
    )
    .await;
    assert_eq!(st, 400);
    let (st, list) = call(&s, "GET", "/api/v1/alarms/999999/comments", None, None).await;
    assert_eq!((st, list.as_array().map(Vec::len)), (200, Some(0)));
    let (st, shelved) = call(
        &s,
        "POST",
        &format!("/api/v1/alarms/{id}/shelve"),
        None,
        Some(r#"{"by":"wang","reason":"maintenance","duration_secs":600}"#),
    )
    .await;
    assert_eq!(st, 200, "{shelved}");
    let (st, _) = call(
        &s,
        "POST",
        &format!("/api/v1/alarms/{id}/unshelve"),
        None,
        Some(r#"{"by":"wang","reason":"done"}"#),
    )
    .await;
    assert_eq!(st, 200);
    let (st, _) = call(
        &s,
        "POST",
        "/api/v1/points/TT-2/out-of-service",
        None,
        Some(r#"{"by":"li","reason":"calibration","for_secs":600}"#),
    )
    .await;
    assert_eq!(st, 200);
    let (st, modes) = call(&s, "GET", "/api/v1/modes", None, None).await;
    assert_eq!(st, 200);
    assert!(
        modes
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["scope"] == "TT-2"),
        "{modes}"
    );
    let (st, _) = call(
        &s,
        "POST",
        "/api/v1/points/TT-2/return-to-service",
        None,
        Some(r#"{"by":"li","reason":"done"}"#),
    )
    .await;
    assert_eq!(st, 200);

    // Tickets: create, read, move, and bad input.
    let (st, t) = call(
        &s,
        "POST",
        "/api/v1/tickets",
        None,
        Some(r#"{"title":"Leaking flange at T-101","point":"LT-1"}"#),
    )
    .await;
    assert_eq!(st, 201, "{t}");
    let tid = t["ticket_id"].as_i64().unwrap();
    let (st, one) = call(&s, "GET", &format!("/api/v1/tickets/{tid}"), None, None).await;
    assert_eq!((st, one["state"].as_str()), (200, Some("found")));
    let (st, moved) = call(
        &s,
        "POST",
        &format!("/api/v1/tickets/{tid}/move"),
        None,
        Some(r#"{"to":"dispatched","assignee":"zhao","deadline":"2030-01-01T00:00:00Z"}"#),
    )
    .await;
    assert_eq!(
        (st, moved["state"].as_str()),
        (200, Some("dispatched")),
        "{moved}"
    );
    let (st, _) = call(
        &s,
        "POST",
        &format!("/api/v1/tickets/{tid}/move"),
        None,
        Some(r#"{"to":"closed"}"#),
    )
    .await;
    assert_eq!(st, 409, "closing a dispatched ticket skips steps");
    let (st, _) = call(
        &s,
        "POST",
        &format!("/api/v1/tickets/{tid}/move"),
        None,
        Some(r#"{"to":"sideways"}"#),
    )
    .await;
    assert_eq!(st, 400);
    let (st, _) = call(&s, "GET", "/api/v1/tickets/999999", None, None).await;
    assert_eq!(st, 404);
    let (st, _) = call(&s, "GET", "/api/v1/tickets/x", None, None).await;
    assert_eq!(st, 400);
    let (st, _) = call(&s, "POST", "/api/v1/tickets", None, Some(r#"{"title":""}"#)).await;
    assert_eq!(st, 400);
    let (st, _) = call(&s, "GET", "/api/v1/tickets?state=lost", None, None).await;
    assert_eq!(st, 400);

    let (code, _) = tokio::time::timeout(Duration::from_secs(30), s.terminate())
        .await
        .unwrap();
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layout_image_is_served_behind_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("layout.svg");
    std::fs::write(&svg, r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 6"><rect width="10" height="6" fill="#eee"/></svg>"##).unwrap();
    let s = Sentinel::start(&config(&format!(
        "\n[http]\nlayout_image = \"{}\"\n",
        svg.display()
    )))
    .await;
    let r = s
        .http
        .get(s.url("/api/v1/site/layout"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/svg+xml");
    assert!(
        r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("sandbox"),
        "scripts in an SVG never run"
    );
    assert!(r.text().await.unwrap().contains("<rect"));
    let _ = s.terminate().await;

    // A layout of a kind the console cannot show stops the start, naming the field.
    let bad = dir.path().join("layout.bmp");
    std::fs::write(&bad, b"BM").unwrap();
    let path = dir.path().join("bad.toml");
    let text = config(&format!("\n[http]\nlayout_image = \"{}\"\n", bad.display()))
        .replace("{data_dir}", &dir.path().join("data").display().to_string());
    std::fs::write(&path, text).unwrap();
    let out = tokio::process::Command::new(sentinel_tests::sentinel_bin())
        .args(["run", "-c"])
        .arg(&path)
        .env("SENTINEL__HTTP__LISTEN", "127.0.0.1:0")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("http.layout_image"));
}
