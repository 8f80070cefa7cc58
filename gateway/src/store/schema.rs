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
-- id only grows (AUTOINCREMENT): upstream sinks remember the last id they forwarded, so an id
-- must never be handed out twice, even after retention or the disk budget emptied the table.
CREATE TABLE IF NOT EXISTS readings (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    point   INTEGER NOT NULL,
    ts_ms   INTEGER NOT NULL,
    value   REAL,
    quality INTEGER NOT NULL
);
-- No index by point: with one, every commit touched one index page per point (15,000 pages
-- for a large plant), which was most of Sentinel's CPU. Compaction reads in row order instead
-- (store/blocks.rs), and queries of the last hour's raw readings scan it by time.
DROP INDEX IF EXISTS readings_point_ts;
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
-- Compact history: one row per point and hour, pco-compressed (see store/blocks.rs). Readings
-- move here from `readings` once they are older than the current hour and forwarded upstream.
CREATE TABLE IF NOT EXISTS history_blocks (
    point   INTEGER NOT NULL,
    t_start INTEGER NOT NULL,
    t_end   INTEGER NOT NULL,
    count   INTEGER NOT NULL,
    data    BLOB NOT NULL,
    PRIMARY KEY (point, t_start)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS history_blocks_end ON history_blocks (t_end);
-- How far each upstream sink has forwarded the readings table (the largest readings rowid it
-- has delivered). Advanced only after the upstream accepted the batch.
CREATE TABLE IF NOT EXISTS sink_cursor (
    sink       TEXT PRIMARY KEY,
    last_rowid INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
-- Batches an upstream refused for good (a 4xx other than 401, 403, 413 and 429), kept with the
-- answer so that an operator can see what was refused and why, and replay it.
CREATE TABLE IF NOT EXISTS dead_letter (
    id          INTEGER PRIMARY KEY,
    sink        TEXT NOT NULL,
    first_rowid INTEGER NOT NULL,
    last_rowid  INTEGER NOT NULL,
    points      INTEGER NOT NULL,
    status      INTEGER NOT NULL,
    error       TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_ms  INTEGER NOT NULL
);
-- Everything the store had to give up, and why: readings dropped by the disk budget or by
-- retention before a sink forwarded them, and records lost when a damaged file was salvaged.
CREATE TABLE IF NOT EXISTS store_losses (
    id          INTEGER PRIMARY KEY,
    at_ms       INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    readings    INTEGER NOT NULL,
    unforwarded INTEGER NOT NULL,
    detail      TEXT NOT NULL
);
-- Escalation timers: where each open alarm stands on each responsibility chain. due_ms is the
-- next notice's time (NULL: nothing more to send). Rows go when the alarm is acknowledged,
-- returns to normal, or is hidden; a restart resumes from here.
CREATE TABLE IF NOT EXISTS escalations (
    alarm_id     INTEGER NOT NULL,
    chain        TEXT NOT NULL,
    raised_ms    INTEGER NOT NULL,
    next_tier    INTEGER NOT NULL,
    repeats      INTEGER NOT NULL,
    last_sent_ms INTEGER NOT NULL,
    due_ms       INTEGER,
    event        TEXT NOT NULL,
    PRIMARY KEY (alarm_id, chain)
);
-- Hazard tickets (隐患) and every change of each, with who, when and why.
CREATE TABLE IF NOT EXISTS tickets (
    id             INTEGER PRIMARY KEY,
    state          TEXT NOT NULL,
    title          TEXT NOT NULL,
    description    TEXT NOT NULL,
    point          TEXT,
    area           TEXT,
    alarm_id       INTEGER,
    alarm_event_id TEXT UNIQUE,
    assignee       TEXT,
    deadline_ms    INTEGER,
    created_ms     INTEGER NOT NULL,
    created_by     TEXT NOT NULL,
    updated_ms     INTEGER NOT NULL,
    seq            INTEGER NOT NULL,
    overdue_state  TEXT
);
CREATE INDEX IF NOT EXISTS tickets_state ON tickets (state);
CREATE TABLE IF NOT EXISTS ticket_events (
    ticket_id   INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    from_state  TEXT,
    to_state    TEXT NOT NULL,
    by          TEXT NOT NULL,
    at_ms       INTEGER NOT NULL,
    comment     TEXT,
    assignee    TEXT,
    deadline_ms INTEGER,
    PRIMARY KEY (ticket_id, seq)
);
";

/// The hash that precedes the first journal record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
