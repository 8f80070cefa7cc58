//! Upstream sinks: forward the readings kept in the embedded store to a time-series database.
//!
//! A sink never holds readings of its own. It remembers, in the store's `sink_cursor` table,
//! the id of the last reading the upstream accepted, reads forward from there in batches and
//! moves the cursor only after a 2xx. So a restart, an outage or a crash resumes exactly where
//! delivery stopped: nothing is skipped, and only the batch in flight at a crash can be sent
//! twice (same series and timestamp, which InfluxDB overwrites).

mod db;
pub mod influx;
pub mod line;
