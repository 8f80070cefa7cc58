//! Wiring: opens the store, starts the writer, the engine, the drivers, the notifiers and the
//! HTTP server, and stops them in order: drivers first, then the engine (which hands everything
//! pending to the store), then the writer; notifiers get a grace period to deliver.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alert_rules::Engine;
use anyhow::Context as _;
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::engine_task::EngineTask;
use crate::metrics::Metrics;
use crate::notify::outbox::Outbox;
use crate::notify::webhook::WebhookSender;
use crate::plant::Plant;
use crate::store::{self, WriterSetup};

/// How long notifiers may keep delivering after the engine stopped.
const NOTIFY_GRACE: Duration = Duration::from_secs(5);
/// Capacity of the queue from the engine to the store writer, in batches. The readings in it
/// have a bound of their own (store::QUEUED_READINGS); this one holds back alarm storms, whose
/// batches are small because every alarm event is handed over at once.
const STORE_QUEUE: usize = 1024;

#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    /// Write the HTTP server's bound address here once it listens (for tests and supervisors).
    pub ready_file: Option<PathBuf>,
    /// Called with the bound address (the demo prints where to look).
    pub announce: Option<fn(SocketAddr)>,
    /// The configuration file, re-read on SIGHUP. `None`: reload is not offered.
    pub config_path: Option<PathBuf>,
}

pub async fn run(
    config: Config,
    options: RunOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let plant = Arc::new(Plant::new(&config));
    // Shared with the notifiers rather than copied: a large plant's configuration is megabytes.
    let mut config = Arc::new(config);
    let metrics = Arc::new(Metrics::default());
    let data_dir = config.store.data_dir.clone();

    // The store, and what it remembers from the last run.
    let conn = store::open_writer(&data_dir)?;
    let tags: Vec<&str> = plant.points.iter().map(|p| p.tag.as_str()).collect();
    let point_ids =
        store::point_ids(&conn, &tags).context("registering point tags in the store")?;
    let open = store::open_alarms(&conn).context("reading open alarms from the store")?;
    let next_id = store::next_alarm_id(&conn).context("reading alarm ids from the store")?;
    let journal_head = store::journal_head(&conn).context("reading the journal head")?;
    let sinks: Vec<&str> = config
        .upstream
        .influxdb
        .iter()
        .map(|_| crate::sink::influx::SINK_NAME)
        .collect();
    store::set_sinks(&conn, &sinks).context("registering upstream sinks in the store")?;
    let mut engine = Engine::new(plant.engine_config(), next_id);
    let restored = open.len();
    let orphans = engine.restore(open);
    let modes =
        crate::modes::in_force(&conn, &plant).context("reading modes in force from the journal")?;
    if !modes.is_empty() {
        tracing::info!(
            modes = modes.len(),
            "Shelving, suppression and out-of-service periods restored from the journal."
        );
    }
    engine.restore_modes(modes);
    if restored > 0 {
        tracing::info!(
            restored,
            orphaned = orphans.len(),
            "Open alarms restored from the store."
        );
    }

    // Notification channels, each with its outbox queue.
    let mut senders = Vec::new();
    let mut channels = Vec::new();
    let mut wakers = Vec::new();
    for hook in &config.notify.webhook {
        let channel = WebhookSender::channel_name(hook);
        let wake = Arc::new(Notify::new());
        senders.push(WebhookSender {
            hook: hook.clone(),
            outbox: Outbox::open(&data_dir, channel.clone())?,
            wake: Arc::clone(&wake),
            metrics: Arc::clone(&metrics),
        });
        channels.push(channel);
        wakers.push(wake);
    }
    // Escalation along the responsibility chains, e-mail and hazard tickets.
    let hook_wakes = wakers.clone();
    let people = crate::notify::people::prepare(
        &config,
        &data_dir,
        &metrics,
        &hook_wakes,
        &mut channels,
        &mut wakers,
    )?;

    // The MQTT publisher is one more channel; its task starts once the engine can answer it.
    let mqtt_outbox = match &config.notify.mqtt {
        Some(_) => {
            let wake = Arc::new(Notify::new());
            let outbox = Outbox::open(&data_dir, crate::notify::mqtt::CHANNEL.to_owned())?;
            channels.push(crate::notify::mqtt::CHANNEL.to_owned());
            wakers.push(Arc::clone(&wake));
            Some((outbox, wake))
        }
        None => None,
    };

    let (committed_tx, _) = broadcast::channel(256);
    let (store_handle, writer_thread) = store::spawn_writer(
        WriterSetup {
            conn,
            point_ids,
            channels,
            notify: wakers,
            committed: committed_tx.clone(),
            metrics: Arc::clone(&metrics),
            journal_head,
            disk_budget_bytes: config.store.disk_budget_mb.saturating_mul(1024 * 1024),
        },
        STORE_QUEUE,
    );

    let notify_drain = CancellationToken::new();
    let notify_stop = CancellationToken::new();
    let mut notifier_tasks = tokio::task::JoinSet::new();
    for sender in senders {
        notifier_tasks.spawn(sender.run(notify_drain.clone(), notify_stop.clone()));
    }
    // The upstream sink drains the store like a notifier drains its outbox, with the same
    // grace period at shutdown; whatever it could not send waits in the store for the next run.
    if let Some(influx) = &config.upstream.influxdb {
        let sink = crate::sink::influx::InfluxSink {
            config: influx.clone(),
            data_dir: data_dir.clone(),
            plant: Arc::clone(&plant),
            metrics: Arc::clone(&metrics),
        };
        notifier_tasks.spawn(sink.run(notify_drain.clone(), notify_stop.clone()));
    }

    // Engine.
    let (field_tx, field_rx) = mpsc::channel(config.engine.channel_capacity);
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let engine_stop = CancellationToken::new();
    // The live site status: colour, alarm counts, points online (for the uplink and views).
    let (status_tx, status_rx) =
        tokio::sync::watch::channel(crate::engine_task::SiteStatus::empty(
            &plant.site.id,
            &plant.site.name,
            plant.site.risk_colour,
        ));
    let engine_task = tokio::spawn(
        EngineTask {
            engine,
            plant: Arc::clone(&plant),
            store: store_handle,
            metrics: Arc::clone(&metrics),
            flush_interval: Duration::from_millis(config.store.flush_interval_ms),
            tick_interval: Duration::from_millis(config.engine.tick_ms),
            retention: Duration::from_secs(u64::from(config.store.retention_days) * 86_400),
            status: status_tx,
        }
        .run(field_rx, cmd_rx, engine_stop.clone()),
    );

    // Drivers.
    let mut drivers = crate::field::FieldDrivers::start(&plant, &field_tx, &metrics);
    if let (Some(mqtt), Some((outbox, wake))) = (&config.notify.mqtt, mqtt_outbox) {
        let sender = crate::notify::mqtt::MqttSender {
            config: mqtt.clone(),
            site: plant.site.clone(),
            outbox,
            wake,
            metrics: Arc::clone(&metrics),
            commands: cmd_tx.clone(),
            status: status_rx.clone(),
        };
        notifier_tasks.spawn(sender.run(notify_drain.clone(), notify_stop.clone()));
    }
    // Held until the drivers have stopped: the engine ends when the last sender is gone.
    let field_keepalive = field_tx;

    // HTTP.
    let listener = tokio::net::TcpListener::bind(&config.http.listen)
        .await
        .with_context(|| format!("binding the HTTP server to {}", config.http.listen))?;
    let addr = listener.local_addr()?;
    let people_api = people.api(cmd_tx.clone());
    people.spawn(
        &mut notifier_tasks,
        notify_drain.clone(),
        notify_stop.clone(),
        notify_stop.clone(),
    );
    let cmd_for_reload = cmd_tx.clone();
    let tokens = Arc::new(api::auth::Tokens::from_config(&config));
    let loopback = addr.ip().is_loopback();
    if tokens.is_empty() {
        if loopback {
            tracing::warn!(%addr, "No API tokens are configured: the API is open to anyone on this machine (loopback only).");
        } else {
            tracing::error!(%addr, "No API tokens are configured and the server does not listen on loopback: every /api/v1 request is refused until [[security.tokens]] are configured.");
        }
    }
    let tls = match (&config.http.tls_cert, &config.http.tls_key) {
        (Some(cert), Some(key)) => Some(api::serve::load_tls(cert, key)?),
        _ => None,
    };
    let layout = match &config.http.layout_image {
        Some(path) => Some(Arc::new(api::static_files::LayoutImage::load(path)?)),
        None => None,
    };
    let request_timeout = Duration::from_secs(config.http.request_timeout_secs);
    let app = api::app(
        AppState {
            commands: cmd_tx,
            metrics: Arc::clone(&metrics),
            plant: Arc::clone(&plant),
            data_dir: data_dir.clone(),
            started,
            status: status_rx.clone(),
            committed: committed_tx,
            event_streams: Arc::new(tokio::sync::Semaphore::new(config.http.max_event_streams)),
            shutdown: shutdown.clone(),
            layout,
        },
        people_api,
        api::auth::AuthState {
            tokens,
            throttle: Arc::default(),
            loopback,
        },
        request_timeout,
    );
    let serve_options = api::serve::ServeOptions {
        tls: tls.clone(),
        header_timeout: request_timeout,
    };
    let http_task = tokio::spawn(api::serve::serve(
        listener,
        app,
        serve_options,
        shutdown.clone(),
    ));
    tracing::info!(
        %addr,
        tls = tls.is_some(),
        site = %plant.site.id,
        devices = plant.devices.len(),
        points = plant.points.len(),
        data_dir = %data_dir.display(),
        "Sentinel is running."
    );
    if let Some(path) = &options.ready_file {
        std::fs::write(path, addr.to_string())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(announce) = options.announce {
        announce(addr);
    }
    crate::systemd::notify("READY=1");
    crate::systemd::spawn_watchdog(Arc::clone(&metrics), shutdown.clone());

    let mut plant = plant;
    let mut hangup = crate::reload::hangups();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(()) = hangup.recv() => {
                let Some(path) = &options.config_path else {
                    tracing::warn!("SIGHUP received, but this process was not started from a configuration file; nothing to reload.");
                    continue;
                };
                match crate::reload::prepare(path, &config) {
                    Err(reason) => crate::reload::refuse(&cmd_for_reload, &plant, path, &reason).await,
                    Ok(next) => {
                        let next_plant = Arc::new(crate::plant::Plant::new(&next));
                        // Stop polling under the old configuration; what was read is judged and kept.
                        drivers.stop().await;
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        let asked = cmd_for_reload
                            .send(crate::engine_task::Command::Reload { plant: Arc::clone(&next_plant), by: "SIGHUP".into(), reply: tx })
                            .await
                            .is_ok();
                        if asked && rx.await.is_ok() {
                            plant = next_plant;
                            config = Arc::new(next);
                        } else {
                            tracing::error!("The engine did not take the new configuration; polling resumes with the old one.");
                        }
                        drivers = crate::field::FieldDrivers::start(&plant, &field_keepalive, &metrics);
                    }
                }
            }
        }
    }
    crate::systemd::notify("STOPPING=1");
    tracing::info!("Stopping: drivers first, then the engine, then the store.");
    drivers.stop().await;
    drop(field_keepalive);
    // The engine drains what the drivers sent; it ends once their senders are gone.
    let _ = tokio::time::timeout(Duration::from_secs(10), engine_task).await;
    engine_stop.cancel();
    // The writer ends once the engine's handle is dropped and its queue is committed.
    let _ = tokio::task::spawn_blocking(move || writer_thread.join()).await;
    notify_drain.cancel();
    let deadline = tokio::time::Instant::now() + NOTIFY_GRACE;
    while let Ok(Some(_)) = tokio::time::timeout_at(deadline, notifier_tasks.join_next()).await {}
    notify_stop.cancel();
    while notifier_tasks.join_next().await.is_some() {}
    let _ = http_task.await;
    tracing::info!(
        readings_stored = metrics.readings_stored.get(),
        readings_lost = metrics.readings_lost.get(),
        "Sentinel stopped."
    );
    Ok(())
}
