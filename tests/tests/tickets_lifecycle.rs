//! A hazard ticket's whole life through the API, with bearer tokens and roles: found →
//! dispatched → rectifying → rectified → verified (by the external workflow system, through its
//! inbound endpoint) → closed; invalid moves refused with 409 and a clear message; every change
//! at the workflow webhook, in order; an overdue ticket announced to the webhook and escalated
//! by e-mail to the responsible people above the first tier.
#![allow(clippy::unwrap_used)] // a test: a panic is a failed test

mod notify_common;

use std::time::Duration;

use notify_common::{RawReceiver, Smtp};
use sentinel_tests::Sentinel;
use serde_json::{Value, json};

const OPS: &str = "ops-token-0123456789";
const VIEWER: &str = "viewer-token-0123456789";
const WORKFLOW: &str = "workflow-token-0123456789";

fn config(hook: &str, smtp_port: u16) -> String {
    format!(
        r#"
[site]
id = "melt-shop"
name = "Melt shop"

[store]
data_dir = "{{data_dir}}"

[[notify.webhook]]
name = "workflow"
url = "{hook}"
max_backoff_secs = 1

[tickets]
webhook = "workflow"
overdue_check_secs = 1

[notify.email]
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
from = "sentinel@melt-shop.example"
max_backoff_secs = 1

[[contacts]]
name = "shift"
email = "shift@melt-shop.example"

[[contacts]]
name = "chief"
display_name = "赵总"
email = "chief@melt-shop.example"

[[responsibility]]
name = "furnace-2"
areas = ["furnace-2"]
tiers = [
    {{ role = "operational", contacts = ["shift"] }},
    {{ role = "main", contacts = ["chief"], after_secs = 600 }},
]

[[security.tokens]]
name = "ops"
role = "operator"
token = "{OPS}"

[[security.tokens]]
name = "wall"
role = "viewer"
token = "{VIEWER}"

[[security.tokens]]
name = "oa-system"
role = "operator"
token = "{WORKFLOW}"
"#
    )
}

async fn call(
    s: &Sentinel,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = match method {
        "GET" => s.http.get(s.url(path)),
        _ => s.http.post(s.url(path)),
    };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_from_found_to_closed_with_invalid_moves_refused() {
    let hook = RawReceiver::start().await;
    let Some(smtp) = Smtp::started().await else {
        return;
    };
    let s = Sentinel::start(&config(&hook.url(), smtp.port)).await;

    // Authentication and roles.
    assert_eq!(call(&s, "GET", "/api/v1/tickets", None, None).await.0, 401);
    assert_eq!(
        call(
            &s,
            "GET",
            "/api/v1/tickets",
            Some("guess-guess-guess"),
            None
        )
        .await
        .0,
        401
    );
    assert_eq!(
        call(&s, "GET", "/api/v1/tickets", Some(VIEWER), None)
            .await
            .0,
        200
    );
    let new = json!({ "title": "Cooling water hose worn at furnace 2", "area": "furnace-2", "description": "seen on round" });
    let (code, err) = call(
        &s,
        "POST",
        "/api/v1/tickets",
        Some(VIEWER),
        Some(new.clone()),
    )
    .await;
    assert_eq!(code, 403, "{err}");

    let (code, t) = call(&s, "POST", "/api/v1/tickets", Some(OPS), Some(new)).await;
    assert_eq!(code, 201, "{t}");
    assert_eq!(t["state"], "found");
    assert_eq!(t["created_by"], "ops");
    let id = t["ticket_id"].as_i64().unwrap();
    let mv = format!("/api/v1/tickets/{id}/move");

    // Invalid moves: 409 with the reason and what is allowed.
    let (code, err) = call(&s, "POST", &mv, Some(OPS), Some(json!({ "to": "closed" }))).await;
    assert_eq!(code, 409);
    assert_eq!(
        err["error"],
        "a ticket that is found cannot move to closed; from found it can move to: dispatched"
    );
    let (code, err) = call(
        &s,
        "POST",
        &mv,
        Some(OPS),
        Some(json!({ "to": "dispatched" })),
    )
    .await;
    assert_eq!(
        code, 400,
        "dispatching needs an assignee and a deadline: {err}"
    );
    let (code, _) = call(
        &s,
        "POST",
        &mv,
        Some(OPS),
        Some(json!({ "to": "finished" })),
    )
    .await;
    assert_eq!(code, 400);
    assert_eq!(
        call(
            &s,
            "POST",
            "/api/v1/tickets/999/move",
            Some(OPS),
            Some(json!({ "to": "dispatched" }))
        )
        .await
        .0,
        404
    );

    // The life.
    let deadline = now_ms() + 7 * 86_400_000;
    let steps = [
        json!({ "to": "dispatched", "assignee": "li", "deadline_ms": deadline, "comment": "replace the hose this week" }),
        json!({ "to": "rectifying", "comment": "parts ordered" }),
        json!({ "to": "rectified", "comment": "hose replaced, pressure tested" }),
    ];
    for step in steps {
        let (code, t) = call(&s, "POST", &mv, Some(OPS), Some(step.clone())).await;
        assert_eq!(code, 200, "{step} → {t}");
        assert_eq!(t["state"], step["to"]);
    }
    // Whoever rectified cannot verify.
    let (code, err) = call(
        &s,
        "POST",
        &mv,
        Some(OPS),
        Some(json!({ "to": "verified" })),
    )
    .await;
    assert_eq!(code, 409);
    assert_eq!(
        err["error"],
        "the person who rectified a hazard (ops) cannot verify it"
    );
    // The workflow system verifies, naming its user; its token is required.
    let wf = format!("/api/v1/workflow/tickets/{id}/move");
    assert_eq!(
        call(
            &s,
            "POST",
            &wf,
            None,
            Some(json!({ "to": "verified", "by": "zhang" }))
        )
        .await
        .0,
        401
    );
    assert_eq!(
        call(
            &s,
            "POST",
            &wf,
            Some(WORKFLOW),
            Some(json!({ "to": "verified" }))
        )
        .await
        .0,
        400
    );
    let (code, t) = call(
        &s,
        "POST",
        &wf,
        Some(WORKFLOW),
        Some(json!({ "to": "verified", "by": "zhang", "comment": "checked on site" })),
    )
    .await;
    assert_eq!(code, 200, "{t}");
    let (code, t) = call(
        &s,
        "POST",
        &mv,
        Some(OPS),
        Some(json!({ "to": "closed", "comment": "销号" })),
    )
    .await;
    assert_eq!(code, 200, "{t}");
    let (code, err) = call(&s, "POST", &mv, Some(OPS), Some(json!({ "to": "found" }))).await;
    assert_eq!(code, 409);
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("nothing (closed for good)")
    );

    // Who, when and why of every step.
    let (_, t) = call(
        &s,
        "GET",
        &format!("/api/v1/tickets/{id}"),
        Some(VIEWER),
        None,
    )
    .await;
    let history = t["history"].as_array().unwrap();
    let states: Vec<&str> = history.iter().map(|h| h["to"].as_str().unwrap()).collect();
    assert_eq!(
        states,
        [
            "found",
            "dispatched",
            "rectifying",
            "rectified",
            "verified",
            "closed"
        ]
    );
    assert_eq!(history[4]["by"], "zhang (oa-system)");
    assert_eq!(history[4]["comment"], "checked on site");
    assert_eq!(history[1]["assignee"], "li");
    assert!(
        history
            .iter()
            .all(|h| h["at"].as_str().is_some_and(|a| a.ends_with('Z')))
    );
    let (_, closed) = call(
        &s,
        "GET",
        "/api/v1/tickets?state=closed",
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(closed.as_array().unwrap().len(), 1);

    // Every change went to the workflow webhook, in order, each with its own id.
    let (_, _, last) = hook
        .wait("the closing change", Duration::from_secs(10), |v| {
            v["to"] == "closed"
        })
        .await;
    assert_eq!(last["kind"], "ticket");
    let changes: Vec<Value> = hook
        .all()
        .into_iter()
        .map(|(_, _, v)| v)
        .filter(|v| v["ticket"]["ticket_id"] == id)
        .collect();
    let seen: Vec<&str> = changes.iter().map(|v| v["to"].as_str().unwrap()).collect();
    assert_eq!(
        seen,
        [
            "found",
            "dispatched",
            "rectifying",
            "rectified",
            "verified",
            "closed"
        ]
    );
    let mut ids: Vec<&str> = changes.iter().map(|v| v["id"].as_str().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 6);

    // A deadline passes while work is owed: announced as overdue.
    let (_, t2) = call(
        &s,
        "POST",
        "/api/v1/tickets",
        Some(OPS),
        Some(json!({ "title": "Gas detector GD-7 out of calibration", "area": "furnace-2" })),
    )
    .await;
    let id2 = t2["ticket_id"].as_i64().unwrap();
    let (code, _) = call(
        &s,
        "POST",
        &format!("/api/v1/tickets/{id2}/move"),
        Some(OPS),
        Some(json!({ "to": "dispatched", "assignee": "wu", "deadline_ms": now_ms() + 1500 })),
    )
    .await;
    assert_eq!(code, 200);
    let (_, _, overdue) = hook
        .wait("the overdue announcement", Duration::from_secs(10), |v| {
            v["change"] == "overdue" && v["ticket"]["ticket_id"] == id2
        })
        .await;
    assert_eq!(overdue["ticket"]["overdue"], true);
    let (_, list) = call(
        &s,
        "GET",
        "/api/v1/tickets?overdue=true",
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    s.terminate().await;
}
