//! Compact history. Readings older than the current hour, once every upstream sink has forwarded
//! them, move from `readings` (about 40 bytes a row plus indexes) into `history_blocks`: one row
//! per point and hour, with the timestamps, values and quality codes each compressed by pco.
//! pco is lossless, so every value is kept exactly, including each one that took part in an
//! alarm; for slowly varying plant signals a sample takes a few bytes.

use alert_rules::Millis;
use rusqlite::{Connection, OptionalExtension, params};

/// The span of one block.
pub const BLOCK_MS: i64 = 3_600_000;
/// Format of a block: version byte, then three sections (timestamps, values, qualities), each a
/// little-endian u32 length and pco's standalone bytes.
const VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("compressing a history block: {0}")]
    Codec(#[from] pco::errors::PcoError),
    #[error("a history block is malformed")]
    Malformed,
}

/// One sample as kept in a block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub ts_ms: Millis,
    pub value: Option<f64>,
    pub quality: u8,
}

pub fn encode(samples: &[Sample]) -> Result<Vec<u8>, BlockError> {
    let ts: Vec<i64> = samples.iter().map(|s| s.ts_ms).collect();
    // A missing value is stored as NaN: stored values are always finite, so NaN is unambiguous.
    let values: Vec<f64> = samples
        .iter()
        .map(|s| s.value.unwrap_or(f64::NAN))
        .collect();
    let quality: Vec<u32> = samples.iter().map(|s| u32::from(s.quality)).collect();
    let config = pco::ChunkConfig::default();
    let mut out = vec![VERSION];
    for section in [
        pco::standalone::simple_compress(&ts, &config)?,
        pco::standalone::simple_compress(&values, &config)?,
        pco::standalone::simple_compress(&quality, &config)?,
    ] {
        out.extend_from_slice(&(section.len() as u32).to_le_bytes());
        out.extend_from_slice(&section);
    }
    Ok(out)
}

pub fn decode(blob: &[u8]) -> Result<Vec<Sample>, BlockError> {
    let (&version, mut rest) = blob.split_first().ok_or(BlockError::Malformed)?;
    if version != VERSION {
        return Err(BlockError::Malformed);
    }
    let mut section = || -> Result<&[u8], BlockError> {
        if rest.len() < 4 {
            return Err(BlockError::Malformed);
        }
        let (len, tail) = rest.split_at(4);
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if tail.len() < len {
            return Err(BlockError::Malformed);
        }
        let (bytes, tail) = tail.split_at(len);
        rest = tail;
        Ok(bytes)
    };
    let ts: Vec<i64> = pco::standalone::simple_decompress(section()?)?;
    let values: Vec<f64> = pco::standalone::simple_decompress(section()?)?;
    let quality: Vec<u32> = pco::standalone::simple_decompress(section()?)?;
    if ts.len() != values.len() || ts.len() != quality.len() {
        return Err(BlockError::Malformed);
    }
    Ok(ts
        .into_iter()
        .zip(values)
        .zip(quality)
        .map(|((ts_ms, v), q)| Sample {
            ts_ms,
            value: (!v.is_nan()).then_some(v),
            quality: q as u8,
        })
        .collect())
}

fn codec_error(e: BlockError) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

/// Move readings measured before the hour that contains `now`, and forwarded by every sink,
/// into blocks, for every point, in one go (the writer spreads the same work over its commits).
/// Returns how many readings moved.
#[cfg(test)]
pub fn compact(conn: &mut Connection, now: Millis) -> rusqlite::Result<u64> {
    let mut pass = Pass::start(conn, now)?;
    while !pass.step(conn)? {}
    Ok(pass.moved)
}

/// Readings read per step of a [`Pass`].
const STEP_ROWS: i64 = 20_000;
/// Samples held in memory before they are written to blocks (about 24 bytes each).
const FLUSH_SAMPLES: usize = 500_000;

/// One compaction pass: the finished hours' readings, read in row order (the primary key; the
/// readings table has no index by point, which made every insert touch one page per point),
/// gathered per point in memory, and written to blocks together with the deletion of the rows
/// they came from, in one transaction, every [`FLUSH_SAMPLES`] and at the end. A crash between
/// flushes loses nothing: the rows are still in `readings`.
pub struct Pass {
    hour_end: Millis,
    /// Rows after `next` and up to `last` are still to read; `last` is the highest row every
    /// sink has forwarded when the pass began.
    next: i64,
    last: i64,
    /// First row (exclusive) of the range read but not yet flushed.
    flushed: i64,
    held: std::collections::BTreeMap<i64, Vec<Sample>>,
    held_samples: usize,
    pub moved: u64,
}

impl Pass {
    pub fn start(conn: &Connection, now: Millis) -> rusqlite::Result<Pass> {
        let forwarded: i64 = conn
            .query_row("SELECT MIN(last_rowid) FROM sink_cursor", [], |r| {
                r.get::<_, Option<i64>>(0)
            })?
            .unwrap_or(i64::MAX);
        let (first, max): (i64, i64) = conn.query_row(
            "SELECT COALESCE(MIN(rowid), 1) - 1, COALESCE(MAX(rowid), 0) FROM readings",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(Pass {
            hour_end: now - now.rem_euclid(BLOCK_MS),
            next: first,
            last: forwarded.min(max),
            flushed: first,
            held: std::collections::BTreeMap::new(),
            held_samples: 0,
            moved: 0,
        })
    }

    /// Read the next rows, flushing when enough are held or the pass is over. Returns true when
    /// the pass is over.
    pub fn step(&mut self, conn: &mut Connection) -> rusqlite::Result<bool> {
        let upto = self.next.saturating_add(STEP_ROWS).min(self.last);
        if upto > self.next {
            let mut stmt = conn.prepare_cached(
                "SELECT point, ts_ms, value, quality FROM readings
                 WHERE rowid > ?1 AND rowid <= ?2 AND ts_ms < ?3 ORDER BY rowid",
            )?;
            let mut rows = stmt.query(params![self.next, upto, self.hour_end])?;
            while let Some(r) = rows.next()? {
                self.held.entry(r.get(0)?).or_default().push(Sample {
                    ts_ms: r.get(1)?,
                    value: r.get(2)?,
                    quality: r.get(3)?,
                });
                self.held_samples += 1;
            }
            self.next = upto;
        }
        let done = self.next >= self.last;
        if done || self.held_samples >= FLUSH_SAMPLES {
            self.flush(conn)?;
        }
        Ok(done)
    }

    fn flush(&mut self, conn: &mut Connection) -> rusqlite::Result<()> {
        if self.next <= self.flushed {
            return Ok(());
        }
        let tx = conn.transaction()?;
        for (point, samples) in std::mem::take(&mut self.held) {
            write_samples(&tx, point, samples)?;
        }
        let n = tx.execute(
            "DELETE FROM readings WHERE rowid > ?1 AND rowid <= ?2 AND ts_ms < ?3",
            params![self.flushed, self.next, self.hour_end],
        )?;
        tx.commit()?;
        self.flushed = self.next;
        self.held_samples = 0;
        self.moved += n as u64;
        Ok(())
    }
}

/// Add one point's samples (in row order) to its hourly blocks, merging with any block already
/// there: a late reading for an hour already compacted joins that hour's block.
fn write_samples(
    tx: &rusqlite::Transaction<'_>,
    point: i64,
    mut rows: Vec<Sample>,
) -> rusqlite::Result<()> {
    // Stable: readings with the same time keep their arrival order.
    rows.sort_by_key(|s| s.ts_ms);
    let mut start = 0;
    while start < rows.len() {
        let block_start = rows[start].ts_ms - rows[start].ts_ms.rem_euclid(BLOCK_MS);
        let end = rows[start..]
            .iter()
            .position(|s| s.ts_ms >= block_start + BLOCK_MS)
            .map_or(rows.len(), |n| start + n);
        let mut samples = rows[start..end].to_vec();
        let existing: Option<Vec<u8>> = tx
            .query_row(
                "SELECT data FROM history_blocks WHERE point = ?1 AND t_start = ?2",
                params![point, block_start],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(blob) = existing {
            let mut old = decode(&blob).map_err(codec_error)?;
            old.append(&mut samples);
            old.sort_by_key(|s| s.ts_ms);
            samples = old;
        }
        let blob = encode(&samples).map_err(codec_error)?;
        let last_ts = samples.last().map_or(block_start, |s| s.ts_ms);
        tx.execute(
            "INSERT OR REPLACE INTO history_blocks (point, t_start, t_end, count, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![point, block_start, last_ts, samples.len() as i64, blob],
        )?;
        start = end;
    }
    Ok(())
}

/// Samples of one point in `[from, to]` from the blocks, oldest first; blocks are decoded
/// only until `limit` samples are in hand (a month of 1 Hz history is 2.6 million samples,
/// which one request must not hold in memory when it asked for a few).
pub fn read(
    conn: &Connection,
    point: i64,
    from: Millis,
    to: Millis,
    limit: usize,
) -> rusqlite::Result<Vec<Sample>> {
    let mut stmt = conn.prepare_cached(
        "SELECT data FROM history_blocks WHERE point = ?1 AND t_start <= ?3 AND t_end >= ?2 ORDER BY t_start",
    )?;
    let blobs = stmt.query_map(params![point, from, to], |r| r.get::<_, Vec<u8>>(0))?;
    let mut out = Vec::new();
    for blob in blobs {
        if out.len() >= limit {
            break;
        }
        let samples = decode(&blob?).map_err(codec_error)?;
        out.extend(
            samples
                .into_iter()
                .filter(|s| s.ts_ms >= from && s.ts_ms <= to),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_exact() {
        let samples: Vec<Sample> = (0..3600)
            .map(|i| Sample {
                ts_ms: 1_767_225_600_000 + i * 1000 + (i % 7),
                value: if i % 500 == 3 {
                    None
                } else {
                    Some(20.0 + (i % 37) as f64 * 0.1)
                },
                quality: if i % 500 == 3 { 4 } else { 0 },
            })
            .collect();
        let blob = encode(&samples).unwrap();
        assert_eq!(decode(&blob).unwrap(), samples);
        assert!(
            blob.len() < samples.len() * 4,
            "{} bytes for {} samples",
            blob.len(),
            samples.len()
        );
        assert!(decode(&blob[..blob.len() - 3]).is_err());
        assert!(decode(&[]).is_err());
    }
}
