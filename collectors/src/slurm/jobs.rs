//! Cluster-wide job records from `sacct` (jobs that ended) and `squeue` (jobs running),
//! published as [`JobRecord`]s on `exawatch/jobs/<cluster>` (see
//! [`exawatch_protocol::job`]). Run on one node with the Slurm client (`slurm.job_records`).
//!
//! Commands, run with `SLURM_TIME_FORMAT=%s` (times as Unix seconds) and `TZ=UTC`:
//! - `sacct --allusers --allocations --noheader --parsable2 --starttime=<cursor − overlap>
//!   --endtime=now --state=<final states> --format=`[`SACCT_FORMAT`]
//! - `squeue --noheader --states=RUNNING --format=`[`SQUEUE_FORMAT`]
//!
//! The job name comes last in both formats, so a name holding `|` stays whole.
//!
//! **Cursor.** The end time of the latest ended job seen is kept in `slurm.cursor_file`.
//! Each poll asks `sacct` for jobs that ended since the cursor less `slurm.jobs_overlap_secs`
//! and publishes those it has not published yet in this run; after a restart the overlap is
//! published again, which the store ignores (a record equal to the stored one changes
//! nothing), so a job that ended while the collector was down, or whose record was still
//! queued when it stopped, is neither lost nor stored twice. Running jobs are published
//! when they first appear and whenever their record changes.

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use exawatch_protocol::job::{FINAL_STATES, JOBS_TOPIC, JobRecord, expand_hostlist, valid_job_id};
use tracing::{debug, warn};

use crate::publisher::Message;

/// `sacct --format`: the job name last.
pub const SACCT_FORMAT: &str = "JobID,User,Account,Partition,QOS,State,ExitCode,Submit,Start,End,NodeList,AllocCPUS,AllocTRES,ReqMem,JobName";
/// `squeue --format`: id, user, account, partition, QoS, state, submit, start, nodes, CPUs,
/// GPUs (`tres-per-node`), memory per node, name last.
pub const SQUEUE_FORMAT: &str = "%i|%u|%a|%P|%q|%T|%V|%S|%N|%C|%b|%m|%j";
/// `sacct --state`: the states after which a job never changes.
pub const SACCT_STATES: &str = "BF,CA,CD,DL,F,NF,OOM,PR,RV,TO";

/// Unix seconds as ns; `Unknown`, `None`, `N/A` and empty are none.
fn seconds(field: &str) -> Option<i64> {
    field
        .trim()
        .parse::<i64>()
        .ok()
        .and_then(|s| s.checked_mul(1_000_000_000))
}

/// Slurm's memory form (`4000M`, `8G`, `512Mc` per CPU, `2Gn` per node) in bytes; a bare
/// number is MiB, as Slurm reads it.
pub fn memory_bytes(field: &str, cpus: Option<u64>, nodes: usize) -> Option<u64> {
    let field = field.trim();
    let (field, factor) = match field.strip_suffix('c') {
        Some(rest) => (rest, cpus.unwrap_or(1)),
        None => (
            field.strip_suffix('n').unwrap_or(field),
            nodes.max(1) as u64,
        ),
    };
    let per = |unit: u64, digits: &str| -> Option<u64> {
        let n: f64 = digits.parse().ok()?;
        (n.is_finite() && n >= 0.0).then_some((n * unit as f64) as u64)
    };
    let bytes = match field.char_indices().last()? {
        (i, 'K') => per(1 << 10, &field[..i]),
        (i, 'M') => per(1 << 20, &field[..i]),
        (i, 'G') => per(1 << 30, &field[..i]),
        (i, 'T') => per(1 << 40, &field[..i]),
        _ => per(1 << 20, field),
    }?;
    // sacct's per-node and per-CPU forms are totals once multiplied; plain sacct values
    // (Slurm ≥ 21.08) are per node too.
    Some(bytes.saturating_mul(factor))
}

/// GPUs in a TRES list (`cpu=4,gres/gpu=2,mem=8G` from sacct, `gres/gpu:a100:2` or
/// `gres:gpu:2` from squeue); `None` if it names none.
pub fn gpus(tres: &str) -> Option<u64> {
    let mut total = None;
    for item in tres.split(',') {
        let item = item.trim();
        let rest = item
            .strip_prefix("gres/gpu")
            .or_else(|| item.strip_prefix("gres:gpu"))
            .or_else(|| item.strip_prefix("gpu"));
        let Some(rest) = rest else { continue };
        // `gres/gpu=2` counts; `gres/gpu:a100=2` is the same GPUs again by type.
        if let Some(n) = rest.strip_prefix('=') {
            if let Ok(n) = n.parse::<u64>() {
                total = Some(n);
            }
        } else if total.is_none()
            && let Some(n) = rest
                .rsplit([':', '='])
                .next()
                .and_then(|n| n.parse::<u64>().ok())
        {
            total = Some(n);
        }
    }
    total
}

fn exit_code(field: &str) -> (Option<i32>, Option<i32>) {
    match field.split_once(':') {
        Some((code, signal)) => (code.parse().ok(), signal.parse().ok()),
        None => (field.parse().ok(), None),
    }
}

fn state(field: &str) -> String {
    field
        .split_ascii_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase()
}

/// Records from `sacct --parsable2 --noheader --format=`[`SACCT_FORMAT`]; lines that are
/// not a job (steps such as `1234.batch`, malformed lines) are skipped.
pub fn parse_sacct(text: &str) -> Vec<JobRecord> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.splitn(15, '|').collect();
            if f.len() != 15 || !valid_job_id(f[0]) {
                return None;
            }
            let nodes = match expand_hostlist(f[10]) {
                Ok(nodes) => nodes,
                Err(error) => {
                    debug!(id = f[0], %error, "sacct node list not understood.");
                    Vec::new()
                }
            };
            let cpus = f[11].parse().ok();
            let (exit_code, exit_signal) = exit_code(f[6]);
            Some(JobRecord {
                id: f[0].to_owned(),
                cluster: String::new(),
                name: f[14].to_owned(),
                user: f[1].to_owned(),
                account: f[2].to_owned(),
                partition: f[3].to_owned(),
                qos: f[4].to_owned(),
                state: state(f[5]),
                exit_code,
                exit_signal,
                submit_ns: seconds(f[7]),
                start_ns: seconds(f[8]),
                end_ns: seconds(f[9]),
                gpus: gpus(f[12]),
                mem_bytes: memory_bytes(f[13], cpus, nodes.len()),
                cpus,
                nodes,
            })
        })
        .collect()
}

/// Records from `squeue --noheader --format=`[`SQUEUE_FORMAT`]; other lines are skipped.
pub fn parse_squeue(text: &str) -> Vec<JobRecord> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.splitn(13, '|').collect();
            if f.len() != 13 || !valid_job_id(f[0]) {
                return None;
            }
            let nodes = expand_hostlist(f[8]).unwrap_or_default();
            let cpus = f[9].parse().ok();
            let per_node_gpus = gpus(f[10]);
            Some(JobRecord {
                id: f[0].to_owned(),
                cluster: String::new(),
                name: f[12].to_owned(),
                user: f[1].to_owned(),
                account: f[2].to_owned(),
                partition: f[3].to_owned(),
                qos: f[4].to_owned(),
                state: state(f[5]),
                exit_code: None,
                exit_signal: None,
                submit_ns: seconds(f[6]),
                start_ns: seconds(f[7]),
                end_ns: None,
                gpus: per_node_gpus.map(|g| g * nodes.len().max(1) as u64),
                mem_bytes: memory_bytes(f[11], cpus, nodes.len()),
                cpus,
                nodes,
            })
        })
        .collect()
}

/// The `sacct` arguments for jobs that ended since `from_ns`.
pub fn sacct_args(from_ns: i64) -> Vec<String> {
    vec![
        "--allusers".into(),
        "--allocations".into(),
        "--noheader".into(),
        "--parsable2".into(),
        format!("--starttime={}", rfc3339_seconds(from_ns)),
        "--endtime=now".into(),
        format!("--state={SACCT_STATES}"),
        format!("--format={SACCT_FORMAT}"),
    ]
}

/// The `squeue` arguments for running jobs.
pub fn squeue_args() -> Vec<String> {
    vec![
        "--noheader".into(),
        "--states=RUNNING".into(),
        format!("--format={SQUEUE_FORMAT}"),
    ]
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC; the commands run with `TZ=UTC`), as `sacct -S` takes it.
fn rfc3339_seconds(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = exawatch_protocol::time::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// What the job poller remembers: the cursor (persisted) and what it published this run.
#[derive(Debug)]
pub struct JobPoller {
    cursor_file: PathBuf,
    /// End of the latest ended job seen, ns.
    cursor_ns: i64,
    overlap_ns: i64,
    topic: String,
    /// Ended jobs published this run, with their end: not published again.
    ended: HashMap<String, i64>,
    /// Running jobs' last published records.
    running: HashMap<String, JobRecord>,
}

impl JobPoller {
    /// A poller whose cursor is in `cursor_file` (or `now_ns − lookback_ns` without one),
    /// publishing on `exawatch/jobs/<cluster>`.
    pub fn new(
        cursor_file: &Path,
        cluster: &str,
        overlap_ns: i64,
        lookback_ns: i64,
        now_ns: i64,
    ) -> Self {
        let cursor_ns = std::fs::read_to_string(cursor_file)
            .ok()
            .and_then(|text| text.trim().parse::<i64>().ok())
            .and_then(|s| s.checked_mul(1_000_000_000))
            .unwrap_or(now_ns - lookback_ns);
        Self {
            cursor_file: cursor_file.to_owned(),
            cursor_ns,
            overlap_ns,
            topic: format!("{JOBS_TOPIC}/{cluster}"),
            ended: HashMap::new(),
            running: HashMap::new(),
        }
    }

    /// Where the next `sacct` starts: the cursor less the overlap.
    pub fn sacct_from_ns(&self) -> i64 {
        self.cursor_ns - self.overlap_ns
    }

    /// The cursor, ns.
    pub fn cursor_ns(&self) -> i64 {
        self.cursor_ns
    }

    /// The messages for what `sacct` (ended jobs) and `squeue` (running jobs; `None` when
    /// it failed) returned that was not published yet; advances and saves the cursor.
    pub fn poll(&mut self, ended: Vec<JobRecord>, running: Option<Vec<JobRecord>>) -> Vec<Message> {
        let mut out = Vec::new();
        let mut cursor = self.cursor_ns;
        let window_start = self.sacct_from_ns();
        for job in ended {
            let Some(end) = job
                .end_ns
                .filter(|end| *end >= window_start && FINAL_STATES.contains(&job.state.as_str()))
            else {
                continue;
            };
            cursor = cursor.max(end);
            self.running.remove(&job.id);
            if self.ended.get(&job.id) == Some(&end) {
                continue;
            }
            self.ended.insert(job.id.clone(), end);
            out.push(job);
        }
        if let Some(running) = running {
            let mut seen = HashMap::new();
            for job in running {
                if self.ended.contains_key(&job.id) {
                    continue;
                }
                if self.running.get(&job.id) != Some(&job) {
                    out.push(job.clone());
                }
                seen.insert(job.id.clone(), job);
            }
            self.running = seen;
        }
        let horizon = cursor - self.overlap_ns;
        self.ended.retain(|_, end| *end >= horizon);
        if cursor != self.cursor_ns {
            self.cursor_ns = cursor;
            self.save();
        }
        // One message per record keeps each well under any broker's packet limit.
        out.into_iter()
            .map(|job| Message {
                topic: self.topic.clone(),
                payload: job.to_json().to_string().into_bytes(),
            })
            .collect()
    }

    /// Writes the cursor (Unix seconds) atomically: a temporary file, then a rename.
    fn save(&self) {
        let seconds = self.cursor_ns.div_euclid(1_000_000_000);
        let temporary = self.cursor_file.with_extension("tmp");
        let result = std::fs::write(&temporary, format!("{seconds}\n"))
            .and_then(|()| std::fs::rename(&temporary, &self.cursor_file));
        if let Err(error) = result {
            warn!(file = %self.cursor_file.display(), %error, "Cannot save the sacct cursor; a restart will publish again from the previous one.");
        }
    }
}
