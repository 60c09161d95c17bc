//! The node model of `bench/gen_nodes.py`, ported: one simulated second per [`SimNode::step`].
//!
//! Each node alternates idle periods and jobs (CPU-only or GPU jobs of random intensity);
//! per-core load, memory, network and disk counters, RAPL power, IPMI temperatures, fans and
//! node power, and two NVML GPUs follow the phase. Counters are monotonic integers.

use fastrand::Rng;

const GIB: i64 = 1 << 30;
const MIB: i64 = 1 << 20;
const MEM_TOTAL: i64 = 256 * GIB;
const PAGE: i64 = 4096;
const CORES: usize = 8;

/// One published series of a simulated node: `plugin`, the optional item tag, the metric,
/// and how many decimals the value keeps (as `gen_nodes.py` formats it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// `plugin` tag: `procfs`, `rapl`, `ipmi` or `nvml`.
    pub plugin: &'static str,
    /// Item tag (`core`, `iface`, `dev`, `socket`, `gpu`) and its value, if any.
    pub item: Option<(&'static str, &'static str)>,
    /// Metric name.
    pub metric: &'static str,
    /// Decimals kept in the published value.
    pub decimals: u8,
}

const fn slot(
    plugin: &'static str,
    item: Option<(&'static str, &'static str)>,
    metric: &'static str,
    decimals: u8,
) -> Slot {
    Slot {
        plugin,
        item,
        metric,
        decimals,
    }
}

const NODE: Option<(&str, &str)> = None;
const ETH0: Option<(&str, &str)> = Some(("iface", "eth0"));
const IB0: Option<(&str, &str)> = Some(("iface", "ib0"));
const NVME: Option<(&str, &str)> = Some(("dev", "nvme0n1"));
const SOCKET0: Option<(&str, &str)> = Some(("socket", "0"));
const SOCKET1: Option<(&str, &str)> = Some(("socket", "1"));
const GPU0: Option<(&str, &str)> = Some(("gpu", "0"));
const GPU1: Option<(&str, &str)> = Some(("gpu", "1"));
const fn core(i: &'static str) -> Option<(&'static str, &'static str)> {
    Some(("core", i))
}

/// Number of series per simulated node.
pub const SERIES_PER_NODE: usize = 50;

/// Every series of a simulated node, in the order of [`SimNode::values`] and of
/// `gen_nodes.py --format examon`.
pub const SLOTS: [Slot; SERIES_PER_NODE] = [
    slot("procfs", core("0"), "util", 2),
    slot("procfs", core("1"), "util", 2),
    slot("procfs", core("2"), "util", 2),
    slot("procfs", core("3"), "util", 2),
    slot("procfs", core("4"), "util", 2),
    slot("procfs", core("5"), "util", 2),
    slot("procfs", core("6"), "util", 2),
    slot("procfs", core("7"), "util", 2),
    slot("procfs", NODE, "cpu_util", 2),
    slot("procfs", NODE, "cpu_iowait", 2),
    slot("procfs", NODE, "load1", 2),
    slot("procfs", NODE, "load5", 2),
    slot("procfs", NODE, "load15", 2),
    slot("procfs", NODE, "mem_used", 0),
    slot("procfs", NODE, "mem_free", 0),
    slot("procfs", NODE, "mem_cached", 0),
    slot("procfs", NODE, "mem_buffers", 0),
    slot("procfs", NODE, "ctxt", 0),
    slot("procfs", NODE, "intr", 0),
    slot("procfs", ETH0, "rx_bytes", 0),
    slot("procfs", ETH0, "tx_bytes", 0),
    slot("procfs", IB0, "rx_bytes", 0),
    slot("procfs", IB0, "tx_bytes", 0),
    slot("procfs", NVME, "read_bytes", 0),
    slot("procfs", NVME, "write_bytes", 0),
    slot("procfs", NVME, "read_ops", 0),
    slot("procfs", NVME, "write_ops", 0),
    slot("rapl", SOCKET0, "pkg_power", 3),
    slot("rapl", SOCKET0, "dram_power", 3),
    slot("rapl", SOCKET1, "pkg_power", 3),
    slot("rapl", SOCKET1, "dram_power", 3),
    slot("ipmi", NODE, "cpu0_temp", 2),
    slot("ipmi", NODE, "cpu1_temp", 2),
    slot("ipmi", NODE, "inlet_temp", 2),
    slot("ipmi", NODE, "exhaust_temp", 2),
    slot("ipmi", NODE, "fan1", 0),
    slot("ipmi", NODE, "fan2", 0),
    slot("ipmi", NODE, "fan3", 0),
    slot("ipmi", NODE, "fan4", 0),
    slot("ipmi", NODE, "node_power", 1),
    slot("nvml", GPU0, "util", 0),
    slot("nvml", GPU0, "mem_util", 0),
    slot("nvml", GPU0, "power", 3),
    slot("nvml", GPU0, "temp", 0),
    slot("nvml", GPU0, "mem_used", 0),
    slot("nvml", GPU1, "util", 0),
    slot("nvml", GPU1, "mem_util", 0),
    slot("nvml", GPU1, "power", 3),
    slot("nvml", GPU1, "temp", 0),
    slot("nvml", GPU1, "mem_used", 0),
];

/// Index of the first core's `util` in [`SLOTS`]; the other cores follow.
const CORE_UTIL: usize = 0;
const NODE_PROCFS: usize = 8;
const NET: usize = 19;
const DISK: usize = 23;
const RAPL: usize = 27;
const IPMI: usize = 31;
const NVML: usize = 40;
/// Values per GPU in [`SLOTS`].
const GPU_SLOTS: usize = 5;

/// One simulated node. Deterministic: equal `(index, seed)` give equal values.
#[derive(Debug, Clone)]
pub struct SimNode {
    rng: Rng,
    core: [f64; CORES],
    burst: [u32; CORES],
    load: [f64; 3],
    mem_used: i64,
    mem_cached: i64,
    mem_buffers: i64,
    mem_target: i64,
    /// eth0 rx, tx; ib0 rx, tx.
    net: [i64; 4],
    /// read bytes, write bytes, read ops, write ops.
    disk: [i64; 4],
    ctxt: i64,
    intr: i64,
    inlet: f64,
    t_cpu: [f64; 2],
    gpu_util: [f64; 2],
    gpu_mem: [f64; 2],
    gpu_temp: [f64; 2],
    gpu_mem_used: [i64; 2],
    fan: f64,
    iowait: f64,
    job: bool,
    gpu_job: bool,
    intensity: f64,
    phase_left: i64,
    values: [f64; SERIES_PER_NODE],
    steps: u64,
}

impl SimNode {
    /// Node number `index` of a simulation seeded with `seed`, before its first step.
    pub fn new(index: usize, seed: u64) -> Self {
        let mut rng = Rng::with_seed(seed.wrapping_mul(1_000_003).wrapping_add(index as u64));
        let core = std::array::from_fn(|_| uniform(&mut rng, 0.0, 5.0));
        let load = uniform(&mut rng, 0.0, 0.5);
        let mem_used = (MEM_TOTAL as f64 * uniform(&mut rng, 0.05, 0.1)) as i64 / PAGE * PAGE;
        let mem_cached = (MEM_TOTAL as f64 * uniform(&mut rng, 0.05, 0.2)) as i64 / PAGE * PAGE;
        let mem_buffers = (GIB as f64 * uniform(&mut rng, 0.2, 1.0)) as i64 / PAGE * PAGE;
        // Counters start at arbitrary uptime-like values.
        let net = [
            rng.i64(1_000_000_000..1_000_000_000_000),
            rng.i64(1_000_000_000..1_000_000_000_000),
            rng.i64(10_000_000_000..10_000_000_000_000),
            rng.i64(10_000_000_000..10_000_000_000_000),
        ];
        let disk = [
            rng.i64(1_000_000_000..1_000_000_000_000),
            rng.i64(1_000_000_000..1_000_000_000_000),
            rng.i64(1_000_000..1_000_000_000),
            rng.i64(1_000_000..1_000_000_000),
        ];
        let ctxt = rng.i64(100_000_000..100_000_000_000);
        let intr = rng.i64(100_000_000..100_000_000_000);
        let inlet = uniform(&mut rng, 20.0, 26.0);
        // Staggered start: nodes do not all start a job at once.
        let phase_left = rng.i64(1..600);
        Self {
            rng,
            core,
            burst: [0; CORES],
            load: [load; 3],
            mem_used,
            mem_cached,
            mem_buffers,
            mem_target: mem_used,
            net,
            disk,
            ctxt,
            intr,
            inlet,
            t_cpu: [inlet + 15.0; 2],
            gpu_util: [0.0; 2],
            gpu_mem: [0.0; 2],
            gpu_temp: [inlet + 10.0; 2],
            gpu_mem_used: [0; 2],
            fan: 4800.0,
            iowait: 0.0,
            job: false,
            gpu_job: false,
            intensity: 0.0,
            phase_left,
            values: [0.0; SERIES_PER_NODE],
            steps: 0,
        }
    }

    /// The values after the last step, in [`SLOTS`] order, rounded to each slot's decimals.
    pub fn values(&self) -> &[f64; SERIES_PER_NODE] {
        &self.values
    }

    /// Simulated seconds so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Whether a job is running.
    pub fn in_job(&self) -> bool {
        self.job
    }

    /// Whether the running job (if any) uses the GPUs.
    pub fn in_gpu_job(&self) -> bool {
        self.job && self.gpu_job
    }

    /// Puts this node into `leader`'s job phase (same length, intensity, GPU use and
    /// memory): both run one multi-node job.
    pub fn join_job_of(&mut self, leader: &SimNode) {
        self.job = true;
        self.phase_left = leader.phase_left;
        self.intensity = leader.intensity;
        self.gpu_job = leader.gpu_job;
        self.mem_target = leader.mem_target;
    }

    /// Advances one simulated second.
    pub fn step(&mut self) {
        self.steps += 1;
        self.next_phase();
        let job = self.job;
        let inten = if job { self.intensity } else { 0.02 };
        let (s0, s1) = self.step_cores(inten);
        let busy = (s0 + s1) / 100.0;
        let cpu_util = (s0 + s1) / CORES as f64;
        self.step_load(busy);
        let mem_free = self.step_memory();
        self.step_counters(busy, inten);

        let r = &mut self.rng;
        // Power (RAPL), noisy around the job phases.
        let pkg0 = 45.0 + 1.6 * s0 / 4.0 * (0.9 + 0.2 * r.f64()) + (r.f64() - 0.5) * 4.0;
        let pkg1 = 45.0 + 1.6 * s1 / 4.0 * (0.9 + 0.2 * r.f64()) + (r.f64() - 0.5) * 4.0;
        let dram0 = 6.0 + 14.0 * inten * (0.7 + 0.6 * r.f64()) + r.f64() * 0.8;
        let dram1 = 6.0 + 14.0 * inten * (0.7 + 0.6 * r.f64()) + r.f64() * 0.8;
        let gpu_power = self.step_gpus(inten);
        self.step_thermal(cpu_util, mem_free, [pkg0, pkg1, dram0, dram1], gpu_power);
        for (value, slot) in self.values.iter_mut().zip(SLOTS.iter()) {
            *value = round_to(*value, slot.decimals);
        }
    }

    fn next_phase(&mut self) {
        self.phase_left -= 1;
        if self.phase_left > 0 {
            return;
        }
        let rng = &mut self.rng;
        if self.job {
            self.job = false;
            self.phase_left = expovariate(rng, 240.0) as i64 + 30;
            self.mem_target = (MEM_TOTAL as f64 * uniform(rng, 0.04, 0.1)) as i64;
        } else {
            self.job = true;
            self.phase_left = expovariate(rng, 1200.0) as i64 + 120;
            self.intensity = uniform(rng, 0.3, 1.0);
            self.gpu_job = rng.f64() < 0.5;
            self.mem_target = (MEM_TOTAL as f64 * uniform(rng, 0.2, 0.85) * self.intensity) as i64;
        }
    }

    /// Per-core load: a mean-reverting random walk with bursts. Returns the summed
    /// utilisation of socket 0 (cores 0–3) and socket 1 (cores 4–7).
    fn step_cores(&mut self, inten: f64) -> (f64, f64) {
        let job = self.job;
        let target = if job { 100.0 * inten } else { 2.0 };
        let r = &mut self.rng;
        let (mut s0, mut s1) = (0.0, 0.0);
        for i in 0..CORES {
            let mut u = self.core[i];
            if self.burst[i] > 0 {
                self.burst[i] -= 1;
                u = 100.0 - r.f64() * 1.5;
            } else {
                if r.f64() < if job { 0.004 } else { 0.002 } {
                    self.burst[i] = r.u32(2..20);
                }
                u += (target - u) * 0.15 + (r.f64() - 0.5) * if job { 12.0 } else { 3.0 };
                if u < 0.0 {
                    u = r.f64() * 0.5;
                } else if u > 100.0 {
                    u = 100.0 - r.f64();
                }
            }
            self.core[i] = u;
            self.values[CORE_UTIL + i] = u;
            if i < CORES / 2 {
                s0 += u;
            } else {
                s1 += u;
            }
        }
        (s0, s1)
    }

    fn step_load(&mut self, busy: f64) {
        let r = &mut self.rng;
        let job_iowait = if self.job { r.f64() * 3.0 } else { 0.1 };
        self.iowait += (job_iowait - self.iowait) * 0.2;
        let noise = r.f64() * 0.3;
        self.load[0] += (busy + noise - self.load[0]) * (1.0 - (-1.0f64 / 60.0).exp());
        self.load[1] += (busy - self.load[1]) * (1.0 - (-1.0f64 / 300.0).exp());
        self.load[2] += (busy - self.load[2]) * (1.0 - (-1.0f64 / 900.0).exp());
    }

    /// Slowly varying memory; returns free memory.
    fn step_memory(&mut self) -> i64 {
        let r = &mut self.rng;
        let mut mu = self.mem_used;
        mu += ((self.mem_target - mu) as f64 * 0.01 + (r.f64() - 0.5) * 64.0 * MIB as f64) as i64;
        mu = mu.clamp(2 * GIB, MEM_TOTAL - 20 * GIB) / PAGE * PAGE;
        self.mem_used = mu;
        let mc = self.mem_cached + ((r.f64() - 0.45) * 8.0 * MIB as f64) as i64;
        // Not `clamp`: the upper bound may fall below 1 GiB, and then 1 GiB wins.
        let mc = mc.min(MEM_TOTAL - mu - 4 * GIB).max(GIB) / PAGE * PAGE;
        self.mem_cached = mc;
        let delta = (((r.f64() - 0.5) * 256.0 * 1024.0) as i64).div_euclid(PAGE) * PAGE;
        let mb = (self.mem_buffers + delta).clamp(64 * MIB, 2 * GIB);
        self.mem_buffers = mb;
        MEM_TOTAL - mu - mc - mb
    }

    fn step_counters(&mut self, busy: f64, inten: f64) {
        let job = self.job;
        let r = &mut self.rng;
        let mut f = || r.f64();
        self.ctxt += (2000.0 + 40000.0 * busy * (0.8 + 0.4 * f())) as i64;
        self.intr += (1500.0 + 20000.0 * busy * (0.8 + 0.4 * f())) as i64;
        let [eth_rx, eth_tx, ib_rx, ib_tx] = &mut self.net;
        let [rd_b, wr_b, rd_o, wr_o] = &mut self.disk;
        let extra_rx = if job { 200_000.0 * inten * f() } else { 0.0 };
        *eth_rx += (2000.0 + f() * 50_000.0 + extra_rx) as i64;
        let extra_tx = if job { 100_000.0 * inten * f() } else { 0.0 };
        *eth_tx += (1500.0 + f() * 30_000.0 + extra_tx) as i64;
        if job {
            let ib = (inten * 8e8 * f() * f()) as i64;
            *ib_rx += ib + (f() * 1e4) as i64;
            *ib_tx += (ib as f64 * (0.8 + 0.4 * f())) as i64 + (f() * 1e4) as i64;
            // Checkpoint and input read bursts.
            if f() < 0.05 {
                *wr_b += (f() * 2e9) as i64;
                *wr_o += (f() * 2e4) as i64;
            }
            *rd_b += (f() * 2e7 * inten) as i64;
            *rd_o += (f() * 2000.0 * inten) as i64;
            *wr_b += (f() * 5e6) as i64;
            *wr_o += (f() * 500.0) as i64;
        } else {
            *ib_rx += (f() * 2000.0) as i64;
            *ib_tx += (f() * 2000.0) as i64;
            *wr_b += (f() * 2e4) as i64;
            *wr_o += (f() * 5.0) as i64;
        }
    }

    /// Two GPUs; returns their total power.
    fn step_gpus(&mut self, inten: f64) -> f64 {
        let gpu_busy = self.job && self.gpu_job;
        let r = &mut self.rng;
        let mut total = 0.0;
        for g in 0..2 {
            let (target, mem_target) = if gpu_busy {
                let mut target = (100.0 * inten * (0.9 + 0.2 * r.f64())).min(100.0);
                // Data-loader stalls.
                if r.f64() < 0.02 {
                    target *= 0.2;
                }
                (target, 0.5 + 0.4 * inten)
            } else {
                (0.0, 0.0)
            };
            let util = self.gpu_util[g] + (target - self.gpu_util[g]) * 0.5;
            self.gpu_util[g] = util;
            let mem = self.gpu_mem[g] + (target * 0.6 - self.gpu_mem[g]) * 0.3;
            self.gpu_mem[g] = mem;
            let used = self.gpu_mem_used[g];
            let step = ((mem_target * 80.0 * GIB as f64 - used as f64) * 0.05) as i64;
            let used = used + step.div_euclid(MIB) * MIB;
            self.gpu_mem_used[g] = used;
            let power = 62.0 + 3.3 * util * (0.95 + 0.1 * r.f64()) + (r.f64() - 0.5) * 3.0;
            total += power;
            let temp =
                self.gpu_temp[g] + ((self.inlet + 8.0 + 0.12 * power) - self.gpu_temp[g]) / 40.0;
            self.gpu_temp[g] = temp;
            let v = &mut self.values[NVML + g * GPU_SLOTS..NVML + (g + 1) * GPU_SLOTS];
            v[0] = util.round();
            v[1] = mem.round();
            v[2] = power;
            v[3] = (temp + (r.f64() - 0.5) * 0.8).round();
            v[4] = (used + 512 * MIB) as f64;
        }
        total
    }

    /// Temperatures (smooth), fans and node power; then writes the non-GPU values.
    fn step_thermal(&mut self, cpu_util: f64, mem_free: i64, rapl: [f64; 4], gpu_power: f64) {
        let [pkg0, pkg1, dram0, dram1] = rapl;
        let r = &mut self.rng;
        self.inlet += (r.f64() - 0.5) * 0.02;
        let base = self.inlet + 10.0;
        self.t_cpu[0] += (base + 0.25 * pkg0 - self.t_cpu[0]) / 30.0;
        self.t_cpu[1] += (base + 0.25 * pkg1 - self.t_cpu[1]) / 30.0;
        let node_power = 120.0 + pkg0 + pkg1 + dram0 + dram1 + gpu_power + (r.f64() - 0.5) * 10.0;
        let exhaust = self.inlet + node_power / 40.0;
        let fan_target = 3000.0 + 110.0 * (self.t_cpu[0].max(self.t_cpu[1]) - 35.0).max(0.0);
        self.fan += (fan_target - self.fan) * 0.05;

        let v = &mut self.values;
        v[NODE_PROCFS..NODE_PROCFS + 11].copy_from_slice(&[
            cpu_util,
            self.iowait,
            self.load[0],
            self.load[1],
            self.load[2],
            self.mem_used as f64,
            mem_free as f64,
            self.mem_cached as f64,
            self.mem_buffers as f64,
            self.ctxt as f64,
            self.intr as f64,
        ]);
        for (dst, src) in v[NET..NET + 4].iter_mut().zip(self.net) {
            *dst = src as f64;
        }
        for (dst, src) in v[DISK..DISK + 4].iter_mut().zip(self.disk) {
            *dst = src as f64;
        }
        v[RAPL..RAPL + 4].copy_from_slice(&[pkg0, dram0, pkg1, dram1]);
        v[IPMI] = self.t_cpu[0] + (r.f64() - 0.5) * 0.3;
        v[IPMI + 1] = self.t_cpu[1] + (r.f64() - 0.5) * 0.3;
        v[IPMI + 2] = self.inlet;
        v[IPMI + 3] = exhaust;
        for k in 0..4 {
            let rpm = (self.fan * (0.97 + 0.01 * k as f64) + (r.f64() - 0.5) * 60.0).round();
            v[IPMI + 4 + k] = (rpm as i64).div_euclid(60) as f64 * 60.0;
        }
        v[IPMI + 8] = node_power;
    }
}

fn uniform(rng: &mut Rng, low: f64, high: f64) -> f64 {
    low + (high - low) * rng.f64()
}

/// An exponentially distributed number with the given mean (Python's `expovariate(1/mean)`).
fn expovariate(rng: &mut Rng, mean: f64) -> f64 {
    -(1.0 - rng.f64()).ln() * mean
}

fn round_to(value: f64, decimals: u8) -> f64 {
    let scale = 10f64.powi(i32::from(decimals));
    (value * scale).round() / scale
}
