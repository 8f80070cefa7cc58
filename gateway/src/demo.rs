//! `sentinel demo`: the simulated plant in the binary, watched by Sentinel on its embedded
//! defaults. No external service is needed.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use drivers::sim::plant::DemoPlant;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, Device, EnvSource};
use crate::run::{RunOptions, run};

/// The demo plant's configuration: a real, commented file, also shipped in deploy/examples/.
pub const DEMO_CONFIG: &str = include_str!("../../deploy/examples/demo.toml");

pub struct DemoOptions {
    pub listen: String,
    pub data_dir: PathBuf,
    /// Scenario time compression (1 = real time).
    pub speed: f64,
    pub ready_file: Option<PathBuf>,
}

/// The demo configuration with the simulated devices' addresses filled in.
pub fn demo_config(
    options: &DemoOptions,
    devices: &[(&str, SocketAddr)],
) -> anyhow::Result<Config> {
    let mut config =
        config::load_str(DEMO_CONFIG, EnvSource::Process).map_err(|e| anyhow::anyhow!("{e}"))?;
    config.http.listen = options.listen.clone();
    config.store.data_dir = options.data_dir.clone();
    for device in &mut config.devices {
        let Device::ModbusTcp(d) = device else {
            continue;
        };
        let (_, addr) = devices
            .iter()
            .find(|(name, _)| *name == d.name)
            .with_context(|| format!("the simulated plant has no device {:?}", d.name))?;
        d.host = addr.ip().to_string();
        d.port = addr.port();
    }
    Ok(config)
}

pub async fn demo(options: DemoOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    let plant = DemoPlant::start_at_speed(options.speed).context("starting the simulated plant")?;
    let config = demo_config(&options, &plant.devices())?;
    let result = run(
        config,
        RunOptions {
            ready_file: options.ready_file.clone(),
            config_path: None,
            announce: Some(|addr| {
                println!();
                println!("  Sentinel demo plant is running.");
                println!("  Web console:  http://{addr}/");
                println!("  Points:       http://{addr}/api/v1/points");
                println!("  Alarms:       http://{addr}/api/v1/alarms");
                println!("  Metrics:      http://{addr}/metrics");
                println!("  An ammonia leak starts in a few seconds; other scenarios follow every minute.");
                println!("  Press Ctrl-C to stop.");
                println!();
            }),
        },
        shutdown,
    )
    .await;
    plant.stop();
    result
}
