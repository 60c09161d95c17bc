//! Tests of the `nvidia` family.
