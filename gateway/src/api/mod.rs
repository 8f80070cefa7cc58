//! The HTTP API (`/api/v1/...`), health, metrics and the web console. Documented in docs/api.md.

pub mod operate;

pub mod auth;
mod comments;
pub mod serve;
pub mod sse;
pub mod static_files;
pub mod tickets;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alert_rules::CommandError;
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::engine_task::{AlarmFilter, Command};
use crate::metrics::Metrics;
use crate::plant::Plant;

/// Request bodies larger than this are refused with 413.
const BODY_LIMIT: usize = 64 * 1024;
/// Oversized bodies up to this size are read before the 413 is sent.
const DRAIN_LIMIT: usize = 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub commands: mpsc::Sender<Command>,
    pub metrics: Arc<Metrics>,
    pub plant: Arc<Plant>,
    pub data_dir: PathBuf,
    pub started: Instant,
    /// The live site status, kept current by the engine task.
    pub status: tokio::sync::watch::Receiver<crate::engine_task::SiteStatus>,
    /// What the store committed, for the live-event streams.
    pub committed: broadcast::Sender<Arc<crate::store::Committed>>,
    /// One permit per open live-event stream (`http.max_event_streams`).
    pub event_streams: Arc<Semaphore>,
    /// Ends the live-event streams at shutdown, so the server can stop.
    pub shutdown: CancellationToken,
    pub layout: Option<Arc<static_files::LayoutImage>>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(static_files::index))
        .route("/assets/{name}", get(static_files::asset))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/site", get(site))
        .route("/api/v1/site/layout", get(static_files::layout))
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/events", get(sse::events))
        .route("/api/v1/points", get(points))
        .route("/api/v1/points/{tag}/history", get(history))
        .route("/api/v1/alarms", get(alarms))
        .route("/api/v1/alarms/{id}/ack", post(acknowledge))
        .route("/api/v1/alarms/{id}/comment", post(comments::add))
        .route("/api/v1/alarms/{id}/comments", get(comments::list))
        .merge(operate::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// The whole HTTP application: this router, the people's (tickets, e-mail links) and the
/// layers every route shares: the token policy on `/api/v1` (see `auth::authorize`), the body
/// limit, and a deadline for answering.
pub fn app(
    state: AppState,
    people: Router,
    auth: auth::AuthState,
    request_timeout: Duration,
) -> Router {
    router(state)
        .merge(people)
        .layer(axum::middleware::from_fn_with_state(auth, auth::authorize))
        .layer(axum::middleware::from_fn_with_state(
            request_timeout,
            deadline,
        ))
        .layer(axum::middleware::from_fn(declared_size))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

/// A body declared larger than the limit is refused with 413 before anything reads it. (A
/// body that turns out larger while being read is refused by the extractor.)
async fn declared_size(req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        // Read (and drop) a moderately oversized body first: a client still sending when the
        // answer comes would see a reset connection rather than the 413.
        if declared.is_some_and(|n| n <= DRAIN_LIMIT as u64) {
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                axum::body::to_bytes(req.into_body(), DRAIN_LIMIT),
            )
            .await;
        }
        return ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is over {} KiB", BODY_LIMIT / 1024),
        )
        .into_response();
    }
    next.run(req).await
}

/// A handler (reading the body included) that does not answer in time gets 408 (a slow client)
/// or 503. Event streams are not affected: their answer starts at once and then streams.
async fn deadline(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request was not completed within {} s", limit.as_secs()),
        )
        .into_response(),
    }
}

/// Who the console is talking as: name and role of the token (or `local`, admin, when the API
/// is open on loopback without tokens).
async fn whoami(caller: Option<Extension<auth::Caller>>) -> Json<serde_json::Value> {
    match caller {
        Some(Extension(c)) => Json(json!({ "name": c.name, "role": c.role.as_str() })),
        None => Json(json!({ "name": null, "role": null })),
    }
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
    /// Comma-separated priorities: `low`, `medium`, `high`, `critical`.
    priority: Option<String>,
    /// A point's tag (or a device's name for device alarms).
    point: Option<String>,
    area: Option<String>,
    /// Alarm class: `limit`, `comm_loss`, ...
    kind: Option<String>,
    /// At most this many (newest first); default and maximum 10,000.
    limit: Option<usize>,
}

const PRIORITIES: [&str; 4] = ["low", "medium", "high", "critical"];

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
    let priorities: Option<Vec<String>> = match &query.priority {
        None => None,
        Some(list) => {
            let wanted: Vec<String> = list
                .split(',')
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect();
            if let Some(bad) = wanted.iter().find(|p| !PRIORITIES.contains(&p.as_str())) {
                return Err(ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("priority {bad:?} is not one of low, medium, high, critical"),
                ));
            }
            Some(wanted)
        }
    };
    let limit = query.limit.unwrap_or(10_000).min(10_000);
    let alarms: Vec<_> = ask(&state, |tx| Command::Alarms(filter, tx))
        .await?
        .into_iter()
        .filter(|a| {
            priorities
                .as_ref()
                .is_none_or(|p| p.iter().any(|p| p == a.priority))
        })
        .filter(|a| query.point.as_ref().is_none_or(|p| *p == a.point))
        .filter(|a| query.area.as_ref().is_none_or(|area| *area == a.area))
        .filter(|a| query.kind.as_ref().is_none_or(|k| k == a.kind))
        .take(limit)
        .collect();
    Ok(Json(alarms))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    pub by: Option<String>,
    pub comment: Option<String>,
}

async fn acknowledge(
    State(state): State<AppState>,
    caller: Option<Extension<auth::Caller>>,
    Path(id): Path<String>,
    body: Result<Option<Json<AckBody>>, axum::extract::rejection::JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError(StatusCode::PAYLOAD_TOO_LARGE, e.body_text()),
        _ => ApiError(StatusCode::BAD_REQUEST, e.body_text()),
    })?;
    let id: u64 = id.parse().map_err(|_| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not an alarm id"),
        )
    })?;
    let AckBody { by, comment } = body.map(|Json(b)| b).unwrap_or_default();
    let by = by.filter(|b| !b.trim().is_empty());
    // With a token, the token's owner is on record; a different `by` (a shared console) is
    // kept beside it, never instead of it.
    let by = match (
        caller.map(|Extension(c)| c.name).filter(|n| n != "local"),
        by,
    ) {
        (Some(token), Some(by)) if by != token => format!("{by} ({token})"),
        (Some(token), _) => token,
        (None, Some(by)) => by,
        (None, None) => "api".to_owned(),
    };
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
    /// Milliseconds since the epoch; default one hour before `to_ms`.
    from_ms: Option<i64>,
    /// Default now.
    to_ms: Option<i64>,
    /// Raw readings: default 10,000, at most 100,000.
    limit: Option<u32>,
    /// Downsample: min, max and mean per bucket of this many milliseconds.
    bucket_ms: Option<i64>,
}

/// At most this many buckets in one answer.
const MAX_BUCKETS: i64 = 10_000;
/// Downsampling reads at most this many readings (about 6 days of one reading a second).
const MAX_SCAN: u32 = 500_000;

/// One bucket of a downsampled history: usable readings only; `bad` counts the others.
#[derive(Debug, Clone, serde::Serialize)]
struct Bucket {
    start_ms: i64,
    count: u32,
    min: f64,
    max: f64,
    mean: f64,
    bad: u32,
}

fn downsample(rows: &[crate::store::StoredReading], from: i64, bucket_ms: i64) -> Vec<Bucket> {
    let mut out: Vec<Bucket> = Vec::new();
    let mut sum = 0.0;
    for r in rows {
        let start = from + (r.ts_ms - from).div_euclid(bucket_ms) * bucket_ms;
        if out.last().is_none_or(|b| b.start_ms != start) {
            if let Some(b) = out.last_mut().filter(|b| b.count > 0) {
                b.mean = sum / f64::from(b.count);
            }
            sum = 0.0;
            out.push(Bucket {
                start_ms: start,
                count: 0,
                min: f64::INFINITY,
                max: f64::NEG_INFINITY,
                mean: 0.0,
                bad: 0,
            });
        }
        let Some(b) = out.last_mut() else { continue };
        let usable = !matches!(
            r.quality,
            "comm_lost" | "device_exception" | "sensor_fault" | "bad_value" | "unknown"
        );
        match r.value.filter(|v| v.is_finite() && usable) {
            Some(v) => {
                b.count += 1;
                b.min = b.min.min(v);
                b.max = b.max.max(v);
                sum += v;
            }
            None => b.bad += 1,
        }
    }
    if let Some(b) = out.last_mut().filter(|b| b.count > 0) {
        b.mean = sum / f64::from(b.count);
    }
    // Buckets with only bad readings have no value to draw: JSON has no infinity.
    for b in &mut out {
        if b.count == 0 {
            (b.min, b.max, b.mean) = (f64::NAN, f64::NAN, f64::NAN);
        }
    }
    out
}

fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

async fn history(
    State(state): State<AppState>,
    Path(tag): Path<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    if state.plant.point_id(&tag).is_none() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no point has tag {tag:?}"),
        ));
    }
    let to = q.to_ms.unwrap_or_else(drivers::now_millis);
    let from = q.from_ms.unwrap_or(to.saturating_sub(3_600_000));
    if from < 0 || to < 0 {
        return Err(bad_request(
            "from_ms and to_ms are milliseconds since 1970 and cannot be negative",
        ));
    }
    if from > to {
        return Err(bad_request("from_ms is after to_ms"));
    }
    if let Some(bucket_ms) = q.bucket_ms {
        if bucket_ms < 1 {
            return Err(bad_request("bucket_ms must be at least 1"));
        }
        if q.limit.is_some() {
            return Err(bad_request("give limit or bucket_ms, not both"));
        }
        // Checked: from 0 to i64::MAX in 1 ms buckets would wrap below the cap in a release
        // build and go through.
        let buckets = ((to - from) / bucket_ms).saturating_add(1);
        if buckets > MAX_BUCKETS {
            return Err(bad_request(format!(
                "{buckets} buckets of {bucket_ms} ms; at most {MAX_BUCKETS}: widen bucket_ms or narrow the range"
            )));
        }
    }
    let limit = match q.bucket_ms {
        Some(_) => MAX_SCAN,
        None => q.limit.unwrap_or(10_000).min(100_000),
    };
    let dir = state.data_dir.clone();
    let tag_for_query = tag.clone();
    let rows = tokio::task::spawn_blocking(move || {
        let conn = crate::store::open_reader(&dir).map_err(|e| e.to_string())?;
        crate::store::history(&conn, &tag_for_query, from, to, limit).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    match q.bucket_ms {
        None => Ok(Json(rows).into_response()),
        Some(bucket_ms) => {
            let truncated = rows.len() >= MAX_SCAN as usize;
            let buckets = downsample(&rows, from, bucket_ms);
            Ok(Json(json!({
                "tag": tag, "from_ms": from, "to_ms": to, "bucket_ms": bucket_ms,
                "truncated": truncated, "buckets": buckets,
            }))
            .into_response())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoredReading;

    fn r(ts_ms: i64, value: f64, quality: &'static str) -> StoredReading {
        StoredReading {
            ts_ms,
            value: Some(value),
            quality,
        }
    }

    #[test]
    fn buckets_hold_min_max_mean_of_usable_readings() {
        let rows = [
            r(1000, 1.0, "good"),
            r(1500, 3.0, "good"),
            r(1900, 99.0, "comm_lost"),
            r(2100, 5.0, "stale"),
            r(4000, 7.0, "bad_value"),
        ];
        let b = downsample(&rows, 1000, 1000);
        assert_eq!(b.len(), 3);
        assert_eq!(
            (
                b[0].start_ms,
                b[0].count,
                b[0].min,
                b[0].max,
                b[0].mean,
                b[0].bad
            ),
            (1000, 2, 1.0, 3.0, 2.0, 1)
        );
        assert_eq!((b[1].start_ms, b[1].count, b[1].mean), (2000, 1, 5.0));
        assert_eq!((b[2].start_ms, b[2].count, b[2].bad), (4000, 0, 1));
        assert!(b[2].mean.is_nan());
    }
}
