//! Notification channels. Each drains its own outbox queue in the store, in order, so that a
//! restart or an outage resumes where it stopped (at least once; receivers dedupe by event id).

pub mod email;
pub mod escalation;
pub mod mqtt;
pub mod outbox;
pub mod people;
pub mod signing;
pub mod templates;
pub mod webhook;

use std::time::Duration;

/// Wait before delivery attempt `attempts + 1`: exponential from half a second, capped, with
/// ±20 % jitter so that many gateways do not retry in step.
pub fn backoff(attempts: u32, cap: Duration) -> Duration {
    let base = Duration::from_millis(500).saturating_mul(1u32 << attempts.min(16));
    let capped = base.min(cap);
    let jitter = 0.8 + 0.4 * fastrand::f64();
    capped.mul_f64(jitter).min(cap)
}

/// How long until a retry stored as wall-clock time `at` falls due. A time further ahead than
/// `cap`, the longest backoff that could have set it, can only come from a clock stepped back
/// since (NTP correcting an RTC kept in local time): it is due now, not hours from now.
pub fn retry_wait(at: alert_rules::Millis, now: alert_rules::Millis, cap: Duration) -> Duration {
    let wait = Duration::from_millis(at.saturating_sub(now).max(0) as u64);
    if wait > cap { Duration::ZERO } else { wait }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_time_beyond_the_longest_backoff_is_due_now() {
        let cap = Duration::from_secs(60);
        assert_eq!(retry_wait(10_000, 4_000, cap), Duration::from_secs(6));
        assert_eq!(retry_wait(4_000, 10_000, cap), Duration::ZERO);
        assert_eq!(retry_wait(70_000, 10_000, cap), cap);
        // Written at 16:00 with a 30 s backoff; the clock then went back 8 hours.
        let written = 16 * 3_600_000;
        let now = written - 8 * 3_600_000;
        assert_eq!(retry_wait(written + 30_000, now, cap), Duration::ZERO);
    }

    #[test]
    fn backoff_grows_and_never_exceeds_the_cap() {
        let cap = Duration::from_secs(60);
        let mut previous_floor = Duration::ZERO;
        for attempts in 0..40 {
            let d = backoff(attempts, cap);
            assert!(d <= cap, "attempt {attempts}: {d:?}");
            let floor = Duration::from_millis(500)
                .saturating_mul(1u32 << attempts.min(16))
                .min(cap)
                .mul_f64(0.8);
            assert!(
                d >= floor.min(cap.mul_f64(0.8)),
                "attempt {attempts}: {d:?}"
            );
            assert!(floor >= previous_floor);
            previous_floor = floor;
        }
    }
}
