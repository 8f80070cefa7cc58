//! The webhook channel: POSTs the alarm event JSON to a URL. 2xx means delivered; anything else
//! is retried with backoff, in order, for as long as it takes.

use std::sync::Arc;
use std::time::Duration;

use drivers::now_millis;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::outbox::Outbox;
use crate::config::Webhook;
use crate::metrics::Metrics;

/// How often pending counts are refreshed while idle.
const IDLE_CHECK: Duration = Duration::from_secs(5);

pub struct WebhookSender {
    pub hook: Webhook,
    pub outbox: Outbox,
    pub wake: Arc<Notify>,
    pub metrics: Arc<Metrics>,
}

impl WebhookSender {
    pub fn channel_name(hook: &Webhook) -> String {
        format!("webhook:{}", hook.name)
    }

    /// Deliver until `stop`. After `drain` is cancelled, return as soon as the outbox is empty.
    pub async fn run(self, drain: CancellationToken, shutdown: CancellationToken) {
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_millis(self.hook.timeout_ms))
            .user_agent(concat!("sentinel/", env!("CARGO_PKG_VERSION")))
            .build()
        {
            Ok(c) => c,
            Err(error) => {
                tracing::error!(%error, webhook = %self.hook.name, "Webhook client could not be built; notifications stay in the outbox.");
                return;
            }
        };
        let channel = self.outbox.channel().to_owned();
        let cap = Duration::from_secs(self.hook.max_backoff_secs);
        let mut failing_since: Option<tokio::time::Instant> = None;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let head = match self.outbox.head().await {
                Ok((head, pending)) => {
                    self.metrics.outbox_pending.set(&channel, "", pending);
                    head
                }
                Err(error) => {
                    tracing::error!(%error, %channel, "Reading the outbox failed.");
                    if sleep_or_cancel(&shutdown, Duration::from_secs(1)).await {
                        return;
                    }
                    continue;
                }
            };
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
            let wait = super::retry_wait(item.next_attempt_ms, now_millis(), cap);
            if !wait.is_zero() && sleep_or_cancel(&shutdown, wait).await {
                return;
            }
            let mut request = client
                .post(&self.hook.url)
                .header("content-type", "application/json")
                .header("idempotency-key", &item.event_id)
                .header("x-sentinel-event-id", &item.event_id);
            // Signed at each attempt: the timestamp must be fresh for the receiver's replay window.
            if let Some(secret) = &self.hook.secret {
                let t = now_millis().div_euclid(1000);
                let signature = super::signing::webhook_signature(
                    secret.expose().as_bytes(),
                    t,
                    item.body.as_bytes(),
                );
                request = request.header(super::signing::SIGNATURE_HEADER, signature);
            }
            let result = request.body(item.body.clone()).send().await;
            let outcome = match result {
                Ok(resp) if resp.status().is_success() => Ok(()),
                Ok(resp) => Err(format!("HTTP {}", resp.status())),
                Err(e) => Err(if e.is_timeout() {
                    "timeout".to_owned()
                } else {
                    format!("{e}")
                }),
            };
            match outcome {
                Ok(()) => {
                    self.metrics.deliveries.inc(&channel, "delivered");
                    if let Some(since) = failing_since.take() {
                        tracing::info!(%channel, down_secs = since.elapsed().as_secs(), "Webhook deliveries resumed.");
                    }
                    if let Err(error) = self.outbox.delivered(item.id, now_millis()).await {
                        tracing::error!(%error, %channel, "Marking a delivered notification failed; it may be sent again.");
                    }
                }
                Err(error) => {
                    self.metrics.deliveries.inc(&channel, "failed");
                    let delay = super::backoff(item.attempts, cap);
                    if failing_since.is_none() || item.attempts.is_power_of_two() {
                        tracing::warn!(%channel, event_id = %item.event_id, attempts = item.attempts + 1, %error, retry_in_ms = delay.as_millis() as u64, "Webhook delivery failed; will retry.");
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
}

/// Sleep; true when shutdown came first.
async fn sleep_or_cancel(shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = tokio::time::sleep(d) => false,
    }
}
