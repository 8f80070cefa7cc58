//! Hazard tickets (`/api/v1/tickets`), the inbound workflow endpoint
//! (`/api/v1/workflow/tickets/{id}/move`) and the acknowledge links of e-mails (`/ack/{token}`).
//! Documented in docs/api.md and docs/notifications.md.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{FromRef, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::sync::{Notify, mpsc, oneshot};

use super::ApiError;
use super::auth::{Caller, Tokens};
use crate::config::{Config, Role};
use crate::engine_task::Command;
use crate::notify::signing::{self, TokenError};
use crate::notify::templates::esc;
use crate::tickets::machine::{Move, TicketState};
use crate::tickets::store::{self as tstore, Filter, NewTicket, TicketError};

#[derive(Clone)]
pub struct PeopleState {
    pub config: Arc<Config>,
    pub data_dir: PathBuf,
    pub commands: mpsc::Sender<Command>,
    pub link_secret: Arc<Vec<u8>>,
    pub tokens: Arc<Tokens>,
    /// The ticket webhook's sender, woken after each change.
    pub ticket_wake: Option<Arc<Notify>>,
}

impl FromRef<PeopleState> for Arc<Tokens> {
    fn from_ref(s: &PeopleState) -> Arc<Tokens> {
        Arc::clone(&s.tokens)
    }
}

pub fn router(state: PeopleState) -> Router {
    Router::new()
        .route("/api/v1/tickets", get(list).post(create))
        .route("/api/v1/tickets/{id}", get(one))
        .route("/api/v1/tickets/{id}/move", post(move_by_api))
        .route("/api/v1/workflow/tickets/{id}/move", post(move_by_workflow))
        .route("/ack/{token}", get(ack_page).post(ack_post))
        .with_state(state)
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// Run a store operation on the blocking pool with its own connection.
async fn with_store<T: Send + 'static>(
    state: &PeopleState,
    f: impl FnOnce(&mut rusqlite::Connection, &Config) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let (dir, config) = (state.data_dir.clone(), Arc::clone(&state.config));
    tokio::task::spawn_blocking(move || {
        let mut conn = crate::store::open_reader(&dir).map_err(internal)?;
        f(&mut conn, &config)
    })
    .await
    .map_err(internal)?
}

fn ticket_error(e: TicketError) -> ApiError {
    match e {
        TicketError::NotFound(_) => ApiError(StatusCode::NOT_FOUND, e.to_string()),
        TicketError::Refused(m) if m.is_conflict() => ApiError(StatusCode::CONFLICT, m.to_string()),
        TicketError::Refused(m) => ApiError(StatusCode::BAD_REQUEST, m.to_string()),
        TicketError::Store(s) => internal(s),
    }
}

fn parse_id(id: &str) -> Result<i64, ApiError> {
    id.parse().map_err(|_| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not a ticket id"),
        )
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    assignee: Option<String>,
    point: Option<String>,
    area: Option<String>,
    overdue: Option<bool>,
    limit: Option<u32>,
}

async fn list(
    State(state): State<PeopleState>,
    caller: Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    let Query(q) = query.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let ticket_state = match q.state.as_deref() {
        None => None,
        Some(s) => Some(TicketState::parse(s).ok_or_else(|| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("state {s:?} is not one of found, dispatched, rectifying, rectified, verified, closed"),
            )
        })?),
    };
    let filter = Filter {
        state: ticket_state,
        assignee: q.assignee,
        point: q.point,
        area: q.area,
        overdue: q.overdue,
        limit: q.limit.unwrap_or(100).min(1000),
    };
    let tickets = with_store(&state, move |conn, config| {
        tstore::list(conn, &config.site.id, &filter, drivers::now_millis()).map_err(internal)
    })
    .await?;
    Ok(Json(tickets).into_response())
}

async fn one(
    State(state): State<PeopleState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    let id = parse_id(&id)?;
    let ticket = with_store(&state, move |conn, config| {
        tstore::get(conn, &config.site.id, id, drivers::now_millis()).map_err(internal)
    })
    .await?;
    match ticket {
        Some(t) => Ok(Json(t).into_response()),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no ticket has id {id}"),
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    pub title: String,
    #[serde(default)]
    pub description: String,
    pub point: Option<String>,
    pub area: Option<String>,
    pub alarm_id: Option<i64>,
}

async fn create(
    State(state): State<PeopleState>,
    caller: Caller,
    body: Result<Json<CreateBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operator)?;
    let Json(b) = body.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    if b.title.trim().is_empty() || b.title.len() > 500 || b.description.len() > 10_000 {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "title must be 1..=500 bytes, description at most 10000".into(),
        ));
    }
    let by = caller.name.clone();
    let ticket = with_store(&state, move |conn, config| {
        let new = NewTicket {
            title: b.title,
            description: b.description,
            point: b.point,
            area: b.area,
            alarm_id: b.alarm_id,
            alarm_event_id: None,
        };
        tstore::create(conn, config, &new, &by, drivers::now_millis()).map_err(ticket_error)
    })
    .await?;
    wake(&state);
    Ok((StatusCode::CREATED, Json(ticket)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveBody {
    pub to: String,
    pub comment: Option<String>,
    pub assignee: Option<String>,
    /// RFC 3339, e.g. `2026-12-01T00:00:00Z` ...
    pub deadline: Option<String>,
    /// ... or milliseconds since the epoch.
    pub deadline_ms: Option<i64>,
    /// Workflow endpoint only: the person in the external system who made the move.
    pub by: Option<String>,
}

async fn move_by_api(
    State(state): State<PeopleState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<MoveBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operator)?;
    let by = caller.name.clone();
    do_move(state, id, body, move |_| Ok(by)).await
}

/// The external workflow system moves a ticket: an operator token names the system; `by` in
/// the body names the person, recorded as `person (system)`.
async fn move_by_workflow(
    State(state): State<PeopleState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<MoveBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operator)?;
    let system = caller.name.clone();
    do_move(state, id, body, move |b| {
        let person =
            b.by.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    ApiError(
                        StatusCode::BAD_REQUEST,
                        "the workflow endpoint needs `by`: who made the move".into(),
                    )
                })?;
        Ok(format!("{person} ({system})"))
    })
    .await
}

async fn do_move(
    state: PeopleState,
    id: String,
    body: Result<Json<MoveBody>, axum::extract::rejection::JsonRejection>,
    by: impl FnOnce(&MoveBody) -> Result<String, ApiError>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let Json(b) = body.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let by = by(&b)?;
    let to = TicketState::parse(&b.to).ok_or_else(|| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "to {:?} is not one of found, dispatched, rectifying, rectified, verified, closed",
                b.to
            ),
        )
    })?;
    let deadline = match &b.deadline {
        Some(d) => Some(crate::notify::escalation::parse_ms(d).ok_or_else(|| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("deadline {d:?} is not an RFC 3339 time"),
            )
        })?),
        None => b.deadline_ms,
    };
    if b.comment.as_ref().is_some_and(|c| c.len() > 4000) || by.len() > 200 {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "comment or by is too long".into(),
        ));
    }
    let ticket = with_store(&state, move |conn, config| {
        let m = Move {
            to,
            by: &by,
            at: drivers::now_millis(),
            comment: b.comment.as_deref(),
            assignee: b.assignee.as_deref(),
            deadline,
        };
        tstore::move_ticket(conn, config, id, &m).map_err(ticket_error)
    })
    .await?;
    wake(&state);
    Ok(Json(ticket).into_response())
}

fn wake(state: &PeopleState) {
    if let Some(w) = &state.ticket_wake {
        w.notify_one();
    }
}

// ----------------------------------------------------------- acknowledge links ---

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{t}</title></head><body style=\"font-family:sans-serif;max-width:40em;margin:2em auto\">\
         <h1>{t}</h1>{body}</body></html>",
        t = esc(title)
    );
    (status, Html(html)).into_response()
}

fn link_refused(e: &TokenError) -> Response {
    match e {
        TokenError::Expired => page(
            StatusCode::GONE,
            "链接已过期 / Link expired",
            "<p>请在控制台确认报警。Please acknowledge in the console.</p>",
        ),
        TokenError::Forged | TokenError::Malformed => page(
            StatusCode::FORBIDDEN,
            "链接无效 / Invalid link",
            "<p>此链接无法验证。This link cannot be verified.</p>",
        ),
    }
}

/// GET shows what the link would do and a button: mail scanners that prefetch links must not
/// acknowledge alarms.
async fn ack_page(State(state): State<PeopleState>, Path(token): Path<String>) -> Response {
    let claim =
        match signing::verify_ack_token(&state.link_secret, &token, drivers::now_millis() / 1000) {
            Ok(c) => c,
            Err(e) => return link_refused(&e),
        };
    let (tx, rx) = oneshot::channel();
    let alarm = match state
        .commands
        .send(Command::Alarms(crate::engine_task::AlarmFilter::All, tx))
        .await
    {
        Ok(()) => rx
            .await
            .ok()
            .and_then(|all| all.into_iter().find(|a| a.alarm_id == claim.alarm_id)),
        Err(_) => None,
    };
    let Some(alarm) = alarm else {
        return page(
            StatusCode::NOT_FOUND,
            "报警不存在 / No such alarm",
            "<p>该报警已结束或不存在。The alarm has finished or does not exist.</p>",
        );
    };
    let body = format!(
        "<p><strong>{msg}</strong></p><p>{site} · {area} · {point} · {prio} · {state}</p>\
         <form method=\"post\"><p><label>备注 / Comment<br><textarea name=\"comment\" rows=\"3\" cols=\"40\"></textarea></label></p>\
         <p><button type=\"submit\">确认报警 / Acknowledge</button> ({who})</p></form>",
        msg = esc(&alarm.message),
        site = esc(&alarm.site),
        area = esc(&alarm.area),
        point = esc(&alarm.point),
        prio = esc(alarm.priority),
        state = esc(alarm.state),
        who = esc(&claim.contact),
    );
    page(StatusCode::OK, "确认报警 / Acknowledge alarm", &body)
}

async fn ack_post(
    State(state): State<PeopleState>,
    Path(token): Path<String>,
    body: String,
) -> Response {
    let claim =
        match signing::verify_ack_token(&state.link_secret, &token, drivers::now_millis() / 1000) {
            Ok(c) => c,
            Err(e) => return link_refused(&e),
        };
    let comment = form_field(&body, "comment").filter(|c| !c.trim().is_empty());
    if comment.as_ref().is_some_and(|c| c.len() > 4000) {
        return page(StatusCode::BAD_REQUEST, "备注过长 / Comment too long", "");
    }
    let by = format!("{} (e-mail link)", claim.contact);
    let (reply, rx) = oneshot::channel();
    let cmd = Command::Acknowledge {
        id: claim.alarm_id,
        by,
        comment,
        reply,
    };
    if state.commands.send(cmd).await.is_err() {
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            "服务不可用 / Unavailable",
            "",
        );
    }
    match rx.await {
        Ok(Ok(alarm)) => page(
            StatusCode::OK,
            "已确认 / Acknowledged",
            &format!(
                "<p>{}</p><p>{} · {}</p>",
                esc(&alarm.message),
                esc(&claim.contact),
                esc(alarm.state)
            ),
        ),
        Ok(Err(alert_rules::CommandError::UnknownAlarm(_))) => page(
            StatusCode::NOT_FOUND,
            "报警不存在 / No such alarm",
            "<p>该报警已结束。The alarm has finished.</p>",
        ),
        Ok(Err(e)) => page(
            StatusCode::CONFLICT,
            "无需确认 / Nothing to acknowledge",
            &format!("<p>{}</p>", esc(&e.to_string())),
        ),
        Err(_) => page(
            StatusCode::SERVICE_UNAVAILABLE,
            "服务不可用 / Unavailable",
            "",
        ),
    }
}

/// One field of an `application/x-www-form-urlencoded` body.
fn form_field(body: &str, name: &str) -> Option<String> {
    body.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_are_decoded() {
        assert_eq!(
            form_field("comment=%E5%B7%B2%E5%A4%84%E7%90%86+ok&x=1", "comment").as_deref(),
            Some("已处理 ok")
        );
        assert_eq!(form_field("x=1", "comment"), None);
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%4"), "%4");
    }
}
