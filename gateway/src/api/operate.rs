//! Operator actions on alarms, points and devices (shelve, reset, out of service, suppress),
//! and the views of the engine's wider state: modes in force, the risk picture, alarm-load KPIs.
//! Every action needs who did it and why; the engine journals it before the answer is sent.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::{ApiError, AppState, ask};
use crate::engine_task::{Action, Command, OperateError, Target};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/alarms/{id}/shelve", post(shelve))
        .route("/api/v1/alarms/{id}/unshelve", post(unshelve))
        .route("/api/v1/alarms/{id}/reset", post(reset))
        .route(
            "/api/v1/points/{tag}/out-of-service",
            post(point_out_of_service),
        )
        .route(
            "/api/v1/points/{tag}/return-to-service",
            post(point_return_to_service),
        )
        .route("/api/v1/points/{tag}/suppress", post(point_suppress))
        .route("/api/v1/points/{tag}/unsuppress", post(point_unsuppress))
        .route(
            "/api/v1/devices/{name}/out-of-service",
            post(device_out_of_service),
        )
        .route(
            "/api/v1/devices/{name}/return-to-service",
            post(device_return_to_service),
        )
        .route("/api/v1/modes", get(modes))
        .route("/api/v1/risk", get(risk))
        .route("/api/v1/kpi", get(kpi))
        .route("/api/v1/status", get(status))
}

/// Who and why, common to every action.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    pub by: String,
    pub reason: String,
    /// Shelve: how long.
    pub duration_secs: Option<u64>,
    /// Out of service / suppress: until when (milliseconds since the epoch)...
    pub until_ms: Option<i64>,
    /// ...or for how long from now.
    pub for_secs: Option<u64>,
}

/// Seconds from a request body to milliseconds, saturating instead of overflowing.
pub fn secs_to_ms(secs: u64) -> i64 {
    (secs.min(u64::MAX / 2000) * 1000) as i64
}

/// The end time an action asks for, if any: `until_ms`, or `for_secs` from `now`.
pub fn until_at(b: &ActionBody, now: i64) -> Result<Option<i64>, &'static str> {
    match (b.until_ms, b.for_secs) {
        (Some(_), Some(_)) => Err("give until_ms or for_secs, not both"),
        (Some(t), None) => Ok(Some(t)),
        (None, Some(s)) => Ok(Some(now.saturating_add(secs_to_ms(s)))),
        (None, None) => Ok(None),
    }
}

fn body(
    body: Result<Json<ActionBody>, axum::extract::rejection::JsonRejection>,
) -> Result<ActionBody, ApiError> {
    let Json(b) = body.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    if b.by.trim().is_empty() || b.reason.trim().is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "by and reason are required".into(),
        ));
    }
    if b.by.len() > 200 || b.reason.len() > 4000 {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "by or reason is too long".into(),
        ));
    }
    Ok(b)
}

fn alarm_id(id: &str) -> Result<u64, ApiError> {
    id.parse().map_err(|_| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not an alarm id"),
        )
    })
}

fn until(b: &ActionBody) -> Result<Option<i64>, ApiError> {
    until_at(b, drivers::now_millis()).map_err(|m| ApiError(StatusCode::BAD_REQUEST, m.into()))
}

async fn operate(
    state: &AppState,
    action: Action,
    by: String,
) -> Result<Json<serde_json::Value>, ApiError> {
    let result = ask(state, |reply| Command::Operate { action, by, reply }).await?;
    match result {
        Ok(alarm) => Ok(Json(serde_json::json!({ "ok": true, "alarm": alarm }))),
        Err(OperateError::NotFound(m)) => Err(ApiError(StatusCode::NOT_FOUND, m)),
        Err(OperateError::Invalid(m)) => Err(ApiError(StatusCode::BAD_REQUEST, m)),
        Err(OperateError::Conflict(m)) => Err(ApiError(StatusCode::CONFLICT, m)),
    }
}

type Body = Result<Json<ActionBody>, axum::extract::rejection::JsonRejection>;

async fn shelve(
    State(s): State<AppState>,
    Path(id): Path<String>,
    b: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (id, b) = (alarm_id(&id)?, body(b)?);
    let secs = b
        .duration_secs
        .ok_or_else(|| ApiError(StatusCode::BAD_REQUEST, "duration_secs is required".into()))?;
    let duration_ms = secs_to_ms(secs);
    operate(
        &s,
        Action::Shelve {
            id,
            duration_ms,
            reason: b.reason,
        },
        b.by,
    )
    .await
}

async fn unshelve(
    State(s): State<AppState>,
    Path(id): Path<String>,
    b: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (id, b) = (alarm_id(&id)?, body(b)?);
    operate(
        &s,
        Action::Unshelve {
            id,
            reason: b.reason,
        },
        b.by,
    )
    .await
}

async fn reset(
    State(s): State<AppState>,
    Path(id): Path<String>,
    b: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (id, b) = (alarm_id(&id)?, body(b)?);
    operate(
        &s,
        Action::Reset {
            id,
            reason: b.reason,
        },
        b.by,
    )
    .await
}

async fn out_of_service(
    s: AppState,
    target: Target,
    b: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let b = body(b)?;
    let until = until(&b)?.ok_or_else(|| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "until_ms or for_secs is required".into(),
        )
    })?;
    operate(
        &s,
        Action::OutOfService {
            target,
            until,
            reason: b.reason,
        },
        b.by,
    )
    .await
}

async fn point_out_of_service(
    State(s): State<AppState>,
    Path(tag): Path<String>,
    b: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    out_of_service(s, Target::Point(tag), b).await
}

async fn device_out_of_service(
    State(s): State<AppState>,
    Path(name): Path<String>,
    b: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    out_of_service(s, Target::Device(name), b).await
}

async fn return_to_service(
    s: AppState,
    target: Target,
    b: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let b = body(b)?;
    operate(
        &s,
        Action::ReturnToService {
            target,
            reason: b.reason,
        },
        b.by,
    )
    .await
}

async fn point_return_to_service(
    State(s): State<AppState>,
    Path(tag): Path<String>,
    b: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    return_to_service(s, Target::Point(tag), b).await
}

async fn device_return_to_service(
    State(s): State<AppState>,
    Path(name): Path<String>,
    b: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    return_to_service(s, Target::Device(name), b).await
}

async fn point_suppress(
    State(s): State<AppState>,
    Path(tag): Path<String>,
    b: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let b = body(b)?;
    let until = until(&b)?;
    operate(
        &s,
        Action::Suppress {
            target: Target::Point(tag),
            until,
            reason: b.reason,
        },
        b.by,
    )
    .await
}

async fn point_unsuppress(
    State(s): State<AppState>,
    Path(tag): Path<String>,
    b: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let b = body(b)?;
    operate(
        &s,
        Action::Unsuppress {
            target: Target::Point(tag),
            reason: b.reason,
        },
        b.by,
    )
    .await
}

async fn modes(State(s): State<AppState>) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    Ok(Json(ask(&s, Command::Modes).await?))
}

async fn risk(State(s): State<AppState>) -> Result<Json<crate::engine_task::RiskView>, ApiError> {
    Ok(Json(ask(&s, Command::Risk).await?))
}

async fn kpi(State(s): State<AppState>) -> Result<Json<alert_rules::kpi::KpiSnapshot>, ApiError> {
    Ok(Json(ask(&s, Command::Kpi).await?))
}

async fn status(
    State(s): State<AppState>,
) -> Result<Json<crate::engine_task::SiteStatus>, ApiError> {
    Ok(Json(ask(&s, Command::Status).await?))
}
