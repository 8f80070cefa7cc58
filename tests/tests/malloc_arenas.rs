//! The daemon keeps to one glibc heap by itself (gateway/src/malloc_arenas.rs): it re-executes
//! once with `MALLOC_ARENA_MAX=1`, as the same process under the same name, unless the
//! environment chose a limit.

use sentinel_tests::{Sentinel, api};

/// The value of `name` in the running process's environment.
fn environment_of(pid: u32, name: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ.split(|&b| b == 0).find_map(|entry| {
        let entry = String::from_utf8_lossy(entry);
        let (key, value) = entry.split_once('=')?;
        (key == name).then(|| value.to_owned())
    })
}

#[tokio::test]
async fn the_daemon_sets_one_heap_itself_and_keeps_an_operators_choice() {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return;
    }
    // This test's own environment must leave the limit to the daemon.
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() || tunables.contains("arena_max") {
        eprintln!("skipped: the environment already sets a glibc arena limit");
        return;
    }
    // Started without a limit: the process the test spawned (same PID) now has one, with its
    // arguments, and it is up (`start` waits for it to listen).
    let s = Sentinel::start(&api::config("")).await;
    let pid = s.pid().unwrap();
    assert_eq!(
        environment_of(pid, "MALLOC_ARENA_MAX").as_deref(),
        Some("1")
    );
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        cmdline.split(|&b| b == 0).any(|a| a == b"run"),
        "arguments kept: {}",
        String::from_utf8_lossy(&cmdline)
    );
    // Still named for its file, so that `pidof sentinel` and `pkill sentinel` find it.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim_end(), "sentinel");
    let (code, _) = s.terminate().await;
    assert_eq!(code, Some(0));

    // An operator's own limit is kept.
    let s = Sentinel::start_in_with_env(
        &api::config(""),
        tempfile::tempdir().unwrap(),
        &[("MALLOC_ARENA_MAX", "4")],
    )
    .await;
    assert_eq!(
        environment_of(s.pid().unwrap(), "MALLOC_ARENA_MAX").as_deref(),
        Some("4")
    );
    let (code, _) = s.terminate().await;
    assert_eq!(code, Some(0));
}
