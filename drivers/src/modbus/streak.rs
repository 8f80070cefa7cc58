//! Rate limiting of repeated failure logs: the first failure of a streak is logged, then at
//! most one summary per interval while it lasts, then the recovery with how long it lasted.

use std::time::{Duration, Instant};

/// How often a continuing failure is logged again.
pub(crate) const REPEAT_EVERY: Duration = Duration::from_secs(60);

/// What to log for a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Report {
    /// The first failure after success.
    First,
    /// The streak continues; `failures` have happened since it began `since` ago.
    Repeat { failures: u64, since: Duration },
    /// Logged recently; stay quiet.
    Quiet,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Streak {
    /// When the streak began, when it was last logged, and failures so far.
    state: Option<(Instant, Instant, u64)>,
}

impl Streak {
    pub(crate) fn fail(&mut self, now: Instant) -> Report {
        match &mut self.state {
            None => {
                self.state = Some((now, now, 1));
                Report::First
            }
            Some((began, logged, failures)) => {
                *failures += 1;
                if now.duration_since(*logged) >= REPEAT_EVERY {
                    *logged = now;
                    Report::Repeat {
                        failures: *failures,
                        since: now.duration_since(*began),
                    }
                } else {
                    Report::Quiet
                }
            }
        }
    }

    /// Ends the streak; returns how long it lasted, or `None` if there was none.
    pub(crate) fn recover(&mut self, now: Instant) -> Option<Duration> {
        self.state
            .take()
            .map(|(began, _, _)| now.duration_since(began))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_first_then_once_a_minute_then_recovery() {
        let t0 = Instant::now();
        let mut s = Streak::default();
        assert_eq!(s.recover(t0), None);
        assert_eq!(s.fail(t0), Report::First);
        assert_eq!(s.fail(t0 + Duration::from_secs(1)), Report::Quiet);
        assert_eq!(s.fail(t0 + Duration::from_secs(59)), Report::Quiet);
        assert_eq!(
            s.fail(t0 + Duration::from_secs(60)),
            Report::Repeat {
                failures: 4,
                since: Duration::from_secs(60)
            }
        );
        assert_eq!(s.fail(t0 + Duration::from_secs(61)), Report::Quiet);
        assert_eq!(
            s.recover(t0 + Duration::from_secs(90)),
            Some(Duration::from_secs(90))
        );
        assert_eq!(s.fail(t0 + Duration::from_secs(91)), Report::First);
    }
}
