//! The command line as a user meets it: `check` on good and bad files, `--version`.

use std::process::Command;

use sentinel_tests::sentinel_bin;

fn check(text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(sentinel_bin())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_every_shipped_example() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = Command::new(sentinel_bin())
                .args(["check", "-c"])
                .arg(&path)
                .output()
                .unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn check_reports_three_mistakes_with_paths_and_exits_64() {
    let (code, _, err) = check(
        r#"
[site]
id = "Bad Id"
name = "x"

[[devices]]
name = "d"
protocol = "modbus_tcp"
host = "127.0.0.1"

[[points]]
tag = "A"
device = "d"
kind = "level"
register = { table = "holding", address = 0, type = "f32" }

[[points]]
tag = "B"
device = "d"
kind = "level"
register = { table = "holding", adress = 3 }

[[points]]
tag = "C"
device = "ghost"
kind = "level"
register = { table = "holding", address = 4 }
"#,
    );
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("site.id:"), "{err}");
    assert!(err.contains("points[1].register"), "{err}");
    assert!(err.contains("points[2].device:"), "{err}");
    assert!(err.contains("3 errors"), "{err}");
}

#[test]
fn check_on_a_missing_or_binary_file_fails_cleanly() {
    let out = Command::new(sentinel_bin())
        .args(["check", "-c", "/nonexistent/sentinel.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let (code, _, err) = check("\u{0}\u{1}\u{2}garbage[[[");
    assert_eq!(code, 64);
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn version_is_printed() {
    let out = Command::new(sentinel_bin())
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("sentinel "));
}
