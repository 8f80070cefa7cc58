//! The engine task: the one owner of alarm state. Field events and operator commands come in
//! over bounded channels; readings and alarm, mode and colour events go out to the store, which
//! commits them before anything is announced.

mod commands;
mod reload;
mod status;
mod views;

use std::sync::Arc;
use std::time::Duration;

use alert_rules::kpi::{AlarmLoad, KpiConfig};
use alert_rules::{
    AlarmEvent, ColourChange, Engine, Millis, ModeEvent, Quality, RiskMap, SystemCheck,
};
use drivers::{FieldEvent, now_millis};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

pub use commands::{Action, AlarmFilter, Command, OpenAlarmCounts, OperateError, Target};
pub use reload::ReloadSummary;
pub use status::SiteStatus;
pub use views::RiskView;

use crate::event::{AlarmEventJson, ColourChangeJson, ModeEventJson};
use crate::metrics::Metrics;
use crate::plant::Plant;
use crate::store::{JournalEntry, NotTaken, StoreHandle, WriteBatch};

/// Readings are handed to the store in batches of at most this many.
const MAX_BATCH: usize = 4096;
/// Driver messages taken from the field channel at once.
const FIELD_RUN: usize = 256;
/// How long a flush may wait for room in the store writer's queue: enough to ride out a slow
/// commit. A queue still full after this means the store cannot commit at all, and the engine
/// goes on judging without it (see [`State::flush`]).
const STORE_PATIENCE: Duration = Duration::from_secs(2);
/// Alarm, mode and colour records kept in memory while the store cannot take them; past this
/// many the newest are dropped and counted (about 100 MB).
const MAX_HELD: usize = 100_000;
/// At shutdown, how long the engine keeps draining events the drivers already sent.
const DRAIN_AT_SHUTDOWN: Duration = Duration::from_secs(3);
/// A difference between wall and monotonic time this large, between two ticks, is a step of the
/// wall clock (NTP slews far more slowly than this).
const CLOCK_STEP_MS: Millis = 1_000;

pub struct EngineTask {
    pub engine: Engine,
    pub plant: Arc<Plant>,
    pub store: StoreHandle,
    pub metrics: Arc<Metrics>,
    pub flush_interval: Duration,
    pub tick_interval: Duration,
    pub retention: Duration,
    /// The live site status (colour, alarm counts, points online), for the uplink and views.
    pub status: watch::Sender<SiteStatus>,
}

#[derive(Debug, Clone, Copy)]
struct LastValue {
    value: Option<f64>,
    time: Option<Millis>,
    quality: Option<Quality>,
    quality_since: Option<Millis>,
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
            status,
        } = self;
        let now = now_millis();
        let mut risk = RiskMap::new(&plant.rulebook().risk_units);
        let kpi = AlarmLoad::new(KpiConfig::default(), now);
        // Restored open alarms still count for the colour and the standing-alarm KPI.
        let mut ignored = Vec::new();
        for alarm in engine.open_alarms() {
            risk.on_alarm(alarm, now, &mut ignored);
        }
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
            modes: Vec::new(),
            colours: Vec::new(),
            risk,
            kpi,
            status_dirty: false,
            status_gate: None,
            held: Vec::new(),
            waiting: Vec::new(),
            store_stuck: false,
            last_wall: now_millis(),
            last_mono: std::time::Instant::now(),
            plant,
            store,
            metrics,
            status,
            last_data: None,
        };
        state.publish_status(&engine);
        let mut tick = tokio::time::interval(tick_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flush = tokio::time::interval(flush_interval);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut prune = tokio::time::interval(Duration::from_secs(3600));
        let mut status_every = tokio::time::interval(Duration::from_secs(1));
        let mut inbox = Vec::with_capacity(FIELD_RUN);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                // Timers and commands come before the field, which a flood (or a backlog
                // replayed after an outage) can keep ready without a break: ticks raise the
                // communication-loss alarms and keep the heartbeat, and an operator must be
                // able to acknowledge. Each fires at most once per its interval.
                cmd = commands.recv() => if let Some(cmd) = cmd {
                    if matches!(cmd, Command::Reload { .. }) {
                        // The drivers were stopped before the reload was sent: what they read
                        // under the old configuration is in the channel, and its point and
                        // device numbers are the old ones. Judge it all before the swap.
                        let now = state.clock(&mut engine);
                        while let Ok(msg) = field.try_recv() {
                            state.on_field(&mut engine, msg, now);
                        }
                    }
                    if !state.on_command(&mut engine, cmd).await { return; }
                },
                _ = tick.tick() => {
                    let now = state.clock(&mut engine);
                    engine.tick(now, &mut state.events);
                    for check in SystemCheck::ALL {
                        if let Some(failing) = state.metrics.system_checks.get(check) {
                            engine.on_system_check(check, failing, now, &mut state.events);
                        }
                    }
                    engine.drain_mode_events(&mut state.modes);
                    state.risk.tick(now, &mut state.colours);
                    state.metrics.engine_heartbeat.inc();
                    state.metrics.engine_queue_depth.set((field.max_capacity() - field.capacity()) as u64);
                    if state.must_flush() && !state.flush(None).await { return; }
                    if state.status_dirty { state.publish_status(&engine); }
                }
                _ = flush.tick() => if !state.flush(None).await { return; },
                _ = status_every.tick() => state.publish_status(&engine),
                _ = prune.tick() => {
                    let before = now_millis() - retention.as_millis() as Millis;
                    if state.store.prune(before).is_err() { return; }
                }
                // Everything waiting, in one go: one pass of this loop per reading (15,000 a
                // second at 300 x 50) cost more than judging them. Alarm events found in a run
                // are handed to the store right after it.
                n = field.recv_many(&mut inbox, FIELD_RUN) => {
                    if n == 0 { break; }
                    let now = state.clock(&mut engine);
                    for msg in inbox.drain(..) {
                        state.on_field(&mut engine, msg, now);
                    }
                    if state.must_flush() && !state.flush(None).await { return; }
                }
            }
        }
        // Shutdown: take what the drivers already sent, then commit it all.
        let deadline = tokio::time::Instant::now() + DRAIN_AT_SHUTDOWN;
        while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, field.recv()).await {
            let now = state.clock(&mut engine);
            state.on_field(&mut engine, msg, now);
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
    /// Shelving, suppression and out-of-service changes, journaled with the alarm events.
    modes: Vec<ModeEvent>,
    /// Risk colour changes, journaled too.
    colours: Vec<ColourChange>,
    risk: RiskMap,
    kpi: AlarmLoad,
    /// The colour changed since the status was last published.
    status_dirty: bool,
    /// Set while the batch that changed a colour is not yet committed: a colour announces its
    /// alarms, and an alarm is durable before it is announced, so the status waits.
    status_gate: Option<oneshot::Receiver<()>>,
    /// Records the store's queue had no room for, oldest first: they go ahead of the next
    /// batch that fits.
    held: Vec<JournalEntry>,
    /// Answered once everything handed to the store before them is committed: commands waiting
    /// for their record to be durable, and the status gate of a colour change.
    waiting: Vec<oneshot::Sender<()>>,
    /// The store's queue stayed full at the last flush: try without waiting until it takes a
    /// batch again, so that judging and ticking go on.
    store_stuck: bool,
    plant: Arc<Plant>,
    store: StoreHandle,
    metrics: Arc<Metrics>,
    status: watch::Sender<SiteStatus>,
    /// When the last reading arrived from any source.
    last_data: Option<Millis>,
    /// Wall and monotonic time at the last engine call, to tell a step of the wall clock.
    last_wall: Millis,
    last_mono: std::time::Instant,
}

impl State {
    /// The wall-clock time for the engine. Before any engine call: if the wall clock moved
    /// unlike monotonic time since the last call, it was stepped, and the engine's timers are
    /// moved with it (Engine::clock_stepped), so a step is neither silence nor a burst.
    fn clock(&mut self, engine: &mut Engine) -> Millis {
        let now = now_millis();
        let mono = std::time::Instant::now();
        let step =
            (now - self.last_wall) - mono.duration_since(self.last_mono).as_millis() as Millis;
        if step.abs() >= CLOCK_STEP_MS {
            tracing::warn!(
                step_ms = step,
                "The wall clock was stepped; alarm timers follow the time that really passed."
            );
            engine.clock_stepped(step);
        }
        (self.last_wall, self.last_mono) = (now, mono);
        now
    }

    /// One message from the drivers, judged at `now` (from [`State::clock`]).
    fn on_field(&mut self, engine: &mut Engine, msg: FieldEvent, now: Millis) {
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
                self.last_data = Some(now);
                self.batch.readings.push(r);
            }
            // Judged at the engine's own time: the base the step check keeps consistent.
            FieldEvent::DeviceStatus { device, ok, at: _ } => {
                engine.on_device_status(device, ok, now, &mut self.events)
            }
        }
        engine.drain_mode_events(&mut self.modes);
    }

    fn must_flush(&self) -> bool {
        !self.events.is_empty()
            || !self.modes.is_empty()
            || !self.colours.is_empty()
            || !self.held.is_empty()
            || !self.waiting.is_empty()
            || self.batch.readings.len() >= MAX_BATCH
    }

    /// Hand readings and events to the store. Returns false when the store is gone.
    async fn flush(&mut self, done: Option<oneshot::Sender<()>>) -> bool {
        if !self.must_flush()
            && self.batch.readings.is_empty()
            && self.batch.events.is_empty()
            && done.is_none()
        {
            return true;
        }
        let now = now_millis();
        let mut batch = std::mem::take(&mut self.batch);
        // Held records are older than any already in the batch (a reload's, say): first.
        if !self.held.is_empty() {
            let mut events = std::mem::take(&mut self.held);
            events.append(&mut batch.events);
            batch.events = events;
        }
        for event in self.events.drain(..) {
            self.risk.on_event(&event, now, &mut self.colours);
            self.kpi.on_event(&event);
            let json = AlarmEventJson::new(&self.plant, &event);
            log_event(&json);
            self.metrics
                .alarm_events
                .inc(json.alarm.kind, json.transition);
            // Hidden (shelved, suppressed, out-of-service) alarms are journaled, never announced.
            let notify = event.announce() || !event.alarm.state.is_hidden();
            batch.events.push(JournalEntry {
                event_id: json.id.clone(),
                seq: event.seq,
                at: event.at,
                body: serde_json::to_string(&json).unwrap_or_default(),
                alarm: Some(event.alarm),
                notify,
            });
        }
        for mode in self.modes.drain(..) {
            let json = ModeEventJson::new(&self.plant, &mode);
            tracing::info!(
                mode = json.mode,
                scope = %json.scope,
                by = json.by.as_deref().unwrap_or(""),
                reason = json.reason.as_deref().unwrap_or(""),
                "Alarm mode {}: {}.",
                if json.entered { "entered" } else { "ended" },
                json.scope
            );
            batch.events.push(JournalEntry {
                event_id: json.id.clone(),
                seq: 0,
                at: mode.at,
                body: serde_json::to_string(&json).unwrap_or_default(),
                alarm: None,
                notify: false,
            });
        }
        let colour_changed = !self.colours.is_empty();
        for change in self.colours.drain(..) {
            let json = ColourChangeJson::new(&self.plant, &change);
            tracing::info!(unit = %json.unit, from = json.from, to = json.to, "Risk colour changed.");
            batch.events.push(JournalEntry {
                event_id: json.id.clone(),
                seq: 0,
                at: change.at,
                body: serde_json::to_string(&json).unwrap_or_default(),
                alarm: None,
                notify: false,
            });
        }
        let mut waiting = std::mem::take(&mut self.waiting);
        waiting.extend(done);
        if colour_changed {
            // The status carries the colour: the uplink and the map should not wait a second.
            self.status_dirty = true;
            let (tx, rx) = oneshot::channel();
            self.status_gate = Some(rx);
            waiting.push(tx);
        }
        self.batch.readings = Vec::with_capacity(batch.readings.len().min(MAX_BATCH));
        let patience = if self.store_stuck {
            Duration::ZERO
        } else {
            STORE_PATIENCE
        };
        // Only a batch with readings shows that the writer is committing again: one without
        // needs no room for readings, and fits in the queue behind a stuck writer.
        let has_readings = !batch.readings.is_empty();
        match self.store.write_within(batch, patience).await {
            Ok(()) => {
                if self.store_stuck && has_readings {
                    self.store_stuck = false;
                    tracing::warn!("The store takes readings again.");
                }
            }
            Err(NotTaken::Gone) => {
                tracing::error!("The store writer has stopped; the engine stops too.");
                return false;
            }
            Err(NotTaken::Full(batch)) => {
                self.hold(batch, waiting);
                return true;
            }
        }
        if waiting.is_empty() {
            return true;
        }
        // Batches commit in order: this empty one is answered once everything before it is
        // durable, and answers the waiters.
        let (tx, rx) = oneshot::channel();
        let barrier = WriteBatch {
            done: Some(tx),
            ..WriteBatch::default()
        };
        match self.store.write_within(barrier, patience).await {
            Ok(()) => {
                tokio::spawn(async move {
                    if rx.await.is_ok() {
                        for w in waiting {
                            let _ = w.send(());
                        }
                    }
                });
            }
            Err(NotTaken::Gone) => {
                tracing::error!("The store writer has stopped; the engine stops too.");
                return false;
            }
            Err(NotTaken::Full(_)) => {
                self.waiting = waiting;
                self.store_stuck = true;
            }
        }
        true
    }

    /// The store's queue has stayed full (its writer cannot commit): judging must go on without
    /// it. The batch's readings are dropped and counted; its alarm, mode and colour records
    /// wait here, in order, for the next batch that fits, and so do the waiters.
    fn hold(&mut self, batch: WriteBatch, waiting: Vec<oneshot::Sender<()>>) {
        let readings = batch.readings.len() as u64;
        if readings > 0 {
            let m = &self.metrics.sinks;
            m.readings_dropped.add("store_stalled", "", readings);
            m.last_loss_ms.set(now_millis().max(1) as u64);
        }
        // A reload's new point list must reach the writer before any reading filed under it.
        if batch.point_tags.is_some() && self.batch.point_tags.is_none() {
            self.batch.point_tags = batch.point_tags;
        }
        let mut held = batch.events;
        if held.len() > MAX_HELD {
            let lost = held.len() - MAX_HELD;
            held.truncate(MAX_HELD);
            self.metrics.events_lost.add(lost as u64);
            tracing::error!(
                lost,
                "Too many alarm records wait for the store; the newest are dropped."
            );
        }
        if !self.store_stuck {
            tracing::error!(
                readings,
                records = held.len(),
                "The store's queue is full: readings are dropped until it takes them again; alarm records wait in memory."
            );
        }
        self.held = held;
        self.waiting = waiting;
        self.store_stuck = true;
    }
}

fn log_event(e: &AlarmEventJson) {
    let a = &e.alarm;
    if e.transition == "raised" {
        tracing::warn!(alarm_id = a.alarm_id, point = %a.point, kind = a.kind, priority = a.priority, "Alarm raised: {}.", a.message);
    } else {
        tracing::info!(
            alarm_id = a.alarm_id,
            point = %a.point,
            kind = a.kind,
            transition = e.transition,
            by = e.by.as_deref().unwrap_or(""),
            "Alarm {}: {}.",
            e.transition,
            a.message
        );
    }
}
