//! The e-mail channel: drains the `email` outbox (one row per contact and notice, queued by
//! the escalation router) through SMTP with lettre. A 2xx answer to the message means
//! delivered; anything else (server down, 4xx, 5xx, timeout) is retried with backoff, in order,
//! until it goes through. The row's id (`{event}-t{tier}-{contact}`) is also the Message-ID's
//! local part, so a receiving system can recognise a message sent twice.

use std::sync::Arc;
use std::time::Duration;

use drivers::now_millis;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::escalation::{EMAIL_CHANNEL, Envelope};
use super::outbox::{Outbox, Pending};
use crate::config::{EmailNotify, SmtpTls};
use crate::metrics::Metrics;

const IDLE_CHECK: Duration = Duration::from_secs(5);

pub struct EmailSender {
    pub config: EmailNotify,
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
    let mut builder = builder.port(c.port).timeout(Some(Duration::from_millis(c.timeout_ms)));
    if let Some(user) = &c.username {
        let password = c.password.as_ref().map(|p| p.expose().to_owned()).unwrap_or_default();
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
                .singlepart(SinglePart::builder().header(ContentType::TEXT_PLAIN).body(r.text))
                .singlepart(SinglePart::builder().header(ContentType::TEXT_HTML).body(r.html)),
        )
        .map_err(|err| err.to_string())
}

impl EmailSender {
    /// Deliver until `shutdown`; after `drain`, return once the outbox is empty.
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
        let cap = Duration::from_secs(self.config.max_backoff_secs);
        let mut failing_since: Option<tokio::time::Instant> = None;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let head = match self.outbox.head().await {
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
            let Some(item) = head else {
                if drain.is_cancelled() {
                    return;
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = drain.cancelled() => {}
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(IDLE_CHECK) => {}
                }
                continue;
            };
            let wait = item.next_attempt_ms - now_millis();
            if wait > 0 {
                // Woken early by new notices is fine: the head is still this row.
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
                }
            }
            let outcome = self.send(&mailer, &from, &item).await;
            match outcome {
                Ok(()) => {
                    self.metrics.deliveries.inc(channel, "delivered");
                    if let Some(since) = failing_since.take() {
                        tracing::info!(%channel, down_secs = since.elapsed().as_secs(), "E-mail deliveries resumed.");
                    }
                    if let Err(error) = self.outbox.delivered(item.id, now_millis()).await {
                        tracing::error!(%error, %channel, "Marking a delivered notice failed; it may be sent again.");
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
                    if failing_since.is_none() || item.attempts.is_power_of_two() {
                        tracing::warn!(%channel, event_id = %item.event_id, attempts = item.attempts + 1, %error, retry_in_ms = delay.as_millis() as u64, "E-mail delivery failed; will retry.");
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

    async fn send(&self, mailer: &AsyncSmtpTransport<Tokio1Executor>, from: &Mailbox, item: &Pending) -> Result<(), Failure> {
        let envelope: Envelope =
            serde_json::from_str(&item.body).map_err(|e| Failure::Permanent(format!("unreadable notice: {e}")))?;
        let msg = message(from, &item.event_id, &envelope).map_err(Failure::Permanent)?;
        match mailer.send(msg).await {
            Ok(resp) if resp.is_positive() => Ok(()),
            Ok(resp) => Err(Failure::Retry(format!("SMTP {}", resp.code()))),
            Err(e) => Err(Failure::Retry(e.to_string())),
        }
    }
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
