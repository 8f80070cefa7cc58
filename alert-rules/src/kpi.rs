//! Alarm-load figures of a site over sliding windows (EEMUA 191, ISA-18.2): can the operators
//! cope with what the alarm system asks of them?
//!
//! Counted: announced alarms only ([`AlarmEvent::announce`]), since the load is what reaches
//! people. Memory is bounded whatever the alarm rate: per-minute counters over the window, one
//! small record per alarm source (capped), and the standing alarms (capped).

use std::collections::HashMap;

use serde::Serialize;

use crate::alarm::{AlarmEvent, AlarmId, AlarmSource, Priority};
use crate::reading::Millis;

const MINUTE_MS: Millis = 60_000;
const HOUR_MS: Millis = 3_600_000;
/// EEMUA 191: a flood is more than 10 alarms in 10 minutes.
pub const FLOOD_WINDOW_MS: Millis = 10 * MINUTE_MS;
pub const FLOOD_THRESHOLD: u32 = 10;
/// ISA-18.2: chattering is in and out of alarm three times or more in a minute.
pub const CHATTER_COUNT: usize = 3;
pub const CHATTER_WINDOW_MS: Millis = MINUTE_MS;
/// A standing alarm has been active for more than a day.
pub const STANDING_MS: Millis = 24 * HOUR_MS;
/// How many of the most frequent alarms the share is taken over.
pub const TOP_N: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KpiConfig {
    /// The window of the rates, distributions and shares; a whole number of hours.
    pub window_ms: Millis,
    /// Alarm sources tracked at once; the least recently seen gives way.
    pub max_sources: usize,
    /// Active alarms tracked for standing-alarm counts.
    pub max_active: usize,
}

impl Default for KpiConfig {
    fn default() -> Self {
        KpiConfig {
            window_ms: 24 * HOUR_MS,
            max_sources: 4096,
            max_active: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct MinuteBucket {
    minute: i64,
    by_priority: [u32; 4],
}

impl MinuteBucket {
    fn total(&self) -> u32 {
        self.by_priority.iter().sum()
    }
}

#[derive(Debug, Clone)]
struct SourceStats {
    /// Announced alarms per hour, a ring indexed by hour number.
    hours: Vec<u32>,
    /// The hour number of the newest entry in `hours`.
    hour: i64,
    /// Times of the last few announcements, for chattering.
    recent: [Millis; CHATTER_COUNT],
    n_recent: usize,
    chattered_at: Option<Millis>,
    last_seen: Millis,
}

#[derive(Debug, Clone, Copy)]
struct Active {
    source: AlarmSource,
    priority: Priority,
    since: Millis,
}

/// Alarm-load accounting for one site.
#[derive(Debug, Clone)]
pub struct AlarmLoad {
    config: KpiConfig,
    started: Millis,
    minutes: Vec<MinuteBucket>,
    sources: HashMap<AlarmSource, SourceStats>,
    active: HashMap<AlarmId, Active>,
    sources_evicted: u64,
    active_dropped: u64,
}

/// One alarm source and how often it was announced in the window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SourceCount {
    pub source: AlarmSource,
    pub count: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StandingAlarm {
    pub id: AlarmId,
    pub source: AlarmSource,
    pub priority: Priority,
    pub since: Millis,
}

/// Announced alarms by priority in the window, and each one's share in percent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PriorityDistribution {
    pub low: u32,
    pub medium: u32,
    pub high: u32,
    pub critical: u32,
    pub low_pct: f64,
    pub medium_pct: f64,
    pub high_pct: f64,
    pub critical_pct: f64,
}

/// The alarm-load figures at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KpiSnapshot {
    pub at: Millis,
    pub window_ms: Millis,
    /// Announced alarms in the window.
    pub alarms: u32,
    /// Average per hour over the window (or over the time observed, if shorter).
    pub alarms_per_hour: f64,
    pub alarms_last_hour: u32,
    pub alarms_last_10_min: u32,
    /// More than 10 alarms in the last 10 minutes.
    pub in_flood: bool,
    /// Whole 10-minute windows observed within the window, and those that were floods.
    pub windows: u32,
    pub flood_windows: u32,
    pub flood_windows_pct: f64,
    /// The most alarms in any whole 10-minute window.
    pub peak_10_min: u32,
    /// Sources that went in and out of alarm 3 times or more within a minute, in the window.
    pub chattering: Vec<SourceCount>,
    /// Alarms active for more than 24 hours, oldest first (at most 100 listed).
    pub standing: Vec<StandingAlarm>,
    pub standing_count: usize,
    pub priorities: PriorityDistribution,
    /// The ten most frequent alarms in the window, most frequent first.
    pub top: Vec<SourceCount>,
    /// Their share of all alarms in the window, percent.
    pub top_share_pct: f64,
    /// Bookkeeping that gave way to the memory caps (non-zero means the figures are a floor).
    pub sources_evicted: u64,
    pub active_dropped: u64,
}

fn pct(part: u32, whole: u32) -> f64 {
    if whole == 0 {
        0.0
    } else {
        f64::from(part) * 100.0 / f64::from(whole)
    }
}

impl AlarmLoad {
    /// `now` is when observation starts (rates are not diluted by time before it).
    pub fn new(config: KpiConfig, now: Millis) -> AlarmLoad {
        let window_ms = (config.window_ms.max(HOUR_MS) / HOUR_MS) * HOUR_MS;
        let config = KpiConfig {
            window_ms,
            max_sources: config.max_sources.max(1),
            ..config
        };
        let n_minutes = (window_ms / MINUTE_MS) as usize;
        AlarmLoad {
            config,
            started: now,
            minutes: vec![
                MinuteBucket {
                    minute: i64::MIN,
                    by_priority: [0; 4]
                };
                n_minutes
            ],
            sources: HashMap::new(),
            active: HashMap::new(),
            sources_evicted: 0,
            active_dropped: 0,
        }
    }

    fn n_hours(&self) -> usize {
        (self.config.window_ms / HOUR_MS) as usize
    }

    /// Count one alarm event (any event: only announcements count as load, but every event
    /// keeps the set of active alarms up to date).
    pub fn on_event(&mut self, event: &AlarmEvent) {
        let alarm = &event.alarm;
        if alarm.state.is_active() {
            if !self.active.contains_key(&alarm.id) && self.active.len() >= self.config.max_active {
                self.active_dropped += 1;
            } else {
                self.active.insert(
                    alarm.id,
                    Active {
                        source: alarm.source,
                        priority: alarm.priority,
                        since: alarm.raised_at,
                    },
                );
            }
        } else {
            self.active.remove(&alarm.id);
        }
        if event.announce() {
            self.count(alarm.source, alarm.priority, event.at);
        }
    }

    fn count(&mut self, source: AlarmSource, priority: Priority, at: Millis) {
        let minute = at.div_euclid(MINUTE_MS);
        let n = self.minutes.len() as i64;
        let bucket = &mut self.minutes[minute.rem_euclid(n) as usize];
        if bucket.minute != minute {
            *bucket = MinuteBucket {
                minute,
                by_priority: [0; 4],
            };
        }
        bucket.by_priority[priority.rank()] += 1;

        if !self.sources.contains_key(&source) && self.sources.len() >= self.config.max_sources {
            let oldest = self
                .sources
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.sources.remove(&k);
                self.sources_evicted += 1;
            }
        }
        let n_hours = self.n_hours();
        let stats = self.sources.entry(source).or_insert_with(|| SourceStats {
            hours: vec![0; n_hours],
            hour: at.div_euclid(HOUR_MS),
            recent: [0; CHATTER_COUNT],
            n_recent: 0,
            chattered_at: None,
            last_seen: at,
        });
        roll_hours(stats, at.div_euclid(HOUR_MS));
        let h = stats.hour.rem_euclid(n_hours as i64) as usize;
        stats.hours[h] += 1;
        stats.last_seen = stats.last_seen.max(at);
        stats.recent.rotate_left(1);
        stats.recent[CHATTER_COUNT - 1] = at;
        stats.n_recent = (stats.n_recent + 1).min(CHATTER_COUNT);
        if stats.n_recent == CHATTER_COUNT && at - stats.recent[0] <= CHATTER_WINDOW_MS {
            stats.chattered_at = Some(at);
        }
    }

    fn minute_count(&self, minute: i64) -> Option<&MinuteBucket> {
        let n = self.minutes.len() as i64;
        let b = &self.minutes[minute.rem_euclid(n) as usize];
        (b.minute == minute).then_some(b)
    }

    fn sum_minutes(&self, now_minute: i64, count: i64) -> u32 {
        (0..count)
            .filter_map(|i| self.minute_count(now_minute - i))
            .map(MinuteBucket::total)
            .sum()
    }

    pub fn snapshot(&self, now: Millis) -> KpiSnapshot {
        let window = self.config.window_ms;
        let now_minute = now.div_euclid(MINUTE_MS);
        let n_minutes = self.minutes.len() as i64;
        let mut by_priority = [0u32; 4];
        for i in 0..n_minutes {
            if let Some(b) = self.minute_count(now_minute - i) {
                for (acc, n) in by_priority.iter_mut().zip(b.by_priority) {
                    *acc += n;
                }
            }
        }
        let alarms: u32 = by_priority.iter().sum();

        // Whole 10-minute windows, aligned, inside both the window and the observed time.
        let per_window = FLOOD_WINDOW_MS / MINUTE_MS;
        let first_minute = (now_minute - n_minutes + 1).max(self.started.div_euclid(MINUTE_MS));
        let first_window = (first_minute + per_window - 1).div_euclid(per_window);
        let end_window = now_minute.div_euclid(per_window); // the current one is not whole yet
        let (mut windows, mut flood_windows, mut peak) = (0u32, 0u32, 0u32);
        for w in first_window..end_window {
            let count = self.sum_minutes(w * per_window + per_window - 1, per_window);
            windows += 1;
            peak = peak.max(count);
            if count > FLOOD_THRESHOLD {
                flood_windows += 1;
            }
        }
        let last_10 = self.sum_minutes(now_minute, per_window);

        let n_hours = self.n_hours() as i64;
        let now_hour = now.div_euclid(HOUR_MS);
        let mut counts: Vec<SourceCount> = Vec::new();
        let mut chattering = Vec::new();
        for (source, s) in &self.sources {
            // Hours in the ring that still fall inside the window.
            let count: u32 = (0..n_hours)
                .filter(|i| s.hour - i > now_hour - n_hours)
                .map(|i| s.hours[(s.hour - i).rem_euclid(n_hours) as usize])
                .sum();
            if count == 0 {
                continue;
            }
            let sc = SourceCount {
                source: *source,
                count,
            };
            if s.chattered_at.is_some_and(|t| now - t < window) {
                chattering.push(sc);
            }
            counts.push(sc);
        }
        let by_count = |a: &SourceCount, b: &SourceCount| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.source.to_string().cmp(&b.source.to_string()))
        };
        counts.sort_by(by_count);
        chattering.sort_by(by_count);
        counts.truncate(TOP_N);
        let top_total: u32 = counts.iter().map(|c| c.count).sum();

        let mut standing: Vec<StandingAlarm> = self
            .active
            .iter()
            .filter(|(_, a)| now - a.since > STANDING_MS)
            .map(|(id, a)| StandingAlarm {
                id: *id,
                source: a.source,
                priority: a.priority,
                since: a.since,
            })
            .collect();
        standing.sort_by_key(|s| (s.since, s.id));
        let standing_count = standing.len();
        standing.truncate(100);

        let observed = (now - self.started).clamp(MINUTE_MS, window);
        KpiSnapshot {
            at: now,
            window_ms: window,
            alarms,
            alarms_per_hour: f64::from(alarms) * HOUR_MS as f64 / observed as f64,
            alarms_last_hour: self.sum_minutes(now_minute, 60),
            alarms_last_10_min: last_10,
            in_flood: last_10 > FLOOD_THRESHOLD,
            windows,
            flood_windows,
            flood_windows_pct: pct(flood_windows, windows),
            peak_10_min: peak,
            chattering,
            standing,
            standing_count,
            priorities: PriorityDistribution {
                low: by_priority[0],
                medium: by_priority[1],
                high: by_priority[2],
                critical: by_priority[3],
                low_pct: pct(by_priority[0], alarms),
                medium_pct: pct(by_priority[1], alarms),
                high_pct: pct(by_priority[2], alarms),
                critical_pct: pct(by_priority[3], alarms),
            },
            top: counts,
            top_share_pct: pct(top_total, alarms),
            sources_evicted: self.sources_evicted,
            active_dropped: self.active_dropped,
        }
    }
}

/// Advance a source's hour ring to `hour`, zeroing the hours skipped.
fn roll_hours(s: &mut SourceStats, hour: i64) {
    let n = s.hours.len() as i64;
    if hour <= s.hour {
        return;
    }
    let steps = (hour - s.hour).min(n);
    for i in 1..=steps {
        let h = (s.hour + i).rem_euclid(n) as usize;
        s.hours[h] = 0;
    }
    s.hour = hour;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alarm::{Alarm, AlarmState, Level, Transition};
    use crate::reading::PointId;

    fn event(
        id: AlarmId,
        point: u32,
        priority: Priority,
        transition: Transition,
        state: AlarmState,
        at: Millis,
    ) -> AlarmEvent {
        AlarmEvent {
            seq: 1,
            transition,
            at,
            by: None,
            comment: None,
            alarm: Alarm {
                id,
                source: AlarmSource::Limit {
                    point: PointId(point),
                    level: Level::High,
                },
                state,
                priority,
                value: None,
                limit: None,
                raised_at: at,
                acked_at: None,
                acked_by: None,
                cleared_at: None,
            },
        }
    }

    fn raise(load: &mut AlarmLoad, id: AlarmId, point: u32, priority: Priority, at: Millis) {
        load.on_event(&event(
            id,
            point,
            priority,
            Transition::Raised,
            AlarmState::ActiveUnacked,
            at,
        ));
    }

    #[test]
    fn rates_and_priorities() {
        let mut load = AlarmLoad::new(KpiConfig::default(), 0);
        for i in 0..8 {
            raise(&mut load, i, i as u32, Priority::Low, i as i64 * 60_000);
        }
        raise(&mut load, 100, 50, Priority::High, 30 * 60_000);
        // Hidden and non-raise events are not load.
        load.on_event(&event(
            200,
            51,
            Priority::High,
            Transition::Raised,
            AlarmState::Shelved,
            31 * 60_000,
        ));
        load.on_event(&event(
            0,
            0,
            Priority::Low,
            Transition::Acknowledged,
            AlarmState::ActiveAcked,
            32 * 60_000,
        ));
        let s = load.snapshot(2 * HOUR_MS);
        assert_eq!(s.alarms, 9);
        assert_eq!(s.alarms_last_hour, 0);
        assert!(
            (s.alarms_per_hour - 4.5).abs() < 1e-9,
            "9 over the 2 hours observed"
        );
        assert_eq!((s.priorities.low, s.priorities.high), (8, 1));
        assert!((s.priorities.low_pct - 800.0 / 9.0).abs() < 1e-9);
        assert_eq!(s.top.len(), 9);
        assert!((s.top_share_pct - 100.0).abs() < 1e-9);
        assert!(!s.in_flood);
        assert_eq!(s.windows, 12);
        assert_eq!(s.flood_windows, 0);
        assert_eq!(s.peak_10_min, 8);
    }

    #[test]
    fn flood_windows_and_current_flood() {
        let mut load = AlarmLoad::new(KpiConfig::default(), 0);
        for i in 0..11 {
            raise(
                &mut load,
                i,
                i as u32,
                Priority::Medium,
                10 * 60_000 + i as i64 * 1_000,
            );
        }
        let s = load.snapshot(15 * 60_000);
        assert!(s.in_flood);
        assert_eq!(s.alarms_last_10_min, 11);
        let s = load.snapshot(HOUR_MS);
        assert!(!s.in_flood);
        assert_eq!((s.windows, s.flood_windows, s.peak_10_min), (6, 1, 11));
        assert!((s.flood_windows_pct - 100.0 / 6.0).abs() < 1e-9);
    }

    #[test]
    fn chattering_top_ten_and_window_expiry() {
        let mut load = AlarmLoad::new(KpiConfig::default(), 0);
        // Point 1 in and out three times in 50 s.
        for (i, t) in [0, 20_000, 50_000].into_iter().enumerate() {
            raise(&mut load, i as u64, 1, Priority::Low, t);
        }
        // Point 2 three times, but over three minutes: not chattering.
        for (i, t) in [0, 90_000, 180_000].into_iter().enumerate() {
            raise(&mut load, 10 + i as u64, 2, Priority::Low, t);
        }
        for p in 3..15 {
            raise(&mut load, 100 + u64::from(p), p, Priority::Low, 200_000);
        }
        let s = load.snapshot(HOUR_MS);
        assert_eq!(s.chattering.len(), 1);
        assert_eq!(
            s.chattering[0].source,
            AlarmSource::Limit {
                point: PointId(1),
                level: Level::High
            }
        );
        assert_eq!(s.top.len(), TOP_N);
        assert_eq!(s.top[0].count, 3);
        assert!((s.top_share_pct - 100.0 * 14.0 / 18.0).abs() < 1e-9);
        // A day later everything has left the window.
        let s = load.snapshot(25 * HOUR_MS + 1);
        assert_eq!(s.alarms, 0);
        assert!(s.top.is_empty() && s.chattering.is_empty());
    }

    #[test]
    fn standing_alarms() {
        let mut load = AlarmLoad::new(KpiConfig::default(), 0);
        raise(&mut load, 1, 1, Priority::High, 0);
        raise(&mut load, 2, 2, Priority::Low, 0);
        load.on_event(&event(
            2,
            2,
            Priority::Low,
            Transition::Cleared,
            AlarmState::ReturnedUnacked,
            1_000,
        ));
        assert_eq!(load.snapshot(STANDING_MS).standing_count, 0);
        let s = load.snapshot(STANDING_MS + 1);
        assert_eq!(s.standing_count, 1);
        assert_eq!(s.standing[0].id, 1);
    }

    #[test]
    fn memory_is_capped() {
        let config = KpiConfig {
            max_sources: 4,
            max_active: 3,
            ..KpiConfig::default()
        };
        let mut load = AlarmLoad::new(config, 0);
        for i in 0..10 {
            raise(&mut load, i, i as u32, Priority::Low, i as i64);
        }
        let s = load.snapshot(1_000);
        assert_eq!(s.alarms, 10, "the per-minute counts are complete");
        assert_eq!(s.top.len(), 4);
        assert_eq!(s.sources_evicted, 6);
        assert_eq!(s.active_dropped, 7);
    }

    #[test]
    fn snapshot_serialises() {
        let load = AlarmLoad::new(KpiConfig::default(), 0);
        let json = serde_json::to_value(load.snapshot(0)).unwrap();
        assert_eq!(json["alarms"], 0);
        assert!(json["priorities"]["low_pct"].is_number());
    }
}
