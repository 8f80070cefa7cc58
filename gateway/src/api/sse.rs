//! `GET /api/v1/events`: live changes as Server-Sent Events.
//!
//! Only what the store has committed is sent (the writer's broadcast after each commit), so a
//! page never shows an alarm that is not on disk. Events: `alarm` (the alarm event JSON),
//! `mode`, `risk_colour`, `ticket`, `comment`, `status` (the site status, on connect and on change) and
//! `lagged` when this client fell too far behind and must refetch. A comment every 15 s keeps
//! proxies from closing an idle stream.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{OwnedSemaphorePermit, broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::{ApiError, AppState};
use crate::engine_task::SiteStatus;
use crate::store::{Committed, JournalEntry};

const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub async fn events(State(state): State<AppState>) -> Response {
    let Ok(permit) = Arc::clone(&state.event_streams).try_acquire_owned() else {
        return ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many live-event streams are open; try again later".into(),
        )
        .into_response();
    };
    let stream = stream(Feed {
        committed: state.committed.subscribe(),
        status: state.status.clone(),
        pending: VecDeque::new(),
        shutdown: state.shutdown.clone(),
        first: true,
        _permit: permit,
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response()
}

struct Feed {
    committed: broadcast::Receiver<Arc<Committed>>,
    status: watch::Receiver<SiteStatus>,
    pending: VecDeque<Event>,
    shutdown: CancellationToken,
    first: bool,
    /// Held while the stream is open: the cap on concurrent streams.
    _permit: OwnedSemaphorePermit,
}

fn stream(feed: Feed) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold(feed, |mut feed| async move {
        if feed.first {
            feed.first = false;
            let status = feed.status.borrow_and_update().clone();
            let event = status_event(&status).retry(Duration::from_secs(2));
            return Some((Ok(event), feed));
        }
        loop {
            if let Some(event) = feed.pending.pop_front() {
                return Some((Ok(event), feed));
            }
            tokio::select! {
                () = feed.shutdown.cancelled() => return None,
                received = feed.committed.recv() => match received {
                    Ok(committed) => feed.pending.extend(committed.events.iter().map(journal_event)),
                    Err(RecvError::Lagged(missed)) => feed.pending.push_back(
                        Event::default().event("lagged").data(serde_json::json!({ "missed": missed }).to_string()),
                    ),
                    Err(RecvError::Closed) => return None,
                },
                changed = feed.status.changed() => match changed {
                    Ok(()) => {
                        let status = feed.status.borrow_and_update().clone();
                        feed.pending.push_back(status_event(&status));
                    }
                    Err(_) => return None,
                },
            }
        }
    })
}

fn status_event(status: &SiteStatus) -> Event {
    Event::default()
        .event("status")
        .data(serde_json::to_string(status).unwrap_or_default())
}

/// The SSE event name of a journal record: alarm transitions carry the alarm; other records
/// say what they are in their `kind`.
pub fn event_name(entry: &JournalEntry) -> &'static str {
    if entry.alarm.is_some() {
        return "alarm";
    }
    let kind = serde_json::from_str::<serde_json::Value>(&entry.body)
        .ok()
        .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_owned));
    match kind.as_deref() {
        Some("mode") => "mode",
        Some("risk_colour") => "risk_colour",
        Some("ticket") => "ticket",
        Some("comment") => "comment",
        _ => "journal",
    }
}

fn journal_event(entry: &JournalEntry) -> Event {
    // The body is one line of JSON; SSE data must not contain raw newlines, and JSON never has.
    Event::default()
        .event(event_name(entry))
        .id(entry.event_id.clone())
        .data(entry.body.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: &str) -> JournalEntry {
        JournalEntry {
            event_id: "e1".into(),
            seq: 0,
            at: 0,
            body: body.into(),
            alarm: None,
            notify: false,
        }
    }

    #[test]
    fn journal_records_are_named_by_their_kind() {
        assert_eq!(
            event_name(&entry(r#"{"kind":"mode","scope":"TT-1"}"#)),
            "mode"
        );
        assert_eq!(
            event_name(&entry(r#"{"kind":"risk_colour","unit":"tank"}"#)),
            "risk_colour"
        );
        assert_eq!(event_name(&entry(r#"{"kind":"comment"}"#)), "comment");
        assert_eq!(event_name(&entry(r#"{"kind":"reload"}"#)), "journal");
        assert_eq!(event_name(&entry("not json")), "journal");
    }
}
