//! Helpers of the API tests: a small site whose only device is never there (so a
//! communication-loss alarm is raised within a second, with no simulator needed), and
//! requests that return status and JSON together.

use std::time::Duration;

use crate::{Sentinel, free_port, wait_for};

/// Tokens of the auth tests, by role.
pub const VIEWER: &str = "viewer-token-0123456789";
pub const OPERATOR: &str = "operator-token-0123456789";
pub const ADMIN: &str = "admin-token-0123456789";

/// A site with one absent Modbus device (two points) and two risk units. `extra` is appended
/// (e.g. an `[http]` section).
pub fn config(extra: &str) -> String {
    let port = free_port();
    format!(
        r#"
[site]
id = "api"
name = "API test site"

[store]
data_dir = "{{data_dir}}"
flush_interval_ms = 50

[engine]
tick_ms = 50

[[devices]]
name = "plc1"
protocol = "modbus_tcp"
host = "127.0.0.1"
port = {port}
poll_interval_ms = 200
timeout_ms = 200
comm_loss_after_secs = 1
comm_loss_priority = "critical"

[[points]]
tag = "LT-1"
device = "plc1"
kind = "level"
unit = "%"
area = "tank-farm"
span = [0.0, 100.0]
register = {{ table = "holding", address = 10 }}

[[points]]
tag = "TT-2"
device = "plc1"
kind = "temperature"
unit = "°C"
area = "boiler"
register = {{ table = "holding", address = 11 }}

[[risk_units]]
id = "tank"
name = "Tank farm"
colour = "blue"
areas = ["tank-farm"]
devices = ["plc1"]
x_pct = 30.0
y_pct = 40.0

[[risk_units]]
id = "boiler"
name = "Boiler house"
colour = "yellow"
areas = ["boiler"]
latitude = 31.2
longitude = 121.4
{extra}
"#
    )
}

/// The environment giving one token per role.
pub fn token_env() -> String {
    format!("wall:viewer:{VIEWER};ops:operator:{OPERATOR};boss:admin:{ADMIN}")
}

/// Status and JSON body (null when the body is not JSON).
pub async fn call(
    s: &Sentinel,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut req = s
        .http
        .request(method.parse().unwrap_or(reqwest::Method::GET), s.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_owned());
    }
    let res = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = res.status().as_u16();
    let text = res.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// The id of the communication-loss alarm of `plc1`, once raised.
pub async fn comm_loss_alarm(s: &Sentinel, token: Option<&str>) -> u64 {
    wait_for(
        "the comm-loss alarm of plc1",
        Duration::from_secs(15),
        || async {
            let (_, alarms) = call(s, "GET", "/api/v1/alarms", token, None).await;
            alarms.as_array().and_then(|a| {
                a.iter()
                    .find(|a| a["kind"] == "comm_loss" && a["point"] == "plc1")
                    .and_then(|a| a["alarm_id"].as_u64())
            })
        },
    )
    .await
}
