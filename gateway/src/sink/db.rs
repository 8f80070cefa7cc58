//! A sink's view of the store: its cursor, the readings after it, and its dead letters.
//! Every call runs on the blocking pool with the sink's own connection.

use std::path::Path;
use std::sync::{Arc, Mutex};

use alert_rules::Millis;
use rusqlite::{Connection, OptionalExtension, params};

use crate::store;

/// One stored reading, as a sink reads it.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    pub rowid: i64,
    pub point: i64,
    pub ts_ms: Millis,
    pub value: Option<f64>,
    pub quality: u8,
}

#[derive(Clone)]
pub struct SinkDb {
    conn: Arc<Mutex<Connection>>,
    sink: Arc<str>,
}

impl SinkDb {
    /// Open the store for `sink`, creating its cursor (at the beginning) if it has none.
    pub fn open(data_dir: &Path, sink: &str) -> Result<SinkDb, store::StoreError> {
        let conn = store::open_bookkeeping(data_dir)?;
        let path = data_dir.join(store::DB_FILE);
        conn.execute(
            "INSERT OR IGNORE INTO sink_cursor (sink, last_rowid, updated_ms) VALUES (?1, 0, ?2)",
            params![sink, drivers::now_millis()],
        )
        .map_err(|source| store::StoreError::Sqlite { path, source })?;
        Ok(SinkDb {
            conn: Arc::new(Mutex::new(conn)),
            sink: sink.into(),
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &str) -> rusqlite::Result<T> + Send + 'static,
    ) -> rusqlite::Result<T> {
        let conn = Arc::clone(&self.conn);
        let sink = Arc::clone(&self.sink);
        tokio::task::spawn_blocking(move || {
            let mut conn = conn
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&mut conn, &sink)
        })
        .await
        .unwrap_or_else(|e| Err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))
    }

    pub async fn cursor(&self) -> rusqlite::Result<i64> {
        self.with(|conn, sink| {
            conn.prepare_cached("SELECT last_rowid FROM sink_cursor WHERE sink = ?1")?
                .query_row(params![sink], |r| r.get(0))
                .optional()
                .map(Option::unwrap_or_default)
        })
        .await
    }

    /// The store's point numbers and tags.
    pub async fn points(&self) -> rusqlite::Result<Vec<(i64, String)>> {
        self.with(|conn, _| {
            let mut stmt = conn.prepare("SELECT id, tag FROM points")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    /// Up to `limit` readings after `after`, in the order they were stored, and the newest
    /// reading's id (0 when there is none), in one trip.
    pub async fn read(&self, after: i64, limit: usize) -> rusqlite::Result<(Vec<Row>, i64)> {
        self.with(move |conn, _| {
            let mut stmt = conn.prepare_cached(
                "SELECT rowid, point, ts_ms, value, quality FROM readings
                 WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, limit as i64], |r| {
                Ok(Row {
                    rowid: r.get(0)?,
                    point: r.get(1)?,
                    ts_ms: r.get(2)?,
                    value: r.get(3)?,
                    quality: r.get(4)?,
                })
            })?;
            let rows = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            let newest = conn
                .prepare_cached("SELECT COALESCE(MAX(rowid), 0) FROM readings")?
                .query_row([], |r| r.get(0))?;
            Ok((rows, newest))
        })
        .await
    }

    /// The upstream accepted everything up to `to`.
    pub async fn advance(&self, to: i64) -> rusqlite::Result<()> {
        self.with(move |conn, sink| {
            conn.prepare_cached("UPDATE sink_cursor SET last_rowid = MAX(last_rowid, ?2), updated_ms = ?3 WHERE sink = ?1")?
                .execute(params![sink, to, drivers::now_millis()],
            )
            .map(drop)
        })
        .await
    }

    /// The upstream refused a batch for good: keep it with the answer, and move past it, in one
    /// transaction (so that it is neither lost nor dead-lettered twice).
    pub async fn dead_letter(&self, letter: DeadLetter) -> rusqlite::Result<()> {
        self.with(move |conn, sink| {
            let tx = conn.transaction()?;
            let now = drivers::now_millis();
            tx.execute(
                "INSERT INTO dead_letter (sink, first_rowid, last_rowid, points, status, error, body, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    sink,
                    letter.first_rowid,
                    letter.last_rowid,
                    letter.points as i64,
                    letter.status,
                    letter.error,
                    letter.body,
                    now
                ],
            )?;
            tx.execute(
                "UPDATE sink_cursor SET last_rowid = MAX(last_rowid, ?2), updated_ms = ?3 WHERE sink = ?1",
                params![sink, letter.last_rowid, now],
            )?;
            tx.commit()
        })
        .await
    }
}

#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub first_rowid: i64,
    pub last_rowid: i64,
    pub points: usize,
    pub status: u16,
    pub error: String,
    /// The refused line protocol, uncompressed.
    pub body: String,
}
