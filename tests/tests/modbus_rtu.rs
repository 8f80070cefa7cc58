//! Modbus RTU over a serial line: Sentinel on one end of a virtual serial cable (a socat pty
//! pair), pymodbus's RTU server on the other. Two units answer on the bus and a third is
//! silent; the silent one must not starve the others.
#![allow(clippy::unwrap_used)] // a test: a panic is a failed test

use std::time::Duration;

use sentinel_tests::{PyModbusDevice, Sentinel, SerialPair, wait_for};
use serde_json::Value;

const T: Duration = Duration::from_secs(15);

fn config(port: &std::path::Path) -> String {
    let mut c = r#"
[site]
id = "rtu-e2e"
name = "RTU end-to-end"

[store]
data_dir = "{data_dir}"
flush_interval_ms = 100

[engine]
tick_ms = 100
"#
    .to_owned();
    // The silent unit (3) comes first: its timeouts must not keep the others from their turns.
    for unit in [3, 1, 2] {
        c += &format!(
            r#"
[[devices]]
name = "det{unit}"
protocol = "modbus_rtu"
serial_port = "{port}"
baud_rate = 19200
parity = "none"
data_bits = 8
stop_bits = 1
frame_gap_ms = 5
unit_id = {unit}
poll_interval_ms = 200
timeout_ms = 300
comm_loss_after_secs = 2

[[points]]
tag = "GT-{unit}"
device = "det{unit}"
kind = "toxic_gas"
register = {{ table = "input", address = 0, type = "f32", word_order = "CDAB" }}

[[points]]
tag = "ST-{unit}"
device = "det{unit}"
kind = "state"
register = {{ table = "discrete_input", address = 3, type = "bool" }}
"#,
            port = port.display()
        );
    }
    c
}

async fn point_of(s: &Sentinel, tag: &str) -> Value {
    let all = s.get("/api/v1/points").await;
    all.as_array()
        .and_then(|a| a.iter().find(|p| p["tag"] == tag).cloned())
        .unwrap_or(Value::Null)
}

fn f32_cdab(v: f32) -> [u16; 2] {
    let b = v.to_be_bytes();
    [
        u16::from_be_bytes([b[2], b[3]]),
        u16::from_be_bytes([b[0], b[1]]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_units_on_one_bus_and_a_silent_one_does_not_starve_them() {
    let Some(pair) = SerialPair::start().await else {
        return;
    };
    let b = pair.b.display().to_string();
    let Some(dev) =
        PyModbusDevice::start(&["--units", "1,2", "--serial", &b, "--baud", "19200"]).await
    else {
        return;
    };
    dev.write_registers_unit(1, 0, &f32_cdab(12.5)).await;
    dev.write_registers_unit(2, 0, &f32_cdab(-3.25)).await;
    dev.write_coils_unit(2, 3, &[true]).await;

    let s = Sentinel::start(&config(&pair.a)).await;
    let want = [
        ("GT-1", 12.5),
        ("GT-2", -3.25),
        ("ST-1", 0.0),
        ("ST-2", 1.0),
    ];
    for (tag, value) in want {
        wait_for(&format!("{tag} = {value}, good"), T, || async {
            let p = point_of(&s, tag).await;
            (p["quality"] == "good" && p["value"].as_f64() == Some(value)).then_some(())
        })
        .await;
    }
    wait_for("GT-3 comm_lost", T, || async {
        (point_of(&s, "GT-3").await["quality"] == "comm_lost").then_some(())
    })
    .await;

    // Unit 3 keeps timing out, yet changes on units 1 and 2 come through within a few polls.
    for round in 1..=3u8 {
        let v = f32::from(round) * 10.0;
        dev.write_registers_unit(1, 0, &f32_cdab(v)).await;
        dev.write_registers_unit(2, 0, &f32_cdab(-v)).await;
        wait_for(
            &format!("round {round}"),
            Duration::from_secs(5),
            || async {
                let a = point_of(&s, "GT-1").await["value"].as_f64() == Some(f64::from(v));
                let b = point_of(&s, "GT-2").await["value"].as_f64() == Some(f64::from(-v));
                (a && b).then_some(())
            },
        )
        .await;
    }
    assert!(
        s.metric(r#"sentinel_modbus_requests_total{device="det3",outcome="timeout"}"#)
            .await
            >= Some(1.0)
    );
    assert_eq!(
        s.metric(r#"sentinel_modbus_requests_total{device="det1",outcome="timeout"}"#)
            .await,
        Some(0.0)
    );
    assert_eq!(
        s.metric(r#"sentinel_modbus_connects_total{device="det1",outcome="ok"}"#)
            .await,
        Some(1.0)
    );
    let (code, _) = s.terminate().await;
    assert_eq!(code, Some(0));
    dev.kill().await;
    pair.stop().await;
}
