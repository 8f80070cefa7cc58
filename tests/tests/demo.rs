//! `sentinel demo` as a new user runs it: no external service, an alarm from a scenario within
//! 90 s, every demo point good.

use std::process::Stdio;
use std::time::Duration;

use sentinel_tests::{sentinel_bin, wait_for};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_raises_a_scenario_alarm_and_shows_every_point_good() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let mut child = tokio::process::Command::new(sentinel_bin())
        .arg("demo")
        .args(["--listen", "127.0.0.1:0", "--ready-file"])
        .arg(&ready)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr: String = wait_for("the demo to listen", Duration::from_secs(30), || {
        let ready = ready.clone();
        async move {
            std::fs::read_to_string(&ready)
                .ok()
                .filter(|s| !s.is_empty())
        }
    })
    .await;
    let http = reqwest::Client::new();
    let get = |path: &'static str| {
        let (http, addr) = (http.clone(), addr.clone());
        async move {
            http.get(format!("http://{addr}{path}"))
                .send()
                .await
                .ok()?
                .json::<Value>()
                .await
                .ok()
        }
    };

    // Every point good (before the power-meter scenario takes its device offline).
    let points = wait_for("every demo point good", Duration::from_secs(20), || async {
        let p = get("/api/v1/points").await?;
        let all_good = p
            .as_array()?
            .iter()
            .all(|p| p["quality"] == "good" && p["value"].is_number());
        all_good.then_some(p)
    })
    .await;
    assert_eq!(points.as_array().unwrap().len(), 15);

    // The ammonia leak raises its first-level alarm at about 12 s of the real-time scenario.
    let alarm = wait_for("a demo scenario alarm", Duration::from_secs(90), || async {
        let a = get("/api/v1/alarms?state=all").await?;
        a.as_array()?
            .iter()
            .find(|a| a["point"] == "NH3-101")
            .cloned()
    })
    .await;
    assert_eq!(alarm["kind"], "limit");

    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
