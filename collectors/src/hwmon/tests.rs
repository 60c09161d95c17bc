//! Tests of the `hwmon` family.
