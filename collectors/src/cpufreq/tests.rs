//! Tests of the `cpufreq` family.
