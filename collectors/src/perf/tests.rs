//! Tests of the `perf` family.
