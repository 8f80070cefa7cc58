//! The hub's configuration file (`sentinel hub -c FILE`): the regional broker, the sites it
//! expects, and where it serves the regional map. Same rules as the gateway's file: unknown
//! keys are errors, `SENTINEL__` environment variables override, every error has its path.

use std::path::Path;

use serde::Deserialize;

use crate::config::{ConfigError, ConfigErrors};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    pub hub: HubIdentity,
    pub broker: drivers::mqtt::BrokerConfig,
    /// Where the gateways publish: `{topic_prefix}/{site}/status` and `.../alarms`.
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    /// MQTT shared-subscription group for alarm events: hub instances in one group split them.
    /// Empty (the default): a plain persistent subscription, which every broker queues while
    /// the hub is away. Mosquitto does not queue shared-subscription messages for a group with
    /// no member connected, so set a group only with a broker that does (EMQX, HiveMQ), or with
    /// several hubs always up.
    #[serde(default = "default_group")]
    pub share_group: String,
    /// A site that sends nothing for this long turns grey and raises an offline alarm.
    #[serde(default = "default_offline_after_secs")]
    pub offline_after_secs: u64,
    #[serde(default)]
    pub http: crate::config::Http,
    /// The regional time-series store (InfluxDB v2 write API; VictoriaMetrics accepts it too).
    /// Absent: the hub writes no time series.
    #[serde(default)]
    pub tsdb: Option<Tsdb>,
    /// Sites the region expects, with what the map needs. Sites not listed are shown too,
    /// as soon as they report.
    #[serde(default)]
    pub sites: Vec<SiteMeta>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubIdentity {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SiteMeta {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// e.g. `hazardous_chemicals`, `ammonia_refrigeration`, `molten_metal`, `workshop`.
    #[serde(default)]
    pub sector: String,
    /// Major hazard installation grade 1–4 (GB 18218); none when not a major hazard.
    #[serde(default)]
    pub major_hazard_grade: Option<u8>,
    #[serde(default)]
    pub latitude: Option<f64>,
    #[serde(default)]
    pub longitude: Option<f64>,
}

/// Where and how the hub writes site statuses, alarm events and offline alarms
/// (docs/scale.md, "Regional time series").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tsdb {
    /// Base URL, e.g. `http://influxdb:8086` or VictoriaMetrics' `http://vm:8428`.
    pub url: String,
    pub org: String,
    pub bucket: String,
    /// API token, best given as `SENTINEL__TSDB__TOKEN` (as a gateway's sink token). Never logged.
    #[serde(default)]
    pub token: Option<crate::config::Secret>,
    /// Or: the name of the environment variable that holds the token (like the broker's
    /// `password_env`). Not both.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Changes (status, alarm events, offline alarms) are written at most this long after
    /// they arrive.
    #[serde(default = "default_tsdb_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// Every site's status is written at least this often, changed or not.
    #[serde(default = "default_tsdb_status_interval_secs")]
    pub status_interval_secs: u64,
    /// Lines per write request.
    #[serde(default = "default_tsdb_batch_max_lines")]
    pub batch_max_lines: usize,
    /// Lines waiting for the store are held in memory up to this size; past it the oldest are
    /// dropped and counted (`sentinel_hub_tsdb_lines_dropped_total{reason="queue_full"}`).
    #[serde(default = "default_tsdb_queue_max_bytes")]
    pub queue_max_bytes: usize,
    /// Compress request bodies with gzip.
    #[serde(default = "default_true")]
    pub gzip: bool,
    /// One write request is abandoned (and retried) after this long.
    #[serde(default = "default_tsdb_timeout_ms")]
    pub timeout_ms: u64,
    /// Longest wait between two attempts after a failed write.
    #[serde(default = "default_tsdb_max_backoff_secs")]
    pub max_backoff_secs: u64,
}

impl Tsdb {
    /// The token, from `token` or the variable `token_env` names.
    pub fn token(&self) -> Option<String> {
        if let Some(t) = &self.token {
            return Some(t.expose().to_owned());
        }
        let name = self.token_env.as_deref()?;
        std::env::var(name).ok()
    }

    /// As the gateway's sink configuration, to share its writer code.
    pub fn as_influx(&self) -> crate::config::InfluxDb {
        crate::config::InfluxDb {
            url: self.url.clone(),
            api: crate::config::InfluxApi::V2,
            org: self.org.clone(),
            bucket: self.bucket.clone(),
            database: String::new(),
            token: None,
            batch_max_points: self.batch_max_lines,
            batch_max_wait_ms: self.flush_interval_ms,
            gzip: self.gzip,
            timeout_ms: self.timeout_ms,
            max_backoff_secs: self.max_backoff_secs,
        }
    }

    fn errors(&self) -> Vec<(&'static str, String)> {
        let mut e = Vec::new();
        if !(self.url.starts_with("http://") || self.url.starts_with("https://"))
            || reqwest::Url::parse(&self.url).is_err()
        {
            e.push(("url", format!("{:?} is not an http(s) URL", self.url)));
        }
        if self.org.is_empty() {
            e.push(("org", "must not be empty".to_owned()));
        }
        if self.bucket.is_empty() {
            e.push(("bucket", "must not be empty".to_owned()));
        }
        if self.token.is_some() && self.token_env.is_some() {
            e.push(("token_env", "give token or token_env, not both".to_owned()));
        }
        if let Some(name) = &self.token_env
            && std::env::var_os(name).is_none()
        {
            e.push(("token_env", format!("the variable {name} is not set")));
        }
        if self.flush_interval_ms < 100 {
            e.push(("flush_interval_ms", "must be at least 100".to_owned()));
        }
        if self.status_interval_secs == 0 {
            e.push(("status_interval_secs", "must be at least 1".to_owned()));
        }
        if self.batch_max_lines == 0 {
            e.push(("batch_max_lines", "must be at least 1".to_owned()));
        }
        if self.queue_max_bytes < 65_536 {
            e.push(("queue_max_bytes", "must be at least 65536".to_owned()));
        }
        if self.timeout_ms < 100 {
            e.push(("timeout_ms", "must be at least 100".to_owned()));
        }
        if self.max_backoff_secs == 0 {
            e.push(("max_backoff_secs", "must be at least 1".to_owned()));
        }
        e
    }
}

const fn default_tsdb_flush_interval_ms() -> u64 {
    1000
}
const fn default_tsdb_status_interval_secs() -> u64 {
    60
}
const fn default_tsdb_batch_max_lines() -> usize {
    5000
}
const fn default_tsdb_queue_max_bytes() -> usize {
    16 * 1024 * 1024
}
const fn default_true() -> bool {
    true
}
const fn default_tsdb_timeout_ms() -> u64 {
    10_000
}
const fn default_tsdb_max_backoff_secs() -> u64 {
    60
}

fn default_prefix() -> String {
    "sentinel/v1".to_owned()
}
fn default_group() -> String {
    String::new()
}
const fn default_offline_after_secs() -> u64 {
    90
}

pub fn load(path: &Path) -> Result<HubConfig, ConfigErrors> {
    let one = |path: &str, message: String| {
        ConfigErrors(vec![ConfigError {
            path: path.to_owned(),
            message,
        }])
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| one("", format!("cannot read {}: {e}", path.display())))?;
    let merged = config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix("SENTINEL")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        )
        .build()
        .map_err(|e| one("", e.to_string()))?;
    let value: serde_json::Value = merged
        .try_deserialize()
        .map_err(|e| one("", e.to_string()))?;
    let hub: HubConfig = serde_path_to_error::deserialize(value).map_err(|e| {
        let p = e.path().to_string();
        one(if p == "." { "" } else { &p }, e.into_inner().to_string())
    })?;
    let mut errors = Vec::new();
    for (field, message) in hub.broker.errors() {
        errors.push(ConfigError {
            path: format!("broker.{field}"),
            message,
        });
    }
    if hub.offline_after_secs == 0 {
        errors.push(ConfigError {
            path: "offline_after_secs".into(),
            message: "must be at least 1".into(),
        });
    }
    if hub.http.listen.parse::<std::net::SocketAddr>().is_err() {
        errors.push(ConfigError {
            path: "http.listen".into(),
            message: format!("{:?} is not an address", hub.http.listen),
        });
    }
    if let Some(tsdb) = &hub.tsdb {
        for (field, message) in tsdb.errors() {
            errors.push(ConfigError {
                path: format!("tsdb.{field}"),
                message,
            });
        }
    }
    let mut ids = std::collections::HashSet::new();
    for (i, s) in hub.sites.iter().enumerate() {
        if s.id.is_empty() || !ids.insert(s.id.as_str()) {
            errors.push(ConfigError {
                path: format!("sites[{i}].id"),
                message: "must be non-empty and unique".into(),
            });
        }
        if s.major_hazard_grade.is_some_and(|g| !(1..=4).contains(&g)) {
            errors.push(ConfigError {
                path: format!("sites[{i}].major_hazard_grade"),
                message: "must be 1, 2, 3 or 4".into(),
            });
        }
    }
    if errors.is_empty() {
        Ok(hub)
    } else {
        Err(ConfigErrors(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[hub]
id = "r"
name = "Region"

[broker]
host = "127.0.0.1"
"#;

    fn load_text(text: &str) -> Result<HubConfig, ConfigErrors> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        std::fs::write(&path, text).unwrap();
        load(&path)
    }

    #[test]
    fn tsdb_is_optional_and_has_defaults() {
        assert!(load_text(BASE).unwrap().tsdb.is_none());
        let hub = load_text(&format!(
            "{BASE}\n[tsdb]\nurl = \"http://127.0.0.1:8428\"\norg = \"o\"\nbucket = \"b\"\n"
        ))
        .unwrap();
        let tsdb = hub.tsdb.unwrap();
        assert_eq!(tsdb.status_interval_secs, 60);
        assert_eq!(tsdb.queue_max_bytes, 16 * 1024 * 1024);
        assert!(tsdb.token().is_none());
        assert_eq!(
            crate::sink::influx::write_url(&tsdb.as_influx())
                .unwrap()
                .as_str(),
            "http://127.0.0.1:8428/api/v2/write?org=o&bucket=b&precision=ms"
        );
    }

    #[test]
    fn tsdb_errors_name_their_fields() {
        let errors = load_text(&format!(
            "{BASE}\n[tsdb]\nurl = \"ftp://x\"\norg = \"\"\nbucket = \"b\"\nbatch_max_lines = 0\nqueue_max_bytes = 10\ntoken_env = \"SENTINEL_TEST_NO_SUCH_VARIABLE_FOR_HUB\"\n"
        ))
        .unwrap_err();
        let paths: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
        for want in [
            "tsdb.url",
            "tsdb.org",
            "tsdb.batch_max_lines",
            "tsdb.queue_max_bytes",
            "tsdb.token_env",
        ] {
            assert!(paths.contains(&want), "{want} missing from {paths:?}");
        }
        let misspelt = load_text(&format!(
            "{BASE}\n[tsdb]\nurl = \"http://x\"\norg = \"o\"\nbucket = \"b\"\nflush_interval = 5\n"
        ))
        .unwrap_err();
        assert!(
            misspelt
                .0
                .iter()
                .any(|e| e.message.contains("flush_interval")),
            "{misspelt:?}"
        );
    }
}
