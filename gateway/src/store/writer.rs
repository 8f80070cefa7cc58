//! The writer thread: the only place that writes the store.
//!
//! Batches arrive over a bounded channel; a full channel makes the engine wait, which in turn
//! makes the drivers wait: nothing is dropped in memory. Consecutive batches are merged into one
//! transaction. A failed commit (disk full, I/O error) is retried until it succeeds, so an
//! alarm is never announced without being on disk; only at shutdown does the writer give up,
//! and then it counts what it could not keep.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alert_rules::{Alarm, AlarmState, Millis, Reading};
use rusqlite::{Connection, params};
use tokio::sync::{Notify, broadcast, mpsc, oneshot};

use crate::metrics::Metrics;

/// One journal record to append: an alarm event and the alarm's state after it.
#[derive(Debug, Clone)]
pub struct JournalEntry {
    pub event_id: String,
    pub seq: u32,
    pub at: Millis,
    /// The event JSON (what notifiers send).
    pub body: String,
    pub alarm: Alarm,
}

/// What the engine hands to the store in one go.
#[derive(Debug, Default)]
pub struct WriteBatch {
    pub readings: Vec<Reading>,
    pub events: Vec<JournalEntry>,
    /// Answered once the batch is committed.
    pub done: Option<oneshot::Sender<()>>,
}

pub enum StoreMsg {
    Write(WriteBatch),
    /// Delete readings older than this (retention).
    Prune {
        before: Millis,
    },
}

/// Events after they were committed: the feed for live views.
#[derive(Debug, Clone)]
pub struct Committed {
    pub events: Vec<JournalEntry>,
}

#[derive(Clone)]
pub struct StoreHandle {
    tx: mpsc::Sender<StoreMsg>,
}

impl StoreHandle {
    /// Hand a batch to the writer; waits while the writer's queue is full.
    pub async fn write(&self, batch: WriteBatch) -> Result<(), WriterGone> {
        self.tx
            .send(StoreMsg::Write(batch))
            .await
            .map_err(|_| WriterGone)
    }

    pub async fn prune(&self, before: Millis) -> Result<(), WriterGone> {
        self.tx
            .send(StoreMsg::Prune { before })
            .await
            .map_err(|_| WriterGone)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the store writer has stopped")]
pub struct WriterGone;

pub struct WriterSetup {
    pub conn: Connection,
    /// The store's point number for each engine point index.
    pub point_ids: Vec<i64>,
    /// Outbox channels every alarm event is queued on.
    pub channels: Vec<String>,
    /// Woken after each commit that queued notifications.
    pub notify: Vec<Arc<Notify>>,
    pub committed: broadcast::Sender<Arc<Committed>>,
    pub metrics: Arc<Metrics>,
    /// Hash of the newest journal record.
    pub journal_head: String,
}

/// Start the writer thread. It ends when every [`StoreHandle`] is dropped and the queue is empty.
pub fn spawn_writer(
    setup: WriterSetup,
    capacity: usize,
) -> (StoreHandle, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(capacity);
    let thread = std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || Writer { setup }.run(rx))
        .expect("spawning the store writer thread");
    (StoreHandle { tx }, thread)
}

struct Writer {
    setup: WriterSetup,
}

/// How many queued batches are merged into one transaction at most.
const MERGE_MAX: usize = 64;
/// Commit attempts after shutdown began, before the writer gives up on a batch.
const ATTEMPTS_AT_SHUTDOWN: u32 = 5;

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<StoreMsg>) {
        while let Some(first) = rx.blocking_recv() {
            let mut batches = Vec::new();
            let mut prune = None;
            match first {
                StoreMsg::Write(b) => batches.push(b),
                StoreMsg::Prune { before } => prune = Some(before),
            }
            while batches.len() < MERGE_MAX {
                match rx.try_recv() {
                    Ok(StoreMsg::Write(b)) => batches.push(b),
                    Ok(StoreMsg::Prune { before }) => prune = Some(before),
                    Err(_) => break,
                }
            }
            if !batches.is_empty() {
                self.commit_with_retry(batches, &rx);
            }
            if let Some(before) = prune {
                self.prune(before);
            }
        }
        tracing::debug!("Store writer stopped.");
    }

    fn commit_with_retry(&mut self, batches: Vec<WriteBatch>, rx: &mpsc::Receiver<StoreMsg>) {
        let metrics = Arc::clone(&self.setup.metrics);
        let mut attempt = 0u32;
        let mut closing_attempts = 0u32;
        loop {
            attempt += 1;
            let started = Instant::now();
            match self.commit(&batches) {
                Ok(head) => {
                    self.setup.journal_head = head;
                    metrics.store_commit_seconds.observe(started.elapsed());
                    if attempt > 1 {
                        tracing::warn!(attempts = attempt, "Store write succeeded after retrying.");
                    }
                    self.after_commit(batches);
                    return;
                }
                Err(error) => {
                    metrics.store_errors.inc();
                    if attempt == 1 || attempt.is_power_of_two() {
                        tracing::error!(%error, attempt, "Store write failed; retrying. Readings and alarms wait in memory.");
                    }
                    if rx.is_closed() {
                        closing_attempts += 1;
                        if closing_attempts >= ATTEMPTS_AT_SHUTDOWN {
                            let readings: usize = batches.iter().map(|b| b.readings.len()).sum();
                            let events: usize = batches.iter().map(|b| b.events.len()).sum();
                            metrics.readings_lost.add(readings as u64);
                            metrics.events_lost.add(events as u64);
                            tracing::error!(readings, events, %error, "Store write abandoned at shutdown; these records are lost.");
                            return;
                        }
                    }
                    let pause = Duration::from_millis(200 * u64::from(attempt.min(10)));
                    #[allow(clippy::disallowed_methods)]
                    // The writer is a dedicated thread, not a runtime worker.
                    std::thread::sleep(pause);
                }
            }
        }
    }

    /// One transaction for all the batches. Returns the new journal head.
    fn commit(&mut self, batches: &[WriteBatch]) -> rusqlite::Result<String> {
        let setup = &mut self.setup;
        let tx = setup.conn.transaction()?;
        let mut head = setup.journal_head.clone();
        {
            let mut insert_reading = tx.prepare_cached(
                "INSERT INTO readings (point, ts_ms, value, quality) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut insert_journal = tx.prepare_cached(
                "INSERT INTO journal (event_id, alarm_id, at_ms, body, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut upsert_alarm = tx.prepare_cached(
                "INSERT INTO alarms (id, last_seq, open, state) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET last_seq = excluded.last_seq, open = excluded.open, state = excluded.state",
            )?;
            let mut insert_outbox = tx.prepare_cached(
                "INSERT OR IGNORE INTO outbox (channel, event_id, body, created_ms) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for batch in batches {
                for r in &batch.readings {
                    let Some(&point) = setup.point_ids.get(r.point.0 as usize) else {
                        continue;
                    };
                    let value = (r.quality.is_usable() && r.value.is_finite()).then_some(r.value);
                    insert_reading.execute(params![point, r.time, value, r.quality.code()])?;
                }
                for e in &batch.events {
                    let hash = super::chain_hash(&head, &e.body);
                    insert_journal.execute(params![
                        e.event_id,
                        e.alarm.id as i64,
                        e.at,
                        e.body,
                        head,
                        hash
                    ])?;
                    head = hash;
                    let state = serde_json::to_string(&e.alarm).unwrap_or_default();
                    let open = e.alarm.state != AlarmState::Normal;
                    upsert_alarm.execute(params![e.alarm.id as i64, e.seq, open, state])?;
                    for channel in &setup.channels {
                        insert_outbox.execute(params![channel, e.event_id, e.body, e.at])?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(head)
    }

    fn after_commit(&mut self, batches: Vec<WriteBatch>) {
        let metrics = &self.setup.metrics;
        let mut events = Vec::new();
        for mut batch in batches {
            metrics.readings_stored.add(batch.readings.len() as u64);
            metrics.events_stored.add(batch.events.len() as u64);
            events.append(&mut batch.events);
            if let Some(done) = batch.done.take() {
                let _ = done.send(());
            }
        }
        if !events.is_empty() {
            if !self.setup.channels.is_empty() {
                for n in &self.setup.notify {
                    n.notify_one();
                }
            }
            // Live views only; nobody listening is fine.
            let _ = self.setup.committed.send(Arc::new(Committed { events }));
        }
    }

    fn prune(&mut self, before: Millis) {
        match self
            .setup
            .conn
            .execute("DELETE FROM readings WHERE ts_ms < ?1", params![before])
        {
            Ok(n) if n > 0 => tracing::info!(deleted = n, "Readings past retention removed."),
            Ok(_) => {}
            Err(error) => {
                self.setup.metrics.store_errors.inc();
                tracing::error!(%error, "Removing readings past retention failed.");
            }
        }
    }
}
