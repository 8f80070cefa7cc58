//! Jittered, bounded exponential backoff between reconnect attempts.

use std::time::Duration;

/// Delays of `base`, `2·base`, `4·base`, … up to `cap`, each varied by ±20 % so that many
/// devices behind one failed switch don't reconnect in lockstep. No delay ever exceeds `cap`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(base: Duration, cap: Duration) -> Self {
        let base = base.min(cap);
        Self {
            base,
            cap,
            next: base,
        }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let nominal = self.next;
        self.next = nominal.saturating_mul(2).min(self.cap);
        nominal.mul_f64(0.8 + 0.4 * fastrand::f64()).min(self.cap)
    }

    /// Back to `base`, after the device has answered.
    pub(crate) fn reset(&mut self) {
        self.next = self.base;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(400) && first <= Duration::from_millis(600));
        let second = b.next_delay();
        assert!(second >= Duration::from_millis(800) && second <= Duration::from_millis(1200));
        for _ in 0..20 {
            b.next_delay();
        }
        let late = b.next_delay();
        assert!(late >= Duration::from_secs(24) && late <= Duration::from_secs(30));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(600));
    }

    proptest! {
        #[test]
        fn never_longer_than_the_cap(base_ms in 0u64..100_000, cap_ms in 0u64..100_000, n in 1usize..80) {
            let cap = Duration::from_millis(cap_ms);
            let mut b = Backoff::new(Duration::from_millis(base_ms), cap);
            for _ in 0..n {
                let d = b.next_delay();
                prop_assert!(d <= cap);
                prop_assert!(d >= Duration::from_millis(base_ms.min(cap_ms)).mul_f64(0.8));
            }
        }
    }
}
