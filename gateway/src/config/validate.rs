//! The second pass: checks that need more than one field, collecting every error with its path.

use std::collections::HashSet;
use std::net::SocketAddr;

use alert_rules::Level;
use drivers::modbus::{DataType, RegisterSpec, Table};

use super::load::{ConfigError, err};
use super::model::{Config, Device, Limits, Point};

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
    if config.engine.channel_capacity < 16 {
        errors.push(err("engine.channel_capacity", "must be at least 16"));
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
            Device::ModbusTcp(d) => {
                if d.host.trim().is_empty() {
                    errors.push(err(at("host"), "must not be empty"));
                }
                if d.port == 0 {
                    errors.push(err(at("port"), "must not be 0"));
                }
                if d.poll_interval_ms < 10 {
                    errors.push(err(at("poll_interval_ms"), "must be at least 10"));
                }
                if !(1..=60_000).contains(&d.timeout_ms) {
                    errors.push(err(at("timeout_ms"), "must be within 1..=60000"));
                }
                if d.comm_loss_after_secs.saturating_mul(1000) < d.poll_interval_ms {
                    errors.push(err(
                        at("comm_loss_after_secs"),
                        "must be at least one poll interval, or every poll would look like a loss",
                    ));
                }
                if !(1..=125).contains(&d.max_registers_per_request) {
                    errors.push(err(
                        at("max_registers_per_request"),
                        "must be within 1..=125 (the Modbus limit)",
                    ));
                }
            }
        }
    }
    names
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
        check_register(&point.register, &|f| at(&format!("register.{f}")), errors);
        if let Some(device) = config.devices.iter().find(|d| d.name() == point.device) {
            let Device::ModbusTcp(d) = device;
            let width = point.register.data_type.registers();
            if matches!(point.register.table, Table::Holding | Table::Input)
                && width > d.max_registers_per_request
            {
                errors.push(err(
                    at("register.type"),
                    format!(
                        "needs {width} registers but device {:?} allows {} per request",
                        d.name, d.max_registers_per_request
                    ),
                ));
            }
        }
        if let Some(limits) = &point.limits {
            check_limits(point, limits, &|f| at(&format!("limits.{f}")), errors);
        }
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
