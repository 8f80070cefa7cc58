//! The writer thread: the only place that writes the store.
//!
//! Batches arrive over a bounded channel; a full channel makes the engine wait, which in turn
//! makes the drivers wait: nothing is dropped in memory. Consecutive batches are merged into one
//! transaction. A failed commit (disk full, I/O error) is retried until it succeeds, so an
//! alarm is never announced without being on disk; only at shutdown does the writer give up,
//! and then it counts what it could not keep.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alert_rules::{Alarm, AlarmState, Millis, Reading, SystemCheck};
use rusqlite::types::Value;
use rusqlite::{Connection, params, params_from_iter};
use tokio::sync::{Notify, Semaphore, broadcast, mpsc, oneshot};

use crate::metrics::Metrics;

/// One journal record to append: an alarm event and the alarm's state after it.
#[derive(Debug, Clone)]
pub struct JournalEntry {
    pub event_id: String,
    pub seq: u32,
    pub at: Millis,
    /// The event JSON (what notifiers send).
    pub body: String,
    /// The alarm's state after the event; `None` for records that are not alarm transitions
    /// (shelving of a source with no open alarm, out-of-service periods, reloads).
    pub alarm: Option<Alarm>,
    /// Whether the event goes to the notification outboxes. Events of hidden (shelved,
    /// suppressed, out-of-service) alarms are journaled but never announced.
    pub notify: bool,
}

/// What the engine hands to the store in one go.
#[derive(Debug, Default)]
pub struct WriteBatch {
    pub readings: Vec<Reading>,
    pub events: Vec<JournalEntry>,
    /// Answered once the batch is committed.
    pub done: Option<oneshot::Sender<()>>,
    /// After a configuration reload: the tags of the new point list, in engine order. Readings
    /// of this batch and later ones are filed under these points.
    pub point_tags: Option<Vec<String>>,
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
    /// Room for readings in the writer's queue (see [`QUEUED_READINGS`]).
    room: Arc<Semaphore>,
}

/// Readings that may wait for the writer at once. The queue is bounded in readings, not only
/// in batches: alarm storms make many small batches, and 64 of them (about 0.2 s of a large
/// plant's readings) were too little to ride out a one-second fsync, so every device's poll
/// stood still. This many (about 1.5 MB) is four seconds at 15,000 readings a second.
pub const QUEUED_READINGS: usize = 65_536;

/// The permits a batch takes from [`StoreHandle::room`] (a batch larger than the whole room
/// takes all of it).
fn permits(batch: &WriteBatch) -> u32 {
    batch.readings.len().min(QUEUED_READINGS) as u32
}

impl StoreHandle {
    /// Hand a batch to the writer; waits while the writer's queue is full.
    pub async fn write(&self, batch: WriteBatch) -> Result<(), WriterGone> {
        let n = permits(&batch);
        if n > 0 {
            // Given back by the writer once the batch is committed (or given up at shutdown).
            self.room
                .acquire_many(n)
                .await
                .map_err(|_| WriterGone)?
                .forget();
        }
        self.tx
            .send(StoreMsg::Write(batch))
            .await
            .map_err(|_| WriterGone)
    }

    /// Hand a batch to the writer, waiting at most `patience` for room in its queue. A queue
    /// that stays full means the writer cannot commit (a full disk, a failing device): the
    /// caller gets the batch back, to go on without it.
    pub async fn write_within(
        &self,
        batch: WriteBatch,
        patience: Duration,
    ) -> Result<(), NotTaken> {
        let n = permits(&batch);
        let permit = if n > 0 {
            match tokio::time::timeout(patience, self.room.acquire_many(n)).await {
                Ok(Ok(permit)) => Some(permit),
                Ok(Err(_)) => return Err(NotTaken::Gone),
                Err(_) => return Err(NotTaken::Full(batch)),
            }
        } else {
            None
        };
        // Dropping the permit on the way out gives its room back.
        let slot = match tokio::time::timeout(patience, self.tx.reserve()).await {
            Ok(Ok(slot)) => slot,
            Ok(Err(_)) => return Err(NotTaken::Gone),
            Err(_) => return Err(NotTaken::Full(batch)),
        };
        if let Some(permit) = permit {
            // Given back by the writer once the batch is committed (or given up at shutdown).
            permit.forget();
        }
        slot.send(StoreMsg::Write(batch));
        Ok(())
    }

    /// Readings that may still be queued before [`StoreHandle::write`] waits.
    pub fn room_for_readings(&self) -> usize {
        self.room.available_permits()
    }

    /// Ask for the hourly retention pass. Never waits: with the queue full (the writer cannot
    /// commit) this hour's pass is skipped; the next one removes the same and more.
    pub fn prune(&self, before: Millis) -> Result<(), WriterGone> {
        match self.tx.try_send(StoreMsg::Prune { before }) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(WriterGone),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the store writer has stopped")]
pub struct WriterGone;

/// Why [`StoreHandle::write_within`] did not take a batch.
pub enum NotTaken {
    /// No room within the patience given: here is the batch back.
    Full(WriteBatch),
    /// The writer has stopped.
    Gone,
}

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
    /// Most bytes the store's live pages may use (see [`Writer::enforce_budget`]).
    pub disk_budget_bytes: u64,
}

/// Start the writer thread. It ends when every [`StoreHandle`] is dropped and the queue is empty.
pub fn spawn_writer(
    setup: WriterSetup,
    capacity: usize,
) -> (StoreHandle, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(capacity);
    let room = Arc::new(Semaphore::new(QUEUED_READINGS));
    let writer_room = Arc::clone(&room);
    let thread = std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            Writer {
                setup,
                compaction: Compaction::default(),
                room: writer_room,
                failing: false,
            }
            .run(rx)
        })
        .expect("spawning the store writer thread");
    (StoreHandle { tx, room }, thread)
}

struct Writer {
    setup: WriterSetup,
    compaction: Compaction,
    room: Arc<Semaphore>,
    /// Commits have kept failing (see [`SystemCheck::StoreFailing`]).
    failing: bool,
}

impl Drop for Writer {
    /// A writer that stopped (or panicked) gives no room back: close it, so that a waiting
    /// [`StoreHandle::write`] ends with [`WriterGone`] instead of waiting for ever.
    fn drop(&mut self) {
        self.room.close();
    }
}

/// The compaction pass begun at the last hourly tick, run a step at a time between commits, so
/// that a large plant's hour of readings never holds up the engine (and so the drivers) for the
/// seconds a full pass takes.
#[derive(Default)]
struct Compaction {
    pass: Option<super::blocks::Pass>,
}

/// Time spent compacting after one commit, at most (one step at least).
const COMPACT_SLICE: Duration = Duration::from_millis(20);

/// Readings per INSERT statement. One statement per reading cost about twice as much per row:
/// every statement also reads and writes the AUTOINCREMENT counter and starts a fresh VM run.
const ROWS_PER_INSERT: usize = 128;
/// A reading as bound to the INSERT: store point number, time, value (NULL when unusable), quality.
type RowValues = (i64, Millis, Option<f64>, u8);
/// `INSERT INTO readings ... VALUES (?,?,?,?), ...` with [`ROWS_PER_INSERT`] rows.
static INSERT_READINGS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let row = "(?, ?, ?, ?)";
    format!(
        "INSERT INTO readings (point, ts_ms, value, quality) VALUES {}",
        vec![row; ROWS_PER_INSERT].join(", ")
    )
});

/// A commit that takes this long is logged: the disk, not the plant, is then what paces Sentinel.
const SLOW_COMMIT: Duration = Duration::from_millis(250);

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
                let taken: usize = batches.iter().map(|b| permits(b) as usize).sum();
                self.commit_with_retry(batches, &rx);
                self.room.add_permits(taken);
                // Three page-count pragmas: cheap enough for every commit, which bounds the
                // overshoot to one transaction.
                self.enforce_budget();
            }
            self.compact_some();
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
                    let took = started.elapsed();
                    metrics.store_commit_seconds.observe(took);
                    if took >= SLOW_COMMIT {
                        // Readings queue up behind a slow disk; past the queues, the drivers wait.
                        let readings: usize = batches.iter().map(|b| b.readings.len()).sum();
                        tracing::warn!(
                            took_ms = took.as_millis() as u64,
                            readings,
                            "A store commit was slow."
                        );
                    }
                    if attempt > 1 {
                        tracing::warn!(attempts = attempt, "Store write succeeded after retrying.");
                    }
                    if self.failing {
                        self.failing = false;
                        metrics.system_checks.set(SystemCheck::StoreFailing, false);
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
                    // Three attempts (over a second) rule out a passing hiccup: from then on
                    // the engine is told, and raises the store_failing alarm.
                    if attempt >= 3 && !self.failing {
                        self.failing = true;
                        metrics.system_checks.set(SystemCheck::StoreFailing, true);
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
        // Replaced by a reload's batch; kept only if the whole transaction commits.
        let mut point_ids = setup.point_ids.clone();
        {
            let mut insert_readings = tx.prepare_cached(&INSERT_READINGS)?;
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
                if let Some(tags) = &batch.point_tags {
                    let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
                    point_ids = super::point_ids(&tx, &tags)?;
                }
                let rows: Vec<RowValues> = batch
                    .readings
                    .iter()
                    .filter_map(|r| {
                        let &point = point_ids.get(r.point.0 as usize)?;
                        let value =
                            (r.quality.is_usable() && r.value.is_finite()).then_some(r.value);
                        Some((point, r.time, value, r.quality.code()))
                    })
                    .collect();
                let mut chunks = rows.chunks_exact(ROWS_PER_INSERT);
                for chunk in &mut chunks {
                    let values = chunk.iter().flat_map(|(point, time, value, quality)| {
                        [
                            Value::Integer(*point),
                            Value::Integer(*time),
                            value.map_or(Value::Null, Value::Real),
                            Value::Integer(i64::from(*quality)),
                        ]
                    });
                    insert_readings.execute(params_from_iter(values))?;
                }
                for &(point, time, value, quality) in chunks.remainder() {
                    insert_reading.execute(params![point, time, value, quality])?;
                }
                for e in &batch.events {
                    let hash = super::chain_hash(&head, &e.body);
                    let alarm_id = e.alarm.as_ref().map_or(0, |a| a.id as i64);
                    insert_journal
                        .execute(params![e.event_id, alarm_id, e.at, e.body, head, hash])?;
                    head = hash;
                    if let Some(alarm) = &e.alarm {
                        let state = serde_json::to_string(alarm).unwrap_or_default();
                        let open = alarm.state != AlarmState::Normal;
                        upsert_alarm.execute(params![alarm_id, e.seq, open, state])?;
                    }
                    if e.notify {
                        for channel in &setup.channels {
                            insert_outbox.execute(params![channel, e.event_id, e.body, e.at])?;
                        }
                    }
                }
            }
        }
        tx.commit()?;
        setup.point_ids = point_ids;
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

    /// Compact a few steps of the pass under way; see [`Compaction`].
    fn compact_some(&mut self) {
        let started = Instant::now();
        while let Some(pass) = self.compaction.pass.as_mut() {
            match pass.step(&mut self.setup.conn) {
                Ok(false) => {}
                Ok(true) => {
                    if pass.moved > 0 {
                        tracing::info!(
                            readings = pass.moved,
                            "Readings compacted into history blocks."
                        );
                    }
                    self.compaction.pass = None;
                }
                Err(error) => {
                    self.setup.metrics.store_errors.inc();
                    tracing::error!(%error, "Compacting history failed; the readings stay uncompacted until the next hour.");
                    self.compaction.pass = None;
                }
            }
            if started.elapsed() >= COMPACT_SLICE {
                break;
            }
        }
    }

    fn prune(&mut self, before: Millis) {
        // Compaction rides on the hourly retention tick (blocks are one hour long); the work is
        // spread over the following commits.
        if self.compaction.pass.is_none() {
            match super::blocks::Pass::start(&self.setup.conn, drivers::now_millis()) {
                Ok(pass) => self.compaction.pass = Some(pass),
                Err(error) => {
                    self.setup.metrics.store_errors.inc();
                    tracing::error!(%error, "Starting to compact history failed.");
                }
            }
        }
        match prune(&mut self.setup.conn, before, drivers::now_millis()) {
            Ok((n, unforwarded)) => {
                if n > 0 {
                    tracing::info!(deleted = n, "Readings past retention removed.");
                }
                if unforwarded > 0 {
                    let m = &self.setup.metrics.sinks;
                    m.readings_dropped
                        .add("retention_unforwarded", "", unforwarded);
                    m.last_loss_ms.set(drivers::now_millis().max(1) as u64);
                    tracing::error!(
                        unforwarded,
                        "Readings past retention were removed before an upstream sink forwarded them."
                    );
                }
            }
            Err(error) => {
                self.setup.metrics.store_errors.inc();
                tracing::error!(%error, "Removing readings past retention failed.");
            }
        }
        match prune_delivered(&self.setup.conn, before) {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                deleted = n,
                "Delivered notifications past retention removed."
            ),
            Err(error) => {
                self.setup.metrics.store_errors.inc();
                tracing::error!(%error, "Removing delivered notifications past retention failed.");
            }
        }
    }

    /// Keep the store within its disk budget: past it, drop the oldest dead letters, then the
    /// oldest readings (never journal, alarm or outbox rows) until the live pages use at most
    /// 90 % of the budget. Freed pages are reused by later writes, so the file stops growing.
    fn enforce_budget(&mut self) {
        let budget = self.setup.disk_budget_bytes;
        let m = &self.setup.metrics.sinks;
        match enforce_budget(&mut self.setup.conn, budget, drivers::now_millis()) {
            Ok(outcome) => {
                m.store_used_bytes.set(outcome.used_bytes);
                m.store_over_budget
                    .set(u64::from(outcome.used_bytes > budget));
                // Raised by any drop; cleared only well under the budget, so that a store
                // living at its budget (dropping a little every few minutes) stays one standing
                // alarm instead of one per drop.
                let checks = &self.setup.metrics.system_checks;
                if outcome.dropped > 0 || outcome.dead_letters > 0 || outcome.used_bytes > budget {
                    checks.set(SystemCheck::DiskBudget, true);
                } else if outcome.used_bytes < budget / 10 * 8 {
                    checks.set(SystemCheck::DiskBudget, false);
                }
                if outcome.dropped > 0 {
                    m.readings_dropped.add("disk_budget", "", outcome.dropped);
                    m.readings_dropped
                        .add("disk_budget_unforwarded", "", outcome.unforwarded);
                    m.last_loss_ms.set(drivers::now_millis().max(1) as u64);
                    tracing::error!(
                        dropped = outcome.dropped,
                        unforwarded = outcome.unforwarded,
                        used_bytes = outcome.used_bytes,
                        budget_bytes = budget,
                        "The store reached its disk budget; the oldest readings were dropped."
                    );
                }
                if outcome.used_bytes > budget {
                    tracing::error!(
                        used_bytes = outcome.used_bytes,
                        budget_bytes = budget,
                        "The store is over its disk budget with no readings left to drop; the journal alone exceeds it."
                    );
                }
            }
            Err(error) => {
                self.setup.metrics.store_errors.inc();
                tracing::error!(%error, "Checking the store's disk budget failed.");
            }
        }
    }
}

/// Bytes used by the store's live pages (the file minus its free pages).
pub fn used_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    Ok(((pages - free).max(0) * page_size) as u64)
}

/// The smallest sink cursor: readings after it are not yet forwarded everywhere.
fn min_sink_cursor(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    conn.query_row("SELECT MIN(last_rowid) FROM sink_cursor", [], |r| r.get(0))
}

/// Delete readings measured before `before`. Returns (deleted, of which not yet forwarded).
pub fn prune(conn: &mut Connection, before: Millis, now: Millis) -> rusqlite::Result<(u64, u64)> {
    let tx = conn.transaction()?;
    let unforwarded: i64 = match min_sink_cursor(&tx)? {
        Some(cursor) => tx.query_row(
            "SELECT COUNT(*) FROM readings WHERE ts_ms < ?1 AND rowid > ?2",
            params![before, cursor],
            |r| r.get(0),
        )?,
        None => 0,
    };
    let mut n = tx.execute("DELETE FROM readings WHERE ts_ms < ?1", params![before])?;
    // Whole blocks only: a block that straddles the limit is kept until all of it is past.
    let block_readings: i64 = tx.query_row(
        "SELECT COALESCE(SUM(count), 0) FROM history_blocks WHERE t_end < ?1",
        params![before],
        |r| r.get(0),
    )?;
    tx.execute(
        "DELETE FROM history_blocks WHERE t_end < ?1",
        params![before],
    )?;
    n += block_readings as usize;
    // Refused batches are kept as long as the readings they copy.
    tx.execute(
        "DELETE FROM dead_letter WHERE created_ms < ?1",
        params![before],
    )?;
    if unforwarded > 0 {
        tx.execute(
            "INSERT INTO store_losses (at_ms, reason, readings, unforwarded, detail) VALUES (?1, 'retention', ?2, ?3, ?4)",
            params![now, n as i64, unforwarded, format!("readings measured before {before} ms")],
        )?;
    }
    tx.commit()?;
    Ok((n as u64, unforwarded as u64))
}

/// Most delivered notifications removed per retention tick: a store that kept years of them
/// (before they were pruned) is worked off over a few days, without holding the writer.
const DELIVERED_PER_PRUNE: i64 = 5_000;

/// Delete notifications delivered before `before`, oldest first, at most
/// [`DELIVERED_PER_PRUNE`]. A delivered row is only the record that a notice went out: the
/// event itself stays in the journal, which is never pruned. Nothing queues an event this old
/// again (alarm events are queued once, in the commit that journals them; escalation tiers and
/// overdue tickets keep their own progress), so the `(channel, event_id)` guard against
/// sending twice does not need the row. Undelivered rows are never touched.
pub fn prune_delivered(conn: &Connection, before: Millis) -> rusqlite::Result<u64> {
    conn.prepare_cached(
        "DELETE FROM outbox WHERE id IN
           (SELECT id FROM outbox WHERE delivered_ms < ?1 ORDER BY id LIMIT ?2)",
    )?
    .execute(params![before, DELIVERED_PER_PRUNE])
    .map(|n| n as u64)
}

#[derive(Debug, Clone, Copy, Default)]
pub struct BudgetOutcome {
    pub used_bytes: u64,
    pub dropped: u64,
    pub unforwarded: u64,
    /// Dead letters removed (they go before any reading).
    pub dead_letters: u64,
}

/// See [`Writer::enforce_budget`].
pub fn enforce_budget(
    conn: &mut Connection,
    budget: u64,
    now: Millis,
) -> rusqlite::Result<BudgetOutcome> {
    let mut out = BudgetOutcome {
        used_bytes: used_bytes(conn)?,
        ..BudgetOutcome::default()
    };
    if out.used_bytes <= budget {
        return Ok(out);
    }
    let target = budget / 10 * 9;
    // Dead letters go first: each is a copy of readings the store holds (or held) anyway, and
    // an upstream that refuses every batch would otherwise crowd out the history itself.
    let mut letters = (0i64, 0i64);
    while out.used_bytes > target {
        let tx = conn.transaction()?;
        let (n, points): (i64, i64) = tx.query_row(
            "SELECT COUNT(*), COALESCE(SUM(points), 0) FROM
               (SELECT points FROM dead_letter ORDER BY id
                LIMIT MAX(1, (SELECT COUNT(*) FROM dead_letter) / 20))",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if n == 0 {
            break;
        }
        tx.execute(
            "DELETE FROM dead_letter WHERE id IN (SELECT id FROM dead_letter ORDER BY id LIMIT ?1)",
            params![n],
        )?;
        tx.commit()?;
        letters = (letters.0 + n, letters.1 + points);
        out.used_bytes = used_bytes(conn)?;
    }
    out.dead_letters = letters.0 as u64;
    if letters.0 > 0 {
        tracing::error!(
            dead_letters = letters.0,
            points = letters.1,
            "Store over its disk budget: the oldest dead letters were removed."
        );
        conn.execute(
            "INSERT INTO store_losses (at_ms, reason, readings, unforwarded, detail) VALUES (?1, 'disk_budget_dead_letters', 0, 0, ?2)",
            params![
                now,
                format!(
                    "{} dead letters ({} refused points, copies of stored readings); budget {budget} bytes",
                    letters.0, letters.1
                )
            ],
        )?;
    }
    // Compacted history is older than any row in `readings` and was forwarded: it goes first,
    // a twentieth of the blocks at a time.
    while out.used_bytes > target {
        let blocks: i64 =
            conn.query_row("SELECT COUNT(*) FROM history_blocks", [], |r| r.get(0))?;
        if blocks == 0 {
            break;
        }
        let tx = conn.transaction()?;
        let (n, readings): (i64, i64) = tx.query_row(
            "SELECT COUNT(*), COALESCE(SUM(count), 0) FROM (SELECT count FROM history_blocks ORDER BY t_start LIMIT ?1)",
            params![(blocks / 20).max(1)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        tx.execute(
            "DELETE FROM history_blocks WHERE (point, t_start) IN (SELECT point, t_start FROM history_blocks ORDER BY t_start LIMIT ?1)",
            params![n],
        )?;
        tx.commit()?;
        out.dropped += readings as u64;
        out.used_bytes = used_bytes(conn)?;
    }
    let (mut first, mut last) = (i64::MAX, 0i64);
    while out.used_bytes > target {
        let range: (Option<i64>, Option<i64>) =
            conn.query_row("SELECT MIN(rowid), MAX(rowid) FROM readings", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        let (Some(min), Some(max)) = range else {
            break;
        };
        // A twentieth of what is there at a time: few passes, and little more than needed.
        let upto = min + ((max - min) / 20).max(1000);
        let tx = conn.transaction()?;
        let unforwarded: i64 = match min_sink_cursor(&tx)? {
            Some(cursor) => tx.query_row(
                "SELECT COUNT(*) FROM readings WHERE rowid < ?1 AND rowid > ?2",
                params![upto, cursor],
                |r| r.get(0),
            )?,
            None => 0,
        };
        let n = tx.execute("DELETE FROM readings WHERE rowid < ?1", params![upto])?;
        tx.commit()?;
        out.dropped += n as u64;
        out.unforwarded += unforwarded as u64;
        first = first.min(min);
        last = last.max(upto - 1);
        out.used_bytes = used_bytes(conn)?;
    }
    if out.dropped > 0 {
        conn.execute(
            "INSERT INTO store_losses (at_ms, reason, readings, unforwarded, detail) VALUES (?1, 'disk_budget', ?2, ?3, ?4)",
            params![
                now,
                out.dropped as i64,
                out.unforwarded as i64,
                format!("reading ids {first}..={last}; budget {budget} bytes")
            ],
        )?;
    }
    Ok(out)
}
