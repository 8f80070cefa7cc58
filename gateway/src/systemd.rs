//! systemd integration without a library: readiness, stopping and the watchdog are datagrams
//! sent to `$NOTIFY_SOCKET` (sd_notify(3)). Outside systemd the variable is unset and every
//! call is a no-op.
//!
//! The watchdog ping is tied to the engine's heartbeat, not to a timer of its own: if the
//! engine loop hangs, the pings stop and systemd restarts the daemon.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Send one notification; errors are logged, never fatal.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(error) = send(&path, state) {
        tracing::warn!(%error, state, "Notifying systemd failed.");
    }
}

#[cfg(target_os = "linux")]
fn send(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let bytes = path.as_bytes();
    let addr = match bytes.first() {
        // Abstract namespace socket.
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..])?,
        _ => SocketAddr::from_pathname(path)?,
    };
    let socket = UnixDatagram::unbound()?;
    socket.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn send(_path: &std::ffi::OsStr, _state: &str) -> std::io::Result<()> {
    Ok(())
}

/// The watchdog interval systemd asked for, if any.
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Ping the watchdog at half its interval while the engine's heartbeat keeps moving.
pub fn spawn_watchdog(metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let Some(interval) = watchdog_interval() else {
        return;
    };
    tokio::spawn(async move {
        let mut last = metrics.engine_heartbeat.get();
        let mut tick = tokio::time::interval(interval / 2);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = metrics.engine_heartbeat.get();
            if now != last {
                notify("WATCHDOG=1");
                last = now;
            } else {
                tracing::error!(
                    "The engine loop has not ticked for a watchdog half-interval; withholding the watchdog ping."
                );
            }
        }
    });
}
