//! The configuration loader, as `sentinel check` and `sentinel run` use it: TOML text → parsed
//! and validated `Config` → the plant (points, devices, rulebook, engine configuration) → each
//! Modbus device's read plan and its explanation → the alarm engine built from the rulebook.
//! Invariants: no input panics anywhere along the way; whatever validation accepts can be
//! built and run. Environment overrides are left out (an empty map), so a run is reproducible.
//!
//! Input: the configuration file's text. Seeds: the example configurations in deploy/examples.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use sentinel_gateway::config::{EnvSource, load_str};
use sentinel_gateway::plant::Plant;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = load_str(text, EnvSource::Map(HashMap::new())) else {
        return;
    };
    let plant = Plant::new(&config);
    for settings in plant.modbus_devices() {
        let plan = drivers::modbus::ReadPlan::for_device(&settings);
        let _ = plan.explain(&|id| format!("#{}", id.0));
    }
    let _ = plant.mqtt_devices();
    let mut engine = alert_rules::Engine::new(plant.rulebook().engine.clone(), 1);
    engine.tick(0, &mut Vec::new());
});
