//! `exawatch jobs` and `exawatch job <id>`: the job records of a running server
//! (`GET /api/v1/jobs`, `GET /api/v1/jobs/<id>`).

use anyhow::{Context, Result};
use clap::Args;
use serde_json::Value;

use crate::analytics::{UrlArgs, call};

#[derive(Debug, Args)]
pub(crate) struct JobsArgs {
    #[command(flatten)]
    url: UrlArgs,
    /// Jobs not ended before this: RFC 3339, Unix seconds, `now` or `-1h`-style.
    #[arg(long, allow_hyphen_values = true)]
    from: Option<String>,
    /// Jobs started (or submitted) by this time.
    #[arg(long, allow_hyphen_values = true)]
    to: Option<String>,
    /// Owned by this user.
    #[arg(long)]
    user: Option<String>,
    /// That ran on this node.
    #[arg(long)]
    node: Option<String>,
    /// In this state (RUNNING, COMPLETED, FAILED, …).
    #[arg(long)]
    state: Option<String>,
    /// Of this cluster.
    #[arg(long)]
    cluster: Option<String>,
    /// At most this many jobs, newest start first.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Print the JSON answer instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct JobArgs {
    #[command(flatten)]
    url: UrlArgs,
    /// The job id (`1234`, `1234_7`, `1234+1`).
    id: String,
    /// The cluster, when several have this id.
    #[arg(long)]
    cluster: Option<String>,
}

/// `text` as one URL query or path component.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let pairs: Vec<String> = pairs
        .iter()
        .filter_map(|(key, value)| Some(format!("{key}={}", encode(value.as_deref()?))))
        .collect();
    if pairs.is_empty() {
        String::new()
    } else {
        format!("?{}", pairs.join("&"))
    }
}

/// Seconds since the epoch (a JSON number) as RFC 3339, or `-`.
fn time(value: &Value) -> String {
    value
        .as_f64()
        .and_then(|s| chrono::DateTime::from_timestamp(s.floor() as i64, 0))
        .map_or_else(
            || "-".to_owned(),
            |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        )
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

pub(crate) fn list(args: &JobsArgs) -> Result<()> {
    let path = format!(
        "/api/v1/jobs{}",
        query(&[
            ("from", args.from.clone()),
            ("to", args.to.clone()),
            ("user", args.user.clone()),
            ("node", args.node.clone()),
            ("state", args.state.clone()),
            ("cluster", args.cluster.clone()),
            ("limit", Some(args.limit.to_string())),
        ])
    );
    let jobs = call(&args.url, "GET", &path, None)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&jobs)?);
        return Ok(());
    }
    let jobs = jobs
        .as_array()
        .context("the server's answer is not a list")?;
    println!(
        "{:<14} {:<10} {:<10} {:<12} {:<20} {:<20} {:>5} {:>5}  nodes",
        "id", "user", "partition", "state", "start", "end", "cpus", "gpus"
    );
    for job in jobs {
        let nodes: Vec<String> = job["nodes"]
            .as_array()
            .map(|n| n.iter().map(text).collect())
            .unwrap_or_default();
        println!(
            "{:<14} {:<10} {:<10} {:<12} {:<20} {:<20} {:>5} {:>5}  {}",
            text(&job["id"]),
            text(&job["user"]),
            text(&job["partition"]),
            text(&job["state"]),
            time(&job["start"]),
            time(&job["end"]),
            text(&job["cpus"]),
            text(&job["gpus"]),
            nodes.join(",")
        );
    }
    Ok(())
}

pub(crate) fn show(args: &JobArgs) -> Result<()> {
    let path = format!(
        "/api/v1/jobs/{}{}",
        encode(&args.id),
        query(&[("cluster", args.cluster.clone())])
    );
    let job = call(&args.url, "GET", &path, None)?;
    println!("{}", serde_json::to_string_pretty(&job)?);
    Ok(())
}
