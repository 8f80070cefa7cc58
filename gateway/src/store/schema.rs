//! The embedded store's tables. Additive changes only: a newer Sentinel opens an older file.

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- Stable numbers for point tags, so that history survives reordering of the configuration.
CREATE TABLE IF NOT EXISTS points (
    id  INTEGER PRIMARY KEY,
    tag TEXT NOT NULL UNIQUE
);
-- Every reading. value is NULL when the reading carries no usable value (bad quality).
CREATE TABLE IF NOT EXISTS readings (
    point   INTEGER NOT NULL,
    ts_ms   INTEGER NOT NULL,
    value   REAL,
    quality INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS readings_point_ts ON readings (point, ts_ms);
CREATE INDEX IF NOT EXISTS readings_ts ON readings (ts_ms);
-- The alarm journal: append-only, each record chained to the one before by hash.
CREATE TABLE IF NOT EXISTS journal (
    seq       INTEGER PRIMARY KEY,
    event_id  TEXT NOT NULL UNIQUE,
    alarm_id  INTEGER NOT NULL,
    at_ms     INTEGER NOT NULL,
    body      TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
-- The latest state of every alarm, so that a restart resumes open alarms.
CREATE TABLE IF NOT EXISTS alarms (
    id       INTEGER PRIMARY KEY,
    last_seq INTEGER NOT NULL,
    open     INTEGER NOT NULL,
    state    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alarms_open ON alarms (open) WHERE open = 1;
-- Notifications waiting for delivery, per channel, drained in order.
CREATE TABLE IF NOT EXISTS outbox (
    id              INTEGER PRIMARY KEY,
    channel         TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    body            TEXT NOT NULL,
    created_ms      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    delivered_ms    INTEGER,
    UNIQUE (channel, event_id)
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (channel, id) WHERE delivered_ms IS NULL;
";

/// The hash that precedes the first journal record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
