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
    let mut moved = 0;
    for point in compactable_points(conn)? {
        moved += compact_point(conn, point, now)?;
    }
    Ok(moved)
}

/// The store's point numbers (each may have readings to compact).
pub fn compactable_points(conn: &Connection) -> rusqlite::Result<Vec<i64>> {
    let mut stmt = conn.prepare("SELECT id FROM points ORDER BY id")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    rows.collect()
}

/// [`compact`] for one point, in one transaction.
pub fn compact_point(conn: &mut Connection, point: i64, now: Millis) -> rusqlite::Result<u64> {
    let hour_end = now - now.rem_euclid(BLOCK_MS);
    let tx = conn.transaction()?;
    let forwarded: i64 = tx
        .query_row("SELECT MIN(last_rowid) FROM sink_cursor", [], |r| {
            r.get::<_, Option<i64>>(0)
        })?
        .unwrap_or(i64::MAX);
    let rows: Vec<Sample> = {
        let mut stmt = tx.prepare_cached(
            "SELECT ts_ms, value, quality FROM readings
             WHERE point = ?1 AND ts_ms < ?2 AND rowid <= ?3 ORDER BY ts_ms, rowid",
        )?;
        let rows = stmt.query_map(params![point, hour_end, forwarded], |r| {
            Ok(Sample {
                ts_ms: r.get(0)?,
                value: r.get(1)?,
                quality: r.get(2)?,
            })
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    if rows.is_empty() {
        return Ok(0);
    }
    let mut start = 0;
    while start < rows.len() {
        let block_start = rows[start].ts_ms - rows[start].ts_ms.rem_euclid(BLOCK_MS);
        let end = rows[start..]
            .iter()
            .position(|s| s.ts_ms >= block_start + BLOCK_MS)
            .map_or(rows.len(), |n| start + n);
        let mut samples = rows[start..end].to_vec();
        // A late reading for an hour already compacted joins that hour's block.
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
    let n = tx.execute(
        "DELETE FROM readings WHERE point = ?1 AND ts_ms < ?2 AND rowid <= ?3",
        params![point, hour_end, forwarded],
    )?;
    tx.commit()?;
    Ok(n as u64)
}

/// Samples of one point in `[from, to]` from the blocks, oldest first.
pub fn read(
    conn: &Connection,
    point: i64,
    from: Millis,
    to: Millis,
) -> rusqlite::Result<Vec<Sample>> {
    let mut stmt = conn.prepare_cached(
        "SELECT data FROM history_blocks WHERE point = ?1 AND t_start <= ?3 AND t_end >= ?2 ORDER BY t_start",
    )?;
    let blobs = stmt.query_map(params![point, from, to], |r| r.get::<_, Vec<u8>>(0))?;
    let mut out = Vec::new();
    for blob in blobs {
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
