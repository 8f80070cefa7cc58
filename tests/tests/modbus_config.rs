//! Modbus configuration as a user meets it through `sentinel check`: the RTU and RTU-over-TCP
//! devices, what is refused and why, and the read plan `--explain` prints.
#![allow(clippy::unwrap_used)] // a test: a panic is a failed test

use std::process::Command;

use sentinel_tests::sentinel_bin;

fn check(text: &str, explain: bool) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    let mut cmd = Command::new(sentinel_bin());
    cmd.args(["check", "-c"]).arg(&path);
    if explain {
        cmd.arg("--explain");
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const SITE: &str = r#"
[site]
id = "cfg"
name = "Config"
"#;

fn rtu(name: &str, port: &str, unit: u8, extra: &str) -> String {
    format!(
        "\n[[devices]]\nname = \"{name}\"\nprotocol = \"modbus_rtu\"\nserial_port = \"{port}\"\nunit_id = {unit}\n{extra}\n"
    )
}

#[test]
fn a_valid_rtu_bus_and_gateway_are_explained_request_by_request() {
    let mut c = SITE.to_owned();
    c += &rtu(
        "det1",
        "/dev/ttyUSB0",
        1,
        "baud_rate = 19200\nparity = \"even\"",
    );
    c += &rtu(
        "det2",
        "/dev/ttyUSB0",
        2,
        "baud_rate = 19200\nparity = \"even\"",
    );
    c += r#"
[[devices]]
name = "dsrv"
protocol = "modbus_rtu_over_tcp"
host = "192.0.2.10"
port = 4001
unit_id = 7
frame_gap_ms = 5
address_base = 1

[[points]]
tag = "NH3-1"
device = "det1"
kind = "toxic_gas"
span = [0.0, 100.0]
register = { table = "input", address = 0, type = "f32", word_order = "CDAB", status = { table = "input", address = 2, fault_bit = 0, warmup_bit = 1 } }

[[points]]
tag = "PT-1"
device = "det2"
kind = "pressure"
span = [0.0, 2.5]
register = { table = "holding", address = 10, scale = 0.001, signal = "4-20ma" }

[[points]]
tag = "TT-1"
device = "dsrv"
kind = "temperature"
register = { table = "holding", address = 1, interval_ms = 5000 }
"#;
    let (code, out, err) = check(&c, true);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("fc04 input 0..=2 (3 registers): NH3-1 @0, NH3-1 status @2"),
        "{out}"
    );
    assert!(
        out.contains("fc03 holding 10..=10 (1 registers): PT-1 @0"),
        "{out}"
    );
    // 1-based register 1 is protocol address 0; read every fifth cycle.
    assert!(
        out.contains("fc03 holding 0..=0 (1 registers): TT-1 @0 (every 5 cycles)"),
        "{out}"
    );
}

#[test]
fn serial_line_settings_are_range_checked() {
    let mut c = SITE.to_owned();
    c += &rtu(
        "det1",
        "/dev/ttyUSB0",
        1,
        "stop_bits = 3\ndata_bits = 5\nbaud_rate = 10",
    );
    let (code, _, err) = check(&c, false);
    assert_eq!(code, 64, "{err}");
    for expected in [
        "devices[0].stop_bits",
        "devices[0].data_bits",
        "devices[0].baud_rate",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn mistakes_on_a_shared_bus_are_all_reported() {
    let mut c = SITE.to_owned();
    c += &rtu("det1", "/dev/ttyUSB0", 1, "");
    c += &rtu("det2", "/dev/ttyUSB0", 1, "baud_rate = 19200");
    c += &rtu("det3", "/dev/ttyUSB1", 3, "parity = \"mark\"");
    c += &rtu("det4", "/dev/ttyUSB2", 4, "baud = 9600");
    c += r#"
[[devices]]
name = "gw-a"
protocol = "modbus_tcp"
host = "192.0.2.1"
unit_id = 1
frame_gap_ms = 3

[[devices]]
name = "gw-b"
protocol = "modbus_rtu_over_tcp"
host = "192.0.2.1"
unit_id = 2

[[devices]]
name = "one-based"
protocol = "modbus_tcp"
host = "192.0.2.2"
address_base = 1

[[points]]
tag = "A"
device = "one-based"
kind = "level"
register = { table = "holding", address = 0, signal = "4-20ma", interval_ms = 1500 }

[[points]]
tag = "B"
device = "det1"
kind = "toxic_gas"
register = { table = "input", address = 0, status = { table = "coil", address = 1 } }
"#;
    let (code, _, err) = check(&c, false);
    assert_eq!(code, 64, "{err}");
    for expected in [
        "devices[1].serial_port",             // other line settings on the same port
        "devices[1].unit_id",                 // unit 1 twice on one bus
        "devices[2]: unknown variant `mark`", // not a parity
        "devices[3]: unknown field `baud`",   // misspelt baud_rate
        "devices[4].frame_gap_ms",            // no gap on plain Modbus TCP
        "devices[5].protocol",                // one host:port, two framings
        "points[0].register.address",         // 0 on a 1-based device
        "points[0].span",                     // 4-20 mA needs a span
        "points[0].register.interval_ms",     // not a multiple of 1000 ms
        "points[1].register.status.table",    // a status word is a register
        "points[1].register.status",          // and names at least one bit
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}
