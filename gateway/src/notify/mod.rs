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

#[cfg(test)]
mod tests {
    use super::*;

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
