//! Tests of the `thermal` family.
