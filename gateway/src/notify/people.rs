//! Wiring of the people-facing parts: the escalation router, the e-mail sender, the ticket
//! deadline watch, and their HTTP endpoints (tickets, the workflow endpoint, acknowledge links).
//! `run` calls [`prepare`] while it builds the channel list, then [`People::spawn`] and
//! [`People::api`].

use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{OptionalExtension, params};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::email::EmailSender;
use super::escalation::{self, Router, RouterSetup};
use super::outbox::Outbox;
use crate::config::Config;
use crate::engine_task::Command;
use crate::metrics::Metrics;

pub struct People {
    config: Arc<Config>,
    data_dir: PathBuf,
    router: Option<Router>,
    email: Option<EmailSender>,
    link_secret: Arc<Vec<u8>>,
    ticket_wake: Option<Arc<Notify>>,
}

/// Add the `escalation` channel to what the store queues (when there is anything to route) and
/// build the tasks. `hook_wakes` are the webhook senders' wakers, in `notify.webhook` order.
pub fn prepare(
    config: &Arc<Config>,
    data_dir: &Path,
    metrics: &Arc<Metrics>,
    hook_wakes: &[Arc<Notify>],
    channels: &mut Vec<String>,
    wakers: &mut Vec<Arc<Notify>>,
) -> anyhow::Result<People> {
    let config = Arc::clone(config);
    let link_secret = Arc::new(link_secret(&config, data_dir)?);
    let by_name: HashMap<&str, &Arc<Notify>> = config
        .notify
        .webhook
        .iter()
        .map(|w| w.name.as_str())
        .zip(hook_wakes)
        .collect();
    let ticket_wake = config
        .tickets
        .webhook
        .as_deref()
        .and_then(|n| by_name.get(n))
        .map(|w| Arc::clone(w));
    let email = match &config.notify.email {
        Some(c) => Some(EmailSender {
            config: c.clone(),
            data_dir: data_dir.to_owned(),
            outbox: Outbox::open(data_dir, escalation::EMAIL_CHANNEL.to_owned())?,
            wake: Arc::new(Notify::new()),
            metrics: Arc::clone(metrics),
        }),
        None => None,
    };
    let router =
        if !config.responsibility.is_empty() || !config.tickets.open_for_priorities.is_empty() {
            let wake = Arc::new(Notify::new());
            channels.push(escalation::CHANNEL.to_owned());
            wakers.push(Arc::clone(&wake));
            Some(Router::new(RouterSetup {
                config: Arc::clone(&config),
                data_dir: data_dir.to_owned(),
                wake,
                email_wake: email.as_ref().map(|e| Arc::clone(&e.wake)),
                ticket_wake: ticket_wake.clone(),
                link_secret: Arc::clone(&link_secret),
                metrics: Arc::clone(metrics),
            }))
        } else {
            None
        };
    Ok(People {
        config,
        data_dir: data_dir.to_owned(),
        router,
        email,
        link_secret,
        ticket_wake,
    })
}

impl People {
    /// The HTTP endpoints, to merge into the API router.
    pub fn api(&self, commands: mpsc::Sender<Command>) -> axum::Router {
        crate::api::tickets::router(crate::api::tickets::PeopleState {
            config: Arc::clone(&self.config),
            data_dir: self.data_dir.clone(),
            commands,
            link_secret: Arc::clone(&self.link_secret),
            tokens: Arc::new(crate::api::auth::Tokens::from_config(&self.config)),
            ticket_wake: self.ticket_wake.clone(),
        })
    }

    /// Start the router and the ticket deadline watch (stopped by `shutdown`) and the e-mail
    /// sender (a notifier: drained like the webhooks).
    pub fn spawn(
        self,
        notifiers: &mut JoinSet<()>,
        drain: CancellationToken,
        stop: CancellationToken,
        shutdown: CancellationToken,
    ) {
        let email_wake = self.email.as_ref().map(|e| Arc::clone(&e.wake));
        if let Some(email) = self.email {
            notifiers.spawn(email.run(drain, stop));
        }
        if let Some(router) = self.router {
            tokio::spawn(router.run(shutdown.clone()));
        }
        tokio::spawn(watch_deadlines(
            self.config,
            self.data_dir,
            self.ticket_wake,
            email_wake,
            shutdown,
        ));
    }
}

/// Announce overdue tickets, every `tickets.overdue_check_secs`.
async fn watch_deadlines(
    config: Arc<Config>,
    data_dir: PathBuf,
    wake: Option<Arc<Notify>>,
    email_wake: Option<Arc<Notify>>,
    shutdown: CancellationToken,
) {
    let every = Duration::from_secs(config.tickets.overdue_check_secs.max(1));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let (c, dir) = (Arc::clone(&config), data_dir.clone());
        let result = tokio::task::spawn_blocking(move || {
            let mut conn = crate::store::open_reader(&dir).map_err(|e| e.to_string())?;
            crate::tickets::store::check_overdue(&mut conn, &c, drivers::now_millis())
                .map_err(|e| e.to_string())
        })
        .await;
        match result {
            Ok(Ok((n, mails))) if n > 0 => {
                if let Some(w) = &wake {
                    w.notify_one();
                }
                if mails > 0
                    && let Some(w) = &email_wake
                {
                    w.notify_one();
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::error!(%error, "Checking ticket deadlines failed."),
            Err(error) => tracing::error!(%error, "Checking ticket deadlines panicked."),
        }
    }
}

/// The key of acknowledge links: from the configuration, or made once and kept in the store.
fn link_secret(config: &Config, data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    if let Some(s) = &config.security.link_secret {
        return Ok(s.expose().as_bytes().to_vec());
    }
    let conn = crate::store::open_reader(data_dir)?;
    let existing: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'link_secret'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(hex) = existing {
        return Ok(hex.into_bytes());
    }
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes))?;
    let hex = super::signing::hex(&bytes);
    conn.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('link_secret', ?1)",
        params![hex],
    )?;
    // Another process may have won the race: use what is stored.
    let stored: String = conn.query_row(
        "SELECT value FROM meta WHERE key = 'link_secret'",
        [],
        |r| r.get(0),
    )?;
    Ok(stored.into_bytes())
}
