//! MQTT ingest: one task per MQTT device (a broker connection with its subscriptions) that turns
//! messages into [`Reading`]s, plus a watcher that marks silent points stale and reports the
//! connection's health to the engine.
//!
//! Delivery: subscriptions are QoS 1 on a persistent session with manual acknowledgements. A
//! message is acknowledged only after its readings were handed to the engine channel (which
//! blocks when full), so a message the gateway never took is redelivered by the broker after a
//! restart. A reading handed over but not yet committed to the store when the process is
//! killed can still be lost: the store commits every `store.flush_interval_ms`.
//!
//! | event                          | readings                                      | device status |
//! |--------------------------------|-----------------------------------------------|---------------|
//! | message, value decoded         | `Good` (or the payload's quality field)       |               |
//! | message, payload bad           | none; counted by reason, logged rate-limited  |               |
//! | point silent past `stale_after`| last value, `Stale` (once per silence)        |               |
//! | connected / every second       |                                               | ok            |
//! | connection lost                | `CommLost`, NaN, once per outage              | not ok        |

pub mod client;
pub mod metrics;
pub mod payload;
pub mod topic;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use alert_rules::{DeviceId, Millis, PointId, Quality, Reading};
use tokio::sync::mpsc::Sender;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

pub use client::{BrokerConfig, Qos, TlsConfig};
pub use metrics::MqttMetrics;
pub use payload::{BadPayload, TimestampFormat};

use crate::{FieldEvent, now_millis};

/// How often the watcher looks for silent points and reports the connection's health.
const WATCH_TICK: Duration = Duration::from_millis(200);
/// Device status is reported at most this often while connected.
const STATUS_EVERY_MS: Millis = 1000;
/// Acknowledgements waiting locally beyond this many are worth a warning (the broker's
/// in-flight window normally keeps them far fewer).
const ACKS_WAITING_WARN: usize = 10_000;
/// A repeated bad-payload warning is logged at most this often per device and reason.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// How far a message's own timestamp may be ahead of the gateway's clock, and behind it (a
/// device replaying a backlog after an outage), before the arrival time is used instead. Behind
/// matches the store's default retention: older readings would be removed at once.
const MAX_AHEAD_MS: Millis = 10 * 60 * 1000;
const MAX_BEHIND_MS: Millis = 30 * 24 * 3600 * 1000;

fn plausible(t: Millis, arrived: Millis) -> bool {
    t <= arrived + MAX_AHEAD_MS && t >= arrived - MAX_BEHIND_MS
}

/// Everything an ingest task needs, resolved from the configuration.
#[derive(Debug, Clone)]
pub struct MqttDeviceSettings {
    pub id: DeviceId,
    pub name: String,
    pub broker: BrokerConfig,
    pub client_id: String,
    pub clean_session: bool,
    pub qos: Qos,
    /// Subscriptions (the device's topics, and its template's filter).
    pub filters: Vec<String>,
    pub template: Option<topic::Template>,
    pub timestamp_pointer: Option<String>,
    pub timestamp_format: TimestampFormat,
    pub quality_pointer: Option<String>,
    pub quality_good: Vec<String>,
    pub max_payload_bytes: usize,
    pub points: Vec<MqttPoint>,
}

/// Where one point's value is found.
#[derive(Debug, Clone)]
pub struct MqttPoint {
    pub id: PointId,
    /// A topic filter the message must match. `None`: the template key, or any of the
    /// device's topics when the device has no template.
    pub topic: Option<String>,
    /// The template's `{point}` segment that names this point.
    pub key: Option<String>,
    /// JSON Pointer to the value; `None` means the payload is a plain number.
    pub json_pointer: Option<String>,
    /// Silence after which the last value is re-sent as `Stale`.
    pub stale_after: Option<Duration>,
}

/// What the ingest task and the watcher share per point.
#[derive(Debug, Default)]
struct Clock {
    /// Arrival time of the last value (wall clock), 0 when none yet.
    last_seen: AtomicI64,
    last_value: AtomicU64,
    /// The point has been reported stale (or comm-lost) since its last value.
    marked: AtomicBool,
}

#[derive(Debug, Default)]
struct Shared {
    connected: AtomicBool,
    clocks: Vec<Clock>,
}

/// Start the ingest task and its watcher. Both end on `shutdown` or when the engine is gone.
pub fn spawn(
    settings: MqttDeviceSettings,
    out: Sender<FieldEvent>,
    metrics: Arc<MqttMetrics>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let span = info_span!("mqtt", device = %settings.name, device_id = settings.id.0);
    let shared = Arc::new(Shared {
        connected: AtomicBool::new(false),
        clocks: settings.points.iter().map(|_| Clock::default()).collect(),
    });
    let watcher = tokio::spawn(
        watch(
            settings.clone(),
            Arc::clone(&shared),
            out.clone(),
            Arc::clone(&metrics),
            shutdown.clone(),
        )
        .instrument(span.clone()),
    );
    tokio::spawn(
        async move {
            Ingest::new(settings, shared, out, metrics)
                .run(shutdown)
                .await;
            watcher.abort();
            let _ = watcher.await;
        }
        .instrument(span),
    )
}

struct Ingest {
    s: MqttDeviceSettings,
    shared: Arc<Shared>,
    out: Sender<FieldEvent>,
    metrics: Arc<MqttMetrics>,
    /// Template key → indices into `s.points`.
    by_key: HashMap<String, Vec<usize>>,
    /// Points without a topic or key: every message of the device concerns them.
    unkeyed: Vec<usize>,
    /// Points with their own topic filter.
    by_topic: Vec<usize>,
    log_gate: [(Option<tokio::time::Instant>, u64); BadPayload::ALL.len()],
    clock_log: Option<tokio::time::Instant>,
}

impl Ingest {
    fn new(
        s: MqttDeviceSettings,
        shared: Arc<Shared>,
        out: Sender<FieldEvent>,
        metrics: Arc<MqttMetrics>,
    ) -> Ingest {
        let mut by_key: HashMap<String, Vec<usize>> = HashMap::new();
        let (mut unkeyed, mut by_topic) = (Vec::new(), Vec::new());
        for (i, p) in s.points.iter().enumerate() {
            match (&p.topic, &p.key) {
                (Some(_), _) => by_topic.push(i),
                (None, Some(k)) if s.template.is_some() => {
                    by_key.entry(k.clone()).or_default().push(i)
                }
                _ => unkeyed.push(i),
            }
        }
        Ingest {
            s,
            shared,
            out,
            metrics,
            by_key,
            unkeyed,
            by_topic,
            log_gate: [(None, 0); BadPayload::ALL.len()],
            clock_log: None,
        }
    }

    async fn run(mut self, shutdown: CancellationToken) {
        let cap = Duration::from_secs(self.s.broker.reconnect_max_secs.max(1));
        let session = client::Session {
            client_id: self.s.client_id.clone(),
            clean: self.s.clean_session,
            manual_acks: true,
            will: None,
            // Acks are queued from this task without waiting; room for every message the
            // broker may have in flight to us, so an ack never finds the queue full.
            request_capacity: 4096,
        };
        let mut reported = false;
        let (client, mut eventloop) = loop {
            match client::build(&self.s.broker, &session) {
                Ok(c) => break c,
                Err(error) => {
                    // A missing certificate or credential may be provisioned later: keep trying,
                    // but mark the points unknown only once.
                    error!(%error, "MQTT client could not be built; retrying.");
                    let down = if reported {
                        self.send(FieldEvent::DeviceStatus {
                            device: self.s.id,
                            ok: false,
                            at: now_millis(),
                        })
                        .await
                    } else {
                        reported = true;
                        self.lost().await
                    };
                    if down.is_err() || sleep_or_cancel(&shutdown, cap).await {
                        return;
                    }
                }
            }
        };
        let mut failures: u32 = 0;
        // Acknowledgements waiting for room in rumqttc's request queue, in order. The event
        // loop takes at most one request per poll while one network read can yield many
        // messages, so the queue can fill; an ack is then kept here, never dropped (a dropped
        // ack would hold the broker's in-flight window until the next reconnection).
        let mut unacked: VecDeque<Box<client::Message>> = VecDeque::new();
        loop {
            while let Some(m) = unacked.front() {
                if client.try_ack(m).is_err() {
                    break;
                }
                unacked.pop_front();
            }
            self.metrics
                .acks_waiting
                .store(unacked.len() as u64, Ordering::Relaxed);
            let event = tokio::select! {
                () = shutdown.cancelled() => break,
                e = eventloop.poll() => e,
            };
            match event {
                Ok(client::Event::Connected { session_present }) => {
                    failures = 0;
                    self.metrics.connects.fetch_add(1, Ordering::Relaxed);
                    self.metrics.connected.store(1, Ordering::Relaxed);
                    self.shared.connected.store(true, Ordering::Relaxed);
                    info!(session_present, broker = %self.s.broker.host, port = self.s.broker.port, "Connected to the MQTT broker.");
                    // Subscribe again on every connection: a broker that lost its state (or a
                    // clean session) would otherwise deliver nothing.
                    for filter in &self.s.filters {
                        if let Err(error) = client.try_subscribe(filter, self.s.qos) {
                            self.metrics
                                .subscribe_failures
                                .fetch_add(1, Ordering::Relaxed);
                            error!(%error, %filter, "Queuing a subscription failed.");
                        }
                    }
                    if self
                        .send(FieldEvent::DeviceStatus {
                            device: self.s.id,
                            ok: true,
                            at: now_millis(),
                        })
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                Ok(client::Event::Message(message)) => {
                    if self.on_message(&message).await.is_err() {
                        break;
                    }
                    // Only now that the readings are with the engine may the broker forget it.
                    if !unacked.is_empty() || client.try_ack(&message).is_err() {
                        if unacked.len() == ACKS_WAITING_WARN {
                            warn!(
                                waiting = unacked.len(),
                                "Many acknowledgements are waiting for the MQTT client."
                            );
                        }
                        unacked.push_back(message);
                    }
                }
                Ok(client::Event::SubAck { ok: false }) => {
                    self.metrics
                        .subscribe_failures
                        .fetch_add(1, Ordering::Relaxed);
                    error!(filters = ?self.s.filters, "The broker refused a subscription.");
                }
                Ok(_) => {}
                Err(error) => {
                    // The broker sends unacknowledged messages again on the resumed session.
                    unacked.clear();
                    let was_connected = self.shared.connected.swap(false, Ordering::Relaxed);
                    self.metrics.connected.store(0, Ordering::Relaxed);
                    self.metrics
                        .connection_errors
                        .fetch_add(1, Ordering::Relaxed);
                    let delay = client::reconnect_delay(failures, cap);
                    if was_connected || failures.is_power_of_two() || failures == 0 {
                        warn!(%error, attempts = failures + 1, retry_in_ms = delay.as_millis() as u64, "MQTT connection failed; reconnecting.");
                    }
                    failures = failures.saturating_add(1);
                    if was_connected || failures == 1 {
                        if self.lost().await.is_err() {
                            break;
                        }
                    } else if self
                        .send(FieldEvent::DeviceStatus {
                            device: self.s.id,
                            ok: false,
                            at: now_millis(),
                        })
                        .await
                        .is_err()
                    {
                        break;
                    }
                    if sleep_or_cancel(&shutdown, delay).await {
                        break;
                    }
                }
            }
        }
        self.shared.connected.store(false, Ordering::Relaxed);
        self.metrics.connected.store(0, Ordering::Relaxed);
        // A clean DISCONNECT; unacknowledged messages stay with the broker for the next start.
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            client.disconnect().await;
            let _ = eventloop.poll().await;
        })
        .await;
    }

    /// The connection is gone: every point's value is now unknown, once per outage.
    async fn lost(&self) -> Result<(), ()> {
        let at = now_millis();
        for (p, clock) in self.s.points.iter().zip(&self.shared.clocks) {
            if clock.last_seen.load(Ordering::Relaxed) != 0 {
                clock.marked.store(true, Ordering::Relaxed);
            }
            self.send(FieldEvent::Reading(Reading {
                point: p.id,
                time: at,
                value: f64::NAN,
                quality: Quality::CommLost,
            }))
            .await?;
        }
        self.send(FieldEvent::DeviceStatus {
            device: self.s.id,
            ok: false,
            at,
        })
        .await
    }

    async fn send(&self, event: FieldEvent) -> Result<(), ()> {
        self.out.send(event).await.map_err(drop)
    }

    fn bad(&mut self, reason: BadPayload, topic: &str) {
        self.metrics.bad[reason.index()].fetch_add(1, Ordering::Relaxed);
        let (last, suppressed) = &mut self.log_gate[reason.index()];
        let now = tokio::time::Instant::now();
        if last.is_none_or(|t| now.duration_since(t) >= LOG_EVERY) {
            warn!(%topic, reason = reason.as_str(), suppressed = *suppressed, "Bad MQTT payload ignored.");
            *last = Some(now);
            *suppressed = 0;
        } else {
            *suppressed += 1;
        }
    }

    /// Logs a device clock far from ours, at most once per [`LOG_EVERY`].
    fn clock_gate(&mut self, topic: &str, skew_ms: Millis) {
        let now = tokio::time::Instant::now();
        if self
            .clock_log
            .is_none_or(|t| now.duration_since(t) >= LOG_EVERY)
        {
            warn!(%topic, skew_secs = skew_ms / 1000, "MQTT timestamp far from the gateway's clock; the arrival time is used instead.");
            self.clock_log = Some(now);
        }
    }

    /// Decode one message and hand its readings to the engine. `Err` only when the engine is gone.
    async fn on_message(&mut self, message: &client::Message) -> Result<(), ()> {
        self.metrics.messages.fetch_add(1, Ordering::Relaxed);
        let Some(topic) = message.topic.as_deref() else {
            self.bad(BadPayload::NotUtf8, "?");
            return Ok(());
        };
        let payload = message.payload();
        if payload.len() > self.s.max_payload_bytes {
            self.bad(BadPayload::Oversized, topic);
            return Ok(());
        }
        let mut candidates: Vec<usize> = Vec::new();
        if let Some(key) = self.s.template.as_ref().and_then(|t| t.capture(topic)) {
            candidates.extend(self.by_key.get(key).into_iter().flatten());
        }
        if self.s.template.is_none() {
            candidates.extend(&self.unkeyed);
        }
        candidates.extend(self.by_topic.iter().filter(|&&i| {
            self.s.points[i]
                .topic
                .as_deref()
                .is_some_and(|f| topic::matches(f, topic))
        }));
        if candidates.is_empty() {
            self.bad(BadPayload::Unmapped, topic);
            return Ok(());
        }
        let needs_json = candidates
            .iter()
            .any(|&i| self.s.points[i].json_pointer.is_some());
        let doc = if needs_json {
            match payload::parse_json(payload) {
                Ok(d) => Some(d),
                Err(reason) => {
                    self.bad(reason, topic);
                    return Ok(());
                }
            }
        } else {
            None
        };
        let arrived = now_millis();
        let mut time = arrived;
        let mut quality = Quality::Good;
        if let Some(doc) = &doc {
            if let Some(ptr) = &self.s.timestamp_pointer {
                match payload::timestamp_at(doc, ptr, self.s.timestamp_format) {
                    Ok(t) if plausible(t, arrived) => time = t,
                    Ok(t) => {
                        // A device clock that reset or runs far ahead must not hide the value
                        // (a gas reading matters more than its stamp), nor put it where
                        // retention or the upstream server throws it away.
                        self.metrics
                            .timestamps_replaced
                            .fetch_add(1, Ordering::Relaxed);
                        self.clock_gate(topic, t - arrived);
                    }
                    Err(reason) => {
                        self.bad(reason, topic);
                        return Ok(());
                    }
                }
            }
            if let Some(ptr) = &self.s.quality_pointer {
                quality = payload::quality_at(doc, ptr, &self.s.quality_good);
            }
        }
        for i in candidates {
            let point = &self.s.points[i];
            let value = match (&point.json_pointer, &doc) {
                (Some(ptr), Some(doc)) => payload::number_at(doc, ptr),
                _ => payload::plain_number(payload),
            };
            let value = match value {
                Ok(v) => v,
                Err(reason) => {
                    self.bad(reason, topic);
                    continue;
                }
            };
            let clock = &self.shared.clocks[i];
            clock.last_value.store(value.to_bits(), Ordering::Relaxed);
            clock.last_seen.store(arrived, Ordering::Relaxed);
            clock.marked.store(false, Ordering::Relaxed);
            self.metrics.readings.fetch_add(1, Ordering::Relaxed);
            let id = point.id;
            self.send(FieldEvent::Reading(Reading {
                point: id,
                time,
                value,
                quality,
            }))
            .await?;
        }
        Ok(())
    }
}

/// Marks silent points stale and keeps the engine informed that the connection is up.
async fn watch(
    s: MqttDeviceSettings,
    shared: Arc<Shared>,
    out: Sender<FieldEvent>,
    metrics: Arc<MqttMetrics>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(WATCH_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_status: Millis = 0;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = now_millis();
        if shared.connected.load(Ordering::Relaxed) && now - last_status >= STATUS_EVERY_MS {
            last_status = now;
            if out
                .send(FieldEvent::DeviceStatus {
                    device: s.id,
                    ok: true,
                    at: now,
                })
                .await
                .is_err()
            {
                return;
            }
        }
        for (p, clock) in s.points.iter().zip(&shared.clocks) {
            let Some(after) = p.stale_after else { continue };
            let seen = clock.last_seen.load(Ordering::Relaxed);
            if seen == 0
                || clock.marked.load(Ordering::Relaxed)
                || now - seen < after.as_millis() as Millis
            {
                continue;
            }
            clock.marked.store(true, Ordering::Relaxed);
            metrics.stale_marks.fetch_add(1, Ordering::Relaxed);
            let value = f64::from_bits(clock.last_value.load(Ordering::Relaxed));
            let reading = Reading {
                point: p.id,
                time: now,
                value,
                quality: Quality::Stale,
            };
            if out.send(FieldEvent::Reading(reading)).await.is_err() {
                return;
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
