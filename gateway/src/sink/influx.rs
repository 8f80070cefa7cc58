//! The InfluxDB sink: line protocol over HTTP to the v2 (`/api/v2/write`) or v1 (`/write`)
//! endpoint, which InfluxDB and VictoriaMetrics both accept.
//!
//! Requests are built with reqwest rather than the `influxdb2` client because the delivery
//! policy is decided on the HTTP answer itself: 413 splits the batch, 429 and 5xx retry after
//! `Retry-After` or a backoff, any other 4xx dead-letters the batch. `influxdb2` 0.5 folds these
//! answers into one error string and does not expose the `Retry-After` header.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use alert_rules::SystemCheck;
use reqwest::StatusCode;
use tokio_util::sync::CancellationToken;

use super::db::{DeadLetter, Row, SinkDb};
use super::line::{self, SeriesKeys};
use crate::config::{InfluxApi, InfluxDb};
use crate::metrics::Metrics;
use crate::plant::Plant;

/// The name of the sink in the cursor table, metrics and logs.
pub const SINK_NAME: &str = "influxdb";
/// The longest `Retry-After` honoured; a longer one is treated as this.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(3600);
/// How much of an error answer is kept with a dead letter.
const ERROR_BODY_MAX: usize = 2000;

pub struct InfluxSink {
    pub config: InfluxDb,
    pub data_dir: PathBuf,
    pub plant: Arc<Plant>,
    pub metrics: Arc<Metrics>,
}

/// What to do after one write request.
#[derive(Debug)]
pub(crate) enum Outcome {
    Accepted,
    /// 413: the batch is too large for the upstream.
    TooLarge,
    /// Try the same batch again after this long (or after a backoff).
    Retry {
        reason: &'static str,
        error: String,
        after: Option<Duration>,
    },
    /// Refused for good: the batch goes to the dead-letter table.
    Rejected {
        status: u16,
        error: String,
    },
}

impl InfluxSink {
    fn write_url(&self) -> Result<reqwest::Url, String> {
        write_url(&self.config)
    }

    /// Forward until `shutdown`. After `drain` is cancelled, return once everything stored has
    /// been forwarded.
    pub async fn run(self, drain: CancellationToken, shutdown: CancellationToken) {
        let sink = SINK_NAME;
        let client = match http_client(self.config.timeout_ms) {
            Ok(c) => c,
            Err(error) => {
                tracing::error!(%error, sink, "The sink's HTTP client could not be built; readings stay in the store.");
                return;
            }
        };
        let url = match self.write_url() {
            Ok(u) => u,
            Err(error) => {
                tracing::error!(%error, sink, "The sink's URL is not valid; readings stay in the store.");
                return;
            }
        };
        let db = match SinkDb::open(&self.data_dir, sink) {
            Ok(db) => db,
            Err(error) => {
                tracing::error!(%error, sink, "The sink could not open the store; readings stay there.");
                return;
            }
        };
        let max_wait = Duration::from_millis(self.config.batch_max_wait_ms);
        let max_points = self.config.batch_max_points;
        let cap = Duration::from_secs(self.config.max_backoff_secs);
        let m = &self.metrics.sinks;

        let mut cursor = None;
        let mut keys = SeriesKeys::default();
        let mut limit = max_points;
        let mut attempts = 0u32;
        let mut failing_since: Option<tokio::time::Instant> = None;
        let mut waiting_since: Option<tokio::time::Instant> = None;
        // A short batch read while waiting for batch_max_wait_ms, to be topped up.
        let mut held: Vec<Row> = Vec::new();
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let after = match cursor {
                Some(c) => c,
                None => match db.cursor().await {
                    Ok(c) => *cursor.insert(c),
                    Err(error) => {
                        tracing::error!(%error, sink, "Reading the sink cursor failed.");
                        if sleep_or_cancel(&shutdown, Duration::from_secs(1)).await {
                            return;
                        }
                        continue;
                    }
                },
            };
            // A short batch waiting for more is kept, and only what came after it is read.
            let from = held.last().map_or(after, |r| r.rowid);
            let (mut rows, newest) = match db.read(from, limit.saturating_sub(held.len())).await {
                Ok(read) => read,
                Err(error) => {
                    tracing::error!(%error, sink, "Reading readings to forward failed.");
                    held.clear();
                    if sleep_or_cancel(&shutdown, Duration::from_secs(1)).await {
                        return;
                    }
                    continue;
                }
            };
            if !held.is_empty() {
                held.append(&mut rows);
                rows = std::mem::take(&mut held);
            }
            m.backlog
                .set(sink, "", newest.saturating_sub(after).max(0) as u64);
            let Some(last) = rows.last().map(|r| r.rowid) else {
                if drain.is_cancelled() {
                    return;
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = drain.cancelled() => {}
                    () = tokio::time::sleep(max_wait) => {}
                }
                continue;
            };
            // Batch by size or time: a short batch waits until its first reading has waited
            // batch_max_wait_ms (then it is topped up with whatever arrived meanwhile).
            if rows.len() < limit && !drain.is_cancelled() {
                let since = *waiting_since.get_or_insert_with(tokio::time::Instant::now);
                let waited = since.elapsed();
                if waited < max_wait {
                    held = rows;
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = drain.cancelled() => {}
                        () = tokio::time::sleep(max_wait - waited) => {}
                    }
                    continue;
                }
            }
            waiting_since = None;
            if rows.iter().any(|r| keys.get(r.point).is_none()) {
                match db.points().await {
                    Ok(points) => keys = line::series_keys(&self.plant, &points),
                    Err(error) => {
                        tracing::error!(%error, sink, "Reading the store's points failed.");
                        if sleep_or_cancel(&shutdown, Duration::from_secs(1)).await {
                            return;
                        }
                        continue;
                    }
                }
            }
            let body = encode(&rows, &keys);
            let outcome = self.send(&client, &url, &body).await;
            match outcome {
                Outcome::Accepted => {
                    m.requests.inc(sink, "ok");
                    m.points_sent.add(sink, "", rows.len() as u64);
                    if let Err(error) = advance_with_retry(&db, last, &shutdown).await {
                        tracing::error!(%error, sink, "Saving the sink cursor failed; the batch may be sent again.");
                    }
                    cursor = Some(last);
                    attempts = 0;
                    m.failing.set(sink, "", 0);
                    self.metrics
                        .system_checks
                        .set(SystemCheck::UpstreamRejected, false);
                    if let Some(since) = failing_since.take() {
                        tracing::info!(
                            sink,
                            down_secs = since.elapsed().as_secs(),
                            "Upstream writes resumed."
                        );
                    }
                    // After a split, grow back towards the configured size.
                    limit = (limit * 2).min(max_points);
                }
                Outcome::TooLarge if rows.len() > 1 => {
                    m.requests.inc(sink, "too_large");
                    limit = (rows.len() / 2).max(1);
                    tracing::warn!(
                        sink,
                        points = rows.len(),
                        next = limit,
                        "Upstream refused the batch as too large (413); splitting it."
                    );
                }
                Outcome::TooLarge => {
                    let error =
                        "HTTP 413: one point is larger than the upstream accepts".to_owned();
                    self.reject(&db, &rows, 413, error, body, &mut cursor, &shutdown)
                        .await;
                }
                Outcome::Rejected { status, error } => {
                    self.reject(&db, &rows, status, error, body, &mut cursor, &shutdown)
                        .await;
                }
                Outcome::Retry {
                    reason,
                    error,
                    after,
                } => {
                    m.requests.inc(sink, reason);
                    m.failing.set(sink, "", 1);
                    let delay = after.unwrap_or_else(|| crate::notify::backoff(attempts, cap));
                    attempts = attempts.saturating_add(1);
                    if failing_since.is_none() || attempts.is_power_of_two() {
                        if reason == "auth" {
                            tracing::error!(sink, %error, attempts, retry_in_ms = delay.as_millis() as u64, "Upstream refused the credentials; readings wait in the store.");
                        } else if reason == "not_found" {
                            tracing::error!(sink, %error, attempts, retry_in_ms = delay.as_millis() as u64, "Upstream has no such bucket, database or path (check url, org, bucket); readings wait in the store.");
                        } else {
                            tracing::warn!(sink, %error, attempts, retry_in_ms = delay.as_millis() as u64, "Upstream write failed; will retry. Readings wait in the store.");
                        }
                    }
                    failing_since.get_or_insert_with(tokio::time::Instant::now);
                    if sleep_or_cancel(&shutdown, delay).await {
                        return;
                    }
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn reject(
        &self,
        db: &SinkDb,
        rows: &[Row],
        status: u16,
        error: String,
        body: String,
        cursor: &mut Option<i64>,
        shutdown: &CancellationToken,
    ) {
        let sink = SINK_NAME;
        let m = &self.metrics.sinks;
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
            return;
        };
        m.requests.inc(sink, "rejected");
        let letter = DeadLetter {
            first_rowid: first.rowid,
            last_rowid: last.rowid,
            points: rows.len(),
            status,
            error: error.clone(),
            body,
        };
        loop {
            match db.dead_letter(letter.clone()).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(error = %e, sink, "Writing a dead letter failed; retrying.");
                    if sleep_or_cancel(shutdown, Duration::from_secs(1)).await {
                        return;
                    }
                }
            }
        }
        *cursor = Some(last.rowid);
        m.dead_letter_points.add(sink, "", rows.len() as u64);
        self.metrics
            .system_checks
            .set(SystemCheck::UpstreamRejected, true);
        m.last_loss_ms.set(drivers::now_millis().max(1) as u64);
        tracing::error!(
            sink,
            status,
            %error,
            points = rows.len(),
            first_rowid = first.rowid,
            last_rowid = last.rowid,
            "Upstream refused a batch; it is kept in the dead_letter table for an operator."
        );
    }

    async fn send(&self, client: &reqwest::Client, url: &reqwest::Url, body: &str) -> Outcome {
        let token = self.config.token.as_ref().map(|t| t.expose());
        post(client, url, token, self.config.gzip, body).await
    }
}

/// The write endpoint of an InfluxDB v2 (`/api/v2/write`) or v1 (`/write`) server, with
/// millisecond precision. Shared with the regional hub's writer (`hub::tsdb`).
pub(crate) fn write_url(c: &InfluxDb) -> Result<reqwest::Url, String> {
    let base = c.url.trim_end_matches('/');
    let (path, params): (&str, Vec<(&str, &str)>) = match c.api {
        InfluxApi::V2 => (
            "/api/v2/write",
            vec![("org", &c.org), ("bucket", &c.bucket), ("precision", "ms")],
        ),
        InfluxApi::V1 => ("/write", vec![("db", &c.database), ("precision", "ms")]),
    };
    reqwest::Url::parse_with_params(&format!("{base}{path}"), &params).map_err(|e| e.to_string())
}

/// The HTTP client of a writer: its timeout per request and our user agent.
pub(crate) fn http_client(timeout_ms: u64) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_millis(timeout_ms))
        .user_agent(concat!("sentinel/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// One write request of line protocol, classified for the caller's delivery policy (413
/// split, 429/5xx/network retry, 401/403 retry as a configuration fault, other 4xx refused).
/// Shared with the regional hub's writer (`hub::tsdb`).
pub(crate) async fn post(
    client: &reqwest::Client,
    url: &reqwest::Url,
    token: Option<&str>,
    gzip_body: bool,
    body: &str,
) -> Outcome {
    let mut req = client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8");
    if let Some(token) = token {
        req = req.header(reqwest::header::AUTHORIZATION, format!("Token {token}"));
    }
    req = if gzip_body {
        match gzip(body) {
            Ok(bytes) => req
                .header(reqwest::header::CONTENT_ENCODING, "gzip")
                .body(bytes),
            Err(_) => req.body(body.to_owned()),
        }
    } else {
        req.body(body.to_owned())
    };
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            return Outcome::Retry {
                reason: "network_error",
                error: if e.is_timeout() {
                    "timeout".to_owned()
                } else {
                    e.to_string()
                },
                after: None,
            };
        }
    };
    let status = resp.status();
    if status.is_success() {
        return Outcome::Accepted;
    }
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s).min(RETRY_AFTER_MAX));
    let text = resp.text().await.unwrap_or_default();
    let error = format!("HTTP {status}: {}", truncate(&text, ERROR_BODY_MAX));
    classify(status, error, retry_after)
}

fn classify(status: StatusCode, error: String, retry_after: Option<Duration>) -> Outcome {
    match status.as_u16() {
        413 => Outcome::TooLarge,
        429 => Outcome::Retry {
            reason: "throttled",
            error,
            after: retry_after,
        },
        // Credentials are a configuration fault, not a fault of the data: keep the readings and
        // retry, so that fixing the token delivers them.
        401 | 403 => Outcome::Retry {
            reason: "auth",
            error,
            after: None,
        },
        // So is a missing bucket, org or database (or a wrong URL path): every batch would be
        // refused the same way, so dead-lettering would only move the whole stream aside.
        // Retry, so that creating the bucket or fixing the URL delivers the readings.
        404 => Outcome::Retry {
            reason: "not_found",
            error,
            after: None,
        },
        408 => Outcome::Retry {
            reason: "network_error",
            error,
            after: None,
        },
        s @ 400..=499 => Outcome::Rejected { status: s, error },
        500..=599 => Outcome::Retry {
            reason: "server_error",
            error,
            after: retry_after,
        },
        _ => Outcome::Retry {
            reason: "unexpected_status",
            error,
            after: None,
        },
    }
}

fn encode(rows: &[Row], keys: &SeriesKeys) -> String {
    let mut out = String::with_capacity(rows.len() * 110);
    for r in rows {
        if let Some(key) = keys.get(r.point) {
            line::push_line(&mut out, key, r.value, r.quality, r.ts_ms);
        }
    }
    out
}

fn gzip(body: &str) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 8),
        flate2::Compression::fast(),
    );
    enc.write_all(body.as_bytes())?;
    enc.finish()
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

async fn advance_with_retry(
    db: &SinkDb,
    to: i64,
    shutdown: &CancellationToken,
) -> rusqlite::Result<()> {
    let mut tries = 0;
    loop {
        match db.advance(to).await {
            Ok(()) => return Ok(()),
            Err(e) if tries >= 10 || shutdown.is_cancelled() => return Err(e),
            Err(_) => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100 * tries)).await;
            }
        }
    }
}

/// Sleep; true when shutdown came first.
async fn sleep_or_cancel(shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = tokio::time::sleep(d) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_policy() {
        let e = || "x".to_owned();
        assert!(matches!(
            classify(StatusCode::PAYLOAD_TOO_LARGE, e(), None),
            Outcome::TooLarge
        ));
        assert!(matches!(
            classify(StatusCode::TOO_MANY_REQUESTS, e(), Some(Duration::from_secs(7))),
            Outcome::Retry { after: Some(d), .. } if d == Duration::from_secs(7)
        ));
        assert!(matches!(
            classify(StatusCode::BAD_GATEWAY, e(), None),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            classify(StatusCode::UNAUTHORIZED, e(), None),
            Outcome::Retry { reason: "auth", .. }
        ));
        assert!(matches!(
            classify(StatusCode::NOT_FOUND, e(), None),
            Outcome::Retry {
                reason: "not_found",
                ..
            }
        ));
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, e(), None),
            Outcome::Rejected { status: 400, .. }
        ));
        assert!(matches!(
            classify(StatusCode::UNPROCESSABLE_ENTITY, e(), None),
            Outcome::Rejected { status: 422, .. }
        ));
    }

    #[test]
    fn truncates_on_char_boundaries() {
        assert_eq!(truncate("温度温度", 4), "温");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
