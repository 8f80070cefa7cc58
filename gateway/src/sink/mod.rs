//! Upstream sinks: forward the readings kept in the embedded store to a time-series database.
//!
//! A sink never holds readings of its own. It remembers, in the store's `sink_cursor` table,
//! the id of the last reading the upstream accepted, reads forward from there in batches and
//! moves the cursor only after a 2xx. So a restart, an outage or a crash resumes exactly where
//! delivery stopped: nothing is skipped, and only the batch in flight at a crash can be sent
//! twice (same series and timestamp, which InfluxDB overwrites).

mod db;
pub mod influx;
pub mod line;

#[cfg(test)]
mod config_tests {
    use std::collections::HashMap;

    use crate::config::{EnvSource, InfluxApi, load_str};

    const BASE: &str = r#"
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

    fn env(pairs: &[(&str, &str)]) -> EnvSource {
        EnvSource::Map(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<HashMap<_, _>>(),
        )
    }

    #[test]
    fn token_comes_from_the_environment_and_is_never_printed() {
        let text = format!(
            "{BASE}\n[upstream.influxdb]\nurl = \"http://127.0.0.1:8086\"\norg = \"o\"\nbucket = \"b\"\n"
        );
        let config = load_str(
            &text,
            env(&[("SENTINEL__UPSTREAM__INFLUXDB__TOKEN", "s3cret-token")]),
        )
        .unwrap();
        let influx = config.upstream.influxdb.as_ref().unwrap();
        assert_eq!(influx.token.as_ref().unwrap().expose(), "s3cret-token");
        assert_eq!(influx.api, InfluxApi::V2);
        assert_eq!(influx.batch_max_points, 5000);
        assert!(influx.gzip);
        assert!(!format!("{config:?}").contains("s3cret"));
        assert_eq!(config.store.disk_budget_mb, 4096);
    }

    #[test]
    fn every_error_is_reported_with_its_path() {
        let text = format!(
            "{BASE}\n[store]\ndisk_budget_mb = 0\n\n[upstream.influxdb]\nurl = \"ftp://x\"\napi = \"v1\"\nbatch_max_points = 0\nmax_backoff_secs = 0\n"
        );
        let errors = load_str(&text, env(&[])).unwrap_err();
        let paths: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
        for want in [
            "store.disk_budget_mb",
            "upstream.influxdb.url",
            "upstream.influxdb.database",
            "upstream.influxdb.batch_max_points",
            "upstream.influxdb.max_backoff_secs",
        ] {
            assert!(paths.contains(&want), "{want} missing from {paths:?}");
        }
        let misspelt = format!(
            "{BASE}\n[upstream.influxdb]\nurl = \"http://x\"\norg = \"o\"\nbucket = \"b\"\nbatch_max_point = 5\n"
        );
        let errors = load_str(&misspelt, env(&[])).unwrap_err();
        assert!(
            errors
                .0
                .iter()
                .any(|e| e.message.contains("batch_max_point")),
            "{errors:?}"
        );
    }
}
