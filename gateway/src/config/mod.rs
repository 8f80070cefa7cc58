//! Configuration: the model the user writes, how it is loaded, and how it is checked.

mod load;
mod model;
mod validate;

pub use load::{ConfigError, ConfigErrors, EnvSource, load_file, load_str};
pub use model::*;

#[cfg(test)]
mod tests;
