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
//! | up 5 s, then every second      |                                               | ok            |
//! | connection lost or refused     | `CommLost`, NaN, once per outage              | not ok        |
//!
//! A connection counts as up only after [`STABLE_AFTER`] (5 s): a session the broker ends
//! sooner counts as a failed attempt, backing off and never reported ok, so a device whose
//! connection only flaps raises its comm-loss alarm.

pub mod client;
pub mod metrics;
pub mod payload;
pub mod topic;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use alert_rules::{DeviceId, Millis, PointId, Quality, Reading};
use tokio::sync::mpsc::Sender;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

pub use client::{BrokerConfig, Qos, TlsConfig};
pub use metrics::MqttMetrics;
pub use payload::{BadPayload, TimestampFormat};

use crate::{FieldEvent, now_millis};

/// How often the watcher looks for silent points and reports the connection's health.
const WATCH_TICK: Duration = Duration::from_millis(200);
/// Device status is reported at most this often while connected.
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// How long a connection must stay up before it counts as healthy: the device is reported ok
/// and the reconnect backoff starts again from its shortest delay. A broker can accept a
/// connection and cut it at once, every time (a redelivered QoS 1 or retained message larger
/// than `max_packet_bytes`, two clients with the same client id); counting the CONNACK alone as
/// health would reconnect every half second forever and hide the device's silence from the
/// comm-loss alarm. Short enough that a broker restart is reported ok again within seconds; a
/// `comm_loss_after_secs` at or below it raises the alarm on every reconnection.
pub const STABLE_AFTER: Duration = Duration::from_secs(5);
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
    /// Arrival time of the last value ([`Shared::mono`]), 0 when none yet.
    last_seen: AtomicU64,
    last_value: AtomicU64,
    /// The point has been reported stale (or comm-lost) since its last value.
    marked: AtomicBool,
}

/// What the ingest task and the watcher share. Intervals (silence, uptime) are measured on the
/// monotonic clock, never the wall clock: an NTP step backwards would otherwise stop the status
/// heartbeat (false comm-loss alarms), and a step forwards would mark every point stale at once.
#[derive(Debug)]
struct Shared {
    /// Origin of the monotonic times below.
    epoch: Instant,
    /// When the current connection was made ([`Shared::mono`]), 0 while disconnected.
    up_since: AtomicU64,
    clocks: Vec<Clock>,
}

impl Shared {
    fn new(points: usize, epoch: Instant) -> Shared {
        Shared {
            epoch,
            up_since: AtomicU64::new(0),
            clocks: (0..points).map(|_| Clock::default()).collect(),
        }
    }

    /// Milliseconds from `epoch` to `at`, plus one so that 0 can stand for "never".
    fn mono(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64 + 1
    }

    fn connected(&self, at: Instant) {
        self.up_since.store(self.mono(at), Ordering::Relaxed);
    }

    /// The connection is gone at `at`: how long it had been up, `None` when there was none.
    fn disconnected(&self, at: Instant) -> Option<Duration> {
        let since = self.up_since.swap(0, Ordering::Relaxed);
        (since != 0).then(|| Duration::from_millis(self.mono(at).saturating_sub(since)))
    }

    /// The current connection has been up for at least [`STABLE_AFTER`] at `at`.
    fn stable(&self, at: Instant) -> bool {
        let since = self.up_since.load(Ordering::Relaxed);
        since != 0 && self.mono(at).saturating_sub(since) >= STABLE_AFTER.as_millis() as u64
    }
}

/// Reconnection bookkeeping, apart from the I/O so that it can be tested alone.
#[derive(Debug, Default)]
struct Backoff {
    /// Failed attempts and short sessions since the last healthy connection: the exponent of
    /// the reconnect delay.
    failures: u32,
    /// Sessions in a row that ended before [`STABLE_AFTER`]; throttles the "Connected" log.
    short: u32,
}

/// What to do after a connection attempt failed or a session ended.
#[derive(Debug, PartialEq, Eq)]
struct Retry {
    /// Failures before this one, for [`client::reconnect_delay`].
    failures: u32,
    /// The session ended before [`STABLE_AFTER`].
    short: bool,
    /// Worth a log line (the first failure, then at powers of two).
    log: bool,
    /// First failure of an outage: every point's value becomes unknown.
    lost: bool,
}

impl Backoff {
    /// An attempt failed (`up_for` is `None`) or a session ended after `up_for`.
    fn on_drop(&mut self, up_for: Option<Duration>) -> Retry {
        let short = up_for.is_some_and(|d| d < STABLE_AFTER);
        if short {
            self.short = self.short.saturating_add(1);
        } else if up_for.is_some() {
            (self.failures, self.short) = (0, 0);
        }
        let failures = self.failures;
        self.failures = failures.saturating_add(1);
        Retry {
            failures,
            short,
            log: failures == 0 || failures.is_power_of_two(),
            lost: failures == 0,
        }
    }

    /// Whether a new connection is worth an info line: not every one of a flapping session.
    fn log_connect(&self) -> bool {
        self.short == 0 || self.short.is_power_of_two()
    }
}

/// Start the ingest task and its watcher. Both end on `shutdown` or when the engine is gone.
pub fn spawn(
    settings: MqttDeviceSettings,
    out: Sender<FieldEvent>,
    metrics: Arc<MqttMetrics>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let span = info_span!("mqtt", device = %settings.name, device_id = settings.id.0);
    let shared = Arc::new(Shared::new(settings.points.len(), Instant::now()));
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
    log_gate: [(Option<Instant>, u64); BadPayload::ALL.len()],
    clock_log: Option<Instant>,
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
        let mut backoff = Backoff::default();
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
                    // Not yet healthy: the watcher reports the device ok once the connection
                    // has lasted STABLE_AFTER, and only then does the backoff start over.
                    self.shared.connected(Instant::now());
                    self.metrics.connects.fetch_add(1, Ordering::Relaxed);
                    self.metrics.connected.store(1, Ordering::Relaxed);
                    if backoff.log_connect() {
                        info!(session_present, short_sessions = backoff.short, broker = %self.s.broker.host, port = self.s.broker.port, "Connected to the MQTT broker.");
                    }
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
                    let up_for = self.shared.disconnected(Instant::now());
                    self.metrics.connected.store(0, Ordering::Relaxed);
                    self.metrics
                        .connection_errors
                        .fetch_add(1, Ordering::Relaxed);
                    let retry = backoff.on_drop(up_for);
                    let delay = client::reconnect_delay(retry.failures, cap);
                    let attempts = retry.failures.saturating_add(1);
                    let retry_in_ms = delay.as_millis() as u64;
                    if retry.log && retry.short {
                        let up_ms = up_for.unwrap_or_default().as_millis() as u64;
                        warn!(%error, up_ms, attempts, retry_in_ms, "The MQTT broker ended the connection soon after accepting it (a message larger than max_packet_bytes? another client with the same client id?); reconnecting with backoff.");
                    } else if retry.log {
                        warn!(%error, attempts, retry_in_ms, "MQTT connection failed; reconnecting.");
                    }
                    if retry.lost {
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
        self.shared.disconnected(Instant::now());
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
        let now = Instant::now();
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
        let now = Instant::now();
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
            clock
                .last_seen
                .store(self.shared.mono(Instant::now()), Ordering::Relaxed);
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
    let mut watcher = Watcher::default();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for event in watcher.check(&s, &shared, &metrics, Instant::now(), now_millis()) {
            if out.send(event).await.is_err() {
                return;
            }
        }
    }
}

/// The watcher's memory between ticks.
#[derive(Debug, Default)]
struct Watcher {
    last_status: Option<Instant>,
}

impl Watcher {
    /// What to tell the engine at monotonic time `now`; `wall` only stamps the events.
    fn check(
        &mut self,
        s: &MqttDeviceSettings,
        shared: &Shared,
        metrics: &MqttMetrics,
        now: Instant,
        wall: Millis,
    ) -> Vec<FieldEvent> {
        let mut events = Vec::new();
        if shared.stable(now)
            && self
                .last_status
                .is_none_or(|t| now.duration_since(t) >= STATUS_EVERY)
        {
            self.last_status = Some(now);
            events.push(FieldEvent::DeviceStatus {
                device: s.id,
                ok: true,
                at: wall,
            });
        }
        let mono = shared.mono(now);
        for (p, clock) in s.points.iter().zip(&shared.clocks) {
            let Some(after) = p.stale_after else { continue };
            let seen = clock.last_seen.load(Ordering::Relaxed);
            if seen == 0
                || clock.marked.load(Ordering::Relaxed)
                || mono.saturating_sub(seen) < after.as_millis() as u64
            {
                continue;
            }
            clock.marked.store(true, Ordering::Relaxed);
            metrics.stale_marks.fetch_add(1, Ordering::Relaxed);
            let value = f64::from_bits(clock.last_value.load(Ordering::Relaxed));
            events.push(FieldEvent::Reading(Reading {
                point: p.id,
                time: wall,
                value,
                quality: Quality::Stale,
            }));
        }
        events
    }
}

/// Sleep; true when shutdown came first.
async fn sleep_or_cancel(shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = tokio::time::sleep(d) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: Duration = Duration::from_secs(30);

    fn settings(stale_after: Option<Duration>) -> MqttDeviceSettings {
        MqttDeviceSettings {
            id: DeviceId(7),
            name: "d".into(),
            broker: serde_json::from_str(r#"{"host": "127.0.0.1"}"#).unwrap(),
            client_id: "c".into(),
            clean_session: false,
            qos: Qos::AtLeastOnce,
            filters: vec!["plant/d".into()],
            template: None,
            timestamp_pointer: None,
            timestamp_format: TimestampFormat::Auto,
            quality_pointer: None,
            quality_good: Vec::new(),
            max_payload_bytes: 1024,
            points: vec![MqttPoint {
                id: PointId(3),
                topic: None,
                key: None,
                json_pointer: None,
                stale_after,
            }],
        }
    }

    /// Drives the watcher tick by tick on an injected monotonic clock.
    struct Rig {
        s: MqttDeviceSettings,
        shared: Shared,
        metrics: MqttMetrics,
        watcher: Watcher,
        now: Instant,
        events: Vec<FieldEvent>,
    }

    impl Rig {
        fn new(stale_after: Option<Duration>) -> Rig {
            let now = Instant::now();
            Rig {
                s: settings(stale_after),
                shared: Shared::new(1, now),
                metrics: MqttMetrics::default(),
                watcher: Watcher::default(),
                now,
                events: Vec::new(),
            }
        }

        /// Let `d` pass on the monotonic clock, the watcher ticking; `wall` stamps the events.
        fn run(&mut self, d: Duration, wall: Millis) {
            let until = self.now + d;
            while self.now < until {
                self.now += WATCH_TICK;
                let events =
                    self.watcher
                        .check(&self.s, &self.shared, &self.metrics, self.now, wall);
                self.events.extend(events);
            }
        }

        fn oks(&self) -> usize {
            self.events
                .iter()
                .filter(|e| matches!(e, FieldEvent::DeviceStatus { ok: true, .. }))
                .count()
        }

        fn stale(&self) -> Vec<&Reading> {
            self.events
                .iter()
                .filter_map(|e| match e {
                    FieldEvent::Reading(r) if r.quality == Quality::Stale => Some(r),
                    _ => None,
                })
                .collect()
        }

        /// What `on_message` records for a value arriving now.
        fn value_arrives(&self, value: f64) {
            let clock = &self.shared.clocks[0];
            clock.last_value.store(value.to_bits(), Ordering::Relaxed);
            clock
                .last_seen
                .store(self.shared.mono(self.now), Ordering::Relaxed);
            clock.marked.store(false, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_session_cut_right_after_connecting_backs_off_and_is_never_reported_ok() {
        let mut rig = Rig::new(None);
        let mut backoff = Backoff::default();
        let (mut delays, mut lost) = (Vec::new(), 0);
        for _ in 0..10 {
            rig.shared.connected(rig.now);
            rig.run(Duration::from_millis(800), 0);
            let retry = backoff.on_drop(rig.shared.disconnected(rig.now));
            assert!(retry.short);
            lost += usize::from(retry.lost);
            let delay = client::reconnect_delay(retry.failures, CAP);
            delays.push(delay);
            rig.run(delay, 0);
        }
        assert_eq!(
            rig.oks(),
            0,
            "a flapping connection must let comm-loss rise"
        );
        assert_eq!(lost, 1, "CommLost readings once per outage, not per flap");
        // 0.5 s doubling with ±20 % jitter: 16 s at the sixth attempt, then the cap.
        assert!(delays[5] >= Duration::from_secs(12), "{delays:?}");
        assert!(delays[9] >= Duration::from_secs(24), "{delays:?}");
    }

    #[test]
    fn a_connection_that_lasts_is_reported_ok_within_seconds_and_resets_the_backoff() {
        let mut rig = Rig::new(None);
        let mut backoff = Backoff::default();
        for _ in 0..5 {
            backoff.on_drop(None); // refused while the broker restarts
        }
        rig.shared.connected(rig.now);
        rig.run(STABLE_AFTER - WATCH_TICK, 0);
        assert_eq!(rig.oks(), 0);
        rig.run(WATCH_TICK, 0);
        assert_eq!(rig.oks(), 1, "ok as soon as the connection has lasted");
        rig.run(Duration::from_secs(10), 0);
        assert_eq!(rig.oks(), 11, "then the heartbeat every second");

        let retry = backoff.on_drop(rig.shared.disconnected(rig.now));
        assert_eq!(
            retry,
            Retry {
                failures: 0,
                short: false,
                log: true,
                lost: true
            }
        );
        rig.run(Duration::from_secs(10), 0);
        assert_eq!(rig.oks(), 11, "no ok while disconnected");
    }

    #[test]
    fn logs_are_throttled_while_a_session_flaps() {
        let mut backoff = Backoff::default();
        let (mut drops, mut connects) = (0, 0);
        for _ in 0..1000 {
            connects += usize::from(backoff.log_connect());
            drops += usize::from(backoff.on_drop(Some(Duration::from_millis(50))).log);
        }
        // The first, then powers of two: 0, 1, 2, 4, …, 512.
        assert_eq!((connects, drops), (11, 11));
        backoff.on_drop(Some(STABLE_AFTER));
        assert!(
            backoff.log_connect(),
            "a healthy connection is logged again"
        );
    }

    #[test]
    fn a_backward_wall_clock_step_does_not_stop_the_heartbeat() {
        let mut rig = Rig::new(None);
        rig.shared.connected(rig.now);
        rig.run(STABLE_AFTER, 1_700_000_000_000);
        assert_eq!(rig.oks(), 1);
        // NTP corrects a fast RTC by an hour: the engine must still hear from the device.
        rig.run(Duration::from_secs(10), 1_700_000_000_000 - 3_600_000);
        assert_eq!(rig.oks(), 11);
        assert!(matches!(
            rig.events.last(),
            Some(FieldEvent::DeviceStatus {
                at: 1_699_996_400_000,
                ..
            })
        ));
    }

    #[test]
    fn a_forward_wall_clock_step_does_not_mark_points_stale() {
        let mut rig = Rig::new(Some(Duration::from_secs(10)));
        rig.value_arrives(4.5);
        rig.run(Duration::from_secs(1), 1_700_000_000_000);
        rig.run(Duration::from_secs(8), 1_700_000_000_000 + 3_600_000);
        assert!(rig.stale().is_empty(), "{:?}", rig.events);
        // Silence measured on the monotonic clock: stale at 10 s, once.
        rig.run(Duration::from_secs(5), 1_700_003_600_000);
        let stale = rig.stale();
        assert_eq!(stale.len(), 1);
        assert_eq!((stale[0].value, stale[0].time), (4.5, 1_700_003_600_000));
        assert_eq!(rig.metrics.stale_marks.load(Ordering::Relaxed), 1);
    }
}
