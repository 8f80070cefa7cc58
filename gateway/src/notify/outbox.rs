//! Reading and updating one channel's outbox rows. Runs on the blocking pool.

use std::path::Path;
use std::sync::{Arc, Mutex};

use alert_rules::Millis;
use rusqlite::{Connection, OptionalExtension, params};

use crate::store;

/// The oldest undelivered notification of a channel.
#[derive(Debug, Clone)]
pub struct Pending {
    pub id: i64,
    pub event_id: String,
    pub body: String,
    pub attempts: u32,
    pub next_attempt_ms: Millis,
}

impl Pending {
    /// The columns every outbox query selects, in this order.
    pub const COLUMNS: &'static str = "id, event_id, body, attempts, next_attempt_ms";

    /// A row of a query that selects [`Pending::COLUMNS`].
    pub fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Pending> {
        Ok(Pending {
            id: r.get(0)?,
            event_id: r.get(1)?,
            body: r.get(2)?,
            attempts: r.get(3)?,
            next_attempt_ms: r.get(4)?,
        })
    }
}

#[derive(Clone)]
pub struct Outbox {
    conn: Arc<Mutex<Connection>>,
    channel: String,
}

impl Outbox {
    pub fn open(data_dir: &Path, channel: String) -> Result<Outbox, store::StoreError> {
        let conn = store::open_bookkeeping(data_dir)?;
        Ok(Outbox {
            conn: Arc::new(Mutex::new(conn)),
            channel,
        })
    }

    pub fn channel(&self) -> &str {
        &self.channel
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &str) -> rusqlite::Result<T> + Send + 'static,
    ) -> rusqlite::Result<T> {
        let conn = Arc::clone(&self.conn);
        let channel = self.channel.clone();
        tokio::task::spawn_blocking(move || {
            let conn = conn
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&conn, &channel)
        })
        .await
        .unwrap_or_else(|e| Err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))
    }

    /// The oldest undelivered notification, and how many wait (for the outbox gauge). One trip
    /// to the blocking pool for both: a channel asks once per notification it sends, and in an
    /// alarm storm those trips were most of its cost.
    pub async fn head(&self) -> rusqlite::Result<(Option<Pending>, u64)> {
        self.with(head_of).await
    }

    /// Marks `delivered` (in one commit), then reads up to `limit` undelivered notifications
    /// with an id above `after`, oldest first, and how many wait in all: always if `count`,
    /// else only when the read came back short (then the count is cheap). One trip
    /// to the blocking pool: a channel with several messages in flight settles a whole window
    /// of acknowledgements and refills it at once.
    pub async fn delivered_then_next(
        &self,
        delivered: Vec<i64>,
        at: Millis,
        after: i64,
        limit: usize,
        count: bool,
    ) -> rusqlite::Result<(Vec<Pending>, Option<u64>)> {
        self.with(move |conn, channel| {
            if !delivered.is_empty() {
                let tx = conn.unchecked_transaction()?;
                for id in delivered {
                    mark_delivered(&tx, id, at)?;
                }
                tx.commit()?;
            }
            let next = pending_after(conn, channel, after, limit)?;
            let pending = if count || next.len() < limit.max(1) {
                Some(count_pending(conn, channel)?)
            } else {
                None
            };
            Ok((next, pending))
        })
        .await
    }

    /// The journal's newest record number and hash (the chain head), published with the
    /// site status so that a hub can tell when a site's history was rewritten.
    pub async fn journal_head(&self) -> rusqlite::Result<(i64, String)> {
        self.with(|conn, _| {
            conn.prepare_cached("SELECT seq, hash FROM journal ORDER BY seq DESC LIMIT 1")?
                .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map(|h| h.unwrap_or_else(|| (0, crate::store::GENESIS_HASH.to_owned())))
        })
        .await
    }

    pub async fn pending_count(&self) -> rusqlite::Result<u64> {
        self.with(count_pending).await
    }

    pub async fn delivered(&self, id: i64, at: Millis) -> rusqlite::Result<()> {
        self.with(move |conn, _| mark_delivered(conn, id, at)).await
    }

    pub async fn failed(
        &self,
        id: i64,
        next_attempt_ms: Millis,
        error: String,
    ) -> rusqlite::Result<()> {
        self.with(move |conn, _| {
            conn.prepare_cached("UPDATE outbox SET attempts = attempts + 1, next_attempt_ms = ?2, last_error = ?3 WHERE id = ?1")?
                .execute(params![id, next_attempt_ms, error],
            )
            .map(drop)
        })
        .await
    }

    /// The newest stored reading's id (0 when there is none): where a readings window starts.
    pub async fn newest_reading(&self) -> rusqlite::Result<i64> {
        self.with(|conn, _| {
            conn.prepare_cached("SELECT COALESCE(MAX(id), 0) FROM readings")?
                .query_row([], |r| r.get(0))
        })
        .await
    }

    /// Per point, the readings stored after `after`: count, min, max and mean of the usable
    /// values, and the newest reading. Returns the summaries and the id to start after next.
    pub async fn readings_summary(&self, after: i64) -> rusqlite::Result<(Vec<PointSummary>, i64)> {
        self.with(move |conn, _| {
            let upto: i64 = conn
                .prepare_cached("SELECT COALESCE(MAX(id), 0) FROM readings")?
                .query_row([], |r| r.get(0))?;
            if upto <= after {
                return Ok((Vec::new(), after));
            }
            let mut stmt = conn.prepare_cached(
                "SELECT p.tag, s.n, s.good, s.lo, s.hi, s.mean, l.value, l.ts_ms, l.quality
                 FROM (SELECT point, COUNT(*) AS n, COUNT(value) AS good, MIN(value) AS lo,
                              MAX(value) AS hi, AVG(value) AS mean, MAX(id) AS last_id
                       FROM readings WHERE id > ?1 AND id <= ?2 GROUP BY point) s
                 JOIN readings l ON l.id = s.last_id
                 JOIN points p ON p.id = s.point
                 ORDER BY p.tag",
            )?;
            let rows = stmt.query_map(params![after, upto], |r| {
                Ok(PointSummary {
                    point: r.get(0)?,
                    n: r.get(1)?,
                    good: r.get(2)?,
                    min: r.get(3)?,
                    max: r.get(4)?,
                    mean: r.get(5)?,
                    last: r.get(6)?,
                    last_ms: r.get(7)?,
                    quality: r.get(8)?,
                })
            })?;
            Ok((rows.collect::<rusqlite::Result<Vec<_>>>()?, upto))
        })
        .await
    }
}

/// One point's readings over an uplink window (`[notify.mqtt] readings_every_secs`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PointSummary {
    pub point: String,
    /// Readings in the window, and how many had a usable value.
    pub n: i64,
    pub good: i64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
    /// The newest reading: value (none when unusable), time, quality code.
    pub last: Option<f64>,
    pub last_ms: Millis,
    pub quality: u8,
}

fn count_pending(conn: &Connection, channel: &str) -> rusqlite::Result<u64> {
    conn.prepare_cached("SELECT COUNT(*) FROM outbox WHERE channel = ?1 AND delivered_ms IS NULL")?
        .query_row(params![channel], |r| r.get::<_, i64>(0))
        .map(|n| n as u64)
}

/// Up to `limit` undelivered notifications of `channel` with an id above `after`, oldest first.
fn pending_after(
    conn: &Connection,
    channel: &str,
    after: i64,
    limit: usize,
) -> rusqlite::Result<Vec<Pending>> {
    static NEXT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "SELECT {} FROM outbox WHERE channel = ?1 AND delivered_ms IS NULL AND id > ?2 ORDER BY id LIMIT ?3",
            Pending::COLUMNS
        )
    });
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare_cached(&NEXT)?;
    let rows = stmt.query_map(
        params![channel, after, i64::try_from(limit).unwrap_or(i64::MAX)],
        Pending::from_row,
    )?;
    rows.collect()
}

fn head_of(conn: &Connection, channel: &str) -> rusqlite::Result<(Option<Pending>, u64)> {
    let head = pending_after(conn, channel, 0, 1)?.pop();
    let pending = match head {
        Some(_) => count_pending(conn, channel)?,
        None => 0,
    };
    Ok((head, pending))
}

fn mark_delivered(conn: &Connection, id: i64, at: Millis) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE outbox SET delivered_ms = ?2, attempts = attempts + 1 WHERE id = ?1",
    )?
    .execute(params![id, at])
    .map(drop)
}
