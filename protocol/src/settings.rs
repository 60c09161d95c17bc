//! Configuration values checked once, when the configuration is loaded: each section
//! implements [`Validate`], and a value out of its range is one [`InvalidSetting`] that
//! names the key and what it allows. Checked there, a value never reaches the code that
//! would fail on it at run time (`Duration::from_secs_f64` panics on a negative or NaN
//! number of seconds). Sections holding secrets show them in `Debug` through [`redacted`].

use std::fmt::Display;
use std::ops::RangeInclusive;

use snafu::Snafu;

/// A configuration value outside what its key allows.
#[derive(Debug, Clone, PartialEq, Eq, Snafu)]
#[snafu(display("{key} = {value}: allowed {allowed}"))]
pub struct InvalidSetting {
    /// The key, dotted from the top of the configuration once the section is known
    /// (`api.query_timeout_secs`).
    pub key: String,
    /// The value as configured.
    pub value: String,
    /// What the key allows, e.g. `from 0.001 to 86400`.
    pub allowed: String,
}

impl InvalidSetting {
    /// The same, its key inside `section` (`query_timeout_secs` → `api.query_timeout_secs`).
    pub fn in_section(mut self, section: &str) -> Self {
        self.key = format!("{section}.{}", self.key);
        self
    }
}

/// A configuration section that checks its own values.
pub trait Validate {
    /// The first value out of its range, its key relative to the section.
    fn validate(&self) -> Result<(), InvalidSetting>;
}

/// A secret (password, key) as a `Debug` impl shows it: whether it is set, never what it is.
pub fn redacted(secret: &str) -> Option<&'static str> {
    (!secret.is_empty()).then_some("…")
}

/// `value` within `allowed`: NaN never is, nor is an infinity unless `allowed` holds one.
pub fn within<T: PartialOrd + Display>(
    key: &str,
    value: T,
    allowed: RangeInclusive<T>,
) -> Result<(), InvalidSetting> {
    if allowed.contains(&value) {
        return Ok(());
    }
    Err(InvalidSetting {
        key: key.to_owned(),
        value: value.to_string(),
        allowed: format!("from {} to {}", allowed.start(), allowed.end()),
    })
}

/// `value` at least `min` (a count or size that must not be zero).
pub fn at_least<T: PartialOrd + Display>(
    key: &str,
    value: T,
    min: T,
) -> Result<(), InvalidSetting> {
    if value >= min {
        return Ok(());
    }
    Err(InvalidSetting {
        key: key.to_owned(),
        value: value.to_string(),
        allowed: format!("{min} or more"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_key_and_the_range() {
        assert_eq!(within("timeout_secs", 1.0, 0.001..=60.0), Ok(()));
        let error = within("timeout_secs", -1.0, 0.001..=60.0)
            .unwrap_err()
            .in_section("api");
        assert_eq!(
            error.to_string(),
            "api.timeout_secs = -1: allowed from 0.001 to 60"
        );
        assert!(within("t", f64::NAN, 0.0..=1.0).is_err());
        assert!(within("t", f64::INFINITY, 0.0..=f64::MAX).is_err());
        assert_eq!(
            at_least("rows", 0usize, 1).unwrap_err().to_string(),
            "rows = 0: allowed 1 or more"
        );
        assert!(within("qos", 2u8, 0..=1).is_err());
    }
}
