//! SIGHUP: read the configuration again, validate it fully, and hand it to the running gateway;
//! on any error keep the running configuration and say why, in the log and in the journal.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::config::{self, Config};
use crate::engine_task::Command;
use crate::plant::Plant;

/// SIGHUP arrivals (none on platforms without it).
pub fn hangups() -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(1);
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("Cannot listen for SIGHUP; configuration reload is unavailable.");
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading the configuration.");
            // A reload already pending covers this one too.
            let _ = tx.try_send(());
        }
    });
    #[cfg(not(unix))]
    drop(tx);
    rx
}

/// Load and validate the file. Sections that cannot change without a restart are compared with
/// the running configuration: a change there is reported, and the rest is still applied.
pub fn prepare(path: &Path, running: &Config) -> Result<Config, String> {
    let next = config::load_file(path, config::EnvSource::Process)
        .map_err(|e| e.to_string().replace('\n', "; "))?;
    let restart_only = [
        ("site.id", running.site.id != next.site.id),
        (
            "store",
            format!("{:?}", running.store) != format!("{:?}", next.store),
        ),
        (
            "http",
            format!("{:?}", running.http) != format!("{:?}", next.http),
        ),
        (
            "engine.channel_capacity",
            running.engine.channel_capacity != next.engine.channel_capacity,
        ),
        (
            "engine.worker_threads",
            running.engine.worker_threads != next.engine.worker_threads,
        ),
        (
            "notify",
            format!("{:?}", running.notify) != format!("{:?}", next.notify),
        ),
        (
            "upstream",
            format!("{:?}", running.upstream) != format!("{:?}", next.upstream),
        ),
        (
            "contacts",
            format!("{:?}", running.contacts) != format!("{:?}", next.contacts),
        ),
        (
            "responsibility",
            format!("{:?}", running.responsibility) != format!("{:?}", next.responsibility),
        ),
        (
            "tickets",
            format!("{:?}", running.tickets) != format!("{:?}", next.tickets),
        ),
        (
            "security",
            format!("{:?}", running.security) != format!("{:?}", next.security),
        ),
    ];
    for (section, changed) in restart_only {
        if changed {
            tracing::warn!(
                section,
                "This part of the configuration changed but takes effect only after a restart."
            );
        }
    }
    if running.site.id != next.site.id {
        return Err("site.id cannot change while running: restart instead".into());
    }
    Ok(next)
}

/// Log and journal a refused reload; the running configuration stays.
pub async fn refuse(
    commands: &mpsc::Sender<Command>,
    plant: &Arc<Plant>,
    path: &Path,
    reason: &str,
) {
    tracing::error!(path = %path.display(), %reason, "Configuration reload refused; the running configuration stays in force.");
    let now = drivers::now_millis();
    let body = serde_json::json!({
        "id": format!("{}-reload-refused-{now}-{:016x}", plant.site.id, fastrand::u64(..)),
        "site": plant.site.id,
        "kind": "config_reload_refused",
        "at": crate::event::rfc3339(now),
        "by": "SIGHUP",
        "path": path.display().to_string(),
        "reason": reason,
    });
    let (tx, rx) = tokio::sync::oneshot::channel();
    if commands
        .send(Command::Record { body, reply: tx })
        .await
        .is_ok()
    {
        let _ = rx.await;
    }
}
