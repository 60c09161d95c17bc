//! The analytics commands: `train`, `models` and `report` ask a running server (which owns
//! the store); `eval` runs offline on labelled CSV files.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use exawatch_analytics::eval::{self, DataSet, Method};
use exawatch_analytics::model::ModelInfo;
use exawatch_analytics::report::ReportInfo;
use exawatch_analytics::{DEFAULT_DETECTOR, DetectorKind, FitOptions};
use serde_json::{Value, json};

/// Server URL, shared by the commands that talk to a running server.
#[derive(Debug, Args)]
pub(crate) struct UrlArgs {
    /// Server URL.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "EXAWATCH_URL")]
    pub(crate) url: String,
}

#[derive(Debug, Args)]
pub(crate) struct TrainArgs {
    #[command(flatten)]
    url: UrlArgs,
    /// Model name; training an existing name makes its next version.
    #[arg(long)]
    name: String,
    /// Detector: forecast, mad, ewma, pca, gmm, kmeans, iforest or ensemble [default: the live
    /// default, forecast].
    #[arg(long)]
    detector: Option<String>,
    /// Series selector, e.g. `node_power` or `{plugin="ipmi"}` (repeatable; default: every metric).
    #[arg(long = "select")]
    select: Vec<String>,
    /// Tag whose values are the entities scored.
    #[arg(long, default_value = "node")]
    group_by: String,
    /// Tags that split a metric into several features (repeatable).
    #[arg(long = "split-by", default_values_t = vec!["plugin".to_owned()])]
    split_by: Vec<String>,
    /// Window length in seconds.
    #[arg(long, default_value_t = 10.0)]
    window_secs: f64,
    /// Training range start: RFC 3339, Unix seconds, `now` or `-1h`-style.
    #[arg(long, allow_hyphen_values = true)]
    from: String,
    /// Training range end.
    #[arg(long, default_value = "now", allow_hyphen_values = true)]
    to: String,
    /// Target false-positive rate of the learned threshold.
    #[arg(long, default_value_t = FitOptions::default().target_fpr)]
    target_fpr: f64,
}

#[derive(Debug, Args)]
pub(crate) struct ReportArgs {
    #[command(flatten)]
    url: UrlArgs,
    /// Range start: RFC 3339, Unix seconds, `now` or `-1h`-style.
    #[arg(long, allow_hyphen_values = true)]
    from: String,
    /// Range end.
    #[arg(long, default_value = "now", allow_hyphen_values = true)]
    to: String,
}

/// Calls the server's API and returns its JSON answer; a refusal is an error with its reason.
pub(crate) fn call(url: &UrlArgs, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
    let endpoint = format!("{}{path}", url.url.trim_end_matches('/'));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let response = match body {
        Some(body) => agent
            .post(&endpoint)
            .header("Content-Type", "application/json")
            .send(body.to_string()),
        None if method == "GET" => agent.get(&endpoint).call(),
        None => agent.post(&endpoint).send_empty(),
    };
    let mut response =
        response.with_context(|| format!("cannot reach the exawatch server at {}", url.url))?;
    let status = response.status();
    let text = response
        .body_mut()
        .read_to_string()
        .context("reading the answer")?;
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if !status.is_success() {
        let reason = value
            .get("error")
            .and_then(Value::as_str)
            .map_or_else(|| value.to_string(), str::to_owned);
        bail!("the server refused ({status}): {reason}");
    }
    Ok(value)
}

fn time(ns: i64) -> String {
    exawatch_analytics::features::rfc3339(ns)
}

pub(crate) fn train(args: &TrainArgs) -> Result<()> {
    let mut body = json!({
        "name": args.name,
        "select": args.select,
        "group_by": args.group_by,
        "split_by": args.split_by,
        "window_secs": args.window_secs,
        "from": args.from,
        "to": args.to,
        "target_fpr": args.target_fpr,
    });
    if let Some(detector) = &args.detector {
        body["detector"] = json!(detector.parse::<DetectorKind>()?);
    }
    let info: ModelInfo =
        serde_json::from_value(call(&args.url, "POST", "/api/v1/models", Some(body))?)?;
    println!(
        "trained {} version {}: {} on {} rows from {} entities, {} features, threshold {:.4}",
        info.name,
        info.version,
        info.detector,
        info.rows,
        info.entities,
        info.features.len(),
        info.threshold
    );
    Ok(())
}

pub(crate) fn models(url: &UrlArgs) -> Result<()> {
    let models: Vec<ModelInfo> = serde_json::from_value(call(url, "GET", "/api/v1/models", None)?)?;
    println!(
        "{:<20} {:>7} {:<9} {:>8} {:>8} {:>6} {:>11}  trained",
        "name", "version", "detector", "window_s", "features", "rows", "threshold"
    );
    for m in models {
        println!(
            "{:<20} {:>7} {:<9} {:>8} {:>8} {:>6} {:>11.4}  {}",
            m.name,
            m.version,
            m.detector,
            m.spec.window_secs,
            m.features.len(),
            m.rows,
            m.threshold,
            time(m.created_ns)
        );
    }
    Ok(())
}

pub(crate) fn report(args: &ReportArgs) -> Result<()> {
    let body = json!({ "from": args.from, "to": args.to });
    let info: ReportInfo =
        serde_json::from_value(call(&args.url, "POST", "/api/v1/reports", Some(body))?)?;
    println!(
        "report {}: {} anomalies on {} nodes, {}{}",
        info.id,
        info.anomalies,
        info.nodes,
        args.url.url.trim_end_matches('/'),
        info.url
    );
    Ok(())
}

#[derive(Debug, Args)]
pub(crate) struct EvalArgs {
    /// A labelled data set: a directory holding train/, test/ and test_label/ (or labels/),
    /// one header-less CSV per service (repeatable; results are given per set).
    #[arg(long = "set")]
    sets: Vec<PathBuf>,
    /// Directory of training CSV files, one per service (header-less, rows = time steps);
    /// with --test and --labels, one more set.
    #[arg(long, requires_all = ["test", "labels"])]
    train: Option<PathBuf>,
    /// Directory of test CSV files, named as in --train.
    #[arg(long, requires_all = ["train", "labels"])]
    test: Option<PathBuf>,
    /// Directory of label files (one 0/1 per test row), named as in --train.
    #[arg(long, requires_all = ["train", "test"])]
    labels: Option<PathBuf>,
    /// Detector to measure (forecast, mad, ewma, pca, gmm, kmeans, iforest, ensemble) or
    /// `all`; default: the one the live system uses.
    #[arg(long)]
    detector: Option<String>,
    /// Target false-positive rate of the learned thresholds.
    #[arg(long, default_value_t = FitOptions::default().target_fpr)]
    target_fpr: f64,
    /// Write each test point's score and flag to DIR/<set>/<detector>/<service>.csv
    /// (a `score,flag` header, then one line per point, flag 0 or 1).
    #[arg(long, value_name = "DIR")]
    scores: Option<PathBuf>,
}

pub(crate) fn eval(args: &EvalArgs) -> Result<()> {
    let kinds = match args.detector.as_deref() {
        None => vec![DEFAULT_DETECTOR],
        Some("all") => DetectorKind::ALL.to_vec(),
        Some(name) => vec![name.parse::<DetectorKind>()?],
    };
    anyhow::ensure!(
        args.target_fpr > 0.0 && args.target_fpr < 0.5,
        "--target-fpr must be between 0 and 0.5"
    );
    let options = FitOptions {
        target_fpr: args.target_fpr,
        ..FitOptions::default()
    };
    let mut sets = Vec::new();
    for dir in &args.sets {
        sets.push(DataSet::open(dir)?);
    }
    if let (Some(train), Some(test), Some(labels)) = (&args.train, &args.test, &args.labels) {
        let parent = train.parent().unwrap_or(train);
        sets.push(DataSet {
            name: eval::data::set_name(parent),
            services: eval::data::load(train, test, labels)?,
        });
    }
    anyhow::ensure!(
        !sets.is_empty(),
        "give a data set: --set DIR (repeatable) or --train, --test and --labels"
    );
    let mut results = Vec::new();
    for set in &sets {
        let methods = kinds
            .iter()
            .map(|k| Method::Detector(*k))
            .chain([Method::ThreeSigma]);
        let mut evaluations = Vec::new();
        for method in methods {
            let evaluation = eval::evaluate(&set.services, method, options)?;
            if let Some(dir) = &args.scores {
                let dir = dir.join(&set.name).join(method.name());
                for outcome in &evaluation.services {
                    let path = dir.join(format!("{}.csv", outcome.service));
                    eval::data::write_scores(&path, &outcome.scores, &outcome.flags)?;
                }
            }
            evaluations.push(evaluation);
        }
        results.push((set.name.clone(), evaluations));
    }
    println!("{}", eval::render(&results, &options));
    Ok(())
}
