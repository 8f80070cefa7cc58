//! Simulated field devices: [`SimDevice`], an in-process Modbus TCP slave for tests and
//! benchmarks, and [`DemoPlant`], the four-device plant that `sentinel demo` polls.

pub mod device;
pub mod plant;

pub use device::{SimDevice, SimError, TABLE_SIZE, WordOrder, f32_to_words};
pub use plant::{DemoPlant, Scenario};
