//! `sentinel hub`: the regulator's view. Subscribes to the gateways' uplink topics on the
//! regional broker, keeps the regional picture (every site's colour, open alarms, whether it is
//! reporting, data quality) and serves it as an API and a live map.
//!
//! Alarm events come through a persistent subscription, so they wait at the broker while the
//! hub is away; with `share_group` set, through a shared subscription, so that several hubs
//! split them (docs/scale.md: not every broker queues those for an absent group). Statuses are
//! small and retained, and every hub subscribes to all of them.

pub mod config;
mod http;
pub mod state;
pub mod tsdb;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use drivers::mqtt::client::{self, Event, Qos, Session};
use drivers::now_millis;
use tokio_util::sync::CancellationToken;

use self::config::HubConfig;
use self::state::{Presence, Region};

pub struct HubOptions {
    pub ready_file: Option<PathBuf>,
}

pub type Shared = Arc<Mutex<Region>>;

fn lock(region: &Shared) -> std::sync::MutexGuard<'_, Region> {
    region
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub async fn run(
    config: HubConfig,
    options: HubOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut initial = Region::new(&config.sites);
    let tsdb_queue = config.tsdb.as_ref().map(|t| {
        initial.enable_feed();
        tsdb::Shared::new(t.queue_max_bytes)
    });
    let region: Shared = Arc::new(Mutex::new(initial));
    let started = now_millis();
    let writer = match (&config.tsdb, &tsdb_queue) {
        (Some(t), Some(q)) => {
            tracing::info!(url = %t.url, bucket = %t.bucket, "Writing site statuses and alarms to the regional time-series store.");
            Some(tokio::spawn(tsdb::run(
                t.clone(),
                Arc::clone(q),
                shutdown.clone(),
            )))
        }
        _ => None,
    };

    let intake = tokio::spawn(intake(
        config.clone(),
        Arc::clone(&region),
        tsdb_queue.clone(),
        shutdown.clone(),
    ));
    let offline_after_ms = crate::config::to_ms(config.offline_after_secs, 1000);
    let watch_region = Arc::clone(&region);
    let watch_stop = shutdown.clone();
    let watch_queue = tsdb_queue.clone();
    let (flush_every, status_every) =
        config
            .tsdb
            .as_ref()
            .map_or((Duration::from_secs(1), Duration::from_secs(60)), |t| {
                (
                    Duration::from_millis(t.flush_interval_ms),
                    Duration::from_secs(t.status_interval_secs),
                )
            });
    let hub_id = config.hub.id.clone();
    let watcher = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut minute = tokio::time::interval_at(
            tokio::time::Instant::now() + Duration::from_secs(60),
            Duration::from_secs(60),
        );
        let mut flush = tokio::time::interval(flush_every);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_all = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = watch_stop.cancelled() => break,
                _ = tick.tick() => {
                    let mut region = lock(&watch_region);
                    region.accumulate_quality();
                    let changes = region.tick(now_millis(), offline_after_ms, started);
                    drop(region);
                    changes.iter().for_each(log_presence);
                }
                _ = minute.tick() => lock(&watch_region).sample_quality(),
                _ = flush.tick(), if watch_queue.is_some() => {
                    let all = tokio::time::Instant::now() >= next_all;
                    if all {
                        next_all = tokio::time::Instant::now() + status_every;
                    }
                    let (lines, dropped) = tsdb::encode(&mut lock(&watch_region), &hub_id, now_millis(), all);
                    if let Some(q) = &watch_queue {
                        q.push_all(lines, dropped);
                    }
                }
            }
        }
        // What changed last is handed to the writer for its final attempt.
        if let Some(q) = &watch_queue {
            let (lines, dropped) =
                tsdb::encode(&mut lock(&watch_region), &hub_id, now_millis(), false);
            q.push_all(lines, dropped);
        }
    });

    let listener = tokio::net::TcpListener::bind(&config.http.listen)
        .await
        .with_context(|| format!("binding the hub's HTTP server to {}", config.http.listen))?;
    let addr: SocketAddr = listener.local_addr()?;
    let app = http::router(Arc::clone(&region), config.hub.clone(), tsdb_queue.clone());
    let http_stop = shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { http_stop.cancelled().await })
            .await
    });
    tracing::info!(%addr, hub = %config.hub.id, broker = %config.broker.host, "Sentinel hub is running.");
    if let Some(path) = &options.ready_file {
        std::fs::write(path, addr.to_string())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    crate::systemd::notify("READY=1");

    shutdown.cancelled().await;
    let _ = intake.await;
    let _ = watcher.await;
    if let Some(w) = writer {
        let _ = w.await;
    }
    let _ = server.await;
    tracing::info!("Sentinel hub stopped.");
    Ok(())
}

fn log_presence(p: &Presence) {
    match p {
        Presence::WentOffline { site, .. } => {
            tracing::warn!(site = %site, "Site stopped reporting: offline alarm raised.");
        }
        Presence::CameBack { site, after_ms } => {
            tracing::info!(site = %site, offline_secs = after_ms / 1000, "Site reporting again.");
        }
    }
}

/// Subscribe and feed the region; reconnect with capped backoff for as long as it takes.
async fn intake(
    config: HubConfig,
    region: Shared,
    tsdb: Option<Arc<tsdb::Shared>>,
    shutdown: CancellationToken,
) {
    let prefix = config.topic_prefix.trim_end_matches('/').to_owned();
    let alarms_filter = if config.share_group.is_empty() {
        format!("{prefix}/+/alarms")
    } else {
        format!("$share/{}/{prefix}/+/alarms", config.share_group)
    };
    let status_filter = format!("{prefix}/+/status");
    // Downsampled readings matter only to the time-series store; QoS 0 like their publication.
    let readings_filter = tsdb.as_ref().map(|_| format!("{prefix}/+/readings"));
    let session = Session {
        client_id: config
            .broker
            .client_id_or(&format!("sentinel-hub-{}", config.hub.id)),
        // A persistent session: alarm events published while the hub was down wait at the broker.
        clean: config.broker.clean_session.unwrap_or(false),
        manual_acks: false,
        will: None,
        request_capacity: 64,
    };
    let (client, mut events) = match client::build(&config.broker, &session) {
        Ok(c) => c,
        Err(error) => {
            tracing::error!(%error, "The hub's MQTT client could not be built; no site data will arrive.");
            return;
        }
    };
    let cap = Duration::from_secs(config.broker.reconnect_max_secs.max(1));
    let mut failures = 0u32;
    let mut up_since: Option<std::time::Instant> = None;
    let mut refused_sites = 0u64;
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => {
                client.disconnect().await;
                return;
            }
            e = events.poll() => e,
        };
        match event {
            Ok(Event::Connected { .. }) => {
                if failures > 0 && failures.is_power_of_two() {
                    tracing::info!(failures, "Connected to the regional broker again.");
                }
                up_since = Some(std::time::Instant::now());
                for filter in [&status_filter, &alarms_filter] {
                    if let Err(error) = client.try_subscribe(filter, Qos::AtLeastOnce) {
                        tracing::error!(%error, filter, "Subscribing failed.");
                    }
                }
                if let Some(filter) = &readings_filter
                    && let Err(error) = client.try_subscribe(filter, Qos::AtMostOnce)
                {
                    tracing::error!(%error, filter, "Subscribing failed.");
                }
            }
            Ok(Event::Message(m)) => {
                let Some(topic) = m.topic.as_deref() else {
                    continue;
                };
                let Some(rest) = topic
                    .strip_prefix(&prefix)
                    .and_then(|r| r.strip_prefix('/'))
                else {
                    continue;
                };
                let Some((site, kind)) = rest.split_once('/') else {
                    continue;
                };
                let Ok(value) = serde_json::from_slice::<serde_json::Value>(m.payload()) else {
                    tracing::warn!(topic, "A site sent a message that is not JSON; ignored.");
                    continue;
                };
                if !lock(&region).accepts(site) {
                    refused_sites += 1;
                    if refused_sites.is_power_of_two() {
                        tracing::warn!(
                            site,
                            refused = refused_sites,
                            max = state::MAX_SITES,
                            "A message from one site too many; ignored."
                        );
                    }
                    continue;
                }
                let now = now_millis();
                let change = match kind {
                    "status" => lock(&region).on_status(site, value, now),
                    "alarms" => lock(&region).on_alarm(site, value, now),
                    "readings" => {
                        if let Some(q) = &tsdb {
                            q.push_all(tsdb::reading_lines(&config.hub.id, site, &value, now), 0);
                        }
                        None
                    }
                    _ => None,
                };
                if let Some(p) = change {
                    log_presence(&p);
                }
            }
            Ok(_) => {}
            Err(error) => {
                // Only a session that lasted starts the backoff over: one the broker ends at
                // once (a duplicate client id) would otherwise reconnect as fast as it can.
                if up_since
                    .take()
                    .is_some_and(|t| t.elapsed() >= drivers::mqtt::STABLE_AFTER)
                {
                    failures = 0;
                }
                failures += 1;
                let delay = client::reconnect_delay(failures, cap);
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(%error, failures, retry_ms = delay.as_millis() as u64, "Lost the regional broker; reconnecting.");
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}
