//! The store with explicit time: retention removes what is past it and the space is reused;
//! the disk budget drops the oldest readings, counts and records them, and never touches the
//! journal; a sink's cursor survives reopening.

use std::sync::Arc;

use alert_rules::{PointId, Quality, Reading};
use rusqlite::Connection;
use tokio::sync::broadcast;

use super::writer::{enforce_budget, prune, prune_delivered, used_bytes};
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

/// A writer setup with no channels, for `ids`, keeping to `budget` bytes.
fn setup(conn: Connection, ids: Vec<i64>, budget: u64) -> (WriterSetup, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::default());
    let (committed, _) = broadcast::channel(4);
    let setup = WriterSetup {
        conn,
        point_ids: ids,
        channels: vec![],
        notify: vec![],
        committed,
        metrics: Arc::clone(&metrics),
        journal_head: super::GENESIS_HASH.to_owned(),
        disk_budget_bytes: budget,
    };
    (setup, metrics)
}

/// Store readings through the real writer thread, then hand back a fresh connection.
async fn write_through_writer(
    dir: &std::path::Path,
    batch: Vec<Reading>,
    budget: u64,
) -> Arc<Metrics> {
    let conn = open_writer(dir).unwrap();
    let ids = point_ids(&conn, &["A", "B", "C"]).unwrap();
    let (setup, metrics) = setup(conn, ids, budget);
    let (handle, thread) = spawn_writer(setup, 8);
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
    let metrics =
        write_through_writer(dir.path(), readings(3, per_point, T0, 600_000), u64::MAX).await;
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
    assert_eq!(
        count(
            &conn,
            &format!("SELECT COUNT(*) FROM readings WHERE ts_ms < {before}")
        ),
        0
    );
    assert_eq!(count(&conn, "SELECT MIN(ts_ms) FROM readings"), before);
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
        count(
            &conn,
            "SELECT SUM(unforwarded) FROM store_losses WHERE reason = 'retention'"
        ),
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
    // The writer checks after every commit; a last check here changes nothing.
    let outcome = enforce_budget(&mut conn, budget, T0).unwrap();
    let used = used_bytes(&conn).unwrap();
    assert!(used <= budget, "used {used} > budget {budget}");
    let kept = count(&conn, "SELECT COUNT(*) FROM readings");
    let dropped_total = metrics.sinks.readings_dropped.get("disk_budget", "") + outcome.dropped;
    assert_eq!(
        kept as u64 + dropped_total,
        120_000,
        "every reading is kept or counted"
    );
    assert!(dropped_total > 0);
    // The newest survive.
    assert_eq!(
        count(&conn, "SELECT MAX(ts_ms) FROM readings"),
        T0 + 39_999_000
    );
    assert_eq!(
        count(
            &conn,
            "SELECT SUM(readings) FROM store_losses WHERE reason = 'disk_budget'"
        ) as u64,
        dropped_total
    );
    // The file stays near the budget: freed pages are reused.
    let (pages, _) = pages(&conn);
    let page_size = count(&conn, "PRAGMA page_size");
    assert!(
        (pages * page_size) as u64 <= budget * 3 / 2,
        "file {} bytes",
        pages * page_size
    );
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
    assert!(
        outcome.used_bytes > 64 * 1024,
        "over budget, and reported so"
    );
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM journal"), 2000);
}

#[tokio::test]
async fn delivered_notifications_past_retention_go_and_pending_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let conn = open_writer(dir.path()).unwrap();
    let before = T0 + 30 * DAY_MS;
    // 12,000 delivered long ago, 100 delivered recently, 50 never delivered (created long ago).
    for i in 0..12_150i64 {
        let delivered = match i {
            0..12_000 => Some(T0 + i),
            12_000..12_100 => Some(before + i),
            _ => None,
        };
        conn.execute(
            "INSERT INTO outbox (channel, event_id, body, created_ms, delivered_ms) VALUES ('mqtt', ?1, 'x', ?2, ?3)",
            rusqlite::params![format!("e{i}"), T0, delivered],
        )
        .unwrap();
    }
    // At most a bounded batch per tick, oldest first; three ticks work off the backlog.
    assert_eq!(prune_delivered(&conn, before).unwrap(), 5_000);
    assert_eq!(
        count(&conn, "SELECT MIN(delivered_ms) FROM outbox"),
        T0 + 5_000
    );
    assert_eq!(prune_delivered(&conn, before).unwrap(), 5_000);
    assert_eq!(prune_delivered(&conn, before).unwrap(), 2_000);
    assert_eq!(prune_delivered(&conn, before).unwrap(), 0);
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM outbox WHERE delivered_ms IS NOT NULL"
        ),
        100
    );
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM outbox WHERE delivered_ms IS NULL"
        ),
        50
    );
}

#[tokio::test]
async fn dead_letters_go_before_readings_and_with_retention() {
    let dir = tempfile::tempdir().unwrap();
    write_through_writer(dir.path(), readings(3, 2_000, T0, 1000), u64::MAX).await;
    let mut conn = open_writer(dir.path()).unwrap();
    let stored = count(&conn, "SELECT COUNT(*) FROM readings");
    let used = used_bytes(&conn).unwrap();
    // An upstream that refuses every batch: 400 letters of 4 kB each.
    for i in 0..400i64 {
        conn.execute(
            "INSERT INTO dead_letter (sink, first_rowid, last_rowid, points, status, error, body, created_ms)
             VALUES ('influxdb', ?1, ?1, 10, 400, 'refused', ?2, ?3)",
            rusqlite::params![i, "y".repeat(4000), T0 + i],
        )
        .unwrap();
    }
    // Room for the readings and about 200 kB more.
    let budget = (used + 200 * 1024) * 10 / 9 + 100;
    let outcome = enforce_budget(&mut conn, budget, T0).unwrap();
    assert_eq!(outcome.dropped, 0, "no reading goes while letters can");
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM readings"), stored);
    assert!(outcome.used_bytes <= budget / 10 * 9, "{outcome:?}");
    let left = count(&conn, "SELECT COUNT(*) FROM dead_letter");
    assert_eq!(outcome.dead_letters as i64, 400 - left);
    assert!(left > 0 && left < 400, "{left} left");
    assert_eq!(
        count(&conn, "SELECT MIN(created_ms) FROM dead_letter"),
        T0 + 400 - left,
        "the oldest went first"
    );
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM store_losses WHERE reason = 'disk_budget_dead_letters'"
        ),
        1
    );
    // Retention takes the letters older than its limit, like the readings they copy.
    prune(&mut conn, T0 + 395, T0 + DAY_MS).unwrap();
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM dead_letter"),
        5.min(left)
    );
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
    // The hazard workflow's records live in the same file: they must come through too.
    {
        let conn = open_writer(dir.path()).unwrap();
        conn.execute_batch(
            "INSERT INTO tickets (id, state, title, description, created_ms, created_by, updated_ms, seq)
               VALUES (7, 'dispatched', 'Leak at V-101', 'flange', 1, 'safety', 2, 2);
             INSERT INTO ticket_events (ticket_id, seq, to_state, by, at_ms) VALUES (7, 1, 'open', 'safety', 1);
             INSERT INTO ticket_events (ticket_id, seq, from_state, to_state, by, at_ms) VALUES (7, 2, 'open', 'dispatched', 'safety', 2);
             INSERT INTO escalations (alarm_id, chain, raised_ms, next_tier, repeats, last_sent_ms, due_ms, event)
               VALUES (3, 'tank-farm', 1, 1, 0, 1, 600001, '{}');
             INSERT INTO history_blocks (point, t_start, t_end, count, data) VALUES (1, 0, 3599000, 3600, x'00');",
        )
        .unwrap();
    }
    checkpoint(dir.path());
    let path = dir.path().join(super::DB_FILE);
    let pages = std::fs::metadata(&path).unwrap().len() / 4096;
    // Garbage over a stretch in the middle of the file (readings pages).
    damage(&path, pages / 2, 8);

    let conn = open_writer(dir.path()).unwrap();
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM tickets WHERE id = 7"), 1);
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM ticket_events WHERE ticket_id = 7"
        ),
        2
    );
    assert_eq!(
        count(
            &conn,
            "SELECT next_tier FROM escalations WHERE alarm_id = 3"
        ),
        1
    );
    assert_eq!(count(&conn, "SELECT SUM(count) FROM history_blocks"), 3600);
    let kept = count(&conn, "SELECT COUNT(*) FROM readings");
    assert!(
        kept > 0 && kept < 60_000,
        "some readings kept, some lost: {kept}"
    );
    let (lost, detail): (i64, String) = conn
        .query_row(
            "SELECT readings, detail FROM store_losses WHERE reason = 'salvage'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(detail.contains("damaged file kept as"), "{detail}");
    assert!(
        lost == 0 || kept + lost == 60_000,
        "kept {kept} + lost {lost}"
    );
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
async fn damaged_history_blocks_are_salvaged_point_by_point_and_day_by_day() {
    let dir = tempfile::tempdir().unwrap();
    write_through_writer(dir.path(), readings(3, 10, T0, 1000), u64::MAX).await;
    {
        let conn = open_writer(dir.path()).unwrap();
        let mut insert = conn
            .prepare("INSERT INTO history_blocks (point, t_start, t_end, count, data) VALUES (?1, ?2, ?3, 3600, ?4)")
            .unwrap();
        let ids: Vec<i64> = conn
            .prepare("SELECT id FROM points")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        // Three points × 1,500 hours of blocks, 600 bytes each: about 2.7 MB of table pages.
        for &p in &ids {
            for h in 0..1_500i64 {
                let t = T0 + h * 3_600_000;
                insert
                    .execute(rusqlite::params![p, t, t + 3_599_000, vec![p as u8; 600]])
                    .unwrap();
            }
        }
    }
    checkpoint(dir.path());
    let path = dir.path().join(super::DB_FILE);
    let pages = std::fs::metadata(&path).unwrap().len() / 4096;
    damage(&path, pages / 2, 4);

    let conn = open_writer(dir.path()).unwrap();
    let kept = count(&conn, "SELECT COUNT(*) FROM history_blocks");
    assert!(
        kept > 4_000 && kept < 4_500,
        "most blocks kept, a few lost: {kept}"
    );
    // Every point keeps history, on both sides of the damage.
    for (point, first, last) in conn
        .prepare("SELECT point, MIN(t_start), MAX(t_start) FROM history_blocks GROUP BY point")
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
    {
        assert_eq!(first, T0, "point {point}");
        assert_eq!(last, T0 + 1_499 * 3_600_000, "point {point}");
    }
    let detail: String = conn
        .query_row(
            "SELECT detail FROM store_losses WHERE reason = 'salvage'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        detail.contains(&format!("history_blocks: {kept} copied")),
        "{detail}"
    );
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
        count(
            &conn,
            "SELECT COUNT(*) FROM store_losses WHERE reason = 'salvage'"
        ),
        1
    );
}

#[tokio::test]
async fn compaction_keeps_every_value_exactly_and_waits_for_the_sink() {
    let dir = tempfile::tempdir().unwrap();
    // Six hours at 1 Hz for three points, with a stretch of bad readings (no value).
    let mut input = readings(3, 6 * 3600, T0, 1000);
    for r in input.iter_mut().skip(5000).take(300) {
        r.quality = Quality::CommLost;
    }
    write_through_writer(dir.path(), input.clone(), u64::MAX).await;
    let mut conn = open_writer(dir.path()).unwrap();
    // The sink has forwarded up to the end of hour four only.
    let forwarded = 3 * 4 * 3600;
    conn.execute(
        "INSERT INTO sink_cursor (sink, last_rowid, updated_ms) VALUES ('influxdb', ?1, 0)",
        [forwarded],
    )
    .unwrap();
    let now = T0 + 6 * 3_600_000 + 600_000;
    let moved = super::blocks::compact(&mut conn, now).unwrap();
    assert_eq!(
        moved, forwarded as u64,
        "only what the sink forwarded is compacted"
    );
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM history_blocks"), 3 * 4);
    // The sink catches up; the rest follows.
    conn.execute("UPDATE sink_cursor SET last_rowid = 1000000000", [])
        .unwrap();
    super::blocks::compact(&mut conn, now).unwrap();
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM readings"), 0);
    assert_eq!(
        count(&conn, "SELECT SUM(count) FROM history_blocks"),
        3 * 6 * 3600
    );

    // Every value comes back exactly, with its time and quality.
    for (p, tag) in ["A", "B", "C"].iter().enumerate() {
        let got = super::history(&conn, tag, T0, now, 100_000).unwrap();
        let want: Vec<_> = input.iter().filter(|r| r.point.0 as usize == p).collect();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g.ts_ms, w.time);
            assert_eq!(g.quality, w.quality.as_str());
            let expect = w.quality.is_usable().then_some(w.value);
            assert_eq!(g.value.map(f64::to_bits), expect.map(f64::to_bits));
        }
    }
    // A range inside one block, and the limit.
    let part = super::history(&conn, "B", T0 + 1000, T0 + 5000, 10).unwrap();
    assert_eq!(
        part.iter().map(|r| r.ts_ms).collect::<Vec<_>>(),
        (1..=5).map(|i| T0 + i * 1000).collect::<Vec<_>>()
    );
    assert_eq!(super::history(&conn, "B", T0, now, 7).unwrap().len(), 7);
    // Blocks are decoded only until the limit is in hand: one hour's block, not six.
    let b: i64 = conn
        .query_row("SELECT id FROM points WHERE tag = 'B'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        super::blocks::read(&conn, b, T0, now, 7).unwrap().len(),
        3600
    );
    assert_eq!(
        super::history(&conn, "B", T0, now, 7).unwrap()[6].ts_ms,
        T0 + 6000
    );
    let bytes: i64 = count(&conn, "SELECT SUM(LENGTH(data)) FROM history_blocks");
    assert!(
        bytes < 3 * 6 * 3600 * 4,
        "{bytes} bytes for {} samples",
        3 * 6 * 3600
    );

    // Retention removes whole blocks past the limit.
    let (deleted, _) = prune(&mut conn, T0 + 2 * 3_600_000, now).unwrap();
    assert_eq!(deleted, 3 * 2 * 3600);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM history_blocks"), 3 * 4);
}

/// Demo-plant-like signals: a mean-reverting walk quantized to the register's resolution, and
/// on/off states that rarely change.
fn demo_day(points: u32, start: i64) -> Vec<Reading> {
    let mut rng = fastrand::Rng::with_seed(7);
    let mut state: Vec<f64> = (0..points).map(|p| 10.0 + f64::from(p) * 7.0).collect();
    let mut out = Vec::with_capacity(points as usize * 86_400);
    for s in 0..86_400i64 {
        for p in 0..points {
            let i = p as usize;
            let value = if p % 5 == 4 {
                if rng.u32(0..3600) == 0 {
                    state[i] = 1.0 - state[i].min(1.0);
                }
                state[i].min(1.0)
            } else {
                let base = 10.0 + f64::from(p) * 7.0;
                state[i] += 0.05 * (base - state[i]) + (rng.f64() - 0.5) * 0.2;
                // 0.1 engineering units per count, as the demo's registers are scaled.
                (state[i] * 10.0).round() / 10.0
            };
            out.push(Reading {
                point: PointId(p),
                time: start + s * 1000,
                value,
                quality: Quality::Good,
            });
        }
    }
    out
}

/// `cargo test --release -p sentinel-gateway store::tests::bench -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run by hand in release mode"]
async fn bench_ingest_and_bytes_per_sample() {
    let dir = tempfile::tempdir().unwrap();
    let conn = open_writer(dir.path()).unwrap();
    let tags: Vec<String> = (0..15).map(|i| format!("P{i}")).collect();
    let tag_refs: Vec<&str> = tags.iter().map(String::as_str).collect();
    let ids = point_ids(&conn, &tag_refs).unwrap();
    let day = demo_day(15, T0);
    let n = day.len();
    let (setup, _) = setup(conn, ids, u64::MAX);
    let (handle, thread) = spawn_writer(setup, 64);
    let started = std::time::Instant::now();
    for chunk in day.chunks(2_000) {
        handle
            .write(WriteBatch {
                readings: chunk.to_vec(),
                ..WriteBatch::default()
            })
            .await
            .unwrap();
    }
    drop(handle);
    tokio::task::spawn_blocking(move || thread.join().unwrap())
        .await
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "ingest: {n} readings in {secs:.2} s = {:.0} readings/s",
        n as f64 / secs
    );

    let mut conn = open_writer(dir.path()).unwrap();
    let raw = used_bytes(&conn).unwrap();
    println!("uncompacted: {:.1} bytes/sample", raw as f64 / n as f64);
    let started = std::time::Instant::now();
    let moved = super::blocks::compact(&mut conn, T0 + 86_400_000 + 3_600_000).unwrap();
    println!(
        "compaction: {moved} readings in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    conn.execute_batch("VACUUM").unwrap();
    let used = used_bytes(&conn).unwrap();
    let blobs = count(&conn, "SELECT SUM(LENGTH(data)) FROM history_blocks");
    println!(
        "compacted: {:.2} bytes/sample on disk (store file), {:.2} bytes/sample in blocks",
        used as f64 / n as f64,
        blobs as f64 / n as f64
    );
}

#[tokio::test]
async fn the_writer_compacts_between_commits_after_the_hourly_tick() {
    let dir = tempfile::tempdir().unwrap();
    let conn = open_writer(dir.path()).unwrap();
    let ids = point_ids(&conn, &["A", "B", "C"]).unwrap();
    let (setup, _) = setup(conn, ids, u64::MAX);
    let (handle, thread) = spawn_writer(setup, 8);
    let write = |readings: Vec<Reading>| {
        let handle = handle.clone();
        async move {
            let (done, committed) = tokio::sync::oneshot::channel();
            handle
                .write(WriteBatch {
                    readings,
                    done: Some(done),
                    ..WriteBatch::default()
                })
                .await
                .unwrap();
            committed.await.unwrap();
        }
    };
    // Two hours long past, then the hourly tick (retention far behind), then ordinary commits.
    write(readings(3, 7200, T0, 1000)).await;
    handle.prune(0).unwrap();
    for i in 0..10 {
        write(readings(3, 1, T0 + DAY_MS + i * 1000, 1000)).await;
    }
    drop(handle);
    tokio::task::spawn_blocking(move || thread.join().unwrap())
        .await
        .unwrap();
    let conn = open_writer(dir.path()).unwrap();
    // Every reading is in a block or still a row; the old hours are blocks now (the later
    // readings are old too and join their hour as the queue reaches their point).
    let in_blocks = count(&conn, "SELECT SUM(count) FROM history_blocks");
    let rows = count(&conn, "SELECT COUNT(*) FROM readings");
    assert_eq!(in_blocks + rows, 3 * 7200 + 3 * 10);
    assert!(in_blocks >= 3 * 7200, "{in_blocks}");
    assert!(
        count(
            &conn,
            "SELECT COUNT(*) FROM history_blocks WHERE t_start < ?1"
                .replace("?1", &(T0 + 2 * 3_600_000).to_string())
                .as_str()
        ) == 3 * 2
    );
    let all = super::history(&conn, "B", T0, T0 + 2 * DAY_MS, 100_000).unwrap();
    assert_eq!(all.len(), 7200 + 10);
}

#[tokio::test]
async fn a_late_reading_joins_its_hour_already_compacted() {
    let dir = tempfile::tempdir().unwrap();
    write_through_writer(dir.path(), readings(2, 3600, T0, 1000), u64::MAX).await;
    let mut conn = open_writer(dir.path()).unwrap();
    let now = T0 + 2 * 3_600_000;
    assert_eq!(super::blocks::compact(&mut conn, now).unwrap(), 2 * 3600);
    // A reading of point B from the middle of that hour arrives late (a device's backlog).
    let b: i64 = conn
        .query_row("SELECT id FROM points WHERE tag = 'B'", [], |r| r.get(0))
        .unwrap();
    conn.execute(
        "INSERT INTO readings (point, ts_ms, value, quality) VALUES (?1, ?2, 42.5, 0)",
        rusqlite::params![b, T0 + 1500],
    )
    .unwrap();
    assert_eq!(super::blocks::compact(&mut conn, now).unwrap(), 1);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM history_blocks"), 2);
    assert_eq!(
        count(&conn, "SELECT SUM(count) FROM history_blocks"),
        2 * 3600 + 1
    );
    let got = super::history(&conn, "B", T0, T0 + 3000, 10).unwrap();
    assert_eq!(got[1].ts_ms, T0 + 1000);
    assert_eq!(got[2].ts_ms, T0 + 1500);
    assert_eq!(got[2].value, Some(42.5));
}

#[tokio::test]
async fn the_writer_queue_is_bounded_in_readings_and_gives_the_room_back() {
    use super::writer::QUEUED_READINGS;
    let dir = tempfile::tempdir().unwrap();
    let conn = open_writer(dir.path()).unwrap();
    let ids = point_ids(&conn, &["A", "B", "C"]).unwrap();
    let (setup, metrics) = setup(conn, ids, u64::MAX);
    let (handle, thread) = spawn_writer(setup, 1024);
    // One batch larger than the whole room, then many that together are several rooms: none
    // waits for ever, and every reading lands.
    let big = readings(3, (QUEUED_READINGS / 3 + 100) as i64, T0, 1_000);
    let mut total = big.len();
    handle
        .write(WriteBatch {
            readings: big,
            ..WriteBatch::default()
        })
        .await
        .unwrap();
    for i in 0..40 {
        let batch = readings(3, 2_000, T0 + (i + 1) * DAY_MS, 1_000);
        total += batch.len();
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            handle.write(WriteBatch {
                readings: batch,
                ..WriteBatch::default()
            }),
        )
        .await
        .expect("the writer gives room back after each commit")
        .unwrap();
    }
    let (done, committed) = tokio::sync::oneshot::channel();
    handle
        .write(WriteBatch {
            done: Some(done),
            ..WriteBatch::default()
        })
        .await
        .unwrap();
    committed.await.unwrap();
    assert_eq!(metrics.readings_stored.get(), total as u64);
    // The room comes back right after the commit that answered `done`: wait for it, briefly.
    for _ in 0..100 {
        if handle.room_for_readings() == QUEUED_READINGS {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(handle.room_for_readings(), QUEUED_READINGS);
    drop(handle);
    tokio::task::spawn_blocking(move || thread.join().unwrap())
        .await
        .unwrap();
}
