//! The Modbus driver end to end over TCP, against pymodbus (an independent implementation):
//! every type and word order, exceptions that spoil one request only, a server killed and
//! restarted, a server that never answers, a gateway that allows one connection for several
//! unit ids, RTU framing over TCP with a silent unit, 4–20 mA bands and detector status words,
//! and pipelining configured on a device that can't do it.
#![allow(clippy::unwrap_used)] // a test: a panic is a failed test

use std::time::Duration;

use sentinel_tests::{PyModbusDevice, Sentinel, WebhookReceiver, free_port, wait_for};
use serde_json::Value;

const T: Duration = Duration::from_secs(15);

fn header() -> String {
    r#"
[site]
id = "modbus-e2e"
name = "Modbus end-to-end"

[store]
data_dir = "{data_dir}"
flush_interval_ms = 100

[engine]
tick_ms = 100
"#
    .to_owned()
}

fn device(name: &str, protocol: &str, port: u16, unit: u8, extra: &str) -> String {
    format!(
        r#"
[[devices]]
name = "{name}"
protocol = "{protocol}"
host = "127.0.0.1"
port = {port}
unit_id = {unit}
poll_interval_ms = 200
timeout_ms = 300
comm_loss_after_secs = 2
{extra}
"#
    )
}

fn point(tag: &str, device: &str, register: &str, extra: &str) -> String {
    format!(
        r#"
[[points]]
tag = "{tag}"
device = "{device}"
kind = "test"
register = {{ {register} }}
{extra}
"#
    )
}

async fn points(s: &Sentinel) -> Vec<Value> {
    s.get("/api/v1/points")
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn point_of(s: &Sentinel, tag: &str) -> Value {
    points(s)
        .await
        .into_iter()
        .find(|p| p["tag"] == tag)
        .unwrap_or(Value::Null)
}

/// Waits until every tag has `quality`, and returns the points by tag.
async fn wait_quality(s: &Sentinel, tags: &[&str], quality: &str) -> Vec<Value> {
    wait_for(&format!("{tags:?} to be {quality}"), T, || async {
        let all = points(s).await;
        let found: Vec<Value> = tags
            .iter()
            .filter_map(|t| all.iter().find(|p| p["tag"] == *t).cloned())
            .filter(|p| p["quality"] == quality)
            .collect();
        (found.len() == tags.len()).then_some(found)
    })
    .await
}

/// Big-endian bytes of a value → the registers a device holds for them in `order`.
/// Written here from the definitions, independently of the driver's decoder.
fn registers(be: &[u8], order: &str) -> Vec<u16> {
    let mut words: Vec<u16> = be
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    match order {
        "ABCD" => {}
        "CDAB" => words.reverse(),
        "BADC" => words.iter_mut().for_each(|w| *w = w.swap_bytes()),
        "DCBA" => {
            words.reverse();
            words.iter_mut().for_each(|w| *w = w.swap_bytes());
        }
        _ => unreachable!(),
    }
    words
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_and_word_order_reads_back_exactly() {
    let Some(dev) = PyModbusDevice::start(&["--units", "1,2"]).await else {
        return;
    };
    let values: [(&str, Vec<u8>, f64); 8] = [
        ("i16", (-12345i16).to_be_bytes().to_vec(), -12345.0),
        ("u16", 54321u16.to_be_bytes().to_vec(), 54321.0),
        (
            "i32",
            (-123_456_789i32).to_be_bytes().to_vec(),
            -123_456_789.0,
        ),
        (
            "u32",
            3_000_000_000u32.to_be_bytes().to_vec(),
            3_000_000_000.0,
        ),
        (
            "i64",
            (-1_234_567_890_123_456i64).to_be_bytes().to_vec(),
            -1_234_567_890_123_456.0,
        ),
        (
            "u64",
            4_503_599_627_370_497u64.to_be_bytes().to_vec(),
            4_503_599_627_370_497.0,
        ),
        (
            "f32",
            123.456f32.to_be_bytes().to_vec(),
            f64::from(123.456f32),
        ),
        (
            "f64",
            (-98_765.432_1f64).to_be_bytes().to_vec(),
            -98_765.432_1,
        ),
    ];
    let mut config = header();
    config += &device("plc", "modbus_tcp", dev.port, 1, "");
    // The same server's unit 2, numbered from 1 as in many vendor manuals, on the same connection.
    config += &device(
        "plc-one-based",
        "modbus_tcp",
        dev.port,
        2,
        "address_base = 1",
    );
    let mut expected = Vec::new();
    let mut address = 0u16;
    for order in ["ABCD", "DCBA", "BADC", "CDAB"] {
        // Two orders from holding registers (FC 3), two from input registers (FC 4).
        let table = if matches!(order, "ABCD" | "DCBA") {
            "holding"
        } else {
            "input"
        };
        for (ty, be, value) in &values {
            let tag = format!("{ty}-{order}");
            let register = format!(
                r#"table = "{table}", address = {address}, type = "{ty}", word_order = "{order}""#
            );
            config += &point(&tag, "plc", &register, "");
            dev.write_registers_unit(1, address, &registers(be, order))
                .await;
            expected.push((tag, *value));
            address += 4;
        }
    }
    dev.write_registers_unit(1, 200, &[0b1000_0000_0000_0100, 650])
        .await;
    dev.write_coils_unit(1, 5, &[true, true, false]).await;
    dev.write_registers_unit(2, 0, &[777]).await;
    config += &point(
        "bit2",
        "plc",
        r#"table = "holding", address = 200, type = "bool", bit = 2"#,
        "",
    );
    config += &point(
        "bit3",
        "plc",
        r#"table = "holding", address = 200, type = "bool", bit = 3"#,
        "",
    );
    config += &point(
        "scaled",
        "plc",
        r#"table = "holding", address = 201, scale = 0.1, offset = -40.0"#,
        "",
    );
    config += &point(
        "coil5",
        "plc",
        r#"table = "coil", address = 5, type = "bool""#,
        "",
    );
    config += &point(
        "di6",
        "plc",
        r#"table = "discrete_input", address = 6, type = "bool""#,
        "",
    );
    config += &point(
        "di7",
        "plc",
        r#"table = "discrete_input", address = 7, type = "bool""#,
        "",
    );
    config += &point(
        "one-based",
        "plc-one-based",
        r#"table = "holding", address = 1"#,
        "",
    );
    expected.extend([
        ("bit2".to_owned(), 1.0),
        ("bit3".to_owned(), 0.0),
        ("coil5".to_owned(), 1.0),
        ("di6".to_owned(), 1.0),
        ("di7".to_owned(), 0.0),
        ("one-based".to_owned(), 777.0),
    ]);

    let s = Sentinel::start(&config).await;
    let mut tags: Vec<&str> = expected.iter().map(|(t, _)| t.as_str()).collect();
    tags.push("scaled");
    wait_quality(&s, &tags, "good").await;
    let all = points(&s).await;
    for (tag, value) in &expected {
        let p = all.iter().find(|p| p["tag"] == tag.as_str()).unwrap();
        assert_eq!(p["value"].as_f64(), Some(*value), "{tag}: {p}");
    }
    let scaled = all.iter().find(|p| p["tag"] == "scaled").unwrap()["value"]
        .as_f64()
        .unwrap();
    assert!((scaled - 25.0).abs() < 1e-9, "scaled = {scaled}");
    // Both units share one connection.
    assert_eq!(
        s.metric(r#"sentinel_modbus_connects_total{device="plc",outcome="ok"}"#)
            .await,
        Some(1.0)
    );
    s.terminate().await;
    dev.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn illegal_address_spoils_only_its_request() {
    let Some(dev) = PyModbusDevice::start(&["--illegal-from", "100"]).await else {
        return;
    };
    dev.write_registers(10, &[42, 43]).await;
    let mut config = header();
    config += &device("plc", "modbus_tcp", dev.port, 1, "max_gap = 0");
    config += &point("in-range", "plc", r#"table = "holding", address = 10"#, "");
    config += &point(
        "in-range-2",
        "plc",
        r#"table = "holding", address = 11"#,
        "",
    );
    config += &point("past-end", "plc", r#"table = "holding", address = 150"#, "");
    let s = Sentinel::start(&config).await;

    wait_quality(&s, &["past-end"], "device_exception").await;
    let good = wait_quality(&s, &["in-range", "in-range-2"], "good").await;
    assert_eq!(good[0]["value"], 42.0);
    // Later cycles: still good, still one connection (an exception is an answer).
    dev.write_registers(10, &[44]).await;
    wait_for("in-range = 44", T, || async {
        (point_of(&s, "in-range").await["value"] == 44.0).then_some(())
    })
    .await;
    assert_eq!(
        point_of(&s, "past-end").await["quality"],
        "device_exception"
    );
    assert_eq!(
        s.metric(r#"sentinel_modbus_connects_total{device="plc",outcome="ok"}"#)
            .await,
        Some(1.0)
    );
    assert!(
        s.metric(r#"sentinel_modbus_requests_total{device="plc",outcome="exception"}"#)
            .await
            >= Some(2.0)
    );
    assert!(
        s.get("/api/v1/alarms?state=active")
            .await
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["kind"] != "comm_loss"),
        "an exception is not a communication loss"
    );
    s.terminate().await;
    dev.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_gives_comm_loss_alarm_then_recovers_by_itself() {
    let port = free_port();
    let Some(dev) = PyModbusDevice::start_on(port, &[]).await else {
        return;
    };
    dev.write_registers(0, &[120]).await;
    let hook = WebhookReceiver::start().await;
    let mut config = header();
    config += &device("plc", "modbus_tcp", port, 1, "");
    config += &point("LT-1", "plc", r#"table = "holding", address = 0"#, "");
    config += &format!(
        "\n[[notify.webhook]]\nname = \"r\"\nurl = \"{}\"\ntimeout_ms = 2000\nmax_backoff_secs = 1\n",
        hook.url()
    );
    let s = Sentinel::start(&config).await;
    let before = wait_quality(&s, &["LT-1"], "good").await.remove(0);

    dev.kill().await;
    hook.wait_event("plc", "raised", T).await;
    let lost = wait_quality(&s, &["LT-1"], "comm_lost").await.remove(0);
    assert_eq!(lost["value"], 120.0, "the last good value is kept: {lost}");
    assert!(
        lost["time"].as_i64() <= before["time"].as_i64().map(|t| t + 1000),
        "{lost}"
    );

    let dev = PyModbusDevice::start_on(port, &[]).await.unwrap();
    dev.write_registers(0, &[121]).await;
    hook.wait_event("plc", "cleared", Duration::from_secs(45))
        .await;
    let back = wait_quality(&s, &["LT-1"], "good").await.remove(0);
    assert_eq!(back["value"], 121.0);
    assert!(
        s.metric(r#"sentinel_modbus_connects_total{device="plc",outcome="ok"}"#)
            .await
            >= Some(2.0)
    );
    s.terminate().await;
    dev.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_that_never_answers_times_out_instead_of_hanging() {
    let Some(dev) = PyModbusDevice::start(&["--hang"]).await else {
        return;
    };
    let mut config = header();
    config += &device("plc", "modbus_tcp", dev.port, 1, "");
    config += &point("PT-1", "plc", r#"table = "holding", address = 0"#, "");
    let s = Sentinel::start(&config).await;
    wait_quality(&s, &["PT-1"], "comm_lost").await;
    wait_for("timeouts counted", T, || async {
        let n = s
            .metric(r#"sentinel_modbus_requests_total{device="plc",outcome="timeout"}"#)
            .await;
        (n >= Some(2.0)).then_some(())
    })
    .await;
    wait_for("a communication-loss alarm", T, || async {
        let active = s.get("/api/v1/alarms?state=active").await;
        active
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["kind"] == "comm_loss" && a["point"] == "plc")
            .cloned()
    })
    .await;
    let (code, _) = s.terminate().await;
    assert_eq!(
        code,
        Some(0),
        "shutdown is not held up by a request in flight"
    );
    dev.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_serves_several_unit_ids() {
    let Some(dev) = PyModbusDevice::start(&["--units", "1,2,3", "--single-connection"]).await
    else {
        return;
    };
    // Written before Sentinel holds the only connection.
    for unit in 1..=3u8 {
        dev.write_registers_unit(unit, 0, &[u16::from(unit) * 100])
            .await;
    }
    let mut config = header();
    for unit in 1..=3u8 {
        config += &device(&format!("unit{unit}"), "modbus_tcp", dev.port, unit, "");
        config += &point(
            &format!("V-{unit}"),
            &format!("unit{unit}"),
            r#"table = "holding", address = 0"#,
            "",
        );
    }
    let s = Sentinel::start(&config).await;
    let good = wait_quality(&s, &["V-1", "V-2", "V-3"], "good").await;
    for (unit, p) in (1..=3).zip(&good) {
        assert_eq!(p["value"].as_f64(), Some(f64::from(unit) * 100.0), "{p}");
    }
    // Several cycles later nobody was reset: still one connection each, still good.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for unit in 1..=3 {
        let ok = s
            .metric(&format!(
                r#"sentinel_modbus_connects_total{{device="unit{unit}",outcome="ok"}}"#
            ))
            .await;
        assert_eq!(ok, Some(1.0), "unit{unit}");
        assert_eq!(point_of(&s, &format!("V-{unit}")).await["quality"], "good");
    }
    s.terminate().await;
    dev.kill().await;
}

/// `max_in_flight` set on a device that serves one request at a time (pymodbus answers the
/// first frame of a burst and parks the rest): the stall is named in the log, the device is
/// read one request at a time from then on, and values, the exception of one request and the
/// unit ids all come back right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelining_on_a_device_without_it_falls_back_to_one_at_a_time() {
    let Some(dev) = PyModbusDevice::start(&[
        "--units",
        "1,2",
        "--single-connection",
        "--illegal-from",
        "100",
    ])
    .await
    else {
        return;
    };
    for unit in 1..=2u8 {
        let values: Vec<u16> = (0..12).map(|i| u16::from(unit) * 1000 + i).collect();
        dev.write_registers_unit(unit, 10, &values).await;
    }
    let mut config = header();
    let mut tags = Vec::new();
    for unit in 1..=2u8 {
        let name = format!("unit{unit}");
        let extra = "max_in_flight = 8\nmax_registers_per_request = 1";
        config += &device(&name, "modbus_tcp", dev.port, unit, extra);
        for i in 0..12u16 {
            let tag = format!("U{unit}-{i}");
            let register = format!(r#"table = "holding", address = {}"#, 10 + i);
            config += &point(&tag, &name, &register, "");
            tags.push((tag, u16::from(unit) * 1000 + i));
        }
        let register = r#"table = "holding", address = 150"#;
        config += &point(&format!("U{unit}-past-end"), &name, register, "");
    }
    let s = Sentinel::start(&config).await;
    let names: Vec<&str> = tags.iter().map(|(t, _)| t.as_str()).collect();
    let good = wait_quality(&s, &names, "good").await;
    for ((tag, want), p) in tags.iter().zip(&good) {
        assert_eq!(p["value"].as_f64(), Some(f64::from(*want)), "{tag}: {p}");
    }
    wait_quality(&s, &["U1-past-end", "U2-past-end"], "device_exception").await;
    assert!(
        s.log().contains("does not serve several requests at once"),
        "{}",
        s.log()
    );
    // From now on: no more timeouts or reconnects, and reads go on.
    let series = |unit: u8, what: &str| match what {
        "connects" => {
            format!(r#"sentinel_modbus_connects_total{{device="unit{unit}",outcome="ok"}}"#)
        }
        outcome => {
            format!(r#"sentinel_modbus_requests_total{{device="unit{unit}",outcome="{outcome}"}}"#)
        }
    };
    let mut before = Vec::new();
    for unit in 1..=2 {
        for what in ["connects", "timeout", "ok"] {
            before.push(s.metric(&series(unit, what)).await.unwrap_or(0.0));
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut i = 0;
    for unit in 1..=2 {
        assert!(before[i + 1] >= 1.0, "unit{unit} stalled once: {before:?}");
        assert_eq!(s.metric(&series(unit, "connects")).await, Some(before[i]));
        assert_eq!(
            s.metric(&series(unit, "timeout")).await,
            Some(before[i + 1])
        );
        let ok = s.metric(&series(unit, "ok")).await.unwrap_or(0.0);
        assert!(
            ok >= before[i + 2] + 12.0,
            "unit{unit}: {ok} after {before:?}"
        );
        i += 3;
    }
    let again = wait_quality(&s, &names, "good").await;
    assert_eq!(again.len(), names.len());
    s.terminate().await;
    dev.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_over_tcp_with_a_silent_unit_keeps_the_others_polled() {
    let rtu_port = free_port();
    let rtu = rtu_port.to_string();
    let Some(dev) = PyModbusDevice::start(&["--units", "1,2", "--rtu-over-tcp-port", &rtu]).await
    else {
        return;
    };
    dev.write_registers_unit(1, 0, &[11]).await;
    dev.write_registers_unit(2, 0, &[22]).await;
    let mut config = header();
    // The silent unit first: its timeouts must not keep the others from their turns.
    for unit in [3u8, 1, 2] {
        config += &device(
            &format!("unit{unit}"),
            "modbus_rtu_over_tcp",
            rtu_port,
            unit,
            "",
        );
        config += &point(
            &format!("V-{unit}"),
            &format!("unit{unit}"),
            r#"table = "input", address = 0"#,
            "",
        );
    }
    let s = Sentinel::start(&config).await;
    wait_quality(&s, &["V-1", "V-2"], "good").await;
    wait_quality(&s, &["V-3"], "comm_lost").await;
    // Unit 3 never answers; units 1 and 2 keep being read, on the same connection.
    for round in 0..3u16 {
        dev.write_registers_unit(2, 0, &[100 + round]).await;
        wait_for("unit 2 follows", Duration::from_secs(5), || async {
            (point_of(&s, "V-2").await["value"].as_f64() == Some(f64::from(100 + round)))
                .then_some(())
        })
        .await;
    }
    assert_eq!(point_of(&s, "V-1").await["quality"], "good");
    assert_eq!(
        s.metric(r#"sentinel_modbus_connects_total{device="unit1",outcome="ok"}"#)
            .await,
        Some(1.0)
    );
    assert!(
        s.metric(r#"sentinel_modbus_requests_total{device="unit3",outcome="timeout"}"#)
            .await
            >= Some(1.0)
    );
    s.terminate().await;
    dev.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loop_current_bands_and_detector_status_set_quality() {
    let Some(dev) = PyModbusDevice::start(&[]).await else {
        return;
    };
    // Loop currents in µA; gas concentration with its status word at 21.
    dev.write_registers(0, &[12_000, 3_700, 3_000, 20_800, 4_000])
        .await;
    dev.write_registers(20, &[250, 0]).await;
    let mut config = header();
    config += &device("ai", "modbus_tcp", dev.port, 1, "");
    let ma = r#"type = "u16", scale = 0.001, signal = "4-20ma""#;
    for (i, tag) in ["AI-mid", "AI-under", "AI-broken", "AI-over", "AI-zero"]
        .iter()
        .enumerate()
    {
        config += &point(
            tag,
            "ai",
            &format!(r#"table = "holding", address = {i}, {ma}"#),
            "span = [0.0, 100.0]",
        );
    }
    let status = r#"status = { table = "holding", address = 21, fault_bit = 2, warmup_bit = 3, calibration_bit = 4 }"#;
    config += &point(
        "NH3-1",
        "ai",
        &format!(r#"table = "holding", address = 20, {status}"#),
        "",
    );
    let s = Sentinel::start(&config).await;

    let good = wait_quality(&s, &["AI-mid", "AI-zero", "NH3-1"], "good").await;
    assert_eq!(good[0]["value"], 50.0);
    assert_eq!(good[1]["value"], 0.0);
    assert_eq!(good[2]["value"], 250.0);
    let saturated = wait_quality(&s, &["AI-under", "AI-over"], "saturated").await;
    assert!(saturated[0]["value"].as_f64().unwrap() < 0.0);
    assert!(saturated[1]["value"].as_f64().unwrap() > 100.0);
    wait_quality(&s, &["AI-broken"], "sensor_fault").await;

    dev.write_registers(21, &[1 << 3]).await; // warming up
    wait_quality(&s, &["NH3-1"], "not_measuring").await;
    dev.write_registers(21, &[1 << 2 | 1 << 4]).await; // fault (and calibration due)
    wait_quality(&s, &["NH3-1"], "sensor_fault").await;
    dev.write_registers(21, &[0]).await;
    wait_quality(&s, &["NH3-1"], "good").await;
    s.terminate().await;
    dev.kill().await;
}
