//! Per-device MQTT counters. The ingest task only adds; the gateway renders them on `/metrics`
//! labelled by device name (never by raw topic, which would have unbounded cardinality).

use std::sync::atomic::AtomicU64;

use super::payload::BadPayload;

#[derive(Debug, Default)]
pub struct MqttMetrics {
    /// Messages received from the broker, good or bad.
    pub messages: AtomicU64,
    /// Readings decoded and handed to the engine.
    pub readings: AtomicU64,
    /// Rejected messages (or points of a message), indexed by [`BadPayload::index`].
    pub bad: [AtomicU64; BadPayload::ALL.len()],
    /// 1 while connected to the broker.
    pub connected: AtomicU64,
    /// Connections established (the first one and every reconnection).
    pub connects: AtomicU64,
    /// Connection attempts that failed and connections that broke.
    pub connection_errors: AtomicU64,
    /// Subscriptions the broker refused or that could not be queued.
    pub subscribe_failures: AtomicU64,
    /// Acknowledgements waiting for room in the client's request queue (a gauge).
    pub acks_waiting: AtomicU64,
    /// Times a silent point was marked stale.
    pub stale_marks: AtomicU64,
    /// Messages whose timestamp was too far from the gateway's clock: their readings were kept,
    /// stamped with the arrival time instead.
    pub timestamps_replaced: AtomicU64,
}
