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
}

pub fn router(region: Shared, hub: HubIdentity) -> Router {
    Router::new()
        .route("/", get(map))
        .route("/healthz", get(healthz))
        .route("/api/v1/sites", get(sites))
        .route("/api/v1/sites/{id}", get(site))
        .route("/api/v1/alarms", get(alarms))
        .route("/api/v1/offline", get(offline))
        .with_state(HubState { region, hub })
}

async fn map() -> Html<&'static str> {
    Html(include_str!("map.html"))
}

async fn healthz(State(s): State<HubState>) -> Json<serde_json::Value> {
    Json(
        json!({ "status": "ok", "hub": s.hub.id, "name": s.hub.name, "version": env!("CARGO_PKG_VERSION") }),
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
    let region = lock(&s.region);
    let (Some(summary), Some(site)) = (region.summary(&id), region.sites.get(&id)) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no site {id:?} has reported")})),
        )
            .into_response();
    };
    Json(json!({
        "site": summary,
        "status": site.status,
        "alarms": site.alarms.values().rev().collect::<Vec<_>>(),
    }))
    .into_response()
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
