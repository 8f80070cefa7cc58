//! Configuration: the model the user writes, how it is loaded, and how it is checked.

mod load;
mod model;
mod people;
mod rules;
mod validate;
mod validate_mqtt;

pub use load::{ConfigError, ConfigErrors, EnvSource, load_file, load_str};
pub use model::*;
pub use people::*;
pub use rules::*;

#[cfg(test)]
mod tests;
