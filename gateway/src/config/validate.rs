//! The second pass: checks that need more than one field, collecting every error with its path.

use std::collections::HashSet;
use std::net::SocketAddr;

use alert_rules::Level;
use drivers::modbus::{DataType, RegisterSpec, Signal, Table};

use super::load::{ConfigError, err};
use super::model::{Config, Device, Limits, ModbusOptions, Point};

/// Where the parsed list elements stood in the file, so that paths name the right element.
pub struct Origin {
    pub device_index: Vec<usize>,
    pub point_index: Vec<usize>,
    /// Devices whose table failed to parse (already reported).
    pub broken_devices: Vec<String>,
}

pub fn check(config: &Config, origin: &Origin, errors: &mut Vec<ConfigError>) {
    check_site(config, errors);
    check_runtime(config, errors);
    let device_names = check_devices(config, origin, errors);
    check_points(config, origin, &device_names, errors);
    check_notify(config, errors);
    super::people::check(config, errors);
    check_upstream(config, errors);
}

fn check_site(config: &Config, errors: &mut Vec<ConfigError>) {
    let site = &config.site;
    if site.id.is_empty()
        || !site
            .id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        errors.push(err(
            "site.id",
            "must be non-empty and use only lowercase letters, digits, '-' and '_'",
        ));
    }
    if site.name.trim().is_empty() {
        errors.push(err("site.name", "must not be empty"));
    }
    if let Some(lat) = site.latitude
        && !(-90.0..=90.0).contains(&lat)
    {
        errors.push(err("site.latitude", format!("{lat} is outside -90..=90")));
    }
    if let Some(lon) = site.longitude
        && !(-180.0..=180.0).contains(&lon)
    {
        errors.push(err(
            "site.longitude",
            format!("{lon} is outside -180..=180"),
        ));
    }
}

fn check_runtime(config: &Config, errors: &mut Vec<ConfigError>) {
    if config.store.retention_days == 0 {
        errors.push(err(
            "store.retention_days",
            "must be at least 1 (major-hazard rules require 30)",
        ));
    }
    if config.store.disk_budget_mb == 0 {
        errors.push(err("store.disk_budget_mb", "must be at least 1"));
    }
    if !(10..=10_000).contains(&config.store.flush_interval_ms) {
        errors.push(err("store.flush_interval_ms", "must be within 10..=10000"));
    }
    if config.http.listen.parse::<SocketAddr>().is_err() {
        errors.push(err(
            "http.listen",
            format!(
                "{:?} is not an address such as 127.0.0.1:8080",
                config.http.listen
            ),
        ));
    }
    if config.http.tls_cert.is_some() != config.http.tls_key.is_some() {
        errors.push(err(
            "http.tls_cert",
            "tls_cert and tls_key go together: give both or neither",
        ));
    }
    if !(1..=10_000).contains(&config.http.max_event_streams) {
        errors.push(err("http.max_event_streams", "must be within 1..=10000"));
    }
    if !(1..=3_600).contains(&config.http.request_timeout_secs) {
        errors.push(err("http.request_timeout_secs", "must be within 1..=3600"));
    }
    if config.engine.channel_capacity < 16 {
        errors.push(err("engine.channel_capacity", "must be at least 16"));
    }
    if !(1..=64).contains(&config.engine.worker_threads) {
        errors.push(err("engine.worker_threads", "must be within 1..=64"));
    }
    if !(10..=5_000).contains(&config.engine.tick_ms) {
        errors.push(err("engine.tick_ms", "must be within 10..=5000"));
    }
}

fn check_devices<'a>(
    config: &'a Config,
    origin: &Origin,
    errors: &mut Vec<ConfigError>,
) -> HashSet<&'a str> {
    let mut names = HashSet::new();
    for (device, &i) in config.devices.iter().zip(&origin.device_index) {
        let at = |field: &str| format!("devices[{i}].{field}");
        if device.name().is_empty() {
            errors.push(err(at("name"), "must not be empty"));
        } else if !names.insert(device.name()) {
            errors.push(err(
                at("name"),
                format!("another device is already named {:?}", device.name()),
            ));
        }
        match device {
            Device::Mqtt(d) => super::validate_mqtt::check_device(d, &at, errors),
            Device::ModbusTcp(d) | Device::ModbusRtuOverTcp(d) => {
                if d.host.trim().is_empty() {
                    errors.push(err(at("host"), "must not be empty"));
                }
                if d.port == 0 {
                    errors.push(err(at("port"), "must not be 0"));
                }
                if matches!(device, Device::ModbusTcp(_)) && d.frame_gap_ms.is_some() {
                    errors.push(err(
                        at("frame_gap_ms"),
                        "applies to modbus_rtu and modbus_rtu_over_tcp only",
                    ));
                }
                if matches!(device, Device::ModbusRtuOverTcp(_)) && d.max_in_flight != 1 {
                    errors.push(err(
                        at("max_in_flight"),
                        "must be 1 on modbus_rtu_over_tcp: RTU frames carry no transaction id, so only one request may be in flight",
                    ));
                } else if !(1..=64).contains(&d.max_in_flight) {
                    errors.push(err(at("max_in_flight"), "must be within 1..=64"));
                }
            }
            Device::ModbusRtu(d) => {
                if d.serial_port.trim().is_empty() {
                    errors.push(err(at("serial_port"), "must not be empty"));
                }
                if !(300..=4_000_000).contains(&d.baud_rate) {
                    errors.push(err(at("baud_rate"), "must be within 300..=4000000"));
                }
                if !(7..=8).contains(&d.data_bits) {
                    errors.push(err(at("data_bits"), "must be 8 (Modbus RTU) or 7"));
                }
                if !(1..=2).contains(&d.stop_bits) {
                    errors.push(err(at("stop_bits"), "must be 1 or 2"));
                }
            }
        }
        if let Some(o) = device.modbus() {
            check_modbus_device(device, &o, &at, errors);
        }
    }
    check_links(config, origin, errors);
    names
}

/// Settings every Modbus device has.
fn check_modbus_device(
    device: &Device,
    o: &ModbusOptions,
    at: &dyn Fn(&str) -> String,
    errors: &mut Vec<ConfigError>,
) {
    if o.poll_interval_ms < 10 {
        errors.push(err(at("poll_interval_ms"), "must be at least 10"));
    }
    if !(1..=60_000).contains(&o.timeout_ms) {
        errors.push(err(at("timeout_ms"), "must be within 1..=60000"));
    }
    if device.comm_loss_after_secs().saturating_mul(1000) < o.poll_interval_ms {
        errors.push(err(
            at("comm_loss_after_secs"),
            "must be at least one poll interval, or every poll would look like a loss",
        ));
    }
    if !(1..=125).contains(&o.max_registers_per_request) {
        errors.push(err(
            at("max_registers_per_request"),
            "must be within 1..=125 (the Modbus limit)",
        ));
    }
    if o.address_base > 1 {
        errors.push(err(
            at("address_base"),
            "must be 0 (protocol addresses) or 1 (1-based register numbers)",
        ));
    }
    if o.frame_gap_ms > 1000 {
        errors.push(err(at("frame_gap_ms"), "must be within 0..=1000"));
    }
}

/// Devices that share a connection or bus must be told apart by unit id and agree on it.
fn check_links(config: &Config, origin: &Origin, errors: &mut Vec<ConfigError>) {
    let devices: Vec<(usize, &Device)> = origin
        .device_index
        .iter()
        .copied()
        .zip(&config.devices)
        .collect();
    for (n, &(i, device)) in devices.iter().enumerate() {
        let Some(o) = device.modbus() else { continue };
        for &(j, other) in &devices[..n] {
            let Some(p) = other.modbus() else { continue };
            let at = |field: &str| format!("devices[{i}].{field}");
            match (device, other) {
                (Device::ModbusRtu(a), Device::ModbusRtu(b)) if a.serial_port == b.serial_port => {
                    let line = |d: &super::model::ModbusRtuDevice| {
                        (d.baud_rate, d.parity, d.data_bits, d.stop_bits)
                    };
                    if line(a) != line(b) {
                        errors.push(err(
                            at("serial_port"),
                            format!(
                                "{:?} is also used by devices[{j}] with other line settings \
                                 (baud_rate, parity, data_bits, stop_bits must match on one bus)",
                                a.serial_port
                            ),
                        ));
                    }
                }
                (
                    Device::ModbusTcp(a) | Device::ModbusRtuOverTcp(a),
                    Device::ModbusTcp(b) | Device::ModbusRtuOverTcp(b),
                ) if a.host == b.host && a.port == b.port => {
                    if std::mem::discriminant(device) != std::mem::discriminant(other) {
                        errors.push(err(
                            at("protocol"),
                            format!(
                                "{}:{} is also used by devices[{j}] with the other framing \
                                 (modbus_tcp vs modbus_rtu_over_tcp)",
                                a.host, a.port
                            ),
                        ));
                    }
                }
                _ => continue,
            }
            if o.unit_id == p.unit_id {
                errors.push(err(
                    at("unit_id"),
                    format!(
                        "{} is already used by devices[{j}] on the same connection or bus",
                        o.unit_id
                    ),
                ));
            }
        }
    }
}

fn check_points(
    config: &Config,
    origin: &Origin,
    devices: &HashSet<&str>,
    errors: &mut Vec<ConfigError>,
) {
    let mut tags = HashSet::new();
    for (point, &i) in config.points.iter().zip(&origin.point_index) {
        let at = |field: &str| format!("points[{i}].{field}");
        if point.tag.trim().is_empty() {
            errors.push(err(at("tag"), "must not be empty"));
        } else if !tags.insert(point.tag.as_str()) {
            errors.push(err(
                at("tag"),
                format!("another point already has tag {:?}", point.tag),
            ));
        }
        if !devices.contains(point.device.as_str())
            && !origin.broken_devices.contains(&point.device)
        {
            errors.push(err(
                at("device"),
                format!("no device is named {:?}", point.device),
            ));
        }
        if point.kind.trim().is_empty()
            || !point
                .kind
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            errors.push(err(
                at("kind"),
                "must be a lowercase word such as toxic_gas, level or pressure",
            ));
        }
        if let Some([lo, hi]) = point.span
            && !(lo.is_finite() && hi.is_finite() && lo < hi)
        {
            errors.push(err(
                at("span"),
                format!("[{lo}, {hi}] must be finite with low < high"),
            ));
        }
        let device = config.devices.iter().find(|d| d.name() == point.device);
        super::validate_mqtt::check_point(point, device, &at, errors);
        if let Some(register) = &point.register {
            check_register(register, &|f| at(&format!("register.{f}")), errors);
        }
        if let (Some(device), Some(register)) = (device, &point.register)
            && let Some(o) = device.modbus()
        {
            check_modbus_point(point, register, device.name(), &o, &at, errors);
        }
        if let Some(limits) = &point.limits {
            check_limits(point, limits, &|f| at(&format!("limits.{f}")), errors);
        }
    }
}

/// What a point needs from its Modbus device: width, addressing, interval, span.
fn check_modbus_point(
    point: &Point,
    reg: &RegisterSpec,
    device: &str,
    o: &ModbusOptions,
    at: &dyn Fn(&str) -> String,
    errors: &mut Vec<ConfigError>,
) {
    let width = reg.data_type.registers();
    if matches!(reg.table, Table::Holding | Table::Input) && width > o.max_registers_per_request {
        errors.push(err(
            at("register.type"),
            format!(
                "needs {width} registers but device {device:?} allows {} per request",
                o.max_registers_per_request
            ),
        ));
    }
    if o.address_base == 1 {
        if reg.address == 0 {
            errors.push(err(
                at("register.address"),
                format!("device {device:?} numbers registers from 1 (address_base = 1)"),
            ));
        }
        if reg.status.as_ref().is_some_and(|s| s.address == 0) {
            errors.push(err(
                at("register.status.address"),
                format!("device {device:?} numbers registers from 1 (address_base = 1)"),
            ));
        }
    }
    if let Some(ms) = reg.interval_ms
        && (ms < o.poll_interval_ms || ms % o.poll_interval_ms.max(1) != 0)
    {
        errors.push(err(
            at("register.interval_ms"),
            format!(
                "must be a whole multiple of device {device:?}'s poll_interval_ms ({})",
                o.poll_interval_ms
            ),
        ));
    }
    if reg.signal == Signal::Ma4To20 && point.span.is_none() {
        errors.push(err(
            at("span"),
            "a 4-20ma signal is mapped onto the span: give span = [low, high]",
        ));
    }
}

fn check_register(reg: &RegisterSpec, at: &dyn Fn(&str) -> String, errors: &mut Vec<ConfigError>) {
    let is_bit_table = matches!(reg.table, Table::Coil | Table::DiscreteInput);
    if is_bit_table && reg.data_type != DataType::Bool {
        errors.push(err(
            at("type"),
            "coils and discrete inputs hold single bits: use type = \"bool\"",
        ));
    }
    if is_bit_table && reg.bit.is_some() {
        errors.push(err(
            at("bit"),
            "only applies to a bool read out of a holding or input register",
        ));
    }
    if !is_bit_table && reg.data_type == DataType::Bool && reg.bit.is_none() {
        errors.push(err(
            at("bit"),
            "a bool in a register needs the bit number (0..=15)",
        ));
    }
    if let Some(bit) = reg.bit
        && bit > 15
    {
        errors.push(err(
            at("bit"),
            format!("{bit} is not a bit of a 16-bit register (0..=15)"),
        ));
    }
    if !is_bit_table && u32::from(reg.address) + u32::from(reg.data_type.registers()) > 65_536 {
        errors.push(err(
            at("address"),
            "the value would run past register 65535",
        ));
    }
    if !reg.scale.is_finite() || reg.scale == 0.0 {
        errors.push(err(at("scale"), "must be a finite number other than 0"));
    }
    if !reg.offset.is_finite() {
        errors.push(err(at("offset"), "must be finite"));
    }
    if reg.signal == Signal::Ma4To20 && (is_bit_table || reg.data_type == DataType::Bool) {
        errors.push(err(
            at("signal"),
            "\"4-20ma\" needs a numeric register, not a bit",
        ));
    }
    if let Some(status) = &reg.status {
        if matches!(status.table, Table::Coil | Table::DiscreteInput) {
            errors.push(err(at("status.table"), "must be holding or input"));
        }
        for (name, bit) in [
            ("fault_bit", status.fault_bit),
            ("warmup_bit", status.warmup_bit),
            ("calibration_bit", status.calibration_bit),
        ] {
            if bit.is_some_and(|b| b > 15) {
                errors.push(err(at(&format!("status.{name}")), "must be within 0..=15"));
            }
        }
        if status.fault_bit.is_none()
            && status.warmup_bit.is_none()
            && status.calibration_bit.is_none()
        {
            errors.push(err(
                at("status"),
                "names no bit: set fault_bit, warmup_bit or calibration_bit",
            ));
        }
    }
}

fn check_limits(
    point: &Point,
    limits: &Limits,
    at: &dyn Fn(&str) -> String,
    errors: &mut Vec<ConfigError>,
) {
    if limits.levels.is_empty() {
        errors.push(err(at("levels"), "must name at least one level"));
    }
    let mut seen = HashSet::new();
    for (j, level) in limits.levels.iter().enumerate() {
        if !seen.insert(level.level) {
            errors.push(err(
                at(&format!("levels[{j}].level")),
                format!("{} appears twice", level.level.as_str()),
            ));
        }
        if !level.setpoint.is_finite() {
            errors.push(err(at(&format!("levels[{j}].setpoint")), "must be finite"));
        }
        if let Some([lo, hi]) = point.span
            && (level.setpoint < lo || level.setpoint > hi)
        {
            errors.push(err(
                at(&format!("levels[{j}].setpoint")),
                format!(
                    "{} is outside the span [{lo}, {hi}] and could never be reached",
                    level.setpoint
                ),
            ));
        }
    }
    let setpoint = |l: Level| {
        limits
            .levels
            .iter()
            .find(|x| x.level == l)
            .map(|x| x.setpoint)
    };
    let order = [Level::LowLow, Level::Low, Level::High, Level::HighHigh];
    let present: Vec<(Level, f64)> = order
        .iter()
        .filter_map(|&l| setpoint(l).map(|s| (l, s)))
        .collect();
    for pair in present.windows(2) {
        if pair[0].1 >= pair[1].1 {
            errors.push(err(
                at("levels"),
                format!(
                    "{} ({}) must be below {} ({})",
                    pair[0].0.as_str(),
                    pair[0].1,
                    pair[1].0.as_str(),
                    pair[1].1
                ),
            ));
        }
    }
    if !(limits.deadband.is_finite() && limits.deadband >= 0.0) {
        errors.push(err(at("deadband"), "must be a finite number >= 0"));
    }
    const HOUR_MS: u64 = 3_600_000;
    if limits.on_delay_ms > HOUR_MS {
        errors.push(err(at("on_delay_ms"), "must be at most one hour"));
    }
    if limits.off_delay_ms > HOUR_MS {
        errors.push(err(at("off_delay_ms"), "must be at most one hour"));
    }
}

fn check_notify(config: &Config, errors: &mut Vec<ConfigError>) {
    if let Some(mqtt) = &config.notify.mqtt {
        super::validate_mqtt::check_notify(mqtt, errors);
    }
    let mut names = HashSet::new();
    for (i, hook) in config.notify.webhook.iter().enumerate() {
        let at = |field: &str| format!("notify.webhook[{i}].{field}");
        if hook.name.is_empty() || !names.insert(hook.name.as_str()) {
            errors.push(err(at("name"), "must be non-empty and unique"));
        }
        match reqwest::Url::parse(&hook.url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {}
            Ok(url) => errors.push(err(
                at("url"),
                format!("scheme {:?} is not http or https", url.scheme()),
            )),
            Err(e) => errors.push(err(at("url"), format!("{:?} is not a URL: {e}", hook.url))),
        }
        if !(1..=120_000).contains(&hook.timeout_ms) {
            errors.push(err(at("timeout_ms"), "must be within 1..=120000"));
        }
        if hook.max_backoff_secs == 0 {
            errors.push(err(at("max_backoff_secs"), "must be at least 1"));
        }
    }
}

fn check_upstream(config: &Config, errors: &mut Vec<ConfigError>) {
    use super::model::InfluxApi;
    let Some(influx) = &config.upstream.influxdb else {
        return;
    };
    let at = |field: &str| format!("upstream.influxdb.{field}");
    match reqwest::Url::parse(&influx.url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => {}
        Ok(url) => errors.push(err(
            at("url"),
            format!("scheme {:?} is not http or https", url.scheme()),
        )),
        Err(e) => errors.push(err(
            at("url"),
            format!("{:?} is not a URL: {e}", influx.url),
        )),
    }
    match influx.api {
        InfluxApi::V2 => {
            if influx.org.trim().is_empty() {
                errors.push(err(at("org"), "must not be empty for api = \"v2\""));
            }
            if influx.bucket.trim().is_empty() {
                errors.push(err(at("bucket"), "must not be empty for api = \"v2\""));
            }
        }
        InfluxApi::V1 => {
            if influx.database.trim().is_empty() {
                errors.push(err(at("database"), "must not be empty for api = \"v1\""));
            }
        }
    }
    if !(1..=100_000).contains(&influx.batch_max_points) {
        errors.push(err(at("batch_max_points"), "must be within 1..=100000"));
    }
    if !(1..=600_000).contains(&influx.batch_max_wait_ms) {
        errors.push(err(at("batch_max_wait_ms"), "must be within 1..=600000"));
    }
    if !(1..=300_000).contains(&influx.timeout_ms) {
        errors.push(err(at("timeout_ms"), "must be within 1..=300000"));
    }
    if influx.max_backoff_secs == 0 {
        errors.push(err(at("max_backoff_secs"), "must be at least 1"));
    }
}
