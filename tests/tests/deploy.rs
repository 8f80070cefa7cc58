//! The deployment files as shipped: the systemd unit's ExecStartPre check accepts every example
//! configuration, and the unit keeps its hardening.

use std::process::Command;

use sentinel_tests::sentinel_bin;

fn unit() -> String {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/sentinel.service");
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn exec_start_pre_accepts_every_example_config() {
    let unit = unit();
    let pre = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStartPre="))
        .expect("the unit validates its configuration before starting");
    let mut words: Vec<String> = pre.split_whitespace().map(str::to_owned).collect();
    assert!(words[0].ends_with("/sentinel"), "{pre}");
    assert_eq!(words[1], "check");
    let config_at = words.iter().position(|w| w == "-c").unwrap() + 1;
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(examples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        // The unit's own command line, with this build's binary and the example in place.
        words[config_at] = path.display().to_string();
        let out = Command::new(sentinel_bin())
            .args(&words[1..])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 5, "the demo and one example per sector");
}

#[test]
fn exec_start_pre_refuses_a_broken_config_so_systemd_does_not_start_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, "[site]\nid = \"x\"\n[[points]]\ntag = \"A\"\n").unwrap();
    let out = Command::new(sentinel_bin())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn the_unit_keeps_its_hardening_and_watchdog() {
    let unit = unit();
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "DynamicUser=yes",
        "StateDirectory=sentinel",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "SupplementaryGroups=dialout",
    ] {
        assert!(unit.lines().any(|l| l.starts_with(line)), "missing {line}");
    }
}
