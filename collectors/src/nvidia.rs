//! The `nvidia` family: NVIDIA GPUs through NVML, loaded at run time with `libloading`
//! (exawatch never links against the driver). No NVML on the node means the family is off,
//! with the loader's reason.
//!
//! The NVML calls sit behind the [`Nvml`] trait; [`sample_gpus`] turns what it returns into
//! samples (and is tested with a fake). A metric the GPU does not support
//! (`NVML_ERROR_NOT_SUPPORTED`, e.g. ECC on consumer boards) is left out.
//!
//! Samples: `.../plugin/nvidia/chnl/data/gpu/<index>/<metric>`:
//!
//! | metric | NVML | unit |
//! |---|---|---|
//! | `gpu_util`, `mem_util` | `nvmlDeviceGetUtilizationRates` | percent |
//! | `mem_total_bytes`, `mem_used_bytes`, `mem_free_bytes` | `nvmlDeviceGetMemoryInfo` | bytes |
//! | `temp_c` | `nvmlDeviceGetTemperature(GPU)` | °C |
//! | `power_w` | `nvmlDeviceGetPowerUsage` | mW → W |
//! | `clock_graphics_hz`, `clock_sm_hz`, `clock_mem_hz` | `nvmlDeviceGetClockInfo` | MHz → Hz |
//! | `throttle_reasons` | `nvmlDeviceGetCurrentClocksThrottleReasons` | bit mask |
//! | `throttle_power`, `throttle_thermal`, `throttle_hw_slowdown` | the same, decoded | 0 or 1 |
//! | `ecc_corrected_total`, `ecc_uncorrected_total` | `nvmlDeviceGetTotalEccErrors(volatile)` | errors since driver load |

#[cfg(test)]
mod tests;

use exawatch_protocol::Sample;

use crate::emit::{Emitter, base_tags};
use crate::{Collector, Family, FamilyStatus, NodeTags};

/// The family (and `plugin` tag) name.
pub const FAMILY: &str = "nvidia";

/// The family as the scheduler sees it.
pub(crate) const FAMILY_DEF: Family = Family {
    name: FAMILY,
    status: |config| status(&config.nvidia.library),
    settings: |config| (config.nvidia.enabled, config.nvidia.period_secs),
    build: |cx| build(&cx.config.nvidia.library, &cx.tags),
};

#[cfg(feature = "nvml")]
fn build(library: &str, tags: &NodeTags) -> Result<Box<dyn Collector>, String> {
    let nvml = lib::NvmlLib::load(library)?;
    Ok(Box::new(NvidiaCollector::new(nvml, tags)))
}

#[cfg(not(feature = "nvml"))]
fn build(_library: &str, _tags: &NodeTags) -> Result<Box<dyn Collector>, String> {
    Err(NOT_BUILT.to_owned())
}

#[cfg(not(feature = "nvml"))]
const NOT_BUILT: &str = "exawatch was built without the `nvml` feature";

/// Whether NVML loads and initialises, and how many GPUs it sees.
pub fn status(library: &str) -> FamilyStatus {
    #[cfg(feature = "nvml")]
    let (available, reason) = match lib::NvmlLib::load(library) {
        Ok(nvml) => match nvml.device_count() {
            Ok(0) => (false, format!("{library} loaded but sees no GPU")),
            Ok(n) => (true, format!("{n} GPUs through {library}")),
            Err(error) => (false, format!("{library}: nvmlDeviceGetCount: {error}")),
        },
        Err(reason) => (false, reason),
    };
    #[cfg(not(feature = "nvml"))]
    let (available, reason) = (false, format!("{NOT_BUILT} ({library} not tried)"));
    FamilyStatus {
        name: FAMILY.to_owned(),
        available,
        reason,
    }
}

/// An NVML return code other than success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NvmlError(pub u32);

/// `NVML_ERROR_NOT_SUPPORTED`.
pub const NVML_ERROR_NOT_SUPPORTED: u32 = 3;

impl std::fmt::Display for NvmlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.0 {
            1 => "uninitialized",
            2 => "invalid argument",
            3 => "not supported",
            4 => "no permission",
            6 => "not found",
            9 => "driver not loaded",
            12 => "library not found",
            15 => "GPU is lost",
            _ => "error",
        };
        write!(f, "NVML {name} ({})", self.0)
    }
}

/// Which clock [`Nvml::clock_mhz`] reads (`nvmlClockType_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// `NVML_CLOCK_GRAPHICS`.
    Graphics = 0,
    /// `NVML_CLOCK_SM`.
    Sm = 1,
    /// `NVML_CLOCK_MEM`.
    Mem = 2,
}

/// Memory of one GPU, bytes (`nvmlMemory_t`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// Installed.
    pub total: u64,
    /// Not allocated.
    pub free: u64,
    /// Allocated.
    pub used: u64,
}

/// The NVML calls the family makes; `index` is the NVML device index.
pub trait Nvml: Send {
    /// `nvmlDeviceGetCount_v2`.
    fn device_count(&self) -> Result<u32, NvmlError>;
    /// `nvmlDeviceGetUtilizationRates`: (gpu, memory) percent.
    fn utilization(&self, index: u32) -> Result<(u32, u32), NvmlError>;
    /// `nvmlDeviceGetMemoryInfo`.
    fn memory(&self, index: u32) -> Result<Memory, NvmlError>;
    /// `nvmlDeviceGetTemperature(NVML_TEMPERATURE_GPU)`, °C.
    fn temperature_c(&self, index: u32) -> Result<u32, NvmlError>;
    /// `nvmlDeviceGetPowerUsage`, milliwatts.
    fn power_mw(&self, index: u32) -> Result<u32, NvmlError>;
    /// `nvmlDeviceGetClockInfo`, MHz.
    fn clock_mhz(&self, index: u32, clock: Clock) -> Result<u32, NvmlError>;
    /// `nvmlDeviceGetCurrentClocksThrottleReasons`, a bit mask.
    fn throttle_reasons(&self, index: u32) -> Result<u64, NvmlError>;
    /// `nvmlDeviceGetTotalEccErrors(volatile)`: corrected (`false`) or uncorrected (`true`).
    fn ecc_errors(&self, index: u32, uncorrected: bool) -> Result<u64, NvmlError>;
}

/// `nvmlClocksThrottleReasonSwPowerCap`.
pub const THROTTLE_SW_POWER_CAP: u64 = 0x4;
/// `nvmlClocksThrottleReasonHwSlowdown`.
pub const THROTTLE_HW_SLOWDOWN: u64 = 0x8;
/// `nvmlClocksThrottleReasonSwThermalSlowdown`.
pub const THROTTLE_SW_THERMAL: u64 = 0x20;
/// `nvmlClocksThrottleReasonHwThermalSlowdown`.
pub const THROTTLE_HW_THERMAL: u64 = 0x40;
/// `nvmlClocksThrottleReasonHwPowerBrakeSlowdown`.
pub const THROTTLE_HW_POWER_BRAKE: u64 = 0x80;

/// Appends the samples of every GPU `nvml` sees. Unsupported metrics are left out; other
/// errors skip the metric for this period (logged at DEBUG).
pub fn sample_gpus(
    nvml: &dyn Nvml,
    emitter_base: &[(String, String)],
    now_ns: i64,
    out: &mut Vec<Sample>,
) {
    let mut emitter = Emitter::new(emitter_base, now_ns, out);
    let count = match nvml.device_count() {
        Ok(count) => count,
        Err(error) => {
            tracing::debug!(%error, "nvmlDeviceGetCount failed.");
            return;
        }
    };
    for index in 0..count {
        let gpu = index.to_string();
        let items = [("gpu", gpu.as_str())];
        let mut emit = |metric: &str, value: Result<f64, NvmlError>| match value {
            Ok(value) => emitter.emit(&items, metric, value),
            Err(NvmlError(NVML_ERROR_NOT_SUPPORTED)) => {}
            Err(error) => tracing::debug!(gpu = index, metric, %error, "NVML call failed."),
        };
        let util = nvml.utilization(index);
        emit("gpu_util", util.map(|(g, _)| f64::from(g)));
        emit("mem_util", util.map(|(_, m)| f64::from(m)));
        let memory = nvml.memory(index);
        emit("mem_total_bytes", memory.map(|m| m.total as f64));
        emit("mem_used_bytes", memory.map(|m| m.used as f64));
        emit("mem_free_bytes", memory.map(|m| m.free as f64));
        emit("temp_c", nvml.temperature_c(index).map(f64::from));
        emit(
            "power_w",
            nvml.power_mw(index).map(|mw| f64::from(mw) / 1000.0),
        );
        for (clock, metric) in [
            (Clock::Graphics, "clock_graphics_hz"),
            (Clock::Sm, "clock_sm_hz"),
            (Clock::Mem, "clock_mem_hz"),
        ] {
            emit(
                metric,
                nvml.clock_mhz(index, clock).map(|mhz| f64::from(mhz) * 1e6),
            );
        }
        let reasons = nvml.throttle_reasons(index);
        emit("throttle_reasons", reasons.map(|r| r as f64));
        let flag = |mask: u64| reasons.map(|r| if r & mask != 0 { 1.0 } else { 0.0 });
        emit(
            "throttle_power",
            flag(THROTTLE_SW_POWER_CAP | THROTTLE_HW_POWER_BRAKE),
        );
        emit(
            "throttle_thermal",
            flag(THROTTLE_SW_THERMAL | THROTTLE_HW_THERMAL),
        );
        emit("throttle_hw_slowdown", flag(THROTTLE_HW_SLOWDOWN));
        emit(
            "ecc_corrected_total",
            nvml.ecc_errors(index, false).map(|n| n as f64),
        );
        emit(
            "ecc_uncorrected_total",
            nvml.ecc_errors(index, true).map(|n| n as f64),
        );
    }
}

/// The NVIDIA collector over an [`Nvml`] implementation.
pub struct NvidiaCollector {
    base: Vec<(String, String)>,
    nvml: Box<dyn Nvml>,
}

impl std::fmt::Debug for NvidiaCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvidiaCollector").finish_non_exhaustive()
    }
}

impl NvidiaCollector {
    /// A collector over `nvml`, tagging samples with `tags`.
    pub fn new(nvml: impl Nvml + 'static, tags: &NodeTags) -> Self {
        Self {
            base: base_tags(tags, FAMILY),
            nvml: Box::new(nvml),
        }
    }
}

impl Collector for NvidiaCollector {
    fn name(&self) -> &'static str {
        FAMILY
    }

    fn collect(&mut self, now_ns: i64, out: &mut Vec<Sample>) {
        sample_gpus(self.nvml.as_ref(), &self.base, now_ns, out);
    }
}

/// The real NVML, resolved from the shared library at run time.
#[cfg(feature = "nvml")]
pub mod lib {
    use std::ffi::{c_char, c_int, c_uint, c_ulonglong, c_void};

    use super::{Clock, Memory, Nvml, NvmlError};

    type Device = *mut c_void;
    type Ret = c_uint;

    #[repr(C)]
    struct Utilization {
        gpu: c_uint,
        memory: c_uint,
    }

    #[repr(C)]
    struct RawMemory {
        total: c_ulonglong,
        free: c_ulonglong,
        used: c_ulonglong,
    }

    /// Resolved entry points; valid while `_library` is loaded.
    struct Functions {
        shutdown: unsafe extern "C" fn() -> Ret,
        error_string: unsafe extern "C" fn(Ret) -> *const c_char,
        count: unsafe extern "C" fn(*mut c_uint) -> Ret,
        handle: unsafe extern "C" fn(c_uint, *mut Device) -> Ret,
        utilization: unsafe extern "C" fn(Device, *mut Utilization) -> Ret,
        memory: unsafe extern "C" fn(Device, *mut RawMemory) -> Ret,
        temperature: unsafe extern "C" fn(Device, c_int, *mut c_uint) -> Ret,
        power: unsafe extern "C" fn(Device, *mut c_uint) -> Ret,
        clock: unsafe extern "C" fn(Device, c_int, *mut c_uint) -> Ret,
        throttle: unsafe extern "C" fn(Device, *mut c_ulonglong) -> Ret,
        ecc: unsafe extern "C" fn(Device, c_int, c_int, *mut c_ulonglong) -> Ret,
    }

    /// NVML loaded from a shared library and initialised; shut down when dropped.
    pub struct NvmlLib {
        functions: Functions,
        // Declared last: dropped after `functions` are no longer callable.
        _library: libloading::Library,
    }

    impl std::fmt::Debug for NvmlLib {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("NvmlLib").finish_non_exhaustive()
        }
    }

    // SAFETY: NVML is thread-safe (documented: "NVML is thread-safe so it is safe to make
    // simultaneous NVML calls from multiple threads"); the struct holds only function
    // pointers and the library handle.
    unsafe impl Send for NvmlLib {}

    impl NvmlLib {
        /// Loads `library` (a file name searched as `dlopen` does, or a path), resolves the
        /// functions and calls `nvmlInit_v2`. The error says what failed, for `--list`.
        pub fn load(library: &str) -> Result<Self, String> {
            // SAFETY: loading NVML runs its initialisers, which have no preconditions.
            let lib = unsafe { libloading::Library::new(library) }
                .map_err(|e| format!("cannot load {library}: {e}"))?;
            macro_rules! symbol {
                ($name:literal) => {
                    // SAFETY: the symbol is NVML's documented C function of this signature.
                    *unsafe { lib.get($name) }.map_err(|e| {
                        format!(
                            "{library}: missing {}: {e}",
                            String::from_utf8_lossy(&$name[..$name.len() - 1])
                        )
                    })?
                };
            }
            let init: unsafe extern "C" fn() -> Ret = symbol!(b"nvmlInit_v2\0");
            let functions = Functions {
                shutdown: symbol!(b"nvmlShutdown\0"),
                error_string: symbol!(b"nvmlErrorString\0"),
                count: symbol!(b"nvmlDeviceGetCount_v2\0"),
                handle: symbol!(b"nvmlDeviceGetHandleByIndex_v2\0"),
                utilization: symbol!(b"nvmlDeviceGetUtilizationRates\0"),
                memory: symbol!(b"nvmlDeviceGetMemoryInfo\0"),
                temperature: symbol!(b"nvmlDeviceGetTemperature\0"),
                power: symbol!(b"nvmlDeviceGetPowerUsage\0"),
                clock: symbol!(b"nvmlDeviceGetClockInfo\0"),
                throttle: symbol!(b"nvmlDeviceGetCurrentClocksThrottleReasons\0"),
                ecc: symbol!(b"nvmlDeviceGetTotalEccErrors\0"),
            };
            // SAFETY: nvmlInit_v2 takes no arguments.
            let rc = unsafe { init() };
            if rc != 0 {
                // SAFETY: nvmlErrorString returns a static C string for any code.
                let text = unsafe { std::ffi::CStr::from_ptr((functions.error_string)(rc)) };
                return Err(format!(
                    "{library}: nvmlInit failed: {} ({rc})",
                    text.to_string_lossy()
                ));
            }
            Ok(Self {
                functions,
                _library: lib,
            })
        }

        fn device(&self, index: u32) -> Result<Device, NvmlError> {
            let mut device: Device = std::ptr::null_mut();
            // SAFETY: writes one handle to `device`.
            check(unsafe { (self.functions.handle)(index, &mut device) })?;
            Ok(device)
        }
    }

    fn check(rc: Ret) -> Result<(), NvmlError> {
        if rc == 0 { Ok(()) } else { Err(NvmlError(rc)) }
    }

    impl Drop for NvmlLib {
        fn drop(&mut self) {
            // SAFETY: balances the successful nvmlInit_v2 of `load`.
            unsafe {
                (self.functions.shutdown)();
            }
        }
    }

    // SAFETY (every call below): the device handle comes from NVML, and each out-pointer
    // points to a local of the type NVML writes.
    impl Nvml for NvmlLib {
        fn device_count(&self) -> Result<u32, NvmlError> {
            let mut n = 0;
            check(unsafe { (self.functions.count)(&mut n) })?;
            Ok(n)
        }

        fn utilization(&self, index: u32) -> Result<(u32, u32), NvmlError> {
            let device = self.device(index)?;
            let mut u = Utilization { gpu: 0, memory: 0 };
            check(unsafe { (self.functions.utilization)(device, &mut u) })?;
            Ok((u.gpu, u.memory))
        }

        fn memory(&self, index: u32) -> Result<Memory, NvmlError> {
            let device = self.device(index)?;
            let mut m = RawMemory {
                total: 0,
                free: 0,
                used: 0,
            };
            check(unsafe { (self.functions.memory)(device, &mut m) })?;
            Ok(Memory {
                total: m.total,
                free: m.free,
                used: m.used,
            })
        }

        fn temperature_c(&self, index: u32) -> Result<u32, NvmlError> {
            let device = self.device(index)?;
            let mut t = 0;
            // NVML_TEMPERATURE_GPU = 0.
            check(unsafe { (self.functions.temperature)(device, 0, &mut t) })?;
            Ok(t)
        }

        fn power_mw(&self, index: u32) -> Result<u32, NvmlError> {
            let device = self.device(index)?;
            let mut p = 0;
            check(unsafe { (self.functions.power)(device, &mut p) })?;
            Ok(p)
        }

        fn clock_mhz(&self, index: u32, clock: Clock) -> Result<u32, NvmlError> {
            let device = self.device(index)?;
            let mut mhz = 0;
            check(unsafe { (self.functions.clock)(device, clock as c_int, &mut mhz) })?;
            Ok(mhz)
        }

        fn throttle_reasons(&self, index: u32) -> Result<u64, NvmlError> {
            let device = self.device(index)?;
            let mut reasons = 0;
            check(unsafe { (self.functions.throttle)(device, &mut reasons) })?;
            Ok(reasons)
        }

        fn ecc_errors(&self, index: u32, uncorrected: bool) -> Result<u64, NvmlError> {
            let device = self.device(index)?;
            let mut count = 0;
            // Error type: 0 corrected, 1 uncorrected; counter type 0 = volatile.
            let kind = c_int::from(uncorrected);
            check(unsafe { (self.functions.ecc)(device, kind, 0, &mut count) })?;
            Ok(count)
        }
    }
}
