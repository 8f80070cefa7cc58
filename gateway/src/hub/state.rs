//! The regional picture: every site's last status, its open alarms, whether it is reporting,
//! and its data quality over the last 24 hours. Fed by the MQTT intake, read by the API.
//! Pure state with time passed in; the tasks around it do the I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use alert_rules::Millis;
use serde::Serialize;
use serde_json::Value;

use super::config::SiteMeta;

/// Minutes of data-quality samples kept (24 h).
const QUALITY_WINDOW: usize = 24 * 60;
/// Event ids remembered per site for de-duplication (delivery is at least once).
const SEEN_IDS: usize = 2048;
/// Acknowledgement delays remembered per site for the average.
const ACK_SAMPLES: usize = 256;
/// Sites a region keeps; messages from more are refused. Any topic under the prefix names a
/// site, so without a bound a misconfigured or hostile publisher grows the hub without end.
pub const MAX_SITES: usize = 10_000;
/// Open alarms kept per site; past this the oldest (lowest id) goes, so that raises whose
/// clears were lost cannot grow the hub for ever.
const MAX_OPEN_ALARMS: usize = 10_000;

#[derive(Debug, Default)]
pub struct Site {
    pub meta: SiteMeta,
    /// The gateway's last retained status (colour, units, counts, online).
    pub status: Option<Value>,
    pub last_seen: Option<Millis>,
    /// Since when the site is offline (no message for too long, or its Last Will).
    pub offline_since: Option<Millis>,
    /// Open alarms by id: the latest event of each.
    pub alarms: BTreeMap<u64, Value>,
    seen: VecDeque<String>,
    ack_delays_ms: VecDeque<i64>,
    /// Per-minute samples: share of points online and valid (0 while offline).
    quality: VecDeque<f64>,
    /// The current minute so far: sum of per-second shares and how many seconds.
    quality_minute: (f64, u32),
    /// The journal chain head last reported: record number and hash.
    journal: Option<(i64, String)>,
    /// The site's journal went backwards or changed at a record number already reported.
    pub journal_rewritten: bool,
}

impl Site {
    /// Over the last 24 h: closed minutes count whole, the current one by its seconds.
    fn quality_pct(&self) -> Option<f64> {
        let (sum, n) = self.quality_minute;
        let weight = self.quality.len() as f64 + f64::from(n) / 60.0;
        if weight > 0.0 {
            Some(100.0 * (self.quality.iter().sum::<f64>() + sum / 60.0) / weight)
        } else if self.status.is_some() || self.offline_since.is_some() {
            Some(100.0 * self.live_quality())
        } else {
            None
        }
    }

    /// The share of points online and valid now: 0 while offline, 1 for a site without points.
    fn live_quality(&self) -> f64 {
        match (&self.status, self.offline_since) {
            (Some(s), None) => {
                let online = s
                    .get("points_online")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0);
                let total = s.get("points_total").and_then(Value::as_f64).unwrap_or(0.0);
                if total > 0.0 { online / total } else { 1.0 }
            }
            _ => 0.0,
        }
    }

    /// A journal only grows: a lower record number, or another hash at the same number, means
    /// records were deleted or edited at the site.
    fn check_journal(&mut self, status: &Value) {
        let (Some(seq), Some(head)) = (
            status.get("journal_seq").and_then(Value::as_i64),
            status.get("journal_head").and_then(Value::as_str),
        ) else {
            return;
        };
        if let Some((old_seq, old_head)) = &self.journal
            && (seq < *old_seq || (seq == *old_seq && head != old_head))
        {
            if !self.journal_rewritten {
                tracing::error!(site = %self.meta.id, seq, old_seq, "A site's alarm journal was rewritten: its chain head went back or changed.");
            }
            self.journal_rewritten = true;
        }
        self.journal = Some((seq, head.to_owned()));
    }
}

/// What happened to a site's reporting, for the log and the hub's own alarm list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presence {
    WentOffline { site: String, since: Millis },
    CameBack { site: String, after_ms: Millis },
}

#[derive(Debug, Default)]
pub struct Region {
    pub sites: HashMap<String, Site>,
    /// Offline alarms raised by the hub itself: site → raised at.
    pub offline_alarms: BTreeMap<String, Millis>,
    /// What the regional time-series store has not been told yet; `None` without a store.
    pub feed: Option<Feed>,
}

/// Alarm events held for the time-series store between two drains (one a second); past
/// this the oldest go, counted in [`Feed::dropped_events`].
const FEED_EVENTS_MAX: usize = 10_000;

/// Changes since the time-series writer last looked (docs/scale.md, "Regional time series").
#[derive(Debug, Default)]
pub struct Feed {
    /// Sites whose status, alarms or presence changed.
    pub changed: BTreeSet<String>,
    /// New (not duplicate) alarm events: site, event.
    pub events: VecDeque<(String, Value)>,
    /// Offline alarms raised and cleared by the hub.
    pub presence: Vec<Presence>,
    pub dropped_events: u64,
}

impl Feed {
    fn presence(&mut self, p: &Presence) {
        let site = match p {
            Presence::WentOffline { site, .. } | Presence::CameBack { site, .. } => site,
        };
        self.changed.insert(site.clone());
        self.presence.push(p.clone());
    }
}

/// Two statuses that differ only in their time stamp say the same thing.
fn same_status(a: &Value, b: &Value) -> bool {
    match (a.as_object(), b.as_object()) {
        (Some(a), Some(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, v)| k == "at" || k == "last_data_at" || b.get(k) == Some(v))
        }
        _ => a == b,
    }
}

/// grey 0, blue 1, yellow 2, orange 3, red 4: the colour as a number (worse is higher).
pub fn colour_rank(c: &str) -> u8 {
    match c {
        "red" => 4,
        "orange" => 3,
        "yellow" => 2,
        "blue" => 1,
        _ => 0,
    }
}

impl Region {
    pub fn new(expected: &[SiteMeta]) -> Region {
        let mut r = Region::default();
        for m in expected {
            r.sites.insert(
                m.id.clone(),
                Site {
                    meta: m.clone(),
                    ..Site::default()
                },
            );
        }
        r
    }

    /// Whether a message from `id` may be taken: a known site, or room for one more.
    pub fn accepts(&self, id: &str) -> bool {
        self.sites.contains_key(id) || self.sites.len() < MAX_SITES
    }

    fn site(&mut self, id: &str) -> &mut Site {
        self.sites.entry(id.to_owned()).or_insert_with(|| Site {
            meta: SiteMeta {
                id: id.to_owned(),
                name: id.to_owned(),
                ..SiteMeta::default()
            },
            ..Site::default()
        })
    }

    /// Any message proves the site is alive; returns a presence change if it was offline.
    fn seen(&mut self, id: &str, now: Millis) -> Option<Presence> {
        let site = self.site(id);
        site.last_seen = Some(now);
        let back = site.offline_since.take().map(|since| Presence::CameBack {
            site: id.to_owned(),
            after_ms: now - since,
        });
        if let Some(p) = &back {
            self.offline_alarms.remove(id);
            if let Some(feed) = &mut self.feed {
                feed.presence(p);
            }
        }
        back
    }

    /// Collect changes for the time-series store from now on.
    pub fn enable_feed(&mut self) {
        self.feed.get_or_insert_with(Feed::default);
    }

    fn changed(&mut self, id: &str) {
        if let Some(feed) = &mut self.feed {
            feed.changed.insert(id.to_owned());
        }
    }

    /// A retained status message. `online: false` is the gateway's Last Will.
    pub fn on_status(&mut self, id: &str, status: Value, now: Millis) -> Option<Presence> {
        if status.get("online").and_then(Value::as_bool) == Some(false) {
            let site = self.site(id);
            site.status = Some(status);
            if site.offline_since.is_none() {
                site.offline_since = Some(now);
                self.offline_alarms.insert(id.to_owned(), now);
                let p = Presence::WentOffline {
                    site: id.to_owned(),
                    since: now,
                };
                if let Some(feed) = &mut self.feed {
                    feed.presence(&p);
                }
                return Some(p);
            }
            return None;
        }
        let change = self.seen(id, now);
        let site = self.site(id);
        site.check_journal(&status);
        let same = site
            .status
            .as_ref()
            .is_some_and(|old| same_status(old, &status));
        site.status = Some(status);
        if !same {
            self.changed(id);
        }
        change
    }

    /// An alarm event. Duplicates (same event id) are ignored.
    pub fn on_alarm(&mut self, id: &str, event: Value, now: Millis) -> Option<Presence> {
        let change = self.seen(id, now);
        let site = self.site(id);
        let Some(event_id) = event.get("id").and_then(Value::as_str).map(str::to_owned) else {
            return change;
        };
        if site.seen.contains(&event_id) {
            return change;
        }
        if site.seen.len() == SEEN_IDS {
            site.seen.pop_front();
        }
        site.seen.push_back(event_id);
        if let Some(feed) = &mut self.feed {
            if feed.events.len() >= FEED_EVENTS_MAX {
                feed.events.pop_front();
                feed.dropped_events += 1;
            }
            feed.events.push_back((id.to_owned(), event.clone()));
            feed.changed.insert(id.to_owned());
        }
        let site = self.site(id);
        let Some(alarm_id) = event.get("alarm_id").and_then(Value::as_u64) else {
            return change;
        };
        if event.get("transition").and_then(Value::as_str) == Some("acknowledged") {
            let raised = event
                .get("raised_at")
                .and_then(Value::as_str)
                .and_then(parse_time);
            let acked = event
                .get("acked_at")
                .and_then(Value::as_str)
                .and_then(parse_time);
            if let (Some(r), Some(a)) = (raised, acked) {
                if site.ack_delays_ms.len() == ACK_SAMPLES {
                    site.ack_delays_ms.pop_front();
                }
                site.ack_delays_ms.push_back(a - r);
            }
        }
        // Events of one alarm can arrive out of order across reconnections: keep the newest.
        let newer = site
            .alarms
            .get(&alarm_id)
            .and_then(|old| old.get("seq").and_then(Value::as_u64))
            .is_none_or(|old_seq| event.get("seq").and_then(Value::as_u64).unwrap_or(0) >= old_seq);
        if newer {
            if event.get("state").and_then(Value::as_str) == Some("normal") {
                site.alarms.remove(&alarm_id);
            } else {
                site.alarms.insert(alarm_id, event);
                if site.alarms.len() > MAX_OPEN_ALARMS {
                    site.alarms.pop_first();
                }
            }
        }
        change
    }

    /// Sites silent for longer than `offline_after_ms` go offline.
    pub fn tick(
        &mut self,
        now: Millis,
        offline_after_ms: Millis,
        started: Millis,
    ) -> Vec<Presence> {
        let mut changes = Vec::new();
        for (id, site) in &mut self.sites {
            let reference = site.last_seen.unwrap_or(started);
            if site.offline_since.is_none() && now - reference >= offline_after_ms {
                site.offline_since = Some(now);
                changes.push(Presence::WentOffline {
                    site: id.clone(),
                    since: now,
                });
            }
        }
        for c in &changes {
            if let Presence::WentOffline { site, since } = c {
                self.offline_alarms.insert(site.clone(), *since);
            }
            if let Some(feed) = &mut self.feed {
                feed.presence(c);
            }
        }
        changes
    }

    /// Every second: add each site's current share of points online and valid to the minute.
    /// A site not heard of since the hub started, and not yet declared offline, is left out:
    /// the hub knows nothing about it.
    pub fn accumulate_quality(&mut self) {
        for site in self.sites.values_mut() {
            if site.status.is_none() && site.offline_since.is_none() {
                continue;
            }
            site.quality_minute.0 += site.live_quality();
            site.quality_minute.1 += 1;
        }
    }

    /// Once a minute: close each site's minute (the mean of its seconds; without any, the
    /// share now) into the 24 h window.
    pub fn sample_quality(&mut self) {
        for site in self.sites.values_mut() {
            if site.status.is_none() && site.offline_since.is_none() {
                continue;
            }
            let (sum, n) = std::mem::take(&mut site.quality_minute);
            let share = if n > 0 {
                sum / f64::from(n)
            } else {
                site.live_quality()
            };
            if site.quality.len() == QUALITY_WINDOW {
                site.quality.pop_front();
            }
            site.quality.push_back(share);
        }
    }

    pub fn summary(&self, id: &str) -> Option<SiteSummary> {
        let s = self.sites.get(id)?;
        let status = s.status.as_ref();
        let online = s.offline_since.is_none() && s.last_seen.is_some();
        let colour = if online {
            status
                .and_then(|v| v.get("colour"))
                .and_then(Value::as_str)
                .unwrap_or("blue")
                .to_owned()
        } else {
            "grey".to_owned()
        };
        let unacked = s
            .alarms
            .values()
            .filter(|a| a.get("state").and_then(Value::as_str) == Some("active_unacked"))
            .count();
        Some(SiteSummary {
            id: id.to_owned(),
            name: if s.meta.name.is_empty() {
                status
                    .and_then(|v| v.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or(id)
                    .to_owned()
            } else {
                s.meta.name.clone()
            },
            sector: s.meta.sector.clone(),
            major_hazard_grade: s.meta.major_hazard_grade,
            latitude: s.meta.latitude,
            longitude: s.meta.longitude,
            colour,
            online,
            last_seen: s.last_seen.map(crate::event::rfc3339),
            offline_since: s.offline_since.map(crate::event::rfc3339),
            open_alarms: s.alarms.len(),
            unacknowledged: unacked,
            mean_time_to_ack_secs: (!s.ack_delays_ms.is_empty()).then(|| {
                s.ack_delays_ms.iter().sum::<i64>() as f64 / s.ack_delays_ms.len() as f64 / 1000.0
            }),
            data_quality_pct: s.quality_pct(),
            points_online: status
                .and_then(|v| v.get("points_online"))
                .and_then(Value::as_u64),
            points_total: status
                .and_then(|v| v.get("points_total"))
                .and_then(Value::as_u64),
            journal_rewritten: s.journal_rewritten,
        })
    }

    /// Every site, worst first.
    pub fn summaries(&self) -> Vec<SiteSummary> {
        let mut all: Vec<SiteSummary> = self
            .sites
            .keys()
            .filter_map(|id| self.summary(id))
            .collect();
        all.sort_by(|a, b| {
            (
                b.colour == "grey",
                colour_rank(&b.colour),
                b.unacknowledged,
                &a.id,
            )
                .cmp(&(
                    a.colour == "grey",
                    colour_rank(&a.colour),
                    a.unacknowledged,
                    &b.id,
                ))
        });
        all
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SiteSummary {
    pub id: String,
    pub name: String,
    pub sector: String,
    pub major_hazard_grade: Option<u8>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    /// The site's live colour; `grey` while it is not reporting.
    pub colour: String,
    pub online: bool,
    pub last_seen: Option<String>,
    pub offline_since: Option<String>,
    pub open_alarms: usize,
    pub unacknowledged: usize,
    pub mean_time_to_ack_secs: Option<f64>,
    /// Share of points online and valid over the last 24 h, sampled each minute (≥ 90 % expected).
    pub data_quality_pct: Option<f64>,
    pub points_online: Option<u64>,
    pub points_total: Option<u64>,
    /// The site's alarm journal went back or changed: history was deleted or edited there.
    pub journal_rewritten: bool,
}

pub(crate) fn parse_time(s: &str) -> Option<Millis> {
    humantime::parse_rfc3339(s)
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as Millis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(id: &str, alarm: u64, seq: u64, transition: &str, state: &str) -> Value {
        json!({"id": id, "alarm_id": alarm, "seq": seq, "transition": transition, "state": state,
               "raised_at": "2026-01-01T00:00:00.000Z", "acked_at": "2026-01-01T00:00:30.000Z"})
    }

    #[test]
    fn sites_and_their_open_alarms_are_bounded() {
        let mut r = Region::default();
        for i in 0..MAX_SITES {
            r.on_status(
                &format!("s{i}"),
                json!({"colour": "blue", "online": true}),
                1,
            );
        }
        assert!(
            !r.accepts("one-too-many"),
            "a full region refuses a new site"
        );
        assert!(r.accepts("s7"), "but keeps taking its own");
        for a in 1..=(MAX_OPEN_ALARMS as u64 + 5) {
            r.on_alarm(
                "s7",
                event(&format!("e{a}"), a, 1, "raised", "active_unacked"),
                2,
            );
        }
        let alarms = &r.sites["s7"].alarms;
        assert_eq!(alarms.len(), MAX_OPEN_ALARMS);
        assert_eq!(alarms.keys().next(), Some(&6), "the oldest went");
    }

    #[test]
    fn a_silent_site_goes_grey_and_comes_back() {
        let mut r = Region::new(&[SiteMeta {
            id: "a".into(),
            ..SiteMeta::default()
        }]);
        assert!(r.tick(1_000, 5_000, 0).is_empty());
        assert_eq!(
            r.tick(5_000, 5_000, 0),
            vec![Presence::WentOffline {
                site: "a".into(),
                since: 5_000
            }]
        );
        assert_eq!(r.summary("a").unwrap().colour, "grey");
        assert!(r.offline_alarms.contains_key("a"));
        let back = r.on_status("a", json!({"colour": "orange", "online": true}), 7_000);
        assert_eq!(
            back,
            Some(Presence::CameBack {
                site: "a".into(),
                after_ms: 2_000
            })
        );
        assert_eq!(r.summary("a").unwrap().colour, "orange");
        assert!(r.offline_alarms.is_empty());
    }

    #[test]
    fn the_last_will_marks_a_site_offline_at_once() {
        let mut r = Region::default();
        r.on_status("b", json!({"colour": "red", "online": true}), 1);
        let change = r.on_status("b", json!({"online": false}), 2);
        assert_eq!(
            change,
            Some(Presence::WentOffline {
                site: "b".into(),
                since: 2
            })
        );
        assert!(!r.summary("b").unwrap().online);
    }

    #[test]
    fn duplicate_and_stale_alarm_events_change_nothing() {
        let mut r = Region::default();
        r.on_alarm("s", event("s-1-1", 1, 1, "raised", "active_unacked"), 1);
        r.on_alarm("s", event("s-1-2", 1, 2, "acknowledged", "active_acked"), 2);
        r.on_alarm("s", event("s-1-1", 1, 1, "raised", "active_unacked"), 3);
        let s = r.summary("s").unwrap();
        assert_eq!((s.open_alarms, s.unacknowledged), (1, 0));
        assert_eq!(s.mean_time_to_ack_secs, Some(30.0));
        r.on_alarm("s", event("s-1-3", 1, 3, "cleared", "normal"), 4);
        assert_eq!(r.summary("s").unwrap().open_alarms, 0);
    }

    #[test]
    fn a_journal_that_goes_back_is_flagged() {
        let mut r = Region::default();
        r.on_status(
            "j",
            json!({"online": true, "journal_seq": 10, "journal_head": "aa"}),
            1,
        );
        r.on_status(
            "j",
            json!({"online": true, "journal_seq": 12, "journal_head": "bb"}),
            2,
        );
        assert!(!r.summary("j").unwrap().journal_rewritten);
        r.on_status(
            "j",
            json!({"online": true, "journal_seq": 11, "journal_head": "cc"}),
            3,
        );
        assert!(r.summary("j").unwrap().journal_rewritten);
    }

    #[test]
    fn data_quality_counts_offline_time_as_lost() {
        let mut r = Region::default();
        r.on_status(
            "q",
            json!({"online": true, "points_online": 9, "points_total": 10}),
            1,
        );
        r.sample_quality();
        r.on_status("q", json!({"online": false}), 2);
        r.sample_quality();
        let pct = r.summary("q").unwrap().data_quality_pct.unwrap();
        assert!((pct - 45.0).abs() < 1e-9, "{pct}");
        // Seconds count before their minute closes: 30 s back online at 100 %.
        r.on_status(
            "q",
            json!({"online": true, "points_online": 10, "points_total": 10}),
            3,
        );
        for _ in 0..30 {
            r.accumulate_quality();
        }
        let pct = r.summary("q").unwrap().data_quality_pct.unwrap();
        assert!((pct - 56.0).abs() < 1e-9, "{pct}");
        r.sample_quality();
        let pct = r.summary("q").unwrap().data_quality_pct.unwrap();
        assert!((pct - (90.0 + 0.0 + 100.0) / 3.0).abs() < 1e-9, "{pct}");
    }
}
