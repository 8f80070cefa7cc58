//! Tickets in the embedded store. Every change is one transaction: the ticket row, its history
//! record (who, when, comment) and, when a workflow webhook is configured, the outbox row that
//! tells the external system; so the system hears of every change at least once, in order.

use alert_rules::Millis;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde::Serialize;
use serde_json::{Value, json};

use super::machine::{self, Move, MoveError, TicketState};
use crate::config::Config;
use crate::event::rfc3339;

#[derive(Debug, Clone, Serialize)]
pub struct Ticket {
    pub ticket_id: i64,
    pub site: String,
    pub state: &'static str,
    pub title: String,
    pub description: String,
    pub point: Option<String>,
    pub area: Option<String>,
    pub alarm_id: Option<i64>,
    pub alarm_event_id: Option<String>,
    pub assignee: Option<String>,
    pub deadline: Option<String>,
    pub overdue: bool,
    pub created_at: String,
    pub created_by: String,
    pub updated_at: String,
    /// Changes so far (1 = created).
    pub seq: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<Step>>,
}

/// One recorded change.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub seq: i64,
    pub from: Option<String>,
    pub to: String,
    pub by: String,
    pub at: String,
    pub comment: Option<String>,
    pub assignee: Option<String>,
    pub deadline: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct NewTicket {
    pub title: String,
    pub description: String,
    pub point: Option<String>,
    pub area: Option<String>,
    pub alarm_id: Option<i64>,
    pub alarm_event_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    #[error("no ticket has id {0}")]
    NotFound(i64),
    #[error(transparent)]
    Refused(#[from] MoveError),
    #[error("store: {0}")]
    Store(#[from] rusqlite::Error),
}

/// Which tickets a list shows.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub state: Option<TicketState>,
    pub assignee: Option<String>,
    pub point: Option<String>,
    pub area: Option<String>,
    pub overdue: Option<bool>,
    pub limit: u32,
}

const COLUMNS: &str =
    "id, state, title, description, point, area, alarm_id, alarm_event_id, assignee,
    deadline_ms, created_ms, created_by, updated_ms, seq";

fn row(site: &str, now: Millis, r: &rusqlite::Row<'_>) -> rusqlite::Result<Ticket> {
    let state = TicketState::parse(&r.get::<_, String>(1)?).unwrap_or(TicketState::Found);
    let deadline: Option<Millis> = r.get(9)?;
    Ok(Ticket {
        ticket_id: r.get(0)?,
        site: site.to_owned(),
        state: state.as_str(),
        title: r.get(2)?,
        description: r.get(3)?,
        point: r.get(4)?,
        area: r.get(5)?,
        alarm_id: r.get(6)?,
        alarm_event_id: r.get(7)?,
        assignee: r.get(8)?,
        deadline: deadline.map(rfc3339),
        overdue: machine::overdue(state, deadline, now),
        created_at: rfc3339(r.get(10)?),
        created_by: r.get(11)?,
        updated_at: rfc3339(r.get(12)?),
        seq: r.get(13)?,
        history: None,
    })
}

pub fn get(
    conn: &Connection,
    site: &str,
    id: i64,
    now: Millis,
) -> rusqlite::Result<Option<Ticket>> {
    let Some(mut t) = conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM tickets WHERE id = ?1"),
            params![id],
            |r| row(site, now, r),
        )
        .optional()?
    else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT seq, from_state, to_state, by, at_ms, comment, assignee, deadline_ms FROM ticket_events
         WHERE ticket_id = ?1 ORDER BY seq",
    )?;
    let history = stmt
        .query_map(params![id], |r| {
            Ok(Step {
                seq: r.get(0)?,
                from: r.get(1)?,
                to: r.get(2)?,
                by: r.get(3)?,
                at: rfc3339(r.get(4)?),
                comment: r.get(5)?,
                assignee: r.get(6)?,
                deadline: r.get::<_, Option<Millis>>(7)?.map(rfc3339),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    t.history = Some(history);
    Ok(Some(t))
}

pub fn list(
    conn: &Connection,
    site: &str,
    f: &Filter,
    now: Millis,
) -> rusqlite::Result<Vec<Ticket>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM tickets
         WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR assignee = ?2)
           AND (?3 IS NULL OR point = ?3) AND (?4 IS NULL OR area = ?4)
         ORDER BY id DESC LIMIT ?5"
    ))?;
    let rows = stmt.query_map(
        params![
            f.state.map(TicketState::as_str),
            f.assignee,
            f.point,
            f.area,
            f.limit.max(1)
        ],
        |r| row(site, now, r),
    )?;
    let mut out = Vec::new();
    for t in rows {
        let t = t?;
        if f.overdue.is_none_or(|o| o == t.overdue) {
            out.push(t);
        }
    }
    Ok(out)
}

/// Open a ticket (state `found`). Returns it with its history.
pub fn create(
    conn: &mut Connection,
    config: &Config,
    new: &NewTicket,
    by: &str,
    now: Millis,
) -> Result<Ticket, TicketError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let id = insert(&tx, config, new, by, now)?;
    tx.commit()?;
    get(conn, &config.site.id, id, now)?.ok_or(TicketError::NotFound(id))
}

fn insert(
    tx: &Transaction<'_>,
    config: &Config,
    new: &NewTicket,
    by: &str,
    now: Millis,
) -> rusqlite::Result<i64> {
    tx.execute(
        "INSERT INTO tickets (state, title, description, point, area, alarm_id, alarm_event_id, created_ms, created_by, updated_ms, seq)
         VALUES ('found', ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?7, 1)",
        params![new.title, new.description, new.point, new.area, new.alarm_id, new.alarm_event_id, now, by],
    )?;
    let id = tx.last_insert_rowid();
    tx.execute(
        "INSERT INTO ticket_events (ticket_id, seq, from_state, to_state, by, at_ms, comment) VALUES (?1, 1, NULL, 'found', ?2, ?3, ?4)",
        params![id, by, now, (!new.description.is_empty()).then_some(&new.description)],
    )?;
    announce(tx, config, id, "created", None, "found", by, now, None)?;
    tracing::info!(ticket_id = id, by, "Hazard ticket opened.");
    Ok(id)
}

/// An alarm opens a ticket (once per alarm event). Returns 1 when a ticket was opened.
pub fn open_for_alarm(
    tx: &Transaction<'_>,
    config: &Config,
    event: &Value,
    now: Millis,
) -> rusqlite::Result<usize> {
    let s = |k: &str| event[k].as_str().map(str::to_owned);
    let Some(event_id) = s("id") else {
        return Ok(0);
    };
    let exists: Option<i64> = tx
        .query_row(
            "SELECT id FROM tickets WHERE alarm_event_id = ?1",
            params![event_id],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_some() {
        return Ok(0);
    }
    let new = NewTicket {
        title: format!("Alarm: {}", s("message").unwrap_or_default()),
        description: String::new(),
        point: s("point"),
        area: s("area").filter(|a| !a.is_empty()),
        alarm_id: event["alarm_id"].as_i64(),
        alarm_event_id: Some(event_id),
    };
    insert(tx, config, &new, "alarm", now)?;
    Ok(1)
}

/// Move a ticket. Refusals say why (see [`MoveError`]).
pub fn move_ticket(
    conn: &mut Connection,
    config: &Config,
    id: i64,
    m: &Move<'_>,
) -> Result<Ticket, TicketError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: Option<(String, i64)> = tx
        .query_row(
            "SELECT state, seq FROM tickets WHERE id = ?1",
            params![id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((state, seq)) = current else {
        return Err(TicketError::NotFound(id));
    };
    let from = TicketState::parse(&state).unwrap_or(TicketState::Found);
    let rectified_by: Option<String> = tx
        .query_row(
            "SELECT by FROM ticket_events WHERE ticket_id = ?1 AND to_state = 'rectified' ORDER BY seq DESC LIMIT 1",
            params![id],
            |r| r.get(0),
        )
        .optional()?;
    machine::check(from, m, rectified_by.as_deref())?;
    let seq = seq + 1;
    tx.execute(
        "UPDATE tickets SET state = ?2, seq = ?3, updated_ms = ?4,
             assignee = COALESCE(?5, assignee), deadline_ms = COALESCE(?6, deadline_ms), overdue_state = NULL
         WHERE id = ?1",
        params![id, m.to.as_str(), seq, m.at, m.assignee, m.deadline],
    )?;
    tx.execute(
        "INSERT INTO ticket_events (ticket_id, seq, from_state, to_state, by, at_ms, comment, assignee, deadline_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![id, seq, from.as_str(), m.to.as_str(), m.by, m.at, m.comment, m.assignee, m.deadline],
    )?;
    announce(
        &tx,
        config,
        id,
        "moved",
        Some(from.as_str()),
        m.to.as_str(),
        m.by,
        m.at,
        m.comment,
    )?;
    tx.commit()?;
    tracing::info!(
        ticket_id = id,
        from = from.as_str(),
        to = m.to.as_str(),
        by = m.by,
        "Hazard ticket moved."
    );
    get(conn, &config.site.id, id, m.at)?.ok_or(TicketError::NotFound(id))
}

/// Announce tickets whose deadline passed (once per state they are overdue in), to the workflow
/// webhook and by e-mail to the chains covering them. Returns (tickets announced, mails queued).
pub fn check_overdue(
    conn: &mut Connection,
    config: &Config,
    now: Millis,
) -> rusqlite::Result<(usize, usize)> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut mails = 0;
    let due: Vec<(i64, String)> = {
        let mut stmt = tx.prepare_cached(
            "SELECT id, state FROM tickets WHERE state IN ('dispatched', 'rectifying') AND deadline_ms < ?1
               AND (overdue_state IS NULL OR overdue_state <> state)",
        )?;
        stmt.query_map(params![now], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?
    };
    for (id, state) in &due {
        tx.execute(
            "UPDATE tickets SET overdue_state = state WHERE id = ?1",
            params![id],
        )?;
        announce(
            &tx,
            config,
            *id,
            "overdue",
            Some(state),
            state,
            "sentinel",
            now,
            None,
        )?;
        tracing::warn!(ticket_id = id, state = %state, "Hazard ticket is overdue.");
        // Overdue work escalates to the responsible people above the first tier.
        let ticket = tx.query_row(
            &format!("SELECT {COLUMNS} FROM tickets WHERE id = ?1"),
            params![id],
            |r| row(&config.site.id, now, r),
        )?;
        mails += crate::notify::escalation::queue_ticket_overdue(&tx, config, &ticket, now)?;
    }
    tx.commit()?;
    Ok((due.len(), mails))
}

/// Queue the change for the workflow webhook (if configured).
#[allow(clippy::too_many_arguments)]
fn announce(
    tx: &Transaction<'_>,
    config: &Config,
    id: i64,
    change: &str,
    from: Option<&str>,
    to: &str,
    by: &str,
    at: Millis,
    comment: Option<&str>,
) -> rusqlite::Result<()> {
    let Some(hook) = &config.tickets.webhook else {
        return Ok(());
    };
    let site = &config.site.id;
    let ticket = tx.query_row(
        &format!("SELECT {COLUMNS} FROM tickets WHERE id = ?1"),
        params![id],
        |r| row(site, at, r),
    )?;
    let event_id = match change {
        "overdue" => format!("{site}-ticket-{id}-{}-overdue-{to}", ticket.seq),
        _ => format!("{site}-ticket-{id}-{}", ticket.seq),
    };
    let body = json!({
        "kind": "ticket",
        "id": event_id,
        "change": change,
        "from": from,
        "to": to,
        "by": by,
        "at": rfc3339(at),
        "comment": comment,
        "ticket": ticket,
    });
    tx.execute(
        "INSERT OR IGNORE INTO outbox (channel, event_id, body, created_ms) VALUES (?1, ?2, ?3, ?4)",
        params![format!("webhook:{hook}"), event_id, body.to_string(), at],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a test: a panic is a failed test

    use super::*;
    use crate::config::{EnvSource, load_str};

    fn setup(name: &str) -> (Connection, Config, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("sentinel-tickets-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let conn = crate::store::open_writer(&dir).unwrap();
        let config = load_str(
            r#"
[site]
id = "t"
name = "T"

[[notify.webhook]]
name = "wf"
url = "http://127.0.0.1:9/"

[tickets]
webhook = "wf"
"#,
            EnvSource::Map(Default::default()),
        )
        .unwrap();
        (conn, config, dir)
    }

    fn outbox(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT event_id FROM outbox WHERE channel = 'webhook:wf' ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn an_alarm_opens_one_ticket_and_changes_are_queued_for_the_workflow() {
        let (mut conn, config, dir) = setup("alarm");
        let event = serde_json::json!({
            "id": "t-5-1", "alarm_id": 5, "point": "NH3-101", "area": "room", "message": "NH3-101 HH 60 ppm"
        });
        let tx = conn.transaction().unwrap();
        assert_eq!(open_for_alarm(&tx, &config, &event, 1_000).unwrap(), 1);
        assert_eq!(
            open_for_alarm(&tx, &config, &event, 1_001).unwrap(),
            0,
            "once per alarm event"
        );
        tx.commit().unwrap();
        let t = list(
            &conn,
            "t",
            &Filter {
                limit: 10,
                ..Filter::default()
            },
            1_000,
        )
        .unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].created_by, "alarm");
        assert_eq!(t[0].alarm_id, Some(5));
        assert_eq!(t[0].point.as_deref(), Some("NH3-101"));

        let id = t[0].ticket_id;
        let m = Move {
            to: TicketState::Dispatched,
            by: "zhang",
            at: 2_000,
            comment: None,
            assignee: Some("li"),
            deadline: Some(3_000),
        };
        move_ticket(&mut conn, &config, id, &m).unwrap();
        let refused = move_ticket(
            &mut conn,
            &config,
            id,
            &Move {
                to: TicketState::Closed,
                ..m.clone()
            },
        );
        assert!(matches!(refused, Err(TicketError::Refused(_))));
        assert!(matches!(
            move_ticket(&mut conn, &config, 99, &m),
            Err(TicketError::NotFound(99))
        ));

        // Overdue once per state, not at every check.
        assert_eq!(check_overdue(&mut conn, &config, 3_001).unwrap().0, 1);
        assert_eq!(check_overdue(&mut conn, &config, 4_000).unwrap().0, 0);
        assert_eq!(
            outbox(&conn),
            [
                "t-ticket-1-1",
                "t-ticket-1-2",
                "t-ticket-1-2-overdue-dispatched"
            ]
        );
        let got = get(&conn, "t", id, 4_000).unwrap().unwrap();
        assert!(got.overdue);
        assert_eq!(
            got.history.unwrap().len(),
            2,
            "a refused move leaves no trace"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
