use std::collections::HashMap;

use super::*;

fn env(pairs: &[(&str, &str)]) -> EnvSource {
    EnvSource::Map(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<HashMap<_, _>>(),
    )
}

fn load(toml: &str) -> Result<Config, ConfigErrors> {
    load_str(toml, env(&[]))
}

const MINIMAL: &str = r#"
[site]
id = "t"
name = "Test"

[[devices]]
name = "d1"
protocol = "modbus_tcp"
host = "127.0.0.1"

[[points]]
tag = "P-1"
device = "d1"
kind = "level"
register = { table = "holding", address = 0 }
"#;

fn paths(e: &ConfigErrors) -> Vec<&str> {
    e.0.iter().map(|e| e.path.as_str()).collect()
}

#[test]
fn every_example_config_loads_and_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            load_file(&path, env(&[])).unwrap_or_else(|e| panic!("{}:\n{e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 1, "no example configs found in {}", dir.display());
}

#[test]
fn minimal_config_gets_documented_defaults() {
    let c = load(MINIMAL).unwrap();
    assert_eq!(c.store.retention_days, 30);
    assert_eq!(c.http.listen, "127.0.0.1:8080");
    let Device::ModbusTcp(d) = &c.devices[0] else {
        panic!("the minimal config has a modbus_tcp device");
    };
    assert_eq!(
        (d.port, d.unit_id, d.poll_interval_ms, d.timeout_ms),
        (502, 1, 1000, 1000)
    );
    assert_eq!(c.points[0].register.as_ref().map(|r| r.scale), Some(1.0));
}

#[test]
fn three_mistakes_are_all_reported_with_their_paths() {
    let toml = r#"
[site]
id = "t"
name = "Test"

[[devices]]
name = "d1"
protocol = "modbus_tcp"
host = "127.0.0.1"
poll_interval_ms = "fast"

[[points]]
tag = "P-1"
device = "d1"
kind = "level"
register = { table = "holding", address = 0 }

[[points]]
tag = "P-2"
device = "d1"
kind = "level"
register = { table = "holding", address = 1, type = "f32", word_order = "ABCD", scael = 2.0 }

[[points]]
tag = "P-3"
device = "nowhere"
kind = "level"
register = { table = "holding", address = 3 }
"#;
    let e = load(toml).unwrap_err();
    let p = paths(&e);
    assert!(
        p.contains(&"devices[0].poll_interval_ms") || p.iter().any(|p| p.starts_with("devices[0]")),
        "{e}"
    );
    assert!(p.iter().any(|p| p.starts_with("points[1].register")), "{e}");
    assert!(
        p.contains(&"points[3].device") || p.contains(&"points[2].device"),
        "{e}"
    );
    assert!(e.0.len() >= 3, "{e}");
    // The device that failed to parse is not blamed again by the points that name it.
    assert!(!e.to_string().contains("no device is named \"d1\""), "{e}");
}

#[test]
fn unknown_keys_are_rejected_everywhere() {
    for (toml, path) in [
        (format!("{MINIMAL}\n[bogus]\nx = 1\n"), "bogus"),
        (
            MINIMAL.replace("name = \"Test\"", "name = \"Test\"\nnmae = 1"),
            "site.nmae",
        ),
        (
            MINIMAL.replace("host = \"127.0.0.1\"", "host = \"127.0.0.1\"\nhots = 1"),
            "devices[0]",
        ),
        (
            MINIMAL.replace("kind = \"level\"", "kind = \"level\"\nunits = \"m\""),
            "points[0].units",
        ),
    ] {
        let e = load(&toml).unwrap_err();
        assert!(
            e.0.iter().any(|e| e.path.starts_with(path)),
            "expected an error at {path}, got:\n{e}"
        );
    }
}

#[test]
fn semantic_errors_name_their_paths() {
    let toml = MINIMAL.replace(
        "register = { table = \"holding\", address = 0 }",
        "register = { table = \"coil\", address = 0, type = \"u16\" }\nspan = [10.0, 0.0]\nlimits = { levels = [{ level = \"H\", setpoint = 5.0 }, { level = \"HH\", setpoint = 4.0 }] }",
    );
    let e = load(&toml).unwrap_err();
    let p = paths(&e);
    assert!(p.contains(&"points[0].register.type"), "{e}");
    assert!(p.contains(&"points[0].span"), "{e}");
    assert!(p.contains(&"points[0].limits.levels"), "{e}");
}

#[test]
fn pipelining_is_for_modbus_tcp_only_and_bounded() {
    let with = |protocol: &str, n: u16| {
        MINIMAL.replace(
            "protocol = \"modbus_tcp\"",
            &format!("protocol = \"{protocol}\"\nmax_in_flight = {n}"),
        )
    };
    let c = load(&with("modbus_tcp", 8)).unwrap();
    assert_eq!(c.devices[0].modbus().unwrap().max_in_flight, 8);
    assert_eq!(
        load(MINIMAL).unwrap().devices[0]
            .modbus()
            .unwrap()
            .max_in_flight,
        1
    );
    for bad in [
        with("modbus_tcp", 0),
        with("modbus_tcp", 65),
        with("modbus_rtu_over_tcp", 2),
    ] {
        let e = load(&bad).unwrap_err();
        assert_eq!(paths(&e), ["devices[0].max_in_flight"], "{e}");
    }
    load(&with("modbus_rtu_over_tcp", 1)).unwrap();
}

#[test]
fn duplicate_tags_and_devices_are_refused() {
    let toml = format!(
        "{MINIMAL}\n[[devices]]\nname = \"d1\"\nprotocol = \"modbus_tcp\"\nhost = \"h\"\n\n[[points]]\ntag = \"P-1\"\ndevice = \"d1\"\nkind = \"level\"\nregister = {{ table = \"holding\", address = 5 }}\n"
    );
    let e = load(&toml).unwrap_err();
    assert!(paths(&e).contains(&"devices[1].name"), "{e}");
    assert!(paths(&e).contains(&"points[1].tag"), "{e}");
}

#[test]
fn environment_overrides_deployment_values() {
    let c = load_str(
        MINIMAL,
        env(&[
            ("SENTINEL__HTTP__LISTEN", "0.0.0.0:9000"),
            ("SENTINEL__STORE__RETENTION_DAYS", "90"),
        ]),
    )
    .unwrap();
    assert_eq!(c.http.listen, "0.0.0.0:9000");
    assert_eq!(c.store.retention_days, 90);
}

#[test]
fn environment_variables_without_the_prefix_are_ignored() {
    let c = load_str(MINIMAL, env(&[("HTTP__LISTEN", "0.0.0.0:9000")])).unwrap();
    assert_eq!(c.http.listen, "127.0.0.1:8080");
}

#[test]
fn a_missing_site_is_reported() {
    let e = load("[http]\nlisten = \"127.0.0.1:1\"\n").unwrap_err();
    assert_eq!(paths(&e), vec!["site"]);
}

#[test]
fn garbage_input_never_panics() {
    let samples = [
        "",
        "\0",
        "[[[",
        "site = 5",
        "[site]\nid = []",
        "points = 3",
        "[[points]]\n",
        "devices = [1, 2]",
        "[site]\nid=\"a\"\nname=\"b\"\n[[points]]\nregister = \"x\"",
        "\u{feff}[site]",
        "[store]\nretention_days = -1",
        "[site]\nid=\"a\"\nname=\"b\"\n[[devices]]\nprotocol=\"mqtt\"\nname=\"x\"",
        "[site]\nid=\"a\"\nname=\"b\"\n[[points]]\ntag=\"x\"\ndevice=\"d\"\nkind=\"k\"\nregister={table=\"holding\",address=65535,type=\"f64\"}",
    ];
    for s in samples {
        let _ = load(s);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,200}") {
        let _ = load(&s);
    }

    #[test]
    fn mutated_minimal_config_never_panics(pos in 0usize..400, ch in proptest::char::any()) {
        let mut s: Vec<char> = MINIMAL.chars().collect();
        let i = pos % s.len();
        s[i] = ch;
        let s: String = s.into_iter().collect();
        let _ = load(&s);
    }
}

/// A plant of `devices` × `points` in TOML, large enough to be parsed in pieces.
fn big_plant(devices: usize, points: usize, tail: &str) -> String {
    let mut t =
        String::from("[site]\nid = \"big\"\nname = \"Big\"\n\n[store]\nretention_days = 40\n");
    for d in 0..devices {
        t.push_str(&format!(
            "\n[[devices]]\nname = \"d{d}\"\nprotocol = \"modbus_tcp\"\nhost = \"127.0.0.1\"\nport = {}\n",
            1000 + d
        ));
    }
    for d in 0..devices {
        for p in 0..points {
            t.push_str(&format!(
                "\n[[points]]\ntag = \"d{d}-p{p}\"\ndevice = \"d{d}\"\nkind = \"level\"\nregister = {{ table = \"holding\", address = {p} }}\n\n[points.limits]\ndeadband = 1.0\nlevels = [{{ level = \"H\", setpoint = {}.0 }}]\n",
                100 + p
            ));
        }
    }
    t.push_str(tail);
    t
}

#[test]
fn a_large_file_parsed_in_pieces_equals_the_whole() {
    let text = big_plant(40, 120, "\n[http]\nlisten = \"127.0.0.1:9001\"\n");
    assert!(text.len() > 2 * load::CHUNK_BYTES, "{} bytes", text.len());
    let pieces = load::parse_in_chunks(&text).expect("pieces fit together");
    let whole: serde_json::Value = config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Toml))
        .build()
        .and_then(config::Config::try_deserialize)
        .unwrap();
    assert_eq!(pieces, whole);
    let c = load_str(&text, env(&[("SENTINEL__STORE__RETENTION_DAYS", "90")])).unwrap();
    assert_eq!((c.devices.len(), c.points.len()), (40, 4800));
    assert_eq!(c.points[4799].tag, "d39-p119");
    assert_eq!(
        c.store.retention_days, 90,
        "environment over a file read in pieces"
    );
    assert_eq!(c.http.listen, "127.0.0.1:9001");
}

#[test]
fn a_bad_point_in_a_later_piece_is_reported_at_its_index_in_the_file() {
    let text = big_plant(40, 120, "").replacen(
        "tag = \"d39-p7\"\ndevice = \"d39\"\nkind = \"level\"\nregister = { table = \"holding\", address = 7 }",
        "tag = \"d39-p7\"\ndevice = \"d39\"\nkind = \"level\"\nregister = { table = \"holding\", address = \"seven\" }",
        1,
    );
    assert!(text.len() > 2 * load::CHUNK_BYTES);
    let e = load(&text).unwrap_err();
    assert_eq!(paths(&e), ["points[4687].register.address"], "{e}");
}

#[test]
fn a_large_file_that_does_not_fit_in_pieces_is_judged_whole() {
    // The same key in two pieces: TOML refuses it, and so must the loader.
    let text = big_plant(40, 60, "\n[site]\nid = \"again\"\n");
    assert!(load::parse_in_chunks(&text).is_none());
    assert!(load(&text).is_err());
    // A point error deep in the file keeps its index.
    let text = big_plant(40, 60, "").replace("tag = \"d39-p59\"", "tag = \"\"");
    let e = load(&text).unwrap_err();
    assert!(
        paths(&e).iter().any(|p| p.starts_with("points[2399]")),
        "{e}"
    );
}

#[test]
fn runtime_threads_default_to_one_and_are_bounded() {
    assert_eq!(load(MINIMAL).unwrap().engine.worker_threads, 1);
    let with = |n: usize| format!("{MINIMAL}\n[engine]\nworker_threads = {n}\n");
    assert_eq!(load(&with(4)).unwrap().engine.worker_threads, 4);
    for bad in [0, 65] {
        let e = load(&with(bad)).unwrap_err();
        assert_eq!(paths(&e), ["engine.worker_threads"], "{e}");
    }
}

#[test]
fn mqtt_notifier_in_flight_defaults_to_sixteen_within_the_broker_window() {
    let with = |extra: &str| {
        format!(
            "{MINIMAL}\n[notify.mqtt]\nbroker = {{ host = \"127.0.0.1\", port = 1883, inflight = 20 }}\n{extra}"
        )
    };
    let n = |c: &Config| c.notify.mqtt.as_ref().map(MqttNotify::in_flight);
    assert_eq!(n(&load(&with("")).unwrap()), Some(16));
    assert_eq!(n(&load(&with("max_in_flight = 1\n")).unwrap()), Some(1));
    // The default fits a smaller broker window rather than refusing it.
    let small = MINIMAL.to_owned()
        + "\n[notify.mqtt]\nbroker = { host = \"127.0.0.1\", port = 1883, inflight = 4 }\n";
    assert_eq!(n(&load(&small).unwrap()), Some(4));
    for bad in [0, 21] {
        let e = load(&with(&format!("max_in_flight = {bad}\n"))).unwrap_err();
        assert_eq!(paths(&e), ["notify.mqtt.max_in_flight"], "{e}");
    }
}

#[test]
fn an_mqtt_device_needs_a_comm_loss_wait_longer_than_a_connection_takes_to_count_as_up() {
    let with = |secs: u64| {
        format!(
            "{MINIMAL}\n[[devices]]\nname = \"edge\"\nprotocol = \"mqtt\"\nbroker = {{ host = \"127.0.0.1\", port = 1883 }}\ntopics = [\"plant/edge/#\"]\ncomm_loss_after_secs = {secs}\n"
        )
    };
    assert!(load(&with(6)).is_ok());
    for bad in [0, 1, 5] {
        let e = load(&with(bad)).unwrap_err();
        assert!(
            paths(&e)
                .iter()
                .all(|p| p.ends_with("comm_loss_after_secs"))
                && !e.0.is_empty(),
            "{e}"
        );
    }
}
