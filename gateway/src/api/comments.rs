//! Comments on alarms: what an operator saw or did, kept in the hash-chained journal beside the
//! alarm's transitions (so they cannot be edited afterwards) and sent to live pages.

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, AppState, ask, auth::Caller};
use crate::engine_task::{AlarmFilter, Command};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommentBody {
    comment: String,
    /// Who, when a shared console is used; the token's owner is recorded beside it.
    by: Option<String>,
}

fn alarm_id(id: &str) -> Result<u64, ApiError> {
    id.parse().map_err(|_| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not an alarm id"),
        )
    })
}

/// The alarm with this id, open or recently finished.
async fn find(state: &AppState, id: u64) -> Result<crate::event::AlarmJson, ApiError> {
    ask(state, |tx| Command::Alarms(AlarmFilter::All, tx))
        .await?
        .into_iter()
        .find(|a| a.alarm_id == id)
        .ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!("no open or recent alarm has id {id}"),
            )
        })
}

/// `POST /api/v1/alarms/{id}/comment`: answered (201) once the comment is in the journal.
pub async fn add(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
    body: Result<Json<CommentBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let id = alarm_id(&id)?;
    let Json(b) = body.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let comment = b.comment.trim().to_owned();
    if comment.is_empty() || comment.len() > 4000 || b.by.as_ref().is_some_and(|by| by.len() > 200)
    {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "comment must be 1..=4000 bytes, by at most 200".into(),
        ));
    }
    let alarm = find(&state, id).await?;
    let token = caller.map(|Extension(c)| c.name).filter(|n| n != "local");
    let by = match (token, b.by.filter(|b| !b.trim().is_empty())) {
        (Some(t), Some(by)) if by != t => format!("{by} ({t})"),
        (Some(t), _) => t,
        (None, Some(by)) => by,
        (None, None) => "api".to_owned(),
    };
    let now = drivers::now_millis();
    let record = json!({
        "id": format!("{}-comment-{id}-{now}-{:08x}", alarm.site, fastrand::u32(..)),
        "kind": "comment",
        "site": alarm.site,
        "alarm_id": id,
        "point": alarm.point,
        "by": by,
        "comment": comment,
        "at": crate::event::rfc3339(now),
    });
    let sent = record.clone();
    ask(&state, |reply| Command::Record { body: sent, reply }).await?;
    Ok((StatusCode::CREATED, Json(record)).into_response())
}

/// `GET /api/v1/alarms/{id}/comments`: oldest first, at most 500.
pub async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    let id = alarm_id(&id)?;
    let dir = state.data_dir.clone();
    let rows = tokio::task::spawn_blocking(move || -> Result<Vec<serde_json::Value>, String> {
        let conn = crate::store::open_reader(&dir).map_err(|e| e.to_string())?;
        let mut stmt = conn
            .prepare(
                "SELECT body FROM journal WHERE json_extract(body, '$.kind') = 'comment'
                 AND json_extract(body, '$.alarm_id') = ?1 ORDER BY seq LIMIT 500",
            )
            .map_err(|e| e.to_string())?;
        let bodies = stmt
            .query_map([id as i64], |r| r.get::<_, String>(0))
            .map_err(|e| e.to_string())?
            .filter_map(Result::ok)
            .filter_map(|b| serde_json::from_str(&b).ok())
            .collect();
        Ok(bodies)
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(Json(rows))
}
