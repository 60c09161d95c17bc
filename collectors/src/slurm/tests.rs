//! Tests of the `slurm` family.
