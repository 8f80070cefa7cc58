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

/// The longest span any duration setting can mean (ten years, in milliseconds).
const LONGEST_MS: u64 = 3_653 * 86_400_000;

/// A duration setting in milliseconds (`value` of a unit worth `ms_per_unit`), capped at ten
/// years: no setting means more, and the engine adds these to times, where a larger value
/// (or one wrapped negative by `as`) would overflow or never expire.
pub fn to_ms(value: u64, ms_per_unit: u64) -> alert_rules::Millis {
    value.saturating_mul(ms_per_unit).min(LONGEST_MS) as alert_rules::Millis
}
