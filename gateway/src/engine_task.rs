//! The engine task: the one owner of alarm state. Field events and operator commands come in
//! over bounded channels; readings and alarm events go out to the store, which commits them
//! before anything is announced.

use std::sync::Arc;
use std::time::Duration;

use alert_rules::{AlarmEvent, AlarmId, CommandError, Engine, Millis, PointId, Quality};
use drivers::{FieldEvent, now_millis};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::event::{AlarmEventJson, AlarmJson, rfc3339};
use crate::metrics::Metrics;
use crate::plant::Plant;
use crate::store::{JournalEntry, StoreHandle, WriteBatch};

/// Readings are handed to the store in batches of at most this many.
const MAX_BATCH: usize = 4096;
/// At shutdown, how long the engine keeps draining events the drivers already sent.
const DRAIN_AT_SHUTDOWN: Duration = Duration::from_secs(3);

/// Which alarms a view asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmFilter {
    /// Active or not yet acknowledged.
    Open,
    /// Active only.
    Active,
    /// Finished recently (cleared and acknowledged).
    Recent,
    All,
}

/// Requests from the API. Each carries its reply channel.
pub enum Command {
    Points(oneshot::Sender<Vec<PointView>>),
    Alarms(AlarmFilter, oneshot::Sender<Vec<AlarmJson>>),
    /// Answered once the acknowledgement is durable.
    Acknowledge {
        id: AlarmId,
        by: String,
        comment: Option<String>,
        reply: oneshot::Sender<Result<AlarmJson, CommandError>>,
    },
}

/// A point as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PointView {
    pub tag: String,
    pub name: String,
    pub device: String,
    pub kind: String,
    pub unit: String,
    pub area: String,
    /// The last good (or uncertain) value; `null` when none was ever received.
    pub value: Option<f64>,
    /// When that value was measured: never re-stamped while the point is bad.
    pub time: Option<String>,
    pub quality: &'static str,
    /// Since when the point has had its present quality.
    pub quality_since: Option<String>,
    /// Open alarms of the point, and the worst state among them.
    pub open_alarms: usize,
    pub alarm_state: &'static str,
}

#[derive(Debug, Clone, Copy)]
struct LastValue {
    value: Option<f64>,
    time: Option<Millis>,
    quality: Option<Quality>,
    quality_since: Option<Millis>,
}

pub struct EngineTask {
    pub engine: Engine,
    pub plant: Arc<Plant>,
    pub store: StoreHandle,
    pub metrics: Arc<Metrics>,
    pub flush_interval: Duration,
    pub tick_interval: Duration,
    pub retention: Duration,
}

impl EngineTask {
    pub async fn run(
        self,
        mut field: mpsc::Receiver<FieldEvent>,
        mut commands: mpsc::Receiver<Command>,
        shutdown: CancellationToken,
    ) {
        let EngineTask {
            mut engine,
            plant,
            store,
            metrics,
            flush_interval,
            tick_interval,
            retention,
        } = self;
        let mut state = State {
            last: vec![
                LastValue {
                    value: None,
                    time: None,
                    quality: None,
                    quality_since: None
                };
                plant.points.len()
            ],
            batch: WriteBatch::default(),
            events: Vec::new(),
            plant,
            store,
            metrics,
        };
        let mut tick = tokio::time::interval(tick_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flush = tokio::time::interval(flush_interval);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut prune = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                msg = field.recv() => match msg {
                    Some(msg) => {
                        state.on_field(&mut engine, msg);
                        if state.must_flush() && !state.flush(None).await { return; }
                    }
                    None => break,
                },
                cmd = commands.recv() => if let Some(cmd) = cmd {
                    if !state.on_command(&mut engine, cmd).await { return; }
                },
                _ = tick.tick() => {
                    engine.tick(now_millis(), &mut state.events);
                    state.metrics.engine_queue_depth.set((field.max_capacity() - field.capacity()) as u64);
                    if !state.events.is_empty() && !state.flush(None).await { return; }
                }
                _ = flush.tick() => if !state.flush(None).await { return; },
                _ = prune.tick() => {
                    let before = now_millis() - retention.as_millis() as Millis;
                    if state.store.prune(before).await.is_err() { return; }
                }
            }
        }
        // Shutdown: take what the drivers already sent, then commit it all.
        let deadline = tokio::time::Instant::now() + DRAIN_AT_SHUTDOWN;
        while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, field.recv()).await {
            state.on_field(&mut engine, msg);
            if state.must_flush() && !state.flush(None).await {
                return;
            }
        }
        state.flush(None).await;
        tracing::info!("Engine stopped; pending readings and alarm events handed to the store.");
    }
}

struct State {
    last: Vec<LastValue>,
    batch: WriteBatch,
    events: Vec<AlarmEvent>,
    plant: Arc<Plant>,
    store: StoreHandle,
    metrics: Arc<Metrics>,
}

impl State {
    fn on_field(&mut self, engine: &mut Engine, msg: FieldEvent) {
        let now = now_millis();
        match msg {
            FieldEvent::Reading(r) => {
                self.metrics.readings_received.inc();
                engine.on_reading(&r, now, &mut self.events);
                if let Some(last) = self.last.get_mut(r.point.0 as usize) {
                    if r.quality.is_usable() && r.value.is_finite() {
                        last.value = Some(r.value);
                        last.time = Some(r.time);
                    }
                    if last.quality != Some(r.quality) {
                        last.quality = Some(r.quality);
                        last.quality_since = Some(r.time);
                    }
                }
                self.batch.readings.push(r);
            }
            FieldEvent::DeviceStatus { device, ok, at } => {
                engine.on_device_status(device, ok, at, &mut self.events)
            }
        }
    }

    fn must_flush(&self) -> bool {
        !self.events.is_empty() || self.batch.readings.len() >= MAX_BATCH
    }

    /// Hand readings and events to the store. Returns false when the store is gone.
    async fn flush(&mut self, done: Option<oneshot::Sender<()>>) -> bool {
        if self.batch.readings.is_empty() && self.events.is_empty() && done.is_none() {
            return true;
        }
        let mut batch = std::mem::take(&mut self.batch);
        batch.done = done;
        for event in self.events.drain(..) {
            let json = AlarmEventJson::new(&self.plant, &event);
            log_event(&json);
            self.metrics
                .alarm_events
                .inc(json.alarm.kind, json.transition);
            batch.events.push(JournalEntry {
                event_id: json.id.clone(),
                seq: event.seq,
                at: event.at,
                body: serde_json::to_string(&json).unwrap_or_default(),
                alarm: event.alarm,
            });
        }
        self.batch.readings = Vec::with_capacity(batch.readings.len().min(MAX_BATCH));
        if self.store.write(batch).await.is_err() {
            tracing::error!("The store writer has stopped; the engine stops too.");
            return false;
        }
        true
    }

    async fn on_command(&mut self, engine: &mut Engine, cmd: Command) -> bool {
        match cmd {
            Command::Points(reply) => {
                let _ = reply.send(self.point_views(engine));
            }
            Command::Alarms(filter, reply) => {
                let plant = &self.plant;
                let open = engine.open_alarms().iter();
                let mut list: Vec<AlarmJson> = match filter {
                    AlarmFilter::Open => open.map(|a| AlarmJson::new(plant, a)).collect(),
                    AlarmFilter::Active => open
                        .filter(|a| a.state.is_active())
                        .map(|a| AlarmJson::new(plant, a))
                        .collect(),
                    AlarmFilter::Recent => engine
                        .recent_alarms()
                        .map(|a| AlarmJson::new(plant, a))
                        .collect(),
                    AlarmFilter::All => open
                        .chain(engine.recent_alarms())
                        .map(|a| AlarmJson::new(plant, a))
                        .collect(),
                };
                list.sort_by(|a, b| b.alarm_id.cmp(&a.alarm_id));
                let _ = reply.send(list);
            }
            Command::Acknowledge {
                id,
                by,
                comment,
                reply,
            } => {
                let now = now_millis();
                match engine.acknowledge(id, &by, comment.as_deref(), now, &mut self.events) {
                    Ok(()) => {
                        let alarm = self
                            .events
                            .last()
                            .map(|e| AlarmJson::new(&self.plant, &e.alarm));
                        let (done_tx, done_rx) = oneshot::channel();
                        if !self.flush(Some(done_tx)).await {
                            return false;
                        }
                        tokio::spawn(async move {
                            if done_rx.await.is_ok()
                                && let Some(alarm) = alarm
                            {
                                let _ = reply.send(Ok(alarm));
                            }
                        });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
        }
        true
    }

    fn point_views(&self, engine: &Engine) -> Vec<PointView> {
        self.plant
            .points
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let last = self.last[i];
                let summary = engine.point_summary(PointId(i as u32));
                PointView {
                    tag: p.tag.clone(),
                    name: p.name.clone(),
                    device: p.device.clone(),
                    kind: p.kind.clone(),
                    unit: p.unit.clone(),
                    area: p.area.clone(),
                    value: last.value,
                    time: last.time.map(rfc3339),
                    quality: last.quality.map_or("no_data", Quality::as_str),
                    quality_since: last.quality_since.map(rfc3339),
                    open_alarms: summary.open,
                    alarm_state: summary.worst.as_str(),
                }
            })
            .collect()
    }
}

fn log_event(e: &AlarmEventJson) {
    let a = &e.alarm;
    if e.transition == "raised" {
        tracing::warn!(alarm_id = a.alarm_id, point = %a.point, kind = a.kind, priority = a.priority, "Alarm raised: {}.", a.message);
    } else {
        tracing::info!(alarm_id = a.alarm_id, point = %a.point, kind = a.kind, transition = e.transition, by = e.by.as_deref().unwrap_or(""), "Alarm {}: {}.", e.transition, a.message);
    }
}
