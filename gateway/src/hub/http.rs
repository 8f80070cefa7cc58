//! The hub's API and regional map.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::config::HubIdentity;
use super::{Shared, lock};

#[derive(Clone)]
struct HubState {
    region: Shared,
    hub: HubIdentity,
    tsdb: Option<std::sync::Arc<super::tsdb::Shared>>,
}

pub fn router(
    region: Shared,
    hub: HubIdentity,
    tsdb: Option<std::sync::Arc<super::tsdb::Shared>>,
) -> Router {
    Router::new()
        .route("/", get(map))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/sites", get(sites))
        .route("/api/v1/sites/{id}", get(site))
        .route("/api/v1/alarms", get(alarms))
        .route("/api/v1/offline", get(offline))
        .with_state(HubState { region, hub, tsdb })
}

async fn map() -> Html<&'static str> {
    Html(include_str!("map.html"))
}

async fn healthz(State(s): State<HubState>) -> Json<serde_json::Value> {
    let tsdb = s.tsdb.as_ref().map(|t| t.stats());
    Json(
        json!({ "status": "ok", "hub": s.hub.id, "name": s.hub.name, "version": env!("CARGO_PKG_VERSION"), "tsdb": tsdb }),
    )
}

/// Prometheus text: sites by colour and reporting, and the time-series writer's counters.
async fn metrics(State(s): State<HubState>) -> impl IntoResponse {
    use std::fmt::Write as _;
    let summaries = lock(&s.region).summaries();
    let mut out = String::new();
    out.push_str("# HELP sentinel_hub_sites Sites by live colour (grey: not reporting).\n# TYPE sentinel_hub_sites gauge\n");
    for c in ["red", "orange", "yellow", "blue", "grey"] {
        let n = summaries.iter().filter(|x| x.colour == c).count();
        let _ = writeln!(out, "sentinel_hub_sites{{colour=\"{c}\"}} {n}");
    }
    if let Some(t) = &s.tsdb {
        super::tsdb::metrics_text(&t.stats(), &mut out);
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteFilter {
    sector: Option<String>,
    grade: Option<u8>,
    colour: Option<String>,
}

async fn sites(
    State(s): State<HubState>,
    q: Result<Query<SiteFilter>, axum::extract::rejection::QueryRejection>,
) -> impl IntoResponse {
    let Ok(Query(q)) = q else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "filters are sector, grade and colour"})),
        )
            .into_response();
    };
    let all = lock(&s.region).summaries();
    let list: Vec<_> = all
        .into_iter()
        .filter(|x| q.sector.as_ref().is_none_or(|v| &x.sector == v))
        .filter(|x| q.grade.is_none_or(|g| x.major_hazard_grade == Some(g)))
        .filter(|x| q.colour.as_ref().is_none_or(|c| &x.colour == c))
        .collect();
    Json(list).into_response()
}

async fn site(State(s): State<HubState>, Path(id): Path<String>) -> impl IntoResponse {
    let now = drivers::now_millis();
    let region = lock(&s.region);
    let (Some(summary), Some(site)) = (region.summary(&id), region.sites.get(&id)) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no site {id:?} is known")})),
        )
            .into_response();
    };
    let mut alarms: Vec<serde_json::Value> =
        site.alarms.values().map(|a| alarm_view(a, now)).collect();
    // Unacknowledged first, then the most urgent, then the newest.
    alarms.sort_by(|a, b| {
        let key = |v: &serde_json::Value| {
            (
                v["acknowledged"] == false,
                priority_rank(v["priority"].as_str().unwrap_or("")),
                v["raised_at"].as_str().unwrap_or("").to_owned(),
            )
        };
        key(b).cmp(&key(a))
    });
    let units = site
        .status
        .as_ref()
        .and_then(|st| st.get("units"))
        .cloned()
        .unwrap_or_else(|| json!([]));
    Json(json!({
        "site": summary,
        "status": site.status,
        "units": units,
        "alarms": alarms,
        "at": crate::event::rfc3339(now),
    }))
    .into_response()
}

fn priority_rank(p: &str) -> u8 {
    match p {
        "critical" => 3,
        "high" => 2,
        "medium" => 1,
        _ => 0,
    }
}

/// An open alarm as the site page shows it: the latest event plus whether it is acknowledged,
/// how long that took (acknowledged) or how long it has waited (not yet).
fn alarm_view(event: &serde_json::Value, now: alert_rules::Millis) -> serde_json::Value {
    let time = |k: &str| {
        event
            .get(k)
            .and_then(|v| v.as_str())
            .and_then(super::state::parse_time)
    };
    let state = event.get("state").and_then(|v| v.as_str()).unwrap_or("");
    let acked_at = time("acked_at");
    let acknowledged = acked_at.is_some() || state == "active_acked";
    let raised = time("raised_at");
    let mut v = event.clone();
    v["acknowledged"] = json!(acknowledged);
    v["time_to_ack_secs"] = match (raised, acked_at) {
        (Some(r), Some(a)) => json!((a - r).max(0) as f64 / 1000.0),
        _ => serde_json::Value::Null,
    };
    v["age_secs"] = raised.map_or(serde_json::Value::Null, |r| {
        json!((now - r).max(0) as f64 / 1000.0)
    });
    v
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlarmFilter {
    /// Only alarms nobody has acknowledged.
    unacked: Option<bool>,
}

async fn alarms(
    State(s): State<HubState>,
    q: Result<Query<AlarmFilter>, axum::extract::rejection::QueryRejection>,
) -> impl IntoResponse {
    let Ok(Query(q)) = q else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "the filter is unacked=true|false"})),
        )
            .into_response();
    };
    let region = lock(&s.region);
    let mut list: Vec<&serde_json::Value> = region
        .sites
        .values()
        .flat_map(|site| site.alarms.values())
        .filter(|a| {
            !q.unacked.unwrap_or(false)
                || a.get("state").and_then(|v| v.as_str()) == Some("active_unacked")
        })
        .collect();
    list.sort_by(|a, b| {
        b.get("raised_at")
            .and_then(|v| v.as_str())
            .cmp(&a.get("raised_at").and_then(|v| v.as_str()))
    });
    Json(json!(list)).into_response()
}

async fn offline(State(s): State<HubState>) -> Json<serde_json::Value> {
    let region = lock(&s.region);
    let list: Vec<_> = region
        .offline_alarms
        .iter()
        .map(|(site, since)| json!({"site": site, "kind": "site_offline", "raised_at": crate::event::rfc3339(*since)}))
        .collect();
    Json(json!(list))
}
