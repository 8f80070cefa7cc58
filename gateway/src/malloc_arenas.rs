//! One glibc heap for the daemon.
//!
//! glibc gives a thread that allocates while another thread holds the heap lock a heap of its
//! own (an arena), up to eight per core, and each arena keeps what was freed in it. A daemon
//! whose threads take turns (runtime workers, the store writer, blocking-pool threads) ends up
//! with a dozen part-empty heaps: at 15,000 points that is 12 MiB of a 64 MiB resident set
//! (docs/benchmarks.md). These threads allocate little once started, so one heap costs no CPU
//! that the benchmark can see.
//!
//! glibc reads the limit only when the process starts, and setting it from inside would need
//! `mallopt` (unsafe code, which the workspace forbids). So a daemon command executes itself
//! again, once, with `MALLOC_ARENA_MAX=1` in its environment, before it starts any thread. The
//! process keeps its PID, arguments and environment. An operator's own setting
//! (`MALLOC_ARENA_MAX`, or `GLIBC_TUNABLES` naming `arena_max`) is left as it is.

/// The limit the daemon sets when the environment has none.
const ARENAS: &str = "1";

/// Re-executes the program with the arena limit set, unless the environment already sets one.
/// Returns only when it did not re-execute: then why not, if anything went wrong, for the log
/// once logging is up. Call before any thread is started.
pub fn limit() -> Option<String> {
    if !needed(
        std::env::var_os("MALLOC_ARENA_MAX").is_some(),
        std::env::var("GLIBC_TUNABLES").ok().as_deref(),
    ) {
        return None;
    }
    reexec()
}

/// Whether the environment leaves the arena limit to glibc's default.
fn needed(arena_max_set: bool, tunables: Option<&str>) -> bool {
    !arena_max_set && !tunables.is_some_and(|t| t.contains("arena_max"))
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn reexec() -> Option<String> {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(program());
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    let error = command.args(args).env("MALLOC_ARENA_MAX", ARENAS).exec();
    Some(format!(
        "could not re-execute with MALLOC_ARENA_MAX={ARENAS} ({error}); running with glibc's default heaps, which keep more memory"
    ))
}

/// The file to execute: this program's own path, because the kernel names the process after the
/// file it executes (`pidof sentinel`, `pkill sentinel`, `top` go by that name; executing
/// `/proc/self/exe` would rename the process `exe`). `/proc/self/exe` only when the path is gone
/// (the file was replaced or removed since start): it is this very program even then.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn program() -> std::path::PathBuf {
    match std::env::current_exe() {
        Ok(path) if path.is_file() => path,
        _ => std::path::PathBuf::from("/proc/self/exe"),
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn reexec() -> Option<String> {
    // Other C libraries have no arenas to limit.
    None
}

#[cfg(test)]
mod tests {
    use super::needed;

    #[test]
    fn an_operators_own_setting_is_kept() {
        assert!(needed(false, None));
        assert!(needed(false, Some("glibc.malloc.tcache_count=0")));
        assert!(!needed(true, None));
        assert!(!needed(false, Some("glibc.malloc.arena_max=4")));
    }
}
