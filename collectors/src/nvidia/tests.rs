//! The `nvidia` family's sampling through a fake NVML (two GPUs: a data-center board with
//! ECC, a consumer board without), and the reason given when NVML cannot be loaded.

use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::testutil::{assert_close, tags, value};

/// What the fake answers for GPU 0; GPU 1 has no ECC and no power reading.
struct FakeNvml {
    calls: AtomicU32,
}

impl Nvml for FakeNvml {
    fn device_count(&self) -> Result<u32, NvmlError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(2)
    }
    fn utilization(&self, index: u32) -> Result<(u32, u32), NvmlError> {
        Ok(if index == 0 { (87, 41) } else { (3, 0) })
    }
    fn memory(&self, _index: u32) -> Result<Memory, NvmlError> {
        Ok(Memory {
            total: 42_949_672_960,
            free: 40_000_000_000,
            used: 2_949_672_960,
        })
    }
    fn temperature_c(&self, index: u32) -> Result<u32, NvmlError> {
        Ok(60 + index)
    }
    fn power_mw(&self, index: u32) -> Result<u32, NvmlError> {
        if index == 0 {
            Ok(251_370)
        } else {
            Err(NvmlError(NVML_ERROR_NOT_SUPPORTED))
        }
    }
    fn clock_mhz(&self, _index: u32, clock: Clock) -> Result<u32, NvmlError> {
        Ok(match clock {
            Clock::Graphics => 1410,
            Clock::Sm => 1410,
            Clock::Mem => 1215,
        })
    }
    fn throttle_reasons(&self, index: u32) -> Result<u64, NvmlError> {
        // GPU 0: software power cap and hardware thermal slowdown.
        Ok(if index == 0 {
            THROTTLE_SW_POWER_CAP | THROTTLE_HW_THERMAL
        } else {
            0x1
        })
    }
    fn ecc_errors(&self, index: u32, uncorrected: bool) -> Result<u64, NvmlError> {
        match (index, uncorrected) {
            (0, false) => Ok(12),
            (0, true) => Ok(0),
            // A GPU fallen off the bus: logged, not fatal.
            (_, true) => Err(NvmlError(15)),
            _ => Err(NvmlError(NVML_ERROR_NOT_SUPPORTED)),
        }
    }
}

#[test]
fn samples_per_gpu_from_a_fake_nvml() {
    let mut collector = NvidiaCollector::new(
        FakeNvml {
            calls: AtomicU32::new(0),
        },
        &tags(),
    );
    let mut out = Vec::new();
    collector.collect(1_700_000_000_000_000_000, &mut out);
    let gpu0 = [("gpu", "0")];
    let gpu1 = [("gpu", "1")];
    assert_close(value(&out, "gpu_util", &gpu0), 87.0);
    assert_close(value(&out, "mem_util", &gpu0), 41.0);
    assert_close(value(&out, "mem_total_bytes", &gpu0), 42_949_672_960.0);
    assert_close(value(&out, "mem_used_bytes", &gpu1), 2_949_672_960.0);
    assert_close(value(&out, "mem_free_bytes", &gpu1), 40_000_000_000.0);
    assert_close(value(&out, "temp_c", &gpu1), 61.0);
    assert_close(value(&out, "power_w", &gpu0), 251.37);
    assert_eq!(value(&out, "power_w", &gpu1), None);
    assert_close(value(&out, "clock_sm_hz", &gpu0), 1.41e9);
    assert_close(value(&out, "clock_mem_hz", &gpu0), 1.215e9);
    assert_close(value(&out, "throttle_reasons", &gpu0), 68.0);
    assert_close(value(&out, "throttle_power", &gpu0), 1.0);
    assert_close(value(&out, "throttle_thermal", &gpu0), 1.0);
    assert_close(value(&out, "throttle_hw_slowdown", &gpu0), 0.0);
    assert_close(value(&out, "throttle_power", &gpu1), 0.0);
    assert_close(value(&out, "ecc_corrected_total", &gpu0), 12.0);
    assert_close(value(&out, "ecc_uncorrected_total", &gpu0), 0.0);
    assert_eq!(value(&out, "ecc_corrected_total", &gpu1), None);
    assert_eq!(value(&out, "ecc_uncorrected_total", &gpu1), None);
    // 16 metrics for GPU 0; GPU 1 lacks power and both ECC counters.
    assert_eq!(out.len(), 16 + 13);
    let topic = crate::publisher::sample_topic(&out[0]);
    assert_eq!(
        topic,
        "org/acme/cluster/c1/node/n1/plugin/nvidia/chnl/data/gpu/0/gpu_util"
    );
}

#[test]
fn nvml_errors_read_as_words() {
    assert_eq!(NvmlError(3).to_string(), "NVML not supported (3)");
    assert_eq!(NvmlError(999).to_string(), "NVML error (999)");
}

/// No NVML: the family is off and says which library failed to load.
#[test]
fn missing_library_gives_the_reason() {
    let status = status("/nonexistent/libnvidia-ml.so.1");
    assert!(!status.available);
    #[cfg(feature = "nvml")]
    assert!(
        status
            .reason
            .starts_with("cannot load /nonexistent/libnvidia-ml.so.1: "),
        "{}",
        status.reason
    );
    // This machine has no GPU driver either.
    let here = super::status("libnvidia-ml.so.1");
    assert!(
        !here.available || here.reason.contains("GPUs through"),
        "{}",
        here.reason
    );
}
