//! HPC job records (Slurm's accounting fields) and their MQTT wire format.
//!
//! - topic: [`JOBS_TOPIC`] (`exawatch/jobs`), optionally followed by the cluster
//!   (`exawatch/jobs/<cluster>`), which fills a record's `cluster` when it has none.
//! - payload: one JSON object, or a JSON array of them (gzipped or not), each a job record:
//!   `{"id": "1234_7", "state": "RUNNING", "name", "user", "account", "partition", "qos",
//!   "cluster", "exit_code", "exit_signal", "submit", "start", "end", "nodes", "cpus",
//!   "gpus", "mem_bytes"}`. Only `id` and `state` are required. Times are seconds since the
//!   epoch (numbers, fractions allowed); `nodes` is a list of node names or one Slurm
//!   hostlist string (`cn[01-04,07]`, expanded by [`expand_hostlist`]). Unknown fields are
//!   ignored, so a newer publisher's records still read.
//!
//! A bad record is dropped and counted under [`JobError::reason`]; the other records of the
//! same message are kept.

#[cfg(test)]
mod tests;

use serde_json::{Map, Value as Json};
use snafu::Snafu;

use crate::compression::gunzip;

/// The topic job records are published on (optionally followed by `/<cluster>`).
pub const JOBS_TOPIC: &str = "exawatch/jobs";
/// Most node names one hostlist may expand to (a guard against `n[0-99999999999]`).
pub const MAX_HOSTLIST_NODES: usize = 100_000;
/// Longest job id accepted.
pub const MAX_JOB_ID_BYTES: usize = 64;

/// One job as Slurm accounts it, at one moment of its life.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobRecord {
    /// Slurm's job id as `sacct`/`squeue` print it: `1234`, array task `1234_7`,
    /// heterogeneous component `1234+1`, pending array `1234_[1-9%2]`.
    pub id: String,
    /// Cluster name (empty: unknown).
    pub cluster: String,
    /// Job name.
    pub name: String,
    /// Owner.
    pub user: String,
    /// Account charged.
    pub account: String,
    /// Partition.
    pub partition: String,
    /// Quality of service.
    pub qos: String,
    /// Slurm state, upper case, first word (`CANCELLED by 0` is `CANCELLED`).
    pub state: String,
    /// Exit code of the job's batch script (`2` of sacct's `2:0`).
    pub exit_code: Option<i32>,
    /// Signal that ended it (`9` of sacct's `0:9`).
    pub exit_signal: Option<i32>,
    /// Submission time, ns since the epoch.
    pub submit_ns: Option<i64>,
    /// Start time, ns since the epoch.
    pub start_ns: Option<i64>,
    /// End time, ns since the epoch.
    pub end_ns: Option<i64>,
    /// Allocated nodes, expanded.
    pub nodes: Vec<String>,
    /// Allocated (or requested, while pending) CPUs.
    pub cpus: Option<u64>,
    /// Allocated GPUs.
    pub gpus: Option<u64>,
    /// Memory requested, bytes.
    pub mem_bytes: Option<u64>,
}

/// Slurm states after which a job never changes again.
pub const FINAL_STATES: [&str; 10] = [
    "BOOT_FAIL",
    "CANCELLED",
    "COMPLETED",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "REVOKED",
    "TIMEOUT",
];

impl JobRecord {
    /// Whether the job has ended for good (its state is one of [`FINAL_STATES`]).
    pub fn is_final(&self) -> bool {
        FINAL_STATES.contains(&self.state.as_str())
    }

    /// Whether this record replaces `old`, an earlier-received record of the same job: the
    /// later one wins, except that a running or pending state never replaces a final one
    /// (a late `squeue` reading after `sacct` saw the end).
    pub fn supersedes(&self, old: &Self) -> bool {
        self.is_final() || !old.is_final()
    }

    /// The record as its wire JSON object (times in seconds, `nodes` as a list).
    pub fn to_json(&self) -> Json {
        let mut map = Map::new();
        map.insert("id".into(), self.id.clone().into());
        map.insert("state".into(), self.state.clone().into());
        for (key, text) in [
            ("cluster", &self.cluster),
            ("name", &self.name),
            ("user", &self.user),
            ("account", &self.account),
            ("partition", &self.partition),
            ("qos", &self.qos),
        ] {
            if !text.is_empty() {
                map.insert(key.into(), text.clone().into());
            }
        }
        for (key, code) in [
            ("exit_code", self.exit_code),
            ("exit_signal", self.exit_signal),
        ] {
            if let Some(code) = code {
                map.insert(key.into(), code.into());
            }
        }
        for (key, ns) in [
            ("submit", self.submit_ns),
            ("start", self.start_ns),
            ("end", self.end_ns),
        ] {
            if let Some(ns) = ns {
                map.insert(key.into(), seconds_json(ns));
            }
        }
        map.insert("nodes".into(), self.nodes.clone().into());
        for (key, count) in [
            ("cpus", self.cpus),
            ("gpus", self.gpus),
            ("mem_bytes", self.mem_bytes),
        ] {
            if let Some(count) = count {
                map.insert(key.into(), count.into());
            }
        }
        Json::Object(map)
    }
}

/// ns as seconds: an integer when whole, else a fraction.
fn seconds_json(ns: i64) -> Json {
    if ns % 1_000_000_000 == 0 {
        (ns / 1_000_000_000).into()
    } else {
        (ns as f64 / 1e9).into()
    }
}

/// Why a job record (or a whole message) was dropped. [`JobError::reason`] is the label it
/// is counted under in `exawatch_messages_dropped_total{reason}`.
#[derive(Debug, Clone, Snafu, PartialEq, Eq)]
pub enum JobError {
    /// The payload is not JSON (nor gzipped JSON), or not an object or array of objects.
    #[snafu(display("job payload is not a JSON object or array of objects: {message}"))]
    NotJson { message: String },
    /// A record has no `id`, or one that is not a Slurm job id.
    #[snafu(display("job record: bad or missing \"id\" {id:?}"))]
    BadId { id: String },
    /// A record has no `state`, or an empty one.
    #[snafu(display("job record {id:?}: no \"state\""))]
    MissingState { id: String },
    /// A field has the wrong type (text where a number belongs…).
    #[snafu(display("job record {id:?}: field {field:?} {expected}"))]
    BadField {
        id: String,
        field: String,
        expected: &'static str,
    },
    /// A time is not seconds since the epoch in range.
    #[snafu(display("job record {id:?}: {field:?} is not seconds since the epoch"))]
    BadTime { id: String, field: String },
    /// The node list is not a Slurm hostlist.
    #[snafu(display("job record {id:?}: node list: {source}"))]
    BadNodes { id: String, source: HostlistError },
}

impl JobError {
    /// Every label [`JobError::reason`] can return, e.g. to pre-register counters.
    pub const REASONS: [&'static str; 6] = [
        "job_not_json",
        "job_bad_id",
        "job_missing_state",
        "job_bad_field",
        "job_bad_time",
        "job_bad_nodes",
    ];

    /// A short, stable label for counting rejections per reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotJson { .. } => "job_not_json",
            Self::BadId { .. } => "job_bad_id",
            Self::MissingState { .. } => "job_missing_state",
            Self::BadField { .. } => "job_bad_field",
            Self::BadTime { .. } => "job_bad_time",
            Self::BadNodes { .. } => "job_bad_nodes",
        }
    }
}

/// Whether `topic` carries job records: [`JOBS_TOPIC`] or `exawatch/jobs/<cluster>`.
pub fn is_job_topic(topic: &[u8]) -> bool {
    topic
        .strip_prefix(JOBS_TOPIC.as_bytes())
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"/"))
}

/// Decodes one job message (`topic` must satisfy [`is_job_topic`]): the good records are
/// appended to `out`, and each bad one (or the whole payload) gives an error.
pub fn decode(topic: &[u8], payload: &[u8], out: &mut Vec<JobRecord>) -> Vec<JobError> {
    let topic_cluster = topic
        .strip_prefix(JOBS_TOPIC.as_bytes())
        .and_then(|rest| rest.strip_prefix(b"/"))
        .and_then(|rest| std::str::from_utf8(rest).ok())
        .unwrap_or("");
    let inflated;
    let payload = if payload.starts_with(&[0x1f, 0x8b]) {
        match gunzip(payload) {
            Ok(bytes) => {
                inflated = bytes;
                &inflated[..]
            }
            Err(error) => {
                return vec![JobError::NotJson {
                    message: error.to_string(),
                }];
            }
        }
    } else {
        payload
    };
    let records = match serde_json::from_slice::<Json>(payload) {
        Ok(Json::Array(items)) => items,
        Ok(object @ Json::Object(_)) => vec![object],
        Ok(_) => {
            return vec![JobError::NotJson {
                message: "neither an object nor an array".into(),
            }];
        }
        Err(error) => {
            return vec![JobError::NotJson {
                message: error.to_string(),
            }];
        }
    };
    let mut errors = Vec::new();
    for item in records {
        let Json::Object(fields) = item else {
            errors.push(JobError::NotJson {
                message: "an array item is not an object".into(),
            });
            continue;
        };
        match record(&fields) {
            Ok(mut job) => {
                if job.cluster.is_empty() {
                    topic_cluster.clone_into(&mut job.cluster);
                }
                out.push(job);
            }
            Err(error) => errors.push(error),
        }
    }
    errors
}

/// One record from its JSON object.
fn record(fields: &Map<String, Json>) -> Result<JobRecord, JobError> {
    let id = match fields.get("id") {
        Some(Json::String(id)) if valid_job_id(id) => id.clone(),
        Some(Json::Number(n)) if n.is_u64() => n.to_string(),
        other => {
            return Err(JobError::BadId {
                id: other.map(Json::to_string).unwrap_or_default(),
            });
        }
    };
    let bad = |field: &str, expected: &'static str| JobError::BadField {
        id: id.clone(),
        field: field.to_owned(),
        expected,
    };
    let text = |field: &str| -> Result<String, JobError> {
        match fields.get(field) {
            None | Some(Json::Null) => Ok(String::new()),
            Some(Json::String(s)) => Ok(s.clone()),
            Some(_) => Err(bad(field, "must be text")),
        }
    };
    let count = |field: &str| -> Result<Option<u64>, JobError> {
        match fields.get(field) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| bad(field, "must be a whole number ≥ 0")),
            Some(_) => Err(bad(field, "must be a whole number ≥ 0")),
        }
    };
    let code = |field: &str| -> Result<Option<i32>, JobError> {
        match fields.get(field) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::Number(n)) => n
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| bad(field, "must be a 32-bit integer")),
            Some(_) => Err(bad(field, "must be a 32-bit integer")),
        }
    };
    let time = |field: &str| -> Result<Option<i64>, JobError> {
        let bad_time = || JobError::BadTime {
            id: id.clone(),
            field: field.to_owned(),
        };
        match fields.get(field) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::Number(n)) => {
                let exact = n.as_i64().and_then(|s| s.checked_mul(1_000_000_000));
                let near = || {
                    n.as_f64()
                        .map(|s| s * 1e9)
                        .filter(|ns| ns.is_finite() && ns.abs() < i64::MAX as f64)
                        .map(|ns| ns as i64)
                };
                exact.or_else(near).map(Some).ok_or_else(bad_time)
            }
            Some(_) => Err(bad_time()),
        }
    };
    let state = text("state")?
        .split_ascii_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    if state.is_empty() {
        return Err(JobError::MissingState { id });
    }
    let nodes = match fields.get("nodes") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::String(list)) => expand_hostlist(list).map_err(|source| JobError::BadNodes {
            id: id.clone(),
            source,
        })?,
        Some(Json::Array(names)) => names
            .iter()
            .map(|name| match name {
                Json::String(name) if !name.is_empty() => Ok(name.clone()),
                _ => Err(bad("nodes", "must be a hostlist or a list of node names")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("nodes", "must be a hostlist or a list of node names")),
    };
    Ok(JobRecord {
        cluster: text("cluster")?,
        name: text("name")?,
        user: text("user")?,
        account: text("account")?,
        partition: text("partition")?,
        qos: text("qos")?,
        state,
        exit_code: code("exit_code")?,
        exit_signal: code("exit_signal")?,
        submit_ns: time("submit")?,
        start_ns: time("start")?,
        end_ns: time("end")?,
        nodes,
        cpus: count("cpus")?,
        gpus: count("gpus")?,
        mem_bytes: count("mem_bytes")?,
        id,
    })
}

/// Whether `id` looks like a Slurm job id: starts with a digit, at most
/// [`MAX_JOB_ID_BYTES`], only digits and `_ + [ ] - , %` (array tasks `1234_7`, pending
/// arrays `1234_[1-9%2]`, heterogeneous components `1234+1`).
pub fn valid_job_id(id: &str) -> bool {
    id.len() <= MAX_JOB_ID_BYTES
        && id.starts_with(|c: char| c.is_ascii_digit())
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || b"_+[]-,%".contains(&b))
}

/// Why a hostlist does not expand.
#[derive(Debug, Clone, Snafu, PartialEq, Eq)]
pub enum HostlistError {
    /// A `[` without its `]`, a `]` without its `[`, or a `[` inside brackets.
    #[snafu(display("unbalanced brackets in {list:?}"))]
    Unbalanced { list: String },
    /// A range inside brackets is not `N` or `N-M` with `N ≤ M`.
    #[snafu(display("bad range {range:?}"))]
    BadRange { range: String },
    /// The list names more than [`MAX_HOSTLIST_NODES`] nodes.
    #[snafu(display("more than {MAX_HOSTLIST_NODES} nodes"))]
    TooMany,
}

/// Expands a Slurm hostlist into node names, in order: `cn[01-03,07]` is `cn01 cn02 cn03
/// cn07` (numbers keep the width of the range's first bound), `a[1-2]b[3-4]` is `a1b3 a1b4
/// a2b3 a2b4`, and comma-separated groups (`cn[01-02],gpu7`) follow one another. Empty
/// text, `(null)` and `None assigned` (what `sacct` prints for jobs that never ran) are no
/// nodes.
pub fn expand_hostlist(list: &str) -> Result<Vec<String>, HostlistError> {
    let list = list.trim();
    if list.is_empty() || list == "(null)" || list == "None assigned" {
        return Ok(Vec::new());
    }
    let unbalanced = || HostlistError::Unbalanced {
        list: list.to_owned(),
    };
    let mut nodes = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in list.char_indices() {
        match c {
            '[' if depth == 0 => depth = 1,
            '[' => return Err(unbalanced()),
            ']' if depth == 1 => depth = 0,
            ']' => return Err(unbalanced()),
            ',' if depth == 0 => {
                expand_group(&list[start..i], &mut nodes)?;
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(unbalanced());
    }
    expand_group(&list[start..], &mut nodes)?;
    Ok(nodes)
}

/// Expands one group (no top-level comma), appending to `nodes`.
fn expand_group(group: &str, nodes: &mut Vec<String>) -> Result<(), HostlistError> {
    let group = group.trim();
    if group.is_empty() {
        return Ok(());
    }
    // The prefixes expanded so far; each bracket multiplies them by its numbers.
    let mut names = vec![String::new()];
    let mut rest = group;
    while !rest.is_empty() {
        let Some(open) = rest.find('[') else {
            names.iter_mut().for_each(|n| n.push_str(rest));
            break;
        };
        let close = rest[open..].find(']').expect("balanced") + open;
        let literal = &rest[..open];
        let numbers = bracket_numbers(&rest[open + 1..close])?;
        if names.len().saturating_mul(numbers.len()) + nodes.len() > MAX_HOSTLIST_NODES {
            return Err(HostlistError::TooMany);
        }
        names = names
            .iter()
            .flat_map(|prefix| {
                numbers
                    .iter()
                    .map(move |number| format!("{prefix}{literal}{number}"))
            })
            .collect();
        rest = &rest[close + 1..];
    }
    nodes.extend(names);
    Ok(())
}

/// The numbers of one bracket's contents (`01-04,07`), zero-padded as written.
fn bracket_numbers(inner: &str) -> Result<Vec<String>, HostlistError> {
    let mut numbers = Vec::new();
    for range in inner.split(',') {
        let bad = || HostlistError::BadRange {
            range: range.to_owned(),
        };
        let (low, high) = range.split_once('-').unwrap_or((range, range));
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(low) || !digits(high) {
            return Err(bad());
        }
        let width = low.len();
        let (from, to): (u64, u64) = (
            low.parse().map_err(|_| bad())?,
            high.parse().map_err(|_| bad())?,
        );
        if from > to {
            return Err(bad());
        }
        if (to - from) as usize >= MAX_HOSTLIST_NODES - numbers.len().min(MAX_HOSTLIST_NODES) {
            return Err(HostlistError::TooMany);
        }
        numbers.extend((from..=to).map(|n| format!("{n:0width$}")));
    }
    Ok(numbers)
}
