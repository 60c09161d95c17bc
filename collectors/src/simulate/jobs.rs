//! Slurm-like job records for the simulated nodes: when a node's model enters a job phase,
//! a job starts on it, and on up to three more idle nodes put into the same phase (a
//! multi-node job) a third of the time; it ends with the phase. Each start and end is
//! published as a job record on `exawatch/jobs/<cluster>`: ids counting up from 1000 (every
//! fifth an array task, `1005_2`), users with their accounts, `cpu` or `gpu` partitions,
//! 8 CPUs and 2 GPUs (GPU jobs) per node, and mostly `COMPLETED`, sometimes `FAILED`
//! (exit code 1) or `TIMEOUT`.

use exawatch_protocol::job::{JOBS_TOPIC, JobRecord};
use fastrand::Rng;

use super::{SimNode, node_name};
use crate::publisher::Message;

/// Users and their accounts.
const USERS: [(&str, &str); 5] = [
    ("ada", "chem"),
    ("bob", "phys"),
    ("cy", "bio"),
    ("dee", "chem"),
    ("eve", "astro"),
];
/// Job names.
const NAMES: [&str; 4] = ["relax_md", "sweep", "train", "post"];
/// CPUs per simulated node (its cores).
const CPUS_PER_NODE: u64 = 8;
/// Largest multi-node job, in nodes.
const MAX_NODES: usize = 4;

/// One running job: its record and which nodes it holds (the first leads).
#[derive(Debug)]
struct Running {
    record: JobRecord,
    nodes: Vec<usize>,
}

/// The simulated cluster's scheduler, as its job records show it.
#[derive(Debug)]
pub(crate) struct SimJobs {
    rng: Rng,
    topic: String,
    next_id: u64,
    running: Vec<Running>,
    /// Whether each node was in a job phase at its last step.
    was_in_job: Vec<bool>,
}

impl SimJobs {
    /// A scheduler for `nodes` nodes of `cluster`, its choices drawn from `seed`.
    pub(crate) fn new(cluster: &str, nodes: usize, seed: u64) -> Self {
        Self {
            rng: Rng::with_seed(seed ^ 0x5eed_0b5e_u64.rotate_left(7)),
            topic: format!("{JOBS_TOPIC}/{cluster}"),
            next_id: 1000,
            running: Vec::new(),
            was_in_job: vec![false; nodes],
        }
    }

    /// After node `index` stepped: starts or ends its job, and returns the records to
    /// publish (stamped `now_ns`).
    pub(crate) fn after_step(
        &mut self,
        index: usize,
        nodes: &mut [SimNode],
        now_ns: i64,
    ) -> Vec<Message> {
        let now_in_job = nodes[index].in_job();
        let was = std::mem::replace(&mut self.was_in_job[index], now_in_job);
        let held = self.running.iter().position(|r| r.nodes.contains(&index));
        let mut out = Vec::new();
        match (was, now_in_job, held) {
            (false, true, None) => {
                let record = self.start(index, nodes, now_ns);
                out.push(record);
            }
            (true, false, Some(at)) if self.running[at].nodes[0] == index => {
                let mut job = self.running.remove(at);
                let roll = self.rng.f64();
                let (state, code) = match roll {
                    r if r < 0.85 => ("COMPLETED", 0),
                    r if r < 0.95 => ("FAILED", 1),
                    _ => ("TIMEOUT", 0),
                };
                job.record.state = state.to_owned();
                job.record.exit_code = Some(code);
                job.record.exit_signal = Some(if state == "TIMEOUT" { 15 } else { 0 });
                job.record.end_ns = Some(now_ns);
                out.push(job.record);
            }
            _ => {}
        }
        out.into_iter()
            .map(|record| Message {
                topic: self.topic.clone(),
                payload: record.to_json().to_string().into_bytes(),
            })
            .collect()
    }

    /// Starts a job led by `leader`, which has just entered a job phase.
    fn start(&mut self, leader: usize, nodes: &mut [SimNode], now_ns: i64) -> JobRecord {
        let wanted = if self.rng.f64() < 1.0 / 3.0 {
            self.rng.usize(2..=MAX_NODES)
        } else {
            1
        };
        let mut held = vec![leader];
        for step in 1..nodes.len() {
            if held.len() == wanted {
                break;
            }
            let other = (leader + step) % nodes.len();
            let busy =
                nodes[other].in_job() || self.running.iter().any(|r| r.nodes.contains(&other));
            if !busy {
                let (first, second) = if other < leader {
                    let (a, b) = nodes.split_at_mut(leader);
                    (&b[0], &mut a[other])
                } else {
                    let (a, b) = nodes.split_at_mut(other);
                    (&a[leader], &mut b[0])
                };
                second.join_job_of(first);
                self.was_in_job[other] = true;
                held.push(other);
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        let id = if id.is_multiple_of(5) {
            format!("{id}_{}", self.rng.u32(1..10))
        } else {
            id.to_string()
        };
        let (user, account) = USERS[self.rng.usize(..USERS.len())];
        let gpu = nodes[leader].in_gpu_job();
        let count = held.len() as u64;
        let record = JobRecord {
            id,
            cluster: String::new(),
            name: NAMES[self.rng.usize(..NAMES.len())].to_owned(),
            user: user.to_owned(),
            account: account.to_owned(),
            partition: if gpu { "gpu" } else { "cpu" }.to_owned(),
            qos: "normal".to_owned(),
            state: "RUNNING".to_owned(),
            exit_code: None,
            exit_signal: None,
            submit_ns: Some(now_ns - self.rng.i64(1..300) * 1_000_000_000),
            start_ns: Some(now_ns),
            end_ns: None,
            nodes: held.iter().map(|&i| node_name(i)).collect(),
            cpus: Some(CPUS_PER_NODE * count),
            gpus: gpu.then_some(2 * count),
            mem_bytes: Some(count * (64 << 30)),
        };
        self.running.push(Running {
            record: record.clone(),
            nodes: held,
        });
        record
    }
}
