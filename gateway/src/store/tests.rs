//! The store with explicit time: retention removes what is past it and the space is reused;
//! the disk budget drops the oldest readings, counts and records them, and never touches the
//! journal; a sink's cursor survives reopening.

use std::sync::Arc;

use alert_rules::{PointId, Quality, Reading};
use rusqlite::Connection;
use tokio::sync::broadcast;

use super::writer::{enforce_budget, prune, used_bytes};
use super::{WriteBatch, WriterSetup, open_writer, point_ids, spawn_writer};
use crate::metrics::Metrics;

const DAY_MS: i64 = 86_400_000;
/// 2026-01-01T00:00:00Z: all times in these tests are explicit.
const T0: i64 = 1_767_225_600_000;

fn readings(points: u32, per_point: i64, start: i64, step_ms: i64) -> Vec<Reading> {
    let mut out = Vec::new();
    for i in 0..per_point {
        for p in 0..points {
            out.push(Reading {
                point: PointId(p),
                time: start + i * step_ms,
                value: 20.0 + f64::from(p) + (i % 50) as f64 * 0.1,
                quality: Quality::Good,
            });
        }
    }
    out
}

/// Store readings through the real writer thread, then hand back a fresh connection.
async fn write_through_writer(dir: &std::path::Path, batch: Vec<Reading>, budget: u64) -> Arc<Metrics> {
    let conn = open_writer(dir).unwrap();
    let ids = point_ids(&conn, &["A", "B", "C"]).unwrap();
    let metrics = Arc::new(Metrics::default());
    let (committed, _) = broadcast::channel(4);
    let (handle, thread) = spawn_writer(
        WriterSetup {
            conn,
            point_ids: ids,
            channels: vec![],
            notify: vec![],
            committed,
            metrics: Arc::clone(&metrics),
            journal_head: super::GENESIS_HASH.to_owned(),
            disk_budget_bytes: budget,
        },
        8,
    );
    // One commit per chunk, as readings arrive in service (the writer would merge a burst).
    for chunk in batch.chunks(5_000) {
        let (done, committed) = tokio::sync::oneshot::channel();
        handle
            .write(WriteBatch {
                readings: chunk.to_vec(),
                done: Some(done),
                ..WriteBatch::default()
            })
            .await
            .unwrap();
        committed.await.unwrap();
    }
    drop(handle);
    tokio::task::spawn_blocking(move || thread.join().unwrap())
        .await
        .unwrap();
    metrics
}

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

fn pages(conn: &Connection) -> (i64, i64) {
    (
        count(conn, "PRAGMA page_count"),
        count(conn, "PRAGMA freelist_count"),
    )
}

#[tokio::test]
async fn retention_removes_old_readings_and_the_space_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    // 40 days at one reading per point every 10 minutes: 3 points × 5760.
    let per_point = 40 * 144;
    let metrics = write_through_writer(dir.path(), readings(3, per_point, T0, 600_000), u64::MAX).await;
    assert_eq!(metrics.readings_stored.get(), 3 * per_point as u64);
    let mut conn = open_writer(dir.path()).unwrap();
    let (pages_before, free_before) = pages(&conn);
    assert_eq!(free_before, 0);

    // "Now" is day 40; retention is 30 days.
    let now = T0 + 40 * DAY_MS;
    let before = now - 30 * DAY_MS;
    let (deleted, unforwarded) = prune(&mut conn, before, now).unwrap();
    assert_eq!(deleted, 3 * 10 * 144, "ten days of three points");
    assert_eq!(unforwarded, 0, "no sink is configured");
    assert_eq!(count(&conn, &format!("SELECT COUNT(*) FROM readings WHERE ts_ms < {before}")), 0);
    assert_eq!(count(&conn, &format!("SELECT MIN(ts_ms) FROM readings")), before);
    let (pages_after, free_after) = pages(&conn);
    assert_eq!(pages_after, pages_before, "the file does not shrink ...");
    assert!(free_after > 0, "... but the freed pages are kept for reuse");
    drop(conn);

    // Ten more days: they fit in the freed pages, so the file does not grow (a few pages of
    // slack for index splits).
    write_through_writer(dir.path(), readings(3, 10 * 144, now, 600_000), u64::MAX).await;
    let conn = open_writer(dir.path()).unwrap();
    let (pages_final, _) = pages(&conn);
    // Without reuse the ten days would add a quarter to the file; index pages split a little
    // differently the second time, hence a small slack.
    assert!(
        pages_final <= pages_before + pages_before / 50,
        "space reused: {pages_before} pages before, {pages_final} after"
    );
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM readings"), 3 * per_point);
}

#[tokio::test]
async fn retention_counts_readings_a_sink_never_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    write_through_writer(dir.path(), readings(3, 100, T0, 1000), u64::MAX).await;
    let mut conn = open_writer(dir.path()).unwrap();
    // The sink forwarded the first 60 rows only.
    conn.execute(
        "INSERT INTO sink_cursor (sink, last_rowid, updated_ms) VALUES ('influxdb', 60, 0)",
        [],
    )
    .unwrap();
    let (deleted, unforwarded) = prune(&mut conn, T0 + 50_000, T0 + DAY_MS).unwrap();
    assert_eq!(deleted, 150);
    assert_eq!(unforwarded, 90);
    assert_eq!(
        count(&conn, "SELECT SUM(unforwarded) FROM store_losses WHERE reason = 'retention'"),
        90
    );
}

#[tokio::test]
async fn the_disk_budget_drops_the_oldest_readings_only() {
    let dir = tempfile::tempdir().unwrap();
    let budget = 2 * 1024 * 1024;
    // About 5 MB of readings, written through the writer, which keeps to its budget as it goes.
    let metrics = write_through_writer(dir.path(), readings(3, 40_000, T0, 1000), budget).await;
    let mut conn = open_writer(dir.path()).unwrap();
    // The writer checks at most once a second; a final check settles it.
    let outcome = enforce_budget(&mut conn, budget, T0).unwrap();
    let used = used_bytes(&conn).unwrap();
    assert!(used <= budget, "used {used} > budget {budget}");
    let kept = count(&conn, "SELECT COUNT(*) FROM readings");
    let dropped_total = metrics.sinks.readings_dropped.get("disk_budget", "") + outcome.dropped;
    assert_eq!(kept as u64 + dropped_total, 120_000, "every reading is kept or counted");
    assert!(dropped_total > 0);
    // The newest survive.
    assert_eq!(count(&conn, "SELECT MAX(ts_ms) FROM readings"), T0 + 39_999_000);
    assert_eq!(
        count(&conn, "SELECT SUM(readings) FROM store_losses WHERE reason = 'disk_budget'") as u64,
        dropped_total
    );
    // The file stays near the budget: freed pages are reused.
    let (pages, _) = pages(&conn);
    let page_size = count(&conn, "PRAGMA page_size");
    assert!((pages * page_size) as u64 <= budget * 3 / 2, "file {} bytes", pages * page_size);
}

#[tokio::test]
async fn the_disk_budget_never_drops_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open_writer(dir.path()).unwrap();
    for i in 0..2000 {
        conn.execute(
            "INSERT INTO journal (event_id, alarm_id, at_ms, body, prev_hash, hash) VALUES (?1, 1, 0, ?2, '', '')",
            rusqlite::params![format!("e{i}"), "x".repeat(500)],
        )
        .unwrap();
    }
    let outcome = enforce_budget(&mut conn, 64 * 1024, T0).unwrap();
    assert_eq!(outcome.dropped, 0);
    assert!(outcome.used_bytes > 64 * 1024, "over budget, and reported so");
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM journal"), 2000);
}

fn damage(path: &std::path::Path, from_page: u64, pages: u64) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(from_page * 4096)).unwrap();
    f.write_all(&vec![0xA5; (pages * 4096) as usize]).unwrap();
}

fn checkpoint(dir: &std::path::Path) {
    let conn = open_writer(dir).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
}

#[tokio::test]
async fn a_damaged_store_is_salvaged_and_the_loss_recorded() {
    let dir = tempfile::tempdir().unwrap();
    write_through_writer(dir.path(), readings(3, 20_000, T0, 1000), u64::MAX).await;
    checkpoint(dir.path());
    let path = dir.path().join(super::DB_FILE);
    let pages = std::fs::metadata(&path).unwrap().len() / 4096;
    // Garbage over a stretch in the middle of the file (readings pages).
    damage(&path, pages / 2, 8);

    let conn = open_writer(dir.path()).unwrap();
    let kept = count(&conn, "SELECT COUNT(*) FROM readings");
    assert!(kept > 0 && kept < 60_000, "some readings kept, some lost: {kept}");
    let (lost, detail): (i64, String) = conn
        .query_row(
            "SELECT readings, detail FROM store_losses WHERE reason = 'salvage'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(detail.contains("damaged file kept as"), "{detail}");
    assert!(lost == 0 || kept + lost == 60_000, "kept {kept} + lost {lost}");
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM points"), 3);
    let aside = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().contains(".damaged-"));
    assert!(aside, "the damaged file is kept, not wiped");
    // The new file works.
    drop(conn);
    write_through_writer(dir.path(), readings(3, 10, T0 + DAY_MS, 1000), u64::MAX).await;
}

#[tokio::test]
async fn a_store_that_is_not_a_database_is_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    write_through_writer(dir.path(), readings(3, 100, T0, 1000), u64::MAX).await;
    checkpoint(dir.path());
    damage(&dir.path().join(super::DB_FILE), 0, 1);
    let conn = open_writer(dir.path()).unwrap();
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM readings"), 0);
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM store_losses WHERE reason = 'salvage'"),
        1
    );
}
