//! The embedded store: SQLite in WAL mode in the data directory. One writer thread owns the
//! write connection and commits readings, journal records and outbox rows together, so that an
//! alarm event is durable before any notifier can see it. Readers open their own connections.

pub mod blocks;
mod salvage;
mod schema;
#[cfg(test)]
mod tests;
mod writer;

use std::path::{Path, PathBuf};

use alert_rules::{Alarm, Millis};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use sha2::{Digest, Sha256};

pub use schema::GENESIS_HASH;
pub use writer::{
    Committed, JournalEntry, NotTaken, StoreHandle, WriteBatch, WriterSetup, spawn_writer,
};

pub const DB_FILE: &str = "sentinel.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

/// Open (creating if needed) the store for writing, with its schema. A damaged file is moved
/// aside and what can still be read from it is copied into a new one (see [`salvage`]); the
/// loss is logged and recorded in `store_losses`, never a panic and never a silent wipe.
pub fn open_writer(data_dir: &Path) -> Result<Connection, StoreError> {
    std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
        path: data_dir.to_owned(),
        source,
    })?;
    let path = data_dir.join(DB_FILE);
    let wrap = |source| StoreError::Sqlite {
        path: path.clone(),
        source,
    };
    match open_checked(&path) {
        Ok(conn) => Ok(conn),
        Err(error) if salvage::is_damage(&error) => {
            tracing::error!(%error, path = %path.display(), "The store file is damaged; salvaging what can be read.");
            salvage::salvage(&path).map_err(wrap)
        }
        Err(error) => Err(wrap(error)),
    }
}

fn open_checked(path: &Path) -> rusqlite::Result<Connection> {
    let conn = open_plain(path)?;
    // quick_check reads every page once (about a second per GB at start): the price of never
    // running on a file whose damage would surface later as failed commits.
    let verdict: String = conn.query_row("PRAGMA quick_check(1)", [], |r| r.get(0))?;
    if verdict != "ok" {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some(verdict),
        ));
    }
    conn.execute_batch(schema::SCHEMA)?;
    Ok(conn)
}

fn open_plain(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a committed alarm survives a power cut, not only a crash.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// Open a connection for bookkeeping that may be repeated but not lost: delivery marks of the
/// outboxes and the cursors of upstream sinks. Their commits skip the fsync (synchronous =
/// NORMAL, still crash-safe in WAL mode): a power cut may take back the last marks, and then
/// a notification or a batch of readings is sent again, which receivers tell by its event id
/// or its series and time. An fsync per delivered alarm was most of the notifiers' cost.
pub fn open_bookkeeping(data_dir: &Path) -> Result<Connection, StoreError> {
    let conn = open_reader(data_dir)?;
    let wrap = |source| StoreError::Sqlite {
        path: data_dir.join(DB_FILE),
        source,
    };
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(wrap)?;
    // They read the newest rows once each (the sink) or a few small tables (the outboxes): a
    // page cache of 512 KiB instead of SQLite's 2 MiB each does them no harm.
    conn.pragma_update(None, "cache_size", -512).map_err(wrap)?;
    Ok(conn)
}

/// Open a read-only connection (for the API and tools).
pub fn open_reader(data_dir: &Path) -> Result<Connection, StoreError> {
    let path = data_dir.join(DB_FILE);
    let wrap = |source| StoreError::Sqlite {
        path: path.clone(),
        source,
    };
    let conn = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(wrap)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(wrap)?;
    Ok(conn)
}

/// The store's number for each tag, in the order given, creating numbers for new tags.
pub fn point_ids(conn: &Connection, tags: &[&str]) -> rusqlite::Result<Vec<i64>> {
    // One savepoint for all the tags (a transaction of its own, or nested in the caller's):
    // a commit per new tag cost 15,000 fsyncs, up to a minute, before a large plant started.
    conn.execute_batch("SAVEPOINT point_ids")?;
    let ids = (|| {
        let mut insert = conn.prepare_cached("INSERT OR IGNORE INTO points (tag) VALUES (?1)")?;
        let mut select = conn.prepare_cached("SELECT id FROM points WHERE tag = ?1")?;
        let mut ids = Vec::with_capacity(tags.len());
        for tag in tags {
            insert.execute(params![tag])?;
            ids.push(select.query_row(params![tag], |r| r.get(0))?);
        }
        Ok(ids)
    })();
    match ids {
        Ok(ids) => {
            conn.execute_batch("RELEASE point_ids")?;
            Ok(ids)
        }
        Err(e) => {
            // Undo and end the savepoint; the caller sees the first error.
            let _ = conn.execute_batch("ROLLBACK TO point_ids; RELEASE point_ids");
            Err(e)
        }
    }
}

/// Make the store's sink cursors match the configured sinks: a new sink starts at the oldest
/// reading still in `readings`; the cursor of a sink no longer configured is removed (it would
/// otherwise hold back compaction for ever). Runs before the writer starts, so compaction never
/// sees a configured sink without its cursor.
pub fn set_sinks(conn: &Connection, sinks: &[&str]) -> rusqlite::Result<()> {
    let known: Vec<String> = {
        let mut stmt = conn.prepare("SELECT sink FROM sink_cursor")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for old in known.iter().filter(|k| !sinks.contains(&k.as_str())) {
        tracing::warn!(sink = %old, "A sink is no longer configured; its position in the store is forgotten.");
        conn.execute("DELETE FROM sink_cursor WHERE sink = ?1", params![old])?;
    }
    for sink in sinks {
        conn.execute(
            "INSERT OR IGNORE INTO sink_cursor (sink, last_rowid, updated_ms) VALUES (?1, 0, ?2)",
            params![sink, drivers::now_millis()],
        )?;
    }
    Ok(())
}

/// Alarms that were open when the store was last written, with their last event number.
pub fn open_alarms(conn: &Connection) -> rusqlite::Result<Vec<(Alarm, u32)>> {
    let mut stmt = conn.prepare("SELECT state, last_seq FROM alarms WHERE open = 1 ORDER BY id")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (state, seq) = row?;
        match serde_json::from_str::<Alarm>(&state) {
            Ok(alarm) => out.push((alarm, seq)),
            Err(error) => {
                tracing::error!(%error, "An open alarm in the store could not be read; it is skipped.")
            }
        }
    }
    Ok(out)
}

/// The first alarm id not yet used.
pub fn next_alarm_id(conn: &Connection) -> rusqlite::Result<u64> {
    let max: Option<i64> = conn
        .query_row("SELECT MAX(id) FROM alarms", [], |r| r.get(0))
        .optional()?
        .flatten();
    Ok(max.map_or(1, |m| m as u64 + 1))
}

/// The hash of the newest journal record (the chain head).
pub fn journal_head(conn: &Connection) -> rusqlite::Result<String> {
    Ok(conn
        .query_row(
            "SELECT hash FROM journal ORDER BY seq DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or_else(|| GENESIS_HASH.to_owned()))
}

/// Hash of a journal record: SHA-256 over the previous hash and the record's body.
pub fn chain_hash(prev_hash: &str, body: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(body.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// One stored reading, as read back.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StoredReading {
    pub ts_ms: Millis,
    pub value: Option<f64>,
    pub quality: &'static str,
}

/// Readings of one point in `[from, to]`, oldest first, at most `limit`: compacted history
/// blocks first, then the recent rows.
pub fn history(
    conn: &Connection,
    tag: &str,
    from: Millis,
    to: Millis,
    limit: u32,
) -> rusqlite::Result<Vec<StoredReading>> {
    let Some(point): Option<i64> = conn
        .query_row("SELECT id FROM points WHERE tag = ?1", params![tag], |r| {
            r.get(0)
        })
        .optional()?
    else {
        return Ok(Vec::new());
    };
    let quality = |q: u8| alert_rules::Quality::from_code(q).map_or("unknown", |q| q.as_str());
    // Blocks come oldest first: the first `limit` of them and the first `limit` raw rows hold
    // the first `limit` readings overall.
    let mut out: Vec<StoredReading> = blocks::read(conn, point, from, to, limit as usize)?
        .into_iter()
        .map(|s| StoredReading {
            ts_ms: s.ts_ms,
            value: s.value,
            quality: quality(s.quality),
        })
        .collect();
    let mut stmt = conn.prepare_cached(
        "SELECT ts_ms, value, quality FROM readings
         WHERE point = ?1 AND ts_ms BETWEEN ?2 AND ?3 ORDER BY ts_ms LIMIT ?4",
    )?;
    let rows = stmt.query_map(params![point, from, to, limit], |r| {
        Ok(StoredReading {
            ts_ms: r.get(0)?,
            value: r.get(1)?,
            quality: quality(r.get(2)?),
        })
    })?;
    for row in rows {
        out.push(row?);
    }
    // Stable: readings of equal time keep their stored order.
    out.sort_by_key(|r| r.ts_ms);
    out.truncate(limit as usize);
    Ok(out)
}
