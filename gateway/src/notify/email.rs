//! The e-mail channel: drains the `email` outbox (one row per contact and notice, queued by
//! the escalation router) through SMTP with lettre. A 2xx answer to the message means
//! delivered; anything else (server down, 4xx, 5xx, timeout) is retried with backoff, in order,
//! until it goes through. The row's id (`{event}-t{tier}-{contact}`) is also the Message-ID's
//! local part, so a receiving system can recognise a message sent twice.
//!
//! A notice held back by grouping or quiet hours (no attempt yet, `next_attempt_ms` in the
//! future) is passed over, so it never delays the notices behind it; when it falls due, every
//! undelivered notice of the same group for the same person goes out with it as one message.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alert_rules::Millis;
use drivers::now_millis;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::escalation::{EMAIL_CHANNEL, Envelope};
use super::outbox::{Outbox, Pending};
use crate::config::{EmailNotify, SmtpTls};
use crate::metrics::Metrics;

const IDLE_CHECK: Duration = Duration::from_secs(5);
/// Failed deliveries are logged at most this often while they keep failing.
const WARN_EVERY: Duration = Duration::from_secs(30);

pub struct EmailSender {
    pub config: EmailNotify,
    pub data_dir: PathBuf,
    pub outbox: Outbox,
    pub wake: Arc<Notify>,
    pub metrics: Arc<Metrics>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("SMTP transport: {0}")]
    Transport(#[from] lettre::transport::smtp::Error),
    #[error("sender address: {0}")]
    From(#[from] lettre::address::AddressError),
}

pub fn transport(c: &EmailNotify) -> Result<AsyncSmtpTransport<Tokio1Executor>, BuildError> {
    let builder = match c.tls {
        SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&c.host)?,
        SmtpTls::Implicit => AsyncSmtpTransport::<Tokio1Executor>::relay(&c.host)?,
        SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.host),
    };
    let mut builder = builder
        .port(c.port)
        .timeout(Some(Duration::from_millis(c.timeout_ms)));
    if let Some(user) = &c.username {
        let password = c
            .password
            .as_ref()
            .map(|p| p.expose().to_owned())
            .unwrap_or_default();
        builder = builder.credentials(Credentials::new(user.clone(), password));
    }
    Ok(builder.build())
}

/// The message for one queued notice.
pub fn message(from: &Mailbox, item_id: &str, e: &Envelope) -> Result<Message, String> {
    let to: Mailbox = format!("{} <{}>", e.name.replace(['<', '>', '"'], ""), e.to)
        .parse()
        .or_else(|_| e.to.parse())
        .map_err(|err| format!("recipient {:?}: {err}", e.to))?;
    let r = super::templates::render(e);
    let domain = from.email.domain().to_owned();
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(r.subject)
        .message_id(Some(format!("<{item_id}@{domain}>")))
        .multipart(
            MultiPart::alternative()
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .body(r.text),
                )
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(r.html),
                ),
        )
        .map_err(|err| err.to_string())
}

impl EmailSender {
    /// Deliver until `shutdown`; after `drain`, return once nothing more is due (what waits for
    /// a retry or is held back stays in the outbox for the next start).
    pub async fn run(self, drain: CancellationToken, shutdown: CancellationToken) {
        let channel = EMAIL_CHANNEL;
        let (mailer, from) = match (transport(&self.config), self.config.from.parse::<Mailbox>()) {
            (Ok(t), Ok(f)) => (t, f),
            (Err(error), _) => {
                tracing::error!(%error, "E-mail transport could not be built; notices stay in the outbox.");
                return;
            }
            (_, Err(error)) => {
                tracing::error!(%error, "notify.email.from is not an address; notices stay in the outbox.");
                return;
            }
        };
        let conn = match crate::store::open_reader(&self.data_dir) {
            Ok(c) => Arc::new(Mutex::new(c)),
            Err(error) => {
                tracing::error!(%error, "The e-mail sender could not open the store; notices stay in the outbox.");
                return;
            }
        };
        let cap = Duration::from_secs(self.config.max_backoff_secs);
        let mut failing_since: Option<tokio::time::Instant> = None;
        // While the server refuses, every waiting notice fails in turn: one line per
        // `WARN_EVERY`, with how many failed since the last, instead of one per notice.
        let mut last_warn: Option<tokio::time::Instant> = None;
        let mut failed_quietly = 0u64;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let head = match blocking(&conn, move |c| next(c, now_millis(), cap)).await {
                Ok(h) => h,
                Err(error) => {
                    tracing::error!(%error, %channel, "Reading the outbox failed.");
                    if sleep_or_cancel(&shutdown, Duration::from_secs(1)).await {
                        return;
                    }
                    continue;
                }
            };
            if let Ok(n) = self.outbox.pending_count().await {
                self.metrics.outbox_pending.set(channel, "", n);
            }
            let (item, due) = head;
            let Some(item) = item else {
                if drain.is_cancelled() {
                    return;
                }
                // At most 5 s at a time: a wall clock stepped back must not turn a retry time
                // written before the step into hours of silence.
                let idle = due.map_or(IDLE_CHECK, |at| {
                    Duration::from_millis((at - now_millis()).clamp(0, 5_000) as u64)
                });
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = drain.cancelled() => {}
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(idle) => {}
                }
                continue;
            };
            let outcome = self.send(&mailer, &from, &item, &conn).await;
            match outcome {
                Ok(ids) => {
                    self.metrics.deliveries.inc(channel, "delivered");
                    last_warn = None;
                    if let Some(since) = failing_since.take() {
                        tracing::info!(%channel, down_secs = since.elapsed().as_secs(), "E-mail deliveries resumed.");
                    }
                    for id in ids {
                        if let Err(error) = self.outbox.delivered(id, now_millis()).await {
                            tracing::error!(%error, %channel, "Marking a delivered notice failed; it may be sent again.");
                        }
                    }
                }
                Err(Failure::Permanent(error)) => {
                    // A notice that can never be written (bad address in an old row) must not
                    // block the ones behind it: recorded, counted, skipped.
                    self.metrics.deliveries.inc(channel, "rejected");
                    tracing::error!(%channel, event_id = %item.event_id, %error, "E-mail notice cannot be sent; skipped.");
                    let _ = self.outbox.failed(item.id, now_millis(), error).await;
                    let _ = self.outbox.delivered(item.id, now_millis()).await;
                }
                Err(Failure::Retry(error)) => {
                    self.metrics.deliveries.inc(channel, "failed");
                    let delay = super::backoff(item.attempts, cap);
                    if last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                        last_warn = Some(tokio::time::Instant::now());
                        tracing::warn!(%channel, event_id = %item.event_id, attempts = item.attempts + 1, %error, retry_in_ms = delay.as_millis() as u64, failed_since_last_warning = failed_quietly, "E-mail delivery failed; will retry.");
                        failed_quietly = 0;
                    } else {
                        failed_quietly += 1;
                    }
                    failing_since.get_or_insert_with(tokio::time::Instant::now);
                    let next = now_millis() + delay.as_millis() as i64;
                    if let Err(error) = self.outbox.failed(item.id, next, error).await {
                        tracing::error!(%error, %channel, "Recording a failed delivery failed.");
                    }
                }
            }
        }
    }

    /// Send one notice, or the group it heads; returns the outbox ids it covered.
    async fn send(
        &self,
        mailer: &AsyncSmtpTransport<Tokio1Executor>,
        from: &Mailbox,
        item: &Pending,
        conn: &Arc<Mutex<Connection>>,
    ) -> Result<Vec<i64>, Failure> {
        let envelope: Envelope = serde_json::from_str(&item.body)
            .map_err(|e| Failure::Permanent(format!("unreadable notice: {e}")))?;
        let mut ids = vec![item.id];
        let mut items = vec![envelope];
        if let Some(group) = items[0].group.clone() {
            let contact = items[0].contact.clone();
            let head = item.id;
            let others = blocking(conn, move |c| group_members(c, &contact, &group, head))
                .await
                .map_err(|e| Failure::Retry(e.to_string()))?;
            for (id, body) in others {
                if let Ok(e) = serde_json::from_str::<Envelope>(&body) {
                    ids.push(id);
                    items.push(e);
                }
            }
        }
        let msg = if items.len() == 1 {
            message(from, &item.event_id, &items[0]).map_err(Failure::Permanent)?
        } else {
            digest(from, &item.event_id, &items).map_err(Failure::Permanent)?
        };
        match mailer.send(msg).await {
            Ok(resp) if resp.is_positive() => Ok(ids),
            Ok(resp) => Err(Failure::Retry(format!("SMTP {}", resp.code()))),
            Err(e) => Err(Failure::Retry(e.to_string())),
        }
    }
}

/// Several grouped notices to one person as one message.
pub fn digest(from: &Mailbox, head_id: &str, items: &[Envelope]) -> Result<Message, String> {
    let first = items.first().ok_or("an empty group")?;
    let to: Mailbox = first
        .to
        .parse()
        .map_err(|err| format!("recipient {:?}: {err}", first.to))?;
    let r = super::templates::render_digest(items);
    let domain = from.email.domain().to_owned();
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(r.subject)
        .message_id(Some(format!("<{head_id}-group@{domain}>")))
        .multipart(
            MultiPart::alternative()
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .body(r.text),
                )
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(r.html),
                ),
        )
        .map_err(|err| err.to_string())
}

async fn blocking<T: Send + 'static>(
    conn: &Arc<Mutex<Connection>>,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
) -> rusqlite::Result<T> {
    let conn = Arc::clone(conn);
    tokio::task::spawn_blocking(move || {
        let conn = conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&conn)
    })
    .await
    .unwrap_or_else(|e| Err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))
}

/// The oldest notice that may go now, and when the next waiting one falls due.
///
/// A notice waits while it is held back (grouping, quiet hours: no attempt yet and a future
/// `next_attempt_ms`) or backs off after a failed attempt. One person's notices go in order: a
/// notice also waits behind an older one to the same contact that is backing off. Other
/// people's do not: an address the mail server refuses (550 user unknown) must not silence the
/// rest of the chain, nor must one person's full mailbox.
///
/// A retry time further ahead than `cap` (the longest backoff) was written before the wall
/// clock stepped back: such a notice is due now (see [`super::retry_wait`]). Held-back notices
/// keep their time: quiet hours are wall-clock hours.
fn next(
    conn: &Connection,
    now: Millis,
    cap: Duration,
) -> rusqlite::Result<(Option<Pending>, Option<Millis>)> {
    let latest_retry = now.saturating_add(cap.as_millis() as Millis);
    static NEXT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "SELECT {} FROM outbox o
             WHERE channel = ?1 AND delivered_ms IS NULL
               AND (next_attempt_ms <= ?2 OR (attempts > 0 AND next_attempt_ms > ?3))
               AND NOT EXISTS (SELECT 1 FROM outbox p
                 WHERE p.channel = ?1 AND p.delivered_ms IS NULL AND p.id < o.id
                   AND p.attempts > 0 AND p.next_attempt_ms > ?2 AND p.next_attempt_ms <= ?3
                   AND json_extract(p.body, '$.contact') = json_extract(o.body, '$.contact'))
             ORDER BY id LIMIT 1",
            Pending::COLUMNS
        )
    });
    let item = conn
        .prepare_cached(&NEXT)?
        .query_row(params![EMAIL_CHANNEL, now, latest_retry], Pending::from_row)
        .optional()?;
    let due: Option<Millis> = conn
        .prepare_cached(
            "SELECT MIN(next_attempt_ms) FROM outbox WHERE channel = ?1 AND delivered_ms IS NULL AND next_attempt_ms > ?2",
        )?
        .query_row(params![EMAIL_CHANNEL, now], |r| r.get(0))?;
    Ok((item, due))
}

/// Undelivered notices of the same group for the same person, other than the head.
fn group_members(
    conn: &Connection,
    contact: &str,
    group: &str,
    head: i64,
) -> rusqlite::Result<Vec<(i64, String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, body FROM outbox WHERE channel = ?1 AND delivered_ms IS NULL AND id <> ?4
           AND json_extract(body, '$.contact') = ?2 AND json_extract(body, '$.group') = ?3 ORDER BY id LIMIT 200",
    )?;
    stmt.query_map(params![EMAIL_CHANNEL, contact, group, head], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?
    .collect()
}

enum Failure {
    Retry(String),
    Permanent(String),
}

async fn sleep_or_cancel(shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = tokio::time::sleep(d) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: Duration = Duration::from_secs(300);

    fn queue(
        conn: &Connection,
        event: &str,
        contact: &str,
        attempts: u32,
        next_attempt_ms: Millis,
    ) {
        conn.execute(
            "INSERT INTO outbox (channel, event_id, body, created_ms, attempts, next_attempt_ms)
             VALUES (?1, ?2, ?3, 0, ?4, ?5)",
            params![
                EMAIL_CHANNEL,
                event,
                serde_json::json!({ "contact": contact }).to_string(),
                attempts,
                next_attempt_ms
            ],
        )
        .unwrap();
    }

    #[test]
    fn a_refused_address_delays_only_its_own_contact() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open_writer(dir.path()).unwrap();
        let now = 1_000_000;
        queue(&conn, "a1", "zhang", 3, now + 60_000); // refused, backing off
        queue(&conn, "a2", "zhang", 0, 0); // waits behind a1: one person's notices in order
        queue(&conn, "b1", "li", 0, 0); // another person: goes now
        queue(&conn, "c1", "wang", 0, now + 30_000); // held back by grouping
        let (item, due) = next(&conn, now, CAP).unwrap();
        assert_eq!(item.unwrap().event_id, "b1");
        assert_eq!(due, Some(now + 30_000));
        conn.execute(
            "UPDATE outbox SET delivered_ms = ?1 WHERE event_id = 'b1'",
            params![now],
        )
        .unwrap();
        let (item, due) = next(&conn, now, CAP).unwrap();
        assert!(item.is_none(), "nothing else is due");
        assert_eq!(due, Some(now + 30_000));
        // Once a1's retry falls due it goes first, then a2.
        let later = now + 60_000;
        assert_eq!(next(&conn, later, CAP).unwrap().0.unwrap().event_id, "a1");
    }

    #[test]
    fn a_retry_time_from_before_a_clock_step_back_is_due_now() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open_writer(dir.path()).unwrap();
        let now = 10 * 3_600_000;
        // Failed at 18:00 with a 30 s backoff; the clock is now 10:00.
        queue(&conn, "a1", "zhang", 1, 18 * 3_600_000 + 30_000);
        // Held by quiet hours until 18:00: that is wall-clock time, and it keeps it.
        queue(&conn, "b1", "li", 0, 18 * 3_600_000);
        let (item, _) = next(&conn, now, CAP).unwrap();
        assert_eq!(item.unwrap().event_id, "a1");
        conn.execute(
            "UPDATE outbox SET delivered_ms = ?1 WHERE event_id = 'a1'",
            params![now],
        )
        .unwrap();
        assert!(next(&conn, now, CAP).unwrap().0.is_none());
    }
}
