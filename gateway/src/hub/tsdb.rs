//! The hub's writer to the regional time-series store (InfluxDB v2 write API): per-site status
//! points, alarm events and the hub's offline alarms, as line protocol (docs/scale.md,
//! "Regional time series").
//!
//! The MQTT intake never waits for the store. Once a second the watcher turns what changed in
//! the region ([`super::state::Feed`]) into lines and appends them to a bounded in-memory
//! queue; this module's task sends them in batches. A failed write is logged, counted and
//! retried with jittered exponential backoff; while the store is away the queue fills up to
//! `queue_max_bytes`, after which the oldest lines are dropped and counted. Nothing is kept on
//! disk: the gateways' own stores hold the records of truth, and every site's status is
//! written again at least every `status_interval_secs`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alert_rules::Millis;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::config::Tsdb;
use super::state::{Presence, Region, colour_rank, parse_time};
use crate::sink::influx::{self, Outcome};
use crate::sink::line::{Field, SeriesKey, push_fields};

/// Counters of the writer, served at `/metrics` and `/healthz`.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Stats {
    pub lines_written: u64,
    pub requests_ok: u64,
    pub write_failures: u64,
    /// Dropped because the queue was full (oldest first).
    pub dropped_queue_full: u64,
    /// Dropped because the store refused them for good (4xx other than 401/403/408/429).
    pub dropped_rejected: u64,
    /// Alarm events the region's feed dropped before they became lines.
    pub dropped_events: u64,
    pub queue_lines: usize,
    pub queue_bytes: usize,
    /// The last write failed and is being retried.
    pub failing: bool,
}

/// Lines waiting for the store, oldest first, each with a sequence number so that a batch in
/// flight can be acknowledged even if older lines were dropped meanwhile.
#[derive(Debug)]
pub struct LineQueue {
    lines: VecDeque<(u64, String)>,
    bytes: usize,
    next: u64,
    max_bytes: usize,
    pub stats: Stats,
}

impl LineQueue {
    pub fn new(max_bytes: usize) -> LineQueue {
        LineQueue {
            lines: VecDeque::new(),
            bytes: 0,
            next: 0,
            max_bytes,
            stats: Stats::default(),
        }
    }

    /// Append one line (with its newline); drop the oldest while the queue is over its size.
    pub fn push(&mut self, line: String) {
        self.bytes += line.len();
        self.lines.push_back((self.next, line));
        self.next += 1;
        while self.bytes > self.max_bytes {
            let Some((_, old)) = self.lines.pop_front() else {
                break;
            };
            self.bytes -= old.len();
            self.stats.dropped_queue_full += 1;
        }
        self.update();
    }

    /// The oldest `max_lines` lines as one body, and the sequence number of the last.
    pub fn batch(&self, max_lines: usize) -> Option<(u64, usize, String)> {
        let n = self.lines.len().min(max_lines);
        let (last, _) = self.lines.get(n.checked_sub(1)?)?;
        let mut body = String::with_capacity(n * 160);
        for (_, l) in self.lines.iter().take(max_lines) {
            body.push_str(l);
        }
        Some((*last, n, body))
    }

    /// Remove every line up to and including `seq`; returns how many went.
    pub fn remove_through(&mut self, seq: u64) -> u64 {
        let mut n = 0;
        while self.lines.front().is_some_and(|(s, _)| *s <= seq) {
            if let Some((_, l)) = self.lines.pop_front() {
                self.bytes -= l.len();
                n += 1;
            }
        }
        self.update();
        n
    }

    fn update(&mut self) {
        self.stats.queue_lines = self.lines.len();
        self.stats.queue_bytes = self.bytes;
    }
}

/// The queue shared by the encoder (the hub's watcher) and the writer task.
#[derive(Debug)]
pub struct Shared {
    pub queue: Mutex<LineQueue>,
    pub wake: Notify,
}

impl Shared {
    pub fn new(max_bytes: usize) -> Arc<Shared> {
        Arc::new(Shared {
            queue: Mutex::new(LineQueue::new(max_bytes)),
            wake: Notify::new(),
        })
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, LineQueue> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn push_all(&self, lines: Vec<String>, dropped_events: u64) {
        if lines.is_empty() && dropped_events == 0 {
            return;
        }
        let mut q = self.lock();
        q.stats.dropped_events += dropped_events;
        for l in lines {
            q.push(l);
        }
        drop(q);
        self.wake.notify_one();
    }

    pub fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }
}

/// Turn what changed in the region into lines: the status of every changed site (of every
/// site when `all`), each new alarm event, each offline alarm raised or cleared. Returns the
/// lines and how many alarm events the feed had to drop.
pub fn encode(region: &mut Region, hub: &str, now: Millis, all: bool) -> (Vec<String>, u64) {
    let Some(feed) = region.feed.as_mut() else {
        return (Vec::new(), 0);
    };
    let changed = std::mem::take(&mut feed.changed);
    let events = std::mem::take(&mut feed.events);
    let presence = std::mem::take(&mut feed.presence);
    let dropped = std::mem::take(&mut feed.dropped_events);
    let mut lines = Vec::new();
    let ids: Vec<String> = if all {
        region.sites.keys().cloned().collect()
    } else {
        changed.into_iter().collect()
    };
    for id in ids {
        if let Some(line) = status_line(region, hub, &id, now) {
            lines.push(line);
        }
    }
    for (site, event) in &events {
        if let Some(line) = event_line(hub, site, event, now) {
            lines.push(line);
        }
    }
    for p in &presence {
        let mut out = String::new();
        let (site, ts, fields) = match p {
            Presence::WentOffline { site, since } => {
                (site, *since, vec![("active", Field::Int(1))])
            }
            Presence::CameBack { site, after_ms } => (
                site,
                now,
                vec![
                    ("active", Field::Int(0)),
                    ("offline_secs", Field::Float(*after_ms as f64 / 1000.0)),
                ],
            ),
        };
        let key = SeriesKey::new("site_offline", &[("hub", hub), ("site", site)]);
        if push_fields(&mut out, &key, &fields, ts) {
            lines.push(out);
        }
    }
    (lines, dropped)
}

fn status_line(region: &Region, hub: &str, id: &str, now: Millis) -> Option<String> {
    let s = region.summary(id)?;
    let site = region.sites.get(id)?;
    let status = site.status.as_ref().filter(|_| s.online);
    let grade = s
        .major_hazard_grade
        .map(|g| g.to_string())
        .unwrap_or_default();
    let key = SeriesKey::new(
        "site_status",
        &[
            ("hub", hub),
            ("site", id),
            ("sector", &s.sector),
            ("grade", &grade),
        ],
    );
    let int = |v: u64| Field::Int(i64::try_from(v).unwrap_or(i64::MAX));
    let mut fields = vec![
        ("colour", Field::Int(i64::from(colour_rank(&s.colour)))),
        ("online", Field::Int(i64::from(s.online))),
        ("open_alarms", int(s.open_alarms as u64)),
        ("unacknowledged", int(s.unacknowledged as u64)),
        (
            "journal_rewritten",
            Field::Int(i64::from(s.journal_rewritten)),
        ),
    ];
    // Active alarms by priority, as the gateway's engine counts them.
    if let Some(counts) = status
        .and_then(|v| v.get("active_alarms"))
        .and_then(Value::as_array)
    {
        for (name, v) in [
            "alarms_low",
            "alarms_medium",
            "alarms_high",
            "alarms_critical",
        ]
        .into_iter()
        .zip(counts)
        {
            if let Some(n) = v.as_u64() {
                fields.push((name, int(n)));
            }
        }
    }
    if let Some(n) = s.points_online {
        fields.push(("points_online", int(if s.online { n } else { 0 })));
    }
    if let Some(n) = s.points_total {
        fields.push(("points_total", int(n)));
    }
    if let Some(q) = s.data_quality_pct {
        fields.push(("data_quality_pct", Field::Float(q)));
    }
    if let Some(t) = s.mean_time_to_ack_secs {
        fields.push(("mean_time_to_ack_secs", Field::Float(t)));
    }
    let mut out = String::new();
    push_fields(&mut out, &key, &fields, now).then_some(out)
}

fn event_line(hub: &str, site: &str, e: &Value, now: Millis) -> Option<String> {
    let text = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("");
    let state = text("state");
    let key = SeriesKey::new(
        "site_alarm",
        &[
            ("hub", hub),
            ("site", site),
            ("point", text("point")),
            ("kind", text("kind")),
            ("priority", text("priority")),
            ("level", text("level")),
            ("transition", text("transition")),
        ],
    );
    let ts = parse_time(text("at")).unwrap_or(now);
    let active = state.starts_with("active") || state == "latched";
    let acked_at = parse_time(text("acked_at"));
    let raised_at = parse_time(text("raised_at"));
    let mut fields = vec![
        (
            "alarm_id",
            Field::Int(e.get("alarm_id").and_then(Value::as_i64).unwrap_or(0)),
        ),
        (
            "seq",
            Field::Int(e.get("seq").and_then(Value::as_i64).unwrap_or(0)),
        ),
        ("active", Field::Int(i64::from(active))),
        (
            "acknowledged",
            Field::Int(i64::from(acked_at.is_some() || state == "active_acked")),
        ),
    ];
    if let Some(v) = e.get("value").and_then(Value::as_f64) {
        fields.push(("value", Field::Float(v)));
    }
    if let Some(v) = e.get("limit").and_then(Value::as_f64) {
        fields.push(("limit", Field::Float(v)));
    }
    if let (Some(r), Some(a)) = (raised_at, acked_at) {
        fields.push((
            "time_to_ack_secs",
            Field::Float((a - r).max(0) as f64 / 1000.0),
        ));
    }
    let mut out = String::new();
    push_fields(&mut out, &key, &fields, ts).then_some(out)
}

/// A gateway's downsampled readings (`{prefix}/{site}/readings`): one `site_reading` line per
/// point, stamped with the end of the window.
pub fn reading_lines(hub: &str, site: &str, doc: &Value, now: Millis) -> Vec<String> {
    let ts = doc
        .get("to")
        .and_then(Value::as_str)
        .and_then(parse_time)
        .unwrap_or(now);
    let Some(points) = doc.get("points").and_then(Value::as_array) else {
        return Vec::new();
    };
    let mut lines = Vec::with_capacity(points.len());
    for p in points {
        let Some(point) = p.get("point").and_then(Value::as_str) else {
            continue;
        };
        let key = SeriesKey::new(
            "site_reading",
            &[("hub", hub), ("site", site), ("point", point)],
        );
        let mut fields = Vec::with_capacity(7);
        for name in ["min", "max", "mean", "last"] {
            if let Some(v) = p.get(name).and_then(Value::as_f64) {
                fields.push((name, Field::Float(v)));
            }
        }
        for name in ["n", "good", "quality"] {
            if let Some(v) = p.get(name).and_then(Value::as_i64) {
                fields.push((name, Field::Int(v)));
            }
        }
        let mut out = String::new();
        if push_fields(&mut out, &key, &fields, ts) {
            lines.push(out);
        }
    }
    lines
}

/// Send queued lines until `shutdown`; then try once more for up to two seconds.
pub async fn run(config: Tsdb, shared: Arc<Shared>, shutdown: CancellationToken) {
    let url = match influx::write_url(&config.as_influx()) {
        Ok(u) => u,
        Err(error) => {
            tracing::error!(%error, "The time-series store URL is not valid; the hub writes no time series.");
            return;
        }
    };
    let client = match influx::http_client(config.timeout_ms) {
        Ok(c) => c,
        Err(error) => {
            tracing::error!(%error, "The time-series store's HTTP client could not be built; the hub writes no time series.");
            return;
        }
    };
    let token = config.token();
    let cap = Duration::from_secs(config.max_backoff_secs);
    let max_lines = config.batch_max_lines;
    let mut limit = max_lines;
    let mut attempts = 0u32;
    let mut failing_since: Option<tokio::time::Instant> = None;
    let mut stopping = false;
    let mut stop_deadline: Option<tokio::time::Instant> = None;
    loop {
        let next = shared.lock().batch(limit);
        let Some((last, n, body)) = next else {
            if stopping {
                return;
            }
            tokio::select! {
                () = shutdown.cancelled() => stopping = true,
                () = shared.wake.notified() => {}
            }
            continue;
        };
        let send = influx::post(&client, &url, token.as_deref(), config.gzip, &body);
        let outcome = if stopping {
            // Two seconds in all for what is left at shutdown.
            let deadline = *stop_deadline
                .get_or_insert_with(|| tokio::time::Instant::now() + Duration::from_secs(2));
            match tokio::time::timeout_at(deadline, send).await {
                Ok(o) => o,
                Err(_) => return,
            }
        } else {
            tokio::select! {
                o = send => o,
                () = shutdown.cancelled() => { stopping = true; continue; }
            }
        };
        match outcome {
            Outcome::Accepted => {
                {
                    let mut q = shared.lock();
                    let sent = q.remove_through(last);
                    q.stats.lines_written += sent;
                    q.stats.requests_ok += 1;
                    q.stats.failing = false;
                }
                attempts = 0;
                limit = (limit * 2).min(max_lines);
                if let Some(since) = failing_since.take() {
                    tracing::info!(
                        down_secs = since.elapsed().as_secs(),
                        "Writes to the time-series store resumed."
                    );
                }
            }
            Outcome::TooLarge if n > 1 => {
                limit = (n / 2).max(1);
                tracing::warn!(
                    lines = n,
                    next = limit,
                    "The time-series store refused a batch as too large (413); splitting it."
                );
            }
            Outcome::TooLarge | Outcome::Rejected { .. } => {
                let (status, error) = match outcome {
                    Outcome::Rejected { status, error } => (status, error),
                    _ => (413, "one line is larger than the store accepts".to_owned()),
                };
                let dropped = {
                    let mut q = shared.lock();
                    let dropped = q.remove_through(last);
                    q.stats.dropped_rejected += dropped;
                    dropped
                };
                tracing::error!(status, %error, lines = dropped, "The time-series store refused a batch for good; it is dropped.");
            }
            Outcome::Retry {
                reason,
                error,
                after,
            } => {
                if stopping {
                    return;
                }
                let delay = after.unwrap_or_else(|| crate::notify::backoff(attempts, cap));
                attempts = attempts.saturating_add(1);
                let queued = {
                    let mut q = shared.lock();
                    q.stats.write_failures += 1;
                    q.stats.failing = true;
                    q.stats.queue_lines
                };
                if (failing_since.is_none() || attempts.is_power_of_two()) && reason == "auth" {
                    tracing::error!(%error, attempts, queued, retry_in_ms = delay.as_millis() as u64, "The time-series store refused the hub's credentials; will retry.");
                } else if failing_since.is_none() || attempts.is_power_of_two() {
                    tracing::warn!(reason, %error, attempts, queued, retry_in_ms = delay.as_millis() as u64, "Writing to the time-series store failed; will retry.");
                }
                failing_since.get_or_insert_with(tokio::time::Instant::now);
                tokio::select! {
                    () = shutdown.cancelled() => stopping = true,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Prometheus text of the writer's counters.
pub fn metrics_text(s: &Stats, out: &mut String) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "# HELP sentinel_hub_tsdb_lines_written_total Lines the time-series store accepted.\n# TYPE sentinel_hub_tsdb_lines_written_total counter\nsentinel_hub_tsdb_lines_written_total {}",
        s.lines_written
    );
    let _ = writeln!(
        out,
        "# HELP sentinel_hub_tsdb_write_failures_total Write requests that failed and were retried.\n# TYPE sentinel_hub_tsdb_write_failures_total counter\nsentinel_hub_tsdb_write_failures_total {}",
        s.write_failures
    );
    let _ = writeln!(
        out,
        "# HELP sentinel_hub_tsdb_lines_dropped_total Lines never written, by reason.\n# TYPE sentinel_hub_tsdb_lines_dropped_total counter\nsentinel_hub_tsdb_lines_dropped_total{{reason=\"queue_full\"}} {}\nsentinel_hub_tsdb_lines_dropped_total{{reason=\"rejected\"}} {}\nsentinel_hub_tsdb_lines_dropped_total{{reason=\"events_backlog\"}} {}",
        s.dropped_queue_full, s.dropped_rejected, s.dropped_events
    );
    let _ = writeln!(
        out,
        "# HELP sentinel_hub_tsdb_queue_lines Lines waiting for the time-series store.\n# TYPE sentinel_hub_tsdb_queue_lines gauge\nsentinel_hub_tsdb_queue_lines {}\n# HELP sentinel_hub_tsdb_queue_bytes Bytes waiting for the time-series store.\n# TYPE sentinel_hub_tsdb_queue_bytes gauge\nsentinel_hub_tsdb_queue_bytes {}\n# HELP sentinel_hub_tsdb_failing 1 while writes fail.\n# TYPE sentinel_hub_tsdb_failing gauge\nsentinel_hub_tsdb_failing {}",
        s.queue_lines,
        s.queue_bytes,
        u8::from(s.failing)
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::config::SiteMeta;
    use serde_json::json;

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_them() {
        let mut q = LineQueue::new(30);
        for i in 0..5 {
            q.push(format!("m v={i}i 0000\n")); // 12 bytes
        }
        assert_eq!(q.stats.queue_lines, 2);
        assert_eq!(q.stats.dropped_queue_full, 3);
        let (last, n, body) = q.batch(10).unwrap();
        assert_eq!((n, body.as_str()), (2, "m v=3i 0000\nm v=4i 0000\n"));
        // Newer lines arrive and older ones are dropped while the batch is in flight: only
        // what was sent is removed.
        q.push("m v=5i 0000\n".into());
        q.push("m v=6i 0000\n".into());
        assert_eq!(q.remove_through(last), 0);
        assert_eq!(q.batch(10).unwrap().2, "m v=5i 0000\nm v=6i 0000\n");
    }

    #[test]
    fn changes_become_status_event_and_offline_lines() {
        let mut r = Region::new(&[SiteMeta {
            id: "s1".into(),
            name: "Site one".into(),
            sector: "hazardous_chemicals".into(),
            major_hazard_grade: Some(2),
            ..SiteMeta::default()
        }]);
        r.enable_feed();
        r.on_status(
            "s1",
            json!({"online": true, "colour": "red", "active_alarms": [0, 0, 1, 2],
                   "points_online": 3, "points_total": 4}),
            1_000,
        );
        r.on_alarm(
            "s1",
            json!({"id": "s1-7-1", "alarm_id": 7, "seq": 1, "transition": "raised",
                   "state": "active_unacked", "priority": "critical", "point": "GT-1",
                   "kind": "limit", "level": "HH", "value": 60.0, "limit": 50.0,
                   "at": "2026-01-01T00:00:00.000Z", "raised_at": "2026-01-01T00:00:00.000Z"}),
            1_001,
        );
        let (lines, dropped) = encode(&mut r, "h", 2_000, false);
        assert_eq!(dropped, 0);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(
            lines[0],
            "site_status,hub=h,site=s1,sector=hazardous_chemicals,grade=2 colour=4i,online=1i,open_alarms=1i,unacknowledged=1i,journal_rewritten=0i,alarms_low=0i,alarms_medium=0i,alarms_high=1i,alarms_critical=2i,points_online=3i,points_total=4i,data_quality_pct=75 2000\n"
        );
        assert_eq!(
            lines[1],
            "site_alarm,hub=h,site=s1,point=GT-1,kind=limit,priority=critical,level=HH,transition=raised alarm_id=7i,seq=1i,active=1i,acknowledged=0i,value=60,limit=50 1767225600000\n"
        );
        // Nothing changed: nothing to write, until the periodic write of every site.
        assert!(encode(&mut r, "h", 2_500, false).0.is_empty());
        assert_eq!(encode(&mut r, "h", 3_000, true).0.len(), 1);
        // The site falls silent: grey, offline alarm.
        r.tick(10_000, 5_000, 0);
        let (lines, _) = encode(&mut r, "h", 10_000, false);
        assert!(lines[0].contains(" colour=0i,online=0i,"), "{lines:?}");
        assert!(lines[0].contains("points_online=0i"), "{lines:?}");
        assert_eq!(lines[1], "site_offline,hub=h,site=s1 active=1i 10000\n");
    }

    #[test]
    fn downsampled_readings_become_one_line_per_point() {
        let doc = json!({"site": "s1", "to": "2026-01-01T00:00:01.000Z", "points": [
            {"point": "GT-1", "n": 5, "good": 4, "min": 1.5, "max": 9.0, "mean": 4.0, "last": 9.0, "quality": 0},
            {"point": "LT 2", "n": 2, "good": 0, "min": null, "max": null, "mean": null, "last": null, "quality": 4},
        ]});
        let lines = reading_lines("h", "s1", &doc, 0);
        assert_eq!(
            lines,
            [
                "site_reading,hub=h,site=s1,point=GT-1 min=1.5,max=9,mean=4,last=9,n=5i,good=4i,quality=0i 1767225601000\n",
                "site_reading,hub=h,site=s1,point=LT\\ 2 n=2i,good=0i,quality=4i 1767225601000\n",
            ]
        );
    }

    /// A scripted store: the answers in order (then 204), and the bodies it received.
    async fn scripted(answers: Vec<u16>) -> (String, Arc<Mutex<Vec<String>>>) {
        use axum::http::StatusCode;
        let got = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(Mutex::new(VecDeque::from(answers)));
        let (g, a) = (Arc::clone(&got), Arc::clone(&answers));
        let app = axum::Router::new().route(
            "/api/v2/write",
            axum::routing::post(move |body: String| {
                let (g, a) = (Arc::clone(&g), Arc::clone(&a));
                async move {
                    let code = a.lock().unwrap().pop_front().unwrap_or(204);
                    if code == 204 {
                        g.lock().unwrap().push(body);
                    }
                    StatusCode::from_u16(code).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), got)
    }

    fn config(url: &str) -> Tsdb {
        Tsdb {
            url: url.to_owned(),
            org: "o".into(),
            bucket: "b".into(),
            token: None,
            token_env: None,
            flush_interval_ms: 100,
            status_interval_secs: 1,
            batch_max_lines: 2,
            queue_max_bytes: 1 << 20,
            gzip: false,
            timeout_ms: 1000,
            max_backoff_secs: 1,
        }
    }

    #[tokio::test]
    async fn failures_are_retried_refusals_dropped_and_everything_counted() {
        // 503 twice (retried), then 400 for the first batch (dropped), then all accepted.
        let (url, got) = scripted(vec![503, 503, 400]).await;
        let shared = Shared::new(1 << 20);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(config(&url), Arc::clone(&shared), stop.clone()));
        shared.push_all((0..5).map(|i| format!("m v={i}i 1\n")).collect(), 0);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while shared.stats().queue_lines > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{:?}",
                shared.stats()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let s = shared.stats();
        assert_eq!(s.write_failures, 2, "{s:?}");
        assert_eq!(s.dropped_rejected, 2, "{s:?}");
        assert_eq!(s.lines_written, 3, "{s:?}");
        assert!(!s.failing);
        assert_eq!(
            got.lock().unwrap().concat(),
            "m v=2i 1\nm v=3i 1\nm v=4i 1\n"
        );
        stop.cancel();
        task.await.unwrap();
    }
}
