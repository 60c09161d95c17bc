//! Tests of the `ipmi` family.
