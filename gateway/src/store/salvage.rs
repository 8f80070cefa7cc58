//! Salvaging a damaged store file: it is renamed (kept for an operator), a new file is created,
//! and every row that can still be read is copied over, table by table, in ranges of row ids so
//! that one bad page costs only the rows on it. What could not be copied is counted per table,
//! logged at ERROR and recorded in `store_losses` (reason `salvage`).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode, params};

use super::schema;

/// Tables copied, oldest facts first; `readings` keeps its ids so sink cursors stay valid.
/// Every table of the schema is here: one left out would be dropped without a word.
const TABLES: &[&str] = &[
    "meta",
    "points",
    "journal",
    "alarms",
    "outbox",
    "escalations",
    "tickets",
    "ticket_events",
    "sink_cursor",
    "dead_letter",
    "store_losses",
    "history_blocks",
    "readings",
];
/// Rows copied per statement when a table cannot be copied in one go.
const RANGE: i64 = 1000;
/// How far back the day-by-day copy of one point's history blocks goes (ten years).
const BLOCK_DAYS: i64 = 3660;
const DAY_MS: i64 = 86_400_000;

/// Errors that mean the file itself is damaged (not a locked or missing file).
pub fn is_damage(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

/// Per table: rows copied, rows known lost (when the old count could be read), or `None` when
/// the table could not be read at all.
#[derive(Debug, Default)]
pub struct Report {
    pub tables: Vec<(String, u64, Option<u64>)>,
}

pub fn salvage(path: &Path) -> rusqlite::Result<Connection> {
    let stamp = drivers::now_millis();
    let aside = with_suffix(path, &format!(".damaged-{stamp}"));
    // The WAL and shared-memory files belong to the damaged file: they move with it.
    for ext in ["", "-wal", "-shm"] {
        let from = with_suffix(path, ext);
        if from.exists() {
            let to = with_suffix(&aside, ext);
            if let Err(error) = std::fs::rename(&from, &to) {
                tracing::error!(%error, from = %from.display(), "Moving the damaged store aside failed.");
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some(format!("cannot move {} aside: {error}", from.display())),
                ));
            }
        }
    }
    let conn = super::open_plain(path)?;
    conn.execute_batch(schema::SCHEMA)?;
    let report = copy_from(&conn, &aside);
    let mut lost_readings = 0u64;
    let mut detail = format!("damaged file kept as {}", aside.display());
    for (table, copied, lost) in &report.tables {
        let lost_text = lost.map_or_else(|| "unknown".to_owned(), |n| n.to_string());
        detail.push_str(&format!("; {table}: {copied} copied, {lost_text} lost"));
        if table == "readings" {
            lost_readings = lost.unwrap_or(0);
        }
    }
    conn.execute(
        "INSERT INTO store_losses (at_ms, reason, readings, unforwarded, detail) VALUES (?1, 'salvage', ?2, 0, ?3)",
        params![stamp, lost_readings as i64, detail],
    )?;
    tracing::error!(%detail, "The damaged store was salvaged into a new file.");
    Ok(conn)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn copy_from(conn: &Connection, old: &Path) -> Report {
    let mut report = Report::default();
    if let Err(error) = conn.execute("ATTACH DATABASE ?1 AS old", params![old.to_string_lossy()]) {
        tracing::error!(%error, "The damaged store cannot be opened at all; nothing could be salvaged.");
        return report;
    }
    for table in TABLES {
        let outcome = copy_table(conn, table);
        report
            .tables
            .push(((*table).to_owned(), outcome.0, outcome.1));
    }
    let _ = conn.execute("DETACH DATABASE old", []);
    report
}

/// (copied, lost) for one table.
fn copy_table(conn: &Connection, table: &str) -> (u64, Option<u64>) {
    let columns = match common_columns(conn, table) {
        Ok(c) if !c.is_empty() => c,
        _ => return (0, None),
    };
    let cols = columns.join(", ");
    let before = count(conn, "main", table);
    let old_count = conn
        .query_row(&format!("SELECT COUNT(*) FROM old.{table}"), [], |r| {
            r.get::<_, i64>(0)
        })
        .ok();
    let whole =
        format!("INSERT OR IGNORE INTO main.{table} ({cols}) SELECT {cols} FROM old.{table}");
    if conn.execute(&whole, []).is_err() {
        if table == "history_blocks" {
            // No row ids here (WITHOUT ROWID): by key instead.
            copy_blocks_by_key(conn, &cols);
        } else {
            // Undo a partial copy (a failed statement is rolled back by SQLite), then go range by
            // range: rows on readable pages are kept, the rest are counted as lost.
            let max: Option<i64> = conn
                .query_row(&format!("SELECT MAX(rowid) FROM old.{table}"), [], |r| {
                    r.get(0)
                })
                .ok()
                .flatten();
            if let Some(max) = max {
                let ranged = format!(
                    "INSERT OR IGNORE INTO main.{table} ({cols}) SELECT {cols} FROM old.{table} WHERE rowid BETWEEN ?1 AND ?2"
                );
                let mut start = 0;
                while start <= max {
                    let _ = conn.execute(&ranged, params![start, start + RANGE - 1]);
                    start += RANGE;
                }
            }
        }
    }
    let copied = (count(conn, "main", table) - before).max(0) as u64;
    let lost = old_count.map(|n| (n as u64).saturating_sub(copied));
    (copied, lost)
}

/// `history_blocks` point by point, and for a point whose blocks cannot all be read, day by day
/// (a range of its primary key touches only the pages that hold it).
fn copy_blocks_by_key(conn: &Connection, cols: &str) {
    let points: Vec<i64> = match conn.prepare("SELECT id FROM main.points") {
        Ok(mut stmt) => stmt
            .query_map([], |r| r.get(0))
            .map(|rows| rows.filter_map(Result::ok).collect())
            .unwrap_or_default(),
        Err(_) => return,
    };
    let per_point = format!(
        "INSERT OR IGNORE INTO main.history_blocks ({cols}) SELECT {cols} FROM old.history_blocks WHERE point = ?1"
    );
    let per_day = format!(
        "INSERT OR IGNORE INTO main.history_blocks ({cols}) SELECT {cols} FROM old.history_blocks
         WHERE point = ?1 AND t_start >= ?2 AND t_start < ?3"
    );
    let (Ok(mut whole), Ok(mut daily)) = (conn.prepare(&per_point), conn.prepare(&per_day)) else {
        return;
    };
    let today = drivers::now_millis() / DAY_MS * DAY_MS + DAY_MS;
    for point in points {
        if whole.execute(params![point]).is_ok() {
            continue;
        }
        for day in 0..BLOCK_DAYS {
            let end = today - day * DAY_MS;
            let _ = daily.execute(params![point, end - DAY_MS, end]);
        }
    }
}

fn count(conn: &Connection, schema: &str, table: &str) -> i64 {
    conn.query_row(&format!("SELECT COUNT(*) FROM {schema}.{table}"), [], |r| {
        r.get(0)
    })
    .unwrap_or(0)
}

/// Columns present in both the new and the damaged table (older files may lack newer ones).
fn common_columns(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    let names = |schema: &str| -> rusqlite::Result<Vec<String>> {
        let mut stmt = conn.prepare(&format!("PRAGMA {schema}.table_info({table})"))?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(1))?;
        rows.collect()
    };
    let new = names("main")?;
    let old = names("old")?;
    Ok(new.into_iter().filter(|c| old.contains(c)).collect())
}

#[cfg(test)]
mod tests {
    /// A table added to the schema but not to `TABLES` would be dropped by a salvage without a
    /// word, as tickets, escalations and compacted history once were.
    #[test]
    fn every_table_of_the_schema_is_salvaged() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(super::schema::SCHEMA).unwrap();
        let mut stmt = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            )
            .unwrap();
        let tables: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for table in &tables {
            assert!(
                super::TABLES.contains(&table.as_str()),
                "{table} is not salvaged"
            );
        }
        assert_eq!(super::TABLES.len(), tables.len(), "{tables:?}");
    }
}
