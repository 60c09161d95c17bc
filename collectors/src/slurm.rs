//! The `slurm` family: which jobs run on this node (from `squeue`) and the node's
//! allocation as Slurm sees it (from `scontrol show node`), published as samples and used
//! to tag every other family's samples with `job/<ids>` while jobs run.
//!
//! Commands (each killed after `timeout_secs`):
//! - `squeue --noheader --states=RUNNING --nodelist=<node> --format=%i|%u|%P|%C|%D`
//! - `scontrol show node <node> --oneliner`
//!
//! Samples: `.../plugin/slurm/chnl/data/job/<id>/partition/<p>/user/<u>/job_running` (1),
//! `job_cpus`, `job_nodes`; node level `jobs_running`, and from `scontrol`: `cpus_alloc`,
//! `cpus_total`, `cpu_load`, `mem_total_bytes`, `mem_alloc_bytes`, `mem_free_bytes`, and
//! `state` (text, e.g. `MIXED`).
//!
//! With `slurm.job_records`, it also publishes every job of the cluster as a job record
//! ([`jobs`]).

pub mod jobs;
#[cfg(test)]
mod tests;

use std::sync::PoisonError;
use std::time::Duration;

use exawatch_protocol::Sample;
use tracing::debug;

use crate::command;
use crate::emit::{Emitter, base_tags};
use crate::schedule::{Outbox, SharedJobs};
use crate::{Collector, Family, FamilyStatus, NodeTags, SlurmConfig};

/// The family (and `plugin` tag) name.
pub const FAMILY: &str = "slurm";

/// The family as the scheduler sees it.
pub(crate) const FAMILY_DEF: Family = Family {
    name: FAMILY,
    status: |config| status(&config.slurm),
    settings: |config| (config.slurm.enabled, config.slurm.period_secs),
    build: |cx| {
        Ok(Box::new(
            SlurmCollector::new(
                &cx.config.slurm,
                &cx.tags,
                cx.runtime.clone(),
                std::sync::Arc::clone(&cx.jobs),
            )
            .with_job_records(std::sync::Arc::clone(&cx.outbox)),
        ))
    },
};

/// The `squeue` output format: job id, user, partition, CPUs, nodes.
pub const SQUEUE_FORMAT: &str = "%i|%u|%P|%C|%D";

/// A job running on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Job id (`123`, `123_4` for array tasks).
    pub id: String,
    /// Owner.
    pub user: String,
    /// Partition.
    pub partition: String,
    /// CPUs allocated to the job (on all its nodes).
    pub cpus: Option<u64>,
    /// Nodes of the job.
    pub nodes: Option<u64>,
}

/// Parses `squeue` output in [`SQUEUE_FORMAT`]; other lines are skipped.
pub fn parse_squeue(text: &str) -> Vec<Job> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.trim().split('|').map(str::trim);
            let id = fields
                .next()
                .filter(|id| !id.is_empty() && !id.contains(' '))?;
            let user = fields.next()?;
            let partition = fields.next()?;
            let cpus = fields.next()?.parse().ok();
            let nodes = fields.next()?.parse().ok();
            Some(Job {
                id: id.to_owned(),
                user: user.to_owned(),
                partition: partition.to_owned(),
                cpus,
                nodes,
            })
        })
        .collect()
}

/// Parses `scontrol show node` output (one node, `Key=Value` pairs, any line layout) into
/// its pairs, in order. Values end at the next space (`OS=Linux 5.14…` keeps `Linux`).
pub fn parse_scontrol_node(text: &str) -> Vec<(String, String)> {
    text.split_ascii_whitespace()
        .filter_map(|word| {
            let (key, value) = word.split_once('=')?;
            (!key.is_empty()).then(|| (key.to_owned(), value.to_owned()))
        })
        .collect()
}

/// `scontrol` keys published, with the metric and the factor to its unit.
const NODE_METRICS: [(&str, &str, f64); 6] = [
    ("CPUAlloc", "cpus_alloc", 1.0),
    ("CPUTot", "cpus_total", 1.0),
    ("CPULoad", "cpu_load", 1.0),
    ("RealMemory", "mem_total_bytes", 1_048_576.0),
    ("AllocMem", "mem_alloc_bytes", 1_048_576.0),
    ("FreeMem", "mem_free_bytes", 1_048_576.0),
];

/// Whether `squeue` is installed.
pub fn status(config: &SlurmConfig) -> FamilyStatus {
    let squeue = command::find_program(&config.squeue);
    FamilyStatus {
        name: FAMILY.to_owned(),
        available: squeue.is_some(),
        reason: match squeue {
            Some(path) => format!(
                "{} lists this node's jobs{}",
                path.display(),
                if config.tag_metrics {
                    "; they tag every family's samples"
                } else {
                    ""
                }
            ),
            None => format!("{} not found (no Slurm client here)", config.squeue),
        },
    }
}

/// The Slurm collector.
#[derive(Debug)]
pub struct SlurmCollector {
    base: Vec<(String, String)>,
    node: String,
    config: SlurmConfig,
    runtime: tokio::runtime::Handle,
    jobs: SharedJobs,
    /// The `cluster` tag: the topic job records are published on.
    cluster: String,
    /// With `job_records`: the cursor and what was published, and where records go.
    records: Option<(jobs::JobPoller, Outbox)>,
}

impl SlurmCollector {
    /// A collector asking Slurm about `tags.node`, publishing the job tag to `jobs`.
    pub(crate) fn new(
        config: &SlurmConfig,
        tags: &NodeTags,
        runtime: tokio::runtime::Handle,
        jobs: SharedJobs,
    ) -> Self {
        Self {
            base: base_tags(tags, FAMILY),
            node: tags.node.clone(),
            config: config.clone(),
            runtime,
            jobs,
            records: None,
            cluster: tags.cluster.clone(),
        }
    }

    /// Publishes the cluster's job records into `outbox` when `slurm.job_records` is on.
    pub(crate) fn with_job_records(mut self, outbox: Outbox) -> Self {
        if self.config.job_records {
            let poller = jobs::JobPoller::new(
                &self.config.cursor_file,
                &self.cluster,
                (self.config.jobs_overlap_secs * 1e9) as i64,
                (self.config.jobs_lookback_secs * 1e9) as i64,
                exawatch_protocol::time::now_ns(),
            );
            self.records = Some((poller, outbox));
        }
        self
    }

    /// Polls `sacct` and `squeue` and queues the new job records.
    fn poll_jobs(&mut self) {
        let Some((poller, _)) = &self.records else {
            return;
        };
        let sacct_args = jobs::sacct_args(poller.sacct_from_ns());
        let ended = self
            .run(&self.config.sacct, &sacct_args)
            .map(|o| jobs::parse_sacct(&o));
        let running = self
            .run(&self.config.squeue, &jobs::squeue_args())
            .map(|o| jobs::parse_squeue(&o));
        let Some((poller, outbox)) = &mut self.records else {
            return;
        };
        // Without sacct's answer the cursor stays; the next poll asks again.
        let messages = poller.poll(ended.unwrap_or_default(), running);
        outbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(messages);
    }

    fn run(&self, program: &str, args: &[String]) -> Option<String> {
        let timeout = Duration::from_secs_f64(self.config.timeout_secs.clamp(0.1, 3600.0));
        // Times as Unix seconds, and `sacct -S` read as UTC.
        let env = [("SLURM_TIME_FORMAT", "%s"), ("TZ", "UTC")];
        match self
            .runtime
            .block_on(command::run(program, args, &env, timeout))
        {
            Ok(output) => Some(output),
            Err(error) => {
                debug!(program, %error, "Slurm command failed.");
                None
            }
        }
    }
}

impl Collector for SlurmCollector {
    fn name(&self) -> &'static str {
        FAMILY
    }

    fn collect(&mut self, now_ns: i64, out: &mut Vec<Sample>) {
        let squeue_args = vec![
            "--noheader".to_owned(),
            "--states=RUNNING".to_owned(),
            format!("--nodelist={}", self.node),
            format!("--format={SQUEUE_FORMAT}"),
        ];
        let jobs = self
            .run(&self.config.squeue, &squeue_args)
            .map(|o| parse_squeue(&o));
        let node_args = vec![
            "show".to_owned(),
            "node".to_owned(),
            self.node.clone(),
            "--oneliner".to_owned(),
        ];
        let node = self
            .run(&self.config.scontrol, &node_args)
            .map(|o| parse_scontrol_node(&o));

        let mut emitter = Emitter::new(&self.base, now_ns, out);
        if let Some(jobs) = &jobs {
            emitter.emit(&[], "jobs_running", jobs.len() as f64);
            for job in jobs {
                let items = [
                    ("job", job.id.as_str()),
                    ("partition", job.partition.as_str()),
                    ("user", job.user.as_str()),
                ];
                emitter.emit(&items, "job_running", 1.0);
                if let Some(cpus) = job.cpus {
                    emitter.emit(&items, "job_cpus", cpus as f64);
                }
                if let Some(nodes) = job.nodes {
                    emitter.emit(&items, "job_nodes", nodes as f64);
                }
            }
            let mut ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            let tag = (!ids.is_empty()).then(|| ids.join(","));
            *self.jobs.write().unwrap_or_else(PoisonError::into_inner) = tag;
        }
        if let Some(pairs) = node {
            for (key, metric, factor) in NODE_METRICS {
                if let Some(value) = pairs
                    .iter()
                    .find(|(k, _)| k == key)
                    .and_then(|(_, v)| v.parse::<f64>().ok())
                {
                    emitter.emit(&[], metric, value * factor);
                }
            }
            if let Some((_, state)) = pairs.iter().find(|(k, _)| k == "State") {
                emitter.emit_text(&[], "state", state);
            }
        }
        self.poll_jobs();
    }
}
