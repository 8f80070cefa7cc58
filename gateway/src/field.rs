//! The field side of a running gateway: the poll and subscription tasks of one configuration,
//! started together and stopped together (at shutdown, and around a configuration reload).

use std::sync::Arc;

use drivers::FieldEvent;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::plant::Plant;

pub struct FieldDrivers {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl FieldDrivers {
    /// Start every driver of the plant, sending into `field`.
    pub fn start(
        plant: &Plant,
        field: &mpsc::Sender<FieldEvent>,
        metrics: &Metrics,
    ) -> FieldDrivers {
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        let mut devices = metrics
            .devices
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        devices.clear();
        // One task per link: devices that share an endpoint (a TCP gateway, a serial bus) share
        // its connection, so the line sees one request at a time.
        for link in drivers::modbus::group_links(plant.modbus_devices()) {
            let link_metrics: Vec<_> = link
                .units
                .iter()
                .map(|settings| {
                    let device_metrics = Arc::new(drivers::modbus::DeviceMetrics::default());
                    devices.push((settings.name.clone(), Arc::clone(&device_metrics)));
                    device_metrics
                })
                .collect();
            tasks.push(drivers::modbus::spawn_link_supervised(
                link,
                field.clone(),
                link_metrics,
                stop.clone(),
            ));
        }
        drop(devices);
        let mut mqtt = metrics
            .mqtt
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        mqtt.clear();
        for settings in plant.mqtt_devices() {
            let mqtt_metrics = Arc::new(drivers::mqtt::MqttMetrics::default());
            mqtt.push((settings.name.clone(), Arc::clone(&mqtt_metrics)));
            tasks.push(drivers::mqtt::spawn(
                settings,
                field.clone(),
                mqtt_metrics,
                stop.clone(),
            ));
        }
        FieldDrivers { stop, tasks }
    }

    /// Stop every driver and wait for them; what they already sent stays in the channel.
    pub async fn stop(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
