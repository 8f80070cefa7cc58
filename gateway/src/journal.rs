//! `sentinel journal verify`: walks the hash-chained alarm journal and reports the first record
//! that was edited, deleted or inserted after it was written.
//!
//! Each record stores the hash of the record before it (`prev_hash`) and its own hash over
//! `prev_hash` and its body. An edit breaks the record's own hash; a deletion breaks the link of
//! the record after the gap; an insertion breaks the link of the record after the inserted one.
//! Removing records at the very end leaves no trace locally: that is why the chain head is
//! published upstream, where a hub can compare it.

use rusqlite::Connection;

use crate::store::{GENESIS_HASH, chain_hash};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The record's body or hash was changed.
    Edited { seq: i64 },
    /// Records before `seq` are missing (after `after`, when known).
    Deleted { seq: i64, after: Option<i64> },
    /// The record `seq` does not belong in the chain.
    Inserted { seq: i64 },
    /// The link before `seq` matches no earlier record.
    Broken { seq: i64 },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::Edited { seq } => write!(
                f,
                "record {seq} was edited: its hash does not match its content"
            ),
            Finding::Deleted {
                seq,
                after: Some(after),
            } => {
                write!(f, "records between {after} and {seq} were deleted")
            }
            Finding::Deleted { seq, after: None } => write!(f, "records before {seq} were deleted"),
            Finding::Inserted { seq } => write!(
                f,
                "record {seq} was inserted: the record after it does not link to it"
            ),
            Finding::Broken { seq } => write!(f, "the chain is broken before record {seq}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub records: u64,
    pub head: String,
    pub first_problem: Option<Finding>,
}

pub fn verify(conn: &Connection) -> rusqlite::Result<Verdict> {
    let mut stmt = conn.prepare("SELECT seq, body, prev_hash, hash FROM journal ORDER BY seq")?;
    let mut rows = stmt.query([])?;
    // (seq, hash) of the last two records read, newest last.
    let mut before: Option<(i64, String)> = None;
    let mut last: Option<(i64, String)> = None;
    let mut records = 0u64;
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(0)?;
        let body: String = row.get(1)?;
        let prev_hash: String = row.get(2)?;
        let hash: String = row.get(3)?;
        records += 1;
        let problem = if chain_hash(&prev_hash, &body) != hash {
            Some(Finding::Edited { seq })
        } else {
            let expected = last.as_ref().map_or(GENESIS_HASH, |(_, h)| h.as_str());
            if prev_hash == expected {
                None
            } else if before.as_ref().is_some_and(|(_, h)| *h == prev_hash) {
                // It links to the record two back: the one in between does not belong.
                Some(Finding::Inserted {
                    seq: last.as_ref().map_or(seq, |(s, _)| *s),
                })
            } else if last.as_ref().is_some_and(|(s, _)| seq != s + 1)
                || (last.is_none() && seq != 1)
            {
                Some(Finding::Deleted {
                    seq,
                    after: last.as_ref().map(|(s, _)| *s),
                })
            } else {
                Some(Finding::Broken { seq })
            }
        };
        if problem.is_some() {
            return Ok(Verdict {
                records,
                head: hash,
                first_problem: problem,
            });
        }
        before = last.take();
        last = Some((seq, hash));
    }
    Ok(Verdict {
        records,
        head: last.map_or_else(|| GENESIS_HASH.to_owned(), |(_, h)| h),
        first_problem: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::params;

    fn journal(n: i64) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE journal (seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, alarm_id INTEGER NOT NULL,
             at_ms INTEGER NOT NULL, body TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);",
        )
        .unwrap();
        let mut prev = GENESIS_HASH.to_owned();
        for seq in 1..=n {
            let body = format!("{{\"id\":\"s-{seq}-1\",\"transition\":\"raised\"}}");
            let hash = chain_hash(&prev, &body);
            conn.execute(
                "INSERT INTO journal (seq, event_id, alarm_id, at_ms, body, prev_hash, hash) VALUES (?1, ?2, ?1, ?1, ?3, ?4, ?5)",
                params![seq, format!("e{seq}"), body, prev, hash],
            )
            .unwrap();
            prev = hash;
        }
        conn
    }

    #[test]
    fn an_intact_journal_verifies() {
        let v = verify(&journal(10)).unwrap();
        assert_eq!(v.records, 10);
        assert_eq!(v.first_problem, None);
        assert_ne!(v.head, GENESIS_HASH);
        assert_eq!(verify(&journal(0)).unwrap().first_problem, None);
    }

    #[test]
    fn an_edited_record_is_found() {
        let conn = journal(10);
        conn.execute(
            "UPDATE journal SET body = replace(body, 'raised', 'cleared') WHERE seq = 4",
            [],
        )
        .unwrap();
        assert_eq!(
            verify(&conn).unwrap().first_problem,
            Some(Finding::Edited { seq: 4 })
        );
    }

    #[test]
    fn an_edited_record_with_a_recomputed_hash_is_found_by_the_next_link() {
        let conn = journal(10);
        let prev: String = conn
            .query_row("SELECT prev_hash FROM journal WHERE seq = 4", [], |r| {
                r.get(0)
            })
            .unwrap();
        let body = "{\"forged\":true}";
        conn.execute(
            "UPDATE journal SET body = ?1, hash = ?2 WHERE seq = 4",
            params![body, chain_hash(&prev, body)],
        )
        .unwrap();
        assert_eq!(
            verify(&conn).unwrap().first_problem,
            Some(Finding::Broken { seq: 5 })
        );
    }

    #[test]
    fn a_deleted_record_is_found() {
        let conn = journal(10);
        conn.execute("DELETE FROM journal WHERE seq = 6", [])
            .unwrap();
        assert_eq!(
            verify(&conn).unwrap().first_problem,
            Some(Finding::Deleted {
                seq: 7,
                after: Some(5)
            })
        );
        let conn = journal(10);
        conn.execute("DELETE FROM journal WHERE seq = 1", [])
            .unwrap();
        assert_eq!(
            verify(&conn).unwrap().first_problem,
            Some(Finding::Deleted {
                seq: 2,
                after: None
            })
        );
    }

    #[test]
    fn an_inserted_record_is_found() {
        let conn = journal(10);
        // Make room after 5 and insert a well-formed record that links to 5.
        conn.execute("UPDATE journal SET seq = seq + 100 WHERE seq > 5", [])
            .unwrap();
        conn.execute("UPDATE journal SET seq = seq - 99 WHERE seq > 100", [])
            .unwrap();
        let prev: String = conn
            .query_row("SELECT hash FROM journal WHERE seq = 5", [], |r| r.get(0))
            .unwrap();
        let body = "{\"forged\":true}";
        conn.execute(
            "INSERT INTO journal (seq, event_id, alarm_id, at_ms, body, prev_hash, hash) VALUES (6, 'forged', 0, 0, ?1, ?2, ?3)",
            params![body, prev, chain_hash(&prev, body)],
        )
        .unwrap();
        assert_eq!(
            verify(&conn).unwrap().first_problem,
            Some(Finding::Inserted { seq: 6 })
        );
    }
}
