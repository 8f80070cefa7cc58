//! The MQTT channel: alarm events to `{prefix}/{site}/alarms` (QoS 1) and the site status,
//! retained, at `{prefix}/{site}/status`, with a Last Will that marks the gateway offline.
//!
//! rumqttc's `publish` returns when the request is queued, not when the broker has the
//! message. So an event's outbox row is marked delivered only when the broker's PUBACK for the
//! packet id the event loop reported (`Outgoing::Publish(pkid)`) arrives. Up to
//! `max_in_flight` events are published in order before their PUBACKs are in, and the
//! acknowledged ones are marked delivered together, in the trip to the store that reads the
//! next ones. A lost connection, a refusal or a missing PUBACK leaves the row pending, and
//! sending starts again from the oldest pending event (at least once: receivers dedupe by
//! event `id`). The session is always clean: the outbox, not the broker, is this channel's
//! queue.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use drivers::mqtt::client::{self, Event, Qos, Session, Will};
use drivers::now_millis;
use serde_json::json;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::outbox::Outbox;
use crate::config::{MqttNotify, Site};
use crate::engine_task::Command;
use crate::event::rfc3339;
use crate::metrics::Metrics;

/// The outbox channel name of the MQTT publisher.
pub const CHANNEL: &str = "mqtt";

pub struct MqttSender {
    pub config: MqttNotify,
    pub site: Site,
    pub outbox: Outbox,
    pub wake: Arc<Notify>,
    pub metrics: Arc<Metrics>,
    /// To ask the engine for the open alarms (the status counts).
    pub commands: mpsc::Sender<Command>,
    /// The engine's live site status: published at once when it changes (colour, units,
    /// points online), so the regional map follows within a second.
    pub status: tokio::sync::watch::Receiver<crate::engine_task::SiteStatus>,
}

/// What a queued publish was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Alarm(i64),
    Status,
    /// Downsampled readings (QoS 0: no PUBACK).
    Readings,
}

struct InFlight {
    id: i64,
    event_id: String,
    attempts: u32,
    deadline: Instant,
}

/// The alarms published on this connection and not yet settled.
struct Window {
    max: usize,
    /// Published, waiting for the broker's PUBACK; oldest first.
    in_flight: VecDeque<InFlight>,
    /// Acknowledged by the broker, not yet marked delivered in the outbox.
    acked: Vec<i64>,
    /// The newest alarm published: while any is in flight, the next read starts after it.
    last_id: i64,
    /// A delivery failed: nothing new is published until the window is empty; then the
    /// outbox is read from its head again, so the failed alarm goes first (after its backoff).
    halted: bool,
    /// The outbox may hold alarms not read yet: set by a wake-up, a (re)connection, the retry
    /// timer or a read that filled the window; cleared by a read that came back short.
    more: bool,
    /// After a failed trip to the store, the next one waits until then.
    paused_until: Option<Instant>,
}

impl Window {
    fn new(max: usize) -> Window {
        Window {
            max: max.max(1),
            in_flight: VecDeque::new(),
            acked: Vec::new(),
            last_id: 0,
            halted: false,
            more: true,
            paused_until: None,
        }
    }

    /// Start again from the outbox's head: what was in flight is sent again (at least once).
    /// Acknowledged alarms stay to be marked delivered.
    fn restart(&mut self) {
        self.in_flight.clear();
        self.last_id = 0;
        self.halted = false;
        self.more = true;
    }

    /// How many alarms to read now; 0 for none.
    fn to_read(&self) -> usize {
        if self.halted || !self.more {
            return 0;
        }
        self.max.saturating_sub(self.in_flight.len())
    }

    /// Where the next read starts: after the newest alarm in flight, or at the outbox's head
    /// when nothing is. Reading from the head whenever it can keeps a stale position from
    /// skipping anything, whatever numbers the store hands out later.
    fn read_after(&self) -> i64 {
        if self.in_flight.is_empty() {
            0
        } else {
            self.last_id
        }
    }

    /// The oldest alarm, if its PUBACK is overdue. Deadlines grow along the window, so the
    /// overdue ones are at its front.
    fn pop_expired(&mut self, now: Instant) -> Option<InFlight> {
        if self.in_flight.front()?.deadline <= now {
            self.in_flight.pop_front()
        } else {
            None
        }
    }

    /// Remove alarm `id` from the window, wherever it is.
    fn take(&mut self, id: i64) -> Option<InFlight> {
        let at = self.in_flight.iter().position(|f| f.id == id)?;
        self.in_flight.remove(at)
    }
}

enum Link {
    Up,
    Down(String),
    Event(Event),
}

impl MqttSender {
    pub fn alarms_topic(&self) -> String {
        format!("{}/{}/alarms", self.config.topic_prefix, self.site.id)
    }

    pub fn status_topic(&self) -> String {
        format!("{}/{}/status", self.config.topic_prefix, self.site.id)
    }

    pub fn readings_topic(&self) -> String {
        format!("{}/{}/readings", self.config.topic_prefix, self.site.id)
    }

    /// The readings stored since `after`, per point (min, max, mean, last), as the payload of
    /// `{prefix}/{site}/readings`; `None` when nothing was stored. Also returns the next start.
    async fn readings(
        &self,
        after: i64,
        from_ms: i64,
        to_ms: i64,
    ) -> rusqlite::Result<(Option<Vec<u8>>, i64)> {
        let (points, next) = self.outbox.readings_summary(after).await?;
        if points.is_empty() {
            return Ok((None, next));
        }
        let points: Vec<_> = points
            .iter()
            .map(|p| {
                json!({
                    "point": p.point, "n": p.n, "good": p.good, "min": p.min, "max": p.max,
                    "mean": p.mean, "last": p.last, "last_at": rfc3339(p.last_ms), "quality": p.quality,
                })
            })
            .collect();
        let body = json!({
            "site": self.site.id,
            "from": rfc3339(from_ms),
            "to": rfc3339(to_ms),
            "window_secs": self.config.readings_every_secs,
            "points": points,
        });
        Ok((Some(body.to_string().into_bytes()), next))
    }

    fn offline(&self) -> Vec<u8> {
        json!({ "site": self.site.id, "online": false })
            .to_string()
            .into_bytes()
    }

    /// Deliver until `shutdown`. After `drain`, return once nothing is pending.
    pub async fn run(self, drain: CancellationToken, shutdown: CancellationToken) {
        let session = Session {
            client_id: self
                .config
                .broker
                .client_id_or(&format!("sentinel-{}-notify", self.site.id)),
            clean: true,
            manual_acks: false,
            will: Some(Will {
                topic: self.status_topic(),
                payload: self.offline(),
                retain: true,
            }),
            request_capacity: 64,
        };
        let (client, eventloop) = match client::build(&self.config.broker, &session) {
            Ok(c) => c,
            Err(error) => {
                tracing::error!(%error, "MQTT notifier could not be built; alarms stay in the outbox.");
                return;
            }
        };
        let (tx, mut rx) = mpsc::channel(256);
        let poll_stop = CancellationToken::new();
        let cap = Duration::from_secs(self.config.broker.reconnect_max_secs.max(1));
        let poller = tokio::spawn(poll(eventloop, tx, cap, poll_stop.clone()));
        let channel = CHANNEL;
        let puback_timeout = Duration::from_millis(self.config.puback_timeout_ms);
        let backoff_cap = Duration::from_secs(self.config.max_backoff_secs);
        let status_every = Duration::from_secs(self.config.status_interval_secs);
        let mut connected = false;
        let mut queued: VecDeque<Tag> = VecDeque::new();
        let mut sent: HashMap<u16, Tag> = HashMap::new();
        let mut window = Window::new(self.config.in_flight());
        let mut next_status = Instant::now();
        let mut next_count = Instant::now();
        let mut status_changes = self.status.clone();
        let mut retry_at: Option<Instant> = None;
        // Downsampled readings (off unless `readings_every_secs` is set): windows start now;
        // a window that ends while the broker is away is skipped (QoS 0, by design lossy).
        let readings_every = (self.config.readings_every_secs > 0)
            .then(|| Duration::from_secs(self.config.readings_every_secs));
        let mut readings_after = match readings_every {
            Some(_) => self.outbox.newest_reading().await.unwrap_or(0),
            None => 0,
        };
        let mut readings_from = now_millis();
        let far = Duration::from_secs(86_400 * 365);
        let mut next_readings = Instant::now() + readings_every.unwrap_or(far);
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            if window.halted && window.in_flight.is_empty() {
                window.restart();
            }
            // One trip settles what the broker acknowledged and refills the window.
            let limit = if connected { window.to_read() } else { 0 };
            let settle = !window.acked.is_empty() && (window.in_flight.is_empty() || !connected);
            if window.paused_until.is_some_and(|t| Instant::now() >= t) {
                window.paused_until = None;
            }
            let paused = window.paused_until.is_some();
            let mut drained = false;
            if (limit > 0 || settle) && !paused {
                let count = Instant::now() >= next_count;
                let acked = std::mem::take(&mut window.acked);
                let settled = acked.len();
                match self
                    .outbox
                    .delivered_then_next(acked, now_millis(), window.read_after(), limit, count)
                    .await
                {
                    Ok((items, pending)) => {
                        window.paused_until = None;
                        if settled > 0 {
                            self.metrics
                                .deliveries
                                .add(channel, "delivered", settled as u64);
                        }
                        if let Some(n) = pending {
                            self.metrics.outbox_pending.set(channel, "", n);
                            next_count = Instant::now() + Duration::from_secs(1);
                        }
                        if limit > 0 {
                            window.more = items.len() == limit;
                            retry_at = None;
                            drained = items.is_empty() && window.in_flight.is_empty();
                        }
                        for item in items {
                            let wait =
                                super::retry_wait(item.next_attempt_ms, now_millis(), backoff_cap);
                            if !wait.is_zero() {
                                // Waiting out its backoff; nothing after it goes first.
                                retry_at = Some(Instant::now() + wait);
                                window.more = false;
                                break;
                            }
                            queued.push_back(Tag::Alarm(item.id));
                            if let Err(error) = client
                                .publish(
                                    &self.alarms_topic(),
                                    item.body.into_bytes(),
                                    Qos::AtLeastOnce,
                                    false,
                                )
                                .await
                            {
                                tracing::error!(%error, "Queuing an alarm for MQTT failed.");
                                queued.pop_back();
                                window.halted = true;
                                break;
                            }
                            window.last_id = item.id;
                            window.in_flight.push_back(InFlight {
                                id: item.id,
                                event_id: item.event_id,
                                attempts: item.attempts,
                                deadline: Instant::now() + puback_timeout,
                            });
                        }
                    }
                    Err(error) => {
                        // Acknowledged alarms whose mark did not commit stay pending and go out
                        // again from the head (at least once); the store gets a second before it
                        // is asked again.
                        tracing::error!(%error, %channel, "Marking delivered notifications, or reading the next, failed; they may be sent again.");
                        window.halted = true;
                        window.paused_until = Some(Instant::now() + Duration::from_secs(1));
                    }
                }
            }
            if drained && drain.is_cancelled() {
                break;
            }
            // Otherwise the gauge is refreshed at most once a second: this loop turns for every
            // packet the broker acknowledges.
            if Instant::now() >= next_count
                && let Ok(n) = self.outbox.pending_count().await
            {
                self.metrics.outbox_pending.set(channel, "", n);
                next_count = Instant::now() + Duration::from_secs(1);
            }
            if connected && Instant::now() >= next_status {
                next_status = Instant::now() + status_every;
                let body = self.status(true).await;
                queued.push_back(Tag::Status);
                if client
                    .publish(&self.status_topic(), body, Qos::AtLeastOnce, true)
                    .await
                    .is_err()
                {
                    queued.pop_back();
                }
            }
            if let Some(every) = readings_every
                && Instant::now() >= next_readings
            {
                next_readings = Instant::now() + every;
                let to = now_millis();
                match self.readings(readings_after, readings_from, to).await {
                    Ok((body, next)) => {
                        readings_after = next;
                        if let (Some(body), true) = (body, connected) {
                            queued.push_back(Tag::Readings);
                            if let Err(error) = client
                                .publish(&self.readings_topic(), body, Qos::AtMostOnce, false)
                                .await
                            {
                                tracing::warn!(%error, "Queuing downsampled readings for MQTT failed; this window is skipped.");
                                queued.pop_back();
                            }
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "Reading the readings window failed; it is skipped.");
                    }
                }
                readings_from = to;
            }
            if drain.is_cancelled() && !connected && window.acked.is_empty() {
                // Nothing can be delivered without a broker; the outbox keeps it for next time.
                break;
            }
            let mut wake_at = next_status.min(next_readings);
            if let Some(f) = window.in_flight.front() {
                wake_at = wake_at.min(f.deadline);
            }
            for t in [retry_at, window.paused_until].into_iter().flatten() {
                wake_at = wake_at.min(t);
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = drain.cancelled(), if !drain.is_cancelled() => window.more = true,
                () = self.wake.notified() => window.more = true,
                Ok(()) = status_changes.changed() => next_status = Instant::now(),
                () = tokio::time::sleep_until(wake_at) => {
                    let now = Instant::now();
                    if retry_at.is_some_and(|t| now >= t) {
                        retry_at = None;
                        window.more = true;
                    }
                    while let Some(f) = window.pop_expired(now) {
                        self.failed(&f, "no PUBACK in time".to_owned(), backoff_cap).await;
                        window.halted = true;
                    }
                }
                link = rx.recv() => {
                    let Some(first) = link else { break };
                    // Everything already here is handled before the next trip to the store,
                    // so a burst of PUBACKs is settled, and the window refilled, in one.
                    let mut links = vec![first];
                    while let Ok(more) = rx.try_recv() {
                        links.push(more);
                    }
                    for link in links {
                        match link {
                            Link::Up => {
                                connected = true;
                                queued.clear();
                                sent.clear();
                                // Whatever was in flight is sent again on the new connection.
                                window.restart();
                                next_status = Instant::now();
                                tracing::info!(topic = %self.alarms_topic(), "MQTT notifier connected.");
                            }
                            Link::Down(error) => {
                                if connected {
                                    tracing::warn!(%error, "MQTT notifier lost the broker; alarms wait in the outbox.");
                                }
                                connected = false;
                                queued.clear();
                                sent.clear();
                                window.restart();
                            }
                            Link::Event(Event::Sent(pkid)) => {
                                if let Some(tag) = queued.pop_front()
                                    && pkid != 0
                                {
                                    sent.insert(pkid, tag);
                                }
                            }
                            Link::Event(Event::PubAck { pkid, ok }) => {
                                if let Some(Tag::Alarm(id)) = sent.remove(&pkid)
                                    && let Some(f) = window.take(id)
                                {
                                    if ok {
                                        window.acked.push(f.id);
                                        // The counts changed with this event: refresh the status soon.
                                        next_status = next_status.min(Instant::now() + Duration::from_millis(200));
                                    } else {
                                        self.failed(&f, "broker refused the message".to_owned(), backoff_cap).await;
                                        window.halted = true;
                                    }
                                }
                            }
                            Link::Event(_) => {}
                        }
                    }
                }
            }
        }
        if !window.acked.is_empty() {
            // The broker has these: record it, or they would be sent again after a restart.
            let acked = std::mem::take(&mut window.acked);
            if let Err(error) = self
                .outbox
                .delivered_then_next(acked, now_millis(), 0, 0, false)
                .await
            {
                tracing::warn!(%error, %channel, "Marking delivered notifications at shutdown failed; they will be sent again.");
            }
        }
        if connected {
            // A clean disconnect does not trigger the Will, so say so ourselves.
            let body = self.status(false).await;
            if client
                .publish(&self.status_topic(), body, Qos::AtLeastOnce, true)
                .await
                .is_ok()
            {
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    while let Some(link) = rx.recv().await {
                        if matches!(link, Link::Event(Event::PubAck { .. })) && queued.is_empty() {
                            break;
                        }
                        if let Link::Event(Event::Sent(_)) = link {
                            queued.pop_front();
                        }
                    }
                })
                .await;
            }
            client.disconnect().await;
            let _ = tokio::time::timeout(Duration::from_millis(300), poller).await;
        }
        poll_stop.cancel();
    }

    async fn failed(&self, f: &InFlight, error: String, cap: Duration) {
        self.metrics.deliveries.inc(CHANNEL, "failed");
        let delay = super::backoff(f.attempts, cap);
        tracing::warn!(event_id = %f.event_id, attempts = f.attempts + 1, %error, retry_in_ms = delay.as_millis() as u64, "MQTT alarm delivery failed; will retry.");
        let next = now_millis() + delay.as_millis() as i64;
        if let Err(error) = self.outbox.failed(f.id, next, error).await {
            tracing::error!(%error, channel = CHANNEL, "Recording a failed delivery failed.");
        }
    }

    /// The status document: the worse of the site's assessed colour and what open alarms say.
    async fn status(&self, online: bool) -> Vec<u8> {
        let (tx, rx) = oneshot::channel();
        let open = match self.commands.send(Command::OpenAlarmCounts(tx)).await {
            Ok(()) => tokio::time::timeout(Duration::from_secs(2), rx)
                .await
                .ok()
                .and_then(Result::ok),
            Err(_) => None,
        };
        // The engine's status (live colour of the site and its units, alarms by priority,
        // points online, time of the last data); the counts below come from the open alarms.
        let live = self.status.borrow().clone();
        let mut doc = serde_json::to_value(&live).unwrap_or_else(|_| json!({}));
        doc["site"] = json!(self.site.id);
        doc["name"] = json!(self.site.name);
        doc["online"] = json!(online);
        doc["at"] = json!(rfc3339(now_millis()));
        if let Ok((seq, head)) = self.outbox.journal_head().await {
            doc["journal_seq"] = json!(seq);
            doc["journal_head"] = json!(head);
        }
        // One colour everywhere: the risk map's (docs/rules.md).
        doc["colour"] = json!(live.colour);
        if let Some(counts) = open {
            let by_priority = counts.by_priority;
            doc["open_alarms"] = json!(counts.open);
            doc["unacknowledged_alarms"] = json!(counts.unacknowledged);
            doc["open_by_priority"] = json!({
                "low": by_priority[0], "medium": by_priority[1], "high": by_priority[2], "critical": by_priority[3],
            });
        }
        doc.to_string().into_bytes()
    }
}

/// Runs the event loop (which must be polled continuously) and forwards what matters.
async fn poll(
    mut eventloop: client::EventLoop,
    tx: mpsc::Sender<Link>,
    cap: Duration,
    stop: CancellationToken,
) {
    let mut failures = 0u32;
    let mut up_since: Option<Instant> = None;
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return,
            e = eventloop.poll() => e,
        };
        let link = match event {
            Ok(Event::Connected { .. }) => {
                up_since = Some(Instant::now());
                Link::Up
            }
            Ok(e @ (Event::Sent(_) | Event::PubAck { .. })) => Link::Event(e),
            Ok(_) => continue,
            Err(error) => {
                // Only a session that lasted starts the backoff over: one the broker ends at
                // once (a duplicate client id) would otherwise reconnect every half second.
                if up_since
                    .take()
                    .is_some_and(|t| t.elapsed() >= drivers::mqtt::STABLE_AFTER)
                {
                    failures = 0;
                }
                failures = failures.saturating_add(1);
                Link::Down(error)
            }
        };
        let down = matches!(link, Link::Down(_));
        if tx.send(link).await.is_err() {
            return;
        }
        if down {
            let delay = client::reconnect_delay(failures - 1, cap);
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(w: &mut Window, id: i64, deadline: Instant) {
        w.last_id = id;
        w.in_flight.push_back(InFlight {
            id,
            event_id: format!("e{id}"),
            attempts: 0,
            deadline,
        });
    }

    #[test]
    fn the_window_refills_what_is_free_after_the_newest_sent() {
        let later = Instant::now() + Duration::from_secs(10);
        let mut w = Window::new(4);
        assert_eq!(w.to_read(), 4);
        for id in 1..=4 {
            sent(&mut w, id, later);
        }
        assert_eq!(w.to_read(), 0, "full");
        w.take(2).unwrap();
        assert_eq!((w.to_read(), w.read_after()), (1, 4));
        // Nothing more to read until something wakes the sender.
        w.more = false;
        assert_eq!(w.to_read(), 0);
        w.more = true;
        // A failure stops new sends until the window is empty, then starts from the head.
        w.halted = true;
        assert_eq!(w.to_read(), 0);
        w.restart();
        assert_eq!((w.to_read(), w.last_id), (4, 0));
        assert_eq!(Window::new(0).to_read(), 1, "at least one in flight");
    }

    #[test]
    fn overdue_alarms_leave_from_the_front_and_acks_from_anywhere() {
        let now = Instant::now();
        let mut w = Window::new(8);
        sent(&mut w, 1, now);
        sent(&mut w, 2, now + Duration::from_millis(5));
        sent(&mut w, 3, now + Duration::from_secs(5));
        assert_eq!(w.take(2).map(|f| f.id), Some(2));
        assert!(w.take(2).is_none(), "taken once");
        assert_eq!(w.pop_expired(now).map(|f| f.id), Some(1));
        assert!(w.pop_expired(now).is_none(), "3 is not due");
        assert_eq!(w.in_flight.len(), 1);
        w.take(3).unwrap();
        assert_eq!(w.read_after(), 0, "an empty window reads from the head");
    }
}
