//! Tests of the `rapl` family.
