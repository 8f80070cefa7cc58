//! Per-device counters. The poller only adds; the gateway reads them (`Ordering::Relaxed` is
//! enough: each counter is independent) and renders Prometheus text, e.g.
//! `gateway_modbus_requests_total{device,outcome}`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds, in microseconds, of the request latency histogram buckets.
pub const LATENCY_BUCKETS_US: [u64; 10] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
];

/// Counters of one device's poll task. All are monotonic.
#[derive(Debug, Default)]
pub struct DeviceMetrics {
    /// Requests answered with data.
    pub requests_ok: AtomicU64,
    /// Requests that got no answer within the device's timeout.
    pub requests_timeout: AtomicU64,
    /// Requests that failed at the transport or protocol level (reset, closed, garbled).
    pub requests_transport_error: AtomicU64,
    /// Requests answered with a Modbus exception.
    pub requests_exception: AtomicU64,
    /// Answers that held fewer registers or bits than asked for (also counted in `requests_ok`).
    pub short_responses: AtomicU64,
    /// Connections established.
    pub connects: AtomicU64,
    /// Connection attempts that failed or timed out.
    pub connect_failures: AtomicU64,
    /// Times the poll task panicked and was restarted by [`super::spawn_supervised`].
    pub restarts: AtomicU64,
    /// Sum and count of the latency of answered requests (data or exception).
    pub latency_us_sum: AtomicU64,
    pub latency_count: AtomicU64,
    /// Cumulative histogram: `latency_le[i]` counts answered requests that took at most
    /// `LATENCY_BUCKETS_US[i]` µs. The `+Inf` bucket is `latency_count`.
    pub latency_le: [AtomicU64; LATENCY_BUCKETS_US.len()],
}

impl DeviceMetrics {
    pub fn observe_latency(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_us_sum.fetch_add(us, Ordering::Relaxed);
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        for (bound, counter) in LATENCY_BUCKETS_US.iter().zip(&self.latency_le) {
            if us <= *bound {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let m = DeviceMetrics::default();
        m.observe_latency(Duration::from_micros(800));
        m.observe_latency(Duration::from_millis(30));
        m.observe_latency(Duration::from_secs(5));
        let le: Vec<u64> = m
            .latency_le
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        assert_eq!(le, [1, 1, 1, 1, 1, 2, 2, 2, 2, 2]);
        assert_eq!(m.latency_count.load(Ordering::Relaxed), 3);
        assert_eq!(
            m.latency_us_sum.load(Ordering::Relaxed),
            800 + 30_000 + 5_000_000
        );
    }
}
