//! The HTTP API (`/api/v1/...`), health, metrics and the web console. Documented in docs/api.md.

mod operate;

pub mod auth;
pub mod tickets;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use alert_rules::CommandError;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::engine_task::{AlarmFilter, Command};
use crate::metrics::Metrics;
use crate::plant::Plant;

/// Request bodies larger than this are refused with 413.
const BODY_LIMIT: usize = 64 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub commands: mpsc::Sender<Command>,
    pub metrics: Arc<Metrics>,
    pub plant: Arc<Plant>,
    pub data_dir: PathBuf,
    pub started: Instant,
    /// The live site status, kept current by the engine task.
    pub status: tokio::sync::watch::Receiver<crate::engine_task::SiteStatus>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(console))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/site", get(site))
        .route("/api/v1/points", get(points))
        .route("/api/v1/points/{tag}/history", get(history))
        .route("/api/v1/alarms", get(alarms))
        .route("/api/v1/alarms/{id}/ack", post(acknowledge))
        .merge(operate::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// An error as JSON: `{"error": "..."}` with the right status.
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn unavailable() -> ApiError {
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        "the engine is not running".into(),
    )
}

async fn ask<T>(
    state: &AppState,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, ApiError> {
    let (tx, rx) = oneshot::channel();
    state
        .commands
        .send(make(tx))
        .await
        .map_err(|_| unavailable())?;
    rx.await.map_err(|_| unavailable())
}

async fn console() -> Html<&'static str> {
    Html(include_str!("console.html"))
}

async fn not_found() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "no such resource".into())
}

async fn healthz(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "site": state.plant.site.id,
        "uptime_secs": state.started.elapsed().as_secs(),
    }))
}

/// How long a loss (dead letter, dropped readings) keeps `/readyz` at 503.
const LOSS_WINDOW_MS: i64 = 5 * 60 * 1000;

/// 200 when every sink delivers and nothing was lost lately; 503 with the reasons otherwise.
async fn readyz(State(state): State<AppState>) -> Response {
    let reasons = state
        .metrics
        .not_ready_reasons(drivers::now_millis(), LOSS_WINDOW_MS);
    if reasons.is_empty() {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "reasons": reasons })),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn site(State(state): State<AppState>) -> Json<serde_json::Value> {
    let s = &state.plant.site;
    Json(json!({
        "id": s.id, "name": s.name, "latitude": s.latitude, "longitude": s.longitude,
        "risk_colour": s.risk_colour,
    }))
}

async fn points(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(ask(&state, Command::Points).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlarmQuery {
    /// `open` (default), `active`, `recent` or `all`.
    state: Option<String>,
}

async fn alarms(
    State(state): State<AppState>,
    query: Result<Query<AlarmQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(query) = query.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let filter = match query.state.as_deref() {
        None | Some("open") => AlarmFilter::Open,
        Some("active") => AlarmFilter::Active,
        Some("recent") => AlarmFilter::Recent,
        Some("all") => AlarmFilter::All,
        Some(other) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("state {other:?} is not one of open, active, recent, all"),
            ));
        }
    };
    Ok(Json(ask(&state, |tx| Command::Alarms(filter, tx)).await?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    by: Option<String>,
    comment: Option<String>,
}

async fn acknowledge(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Option<Json<AckBody>>,
) -> Result<impl IntoResponse, ApiError> {
    let id: u64 = id.parse().map_err(|_| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not an alarm id"),
        )
    })?;
    let AckBody { by, comment } = body.map(|Json(b)| b).unwrap_or_default();
    let by = by
        .filter(|b| !b.trim().is_empty())
        .unwrap_or_else(|| "api".to_owned());
    if by.len() > 200 || comment.as_ref().is_some_and(|c| c.len() > 4000) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "by or comment is too long".into(),
        ));
    }
    let result = ask(&state, |reply| Command::Acknowledge {
        id,
        by,
        comment,
        reply,
    })
    .await?;
    match result {
        Ok(alarm) => Ok(Json(alarm)),
        Err(e @ CommandError::UnknownAlarm(_)) => {
            Err(ApiError(StatusCode::NOT_FOUND, e.to_string()))
        }
        Err(e) => Err(ApiError(StatusCode::CONFLICT, e.to_string())),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    /// Milliseconds since the epoch; default one hour ago.
    from_ms: Option<i64>,
    /// Default now.
    to_ms: Option<i64>,
    /// Default 10,000, at most 100,000.
    limit: Option<u32>,
}

async fn history(
    State(state): State<AppState>,
    Path(tag): Path<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(q) = query.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    if state.plant.point_id(&tag).is_none() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no point has tag {tag:?}"),
        ));
    }
    let to = q.to_ms.unwrap_or_else(drivers::now_millis);
    let from = q.from_ms.unwrap_or(to - 3_600_000);
    if from > to {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "from_ms is after to_ms".into(),
        ));
    }
    let limit = q.limit.unwrap_or(10_000).min(100_000);
    let dir = state.data_dir.clone();
    let rows = tokio::task::spawn_blocking(move || {
        let conn = crate::store::open_reader(&dir).map_err(|e| e.to_string())?;
        crate::store::history(&conn, &tag, from, to, limit).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(Json(rows))
}
