//! Tests of the `jetson` family.
