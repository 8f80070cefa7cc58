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
