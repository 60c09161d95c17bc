//! `[scrape]`: the server (and `exawatch collect` on a node, [`run_on_node`]) scrapes
//! Prometheus exporters. Each job watches its targets (static,
//! and its targets file, re-read when its modification time changes); each target is a task
//! of its own, scraping every `interval_secs` at an offset within the interval taken from
//! its address (so that a job's targets are spread over it). A scrape is an HTTP GET on a
//! blocking thread (`ureq`, as the rest of the binary uses; a target that hangs is cut off
//! at `timeout_secs`), parsed by [`exposition`], labelled by [`Labeller`] and written
//! through the [`ScrapeSink`] (the store's WAL; a node's MQTT publisher), with the target's `up`,
//! `scrape_duration_seconds`, `scrape_samples_scraped` and
//! `scrape_samples_post_metric_relabeling` series as Prometheus writes them. Failures are
//! counted per job and reason and logged once per change of a target's state.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use exawatch_collectors::CollectorConfig;
use exawatch_collectors::publisher::{Publisher, PublisherConfig};
use exawatch_protocol::exposition::{self, Exposed, Format};
use exawatch_protocol::scrape::{
    Labelled, Labeller, NODE_TAG, Relabel, ScrapeConfig, ScrapeJob, UrlScheme, parse_targets_file,
};
use exawatch_protocol::time::now_ns;
use exawatch_protocol::{Batch, SeriesKey, Value};
use futures::future::BoxFuture;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// How often a targets file's modification time is looked at.
const TARGETS_FILE_POLL: Duration = Duration::from_secs(5);

/// The largest body a scrape reads (a node_exporter answers ~100 KiB; DCGM on 8 GPUs ~300).
const MAX_BODY_BYTES: u64 = 64 << 20;

/// The CA certificates `https` targets are checked against without `ca_file` (Debian's
/// `ca-certificates`).
const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Where scraped samples go: the store's write path (WAL) on the server.
pub(crate) trait ScrapeSink: Send + Sync {
    /// Stores `batch`; resolves once it is durable, or with why not.
    fn write(&self, batch: Batch) -> BoxFuture<'static, Result<(), String>>;
}

/// Shared reference to a [`ScrapeSink`].
pub(crate) type ScrapeSinkRef = Arc<dyn ScrapeSink>;

/// Labels of a job's counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    job: String,
}

/// Labels of a failed scrape or a dropped sample.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    job: String,
    reason: &'static str,
}

/// The scraper's meters on `/metrics`.
#[derive(Debug, Clone, Default)]
pub(crate) struct ScrapeMetrics {
    scrapes: Family<JobLabels, Counter>,
    failures: Family<ReasonLabels, Counter>,
    samples: Family<JobLabels, Counter>,
    dropped: Family<ReasonLabels, Counter>,
}

impl ScrapeMetrics {
    /// Creates the meters and registers them.
    pub(crate) fn new(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let r = registry.sub_registry_with_prefix("exawatch");
        r.register(
            "scrapes",
            "Scrapes of Prometheus exporters attempted, by job",
            metrics.scrapes.clone(),
        );
        r.register(
            "scrape_failures",
            "Failed scrapes, by job and reason (connect, timeout, tls, http_status, body, parse, store)",
            metrics.failures.clone(),
        );
        r.register(
            "scrape_samples",
            "Scraped samples stored, by job",
            metrics.samples.clone(),
        );
        r.register(
            "scrape_samples_dropped",
            "Scraped samples not stored, by job and reason (reserved_label)",
            metrics.dropped.clone(),
        );
        metrics
    }
}

/// One job ready to run: its configuration, compiled rules and HTTP client.
struct Job {
    config: ScrapeJob,
    relabel: Vec<Relabel>,
    agent: ureq::Agent,
    authorization: Option<String>,
}

/// The jobs of `[scrape]`, built (CA files read, rules compiled) and ready to run.
#[derive(Debug)]
pub(crate) struct Scraper {
    jobs: Vec<Arc<Job>>,
    metrics: ScrapeMetrics,
    /// Labels every target gets unless its group sets them (a node's own name on a node).
    labels: BTreeMap<String, String>,
}

impl Scraper {
    /// Builds every job of `config` (already validated); a CA file that cannot be read is
    /// an error naming the job.
    pub(crate) fn new(config: &ScrapeConfig, metrics: ScrapeMetrics) -> Result<Self> {
        let jobs = config
            .jobs
            .iter()
            .enumerate()
            .map(|(i, job)| {
                Job::new(job)
                    .with_context(|| format!("scrape.jobs[{i}] (job {:?})", job.name))
                    .map(Arc::new)
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            jobs,
            metrics,
            labels: BTreeMap::new(),
        })
    }

    /// Whether there is any job.
    pub(crate) fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Scrapes every job's targets into `sink` until `stopped` turns true.
    pub(crate) async fn run(self, sink: ScrapeSinkRef, stopped: watch::Receiver<bool>) {
        let jobs: Vec<JoinHandle<()>> = self
            .jobs
            .into_iter()
            .map(|job| {
                let context = TargetContext {
                    job,
                    sink: Arc::clone(&sink),
                    metrics: self.metrics.clone(),
                    labels: Arc::new(self.labels.clone()),
                };
                tokio::spawn(run_job(context, stopped.clone()))
            })
            .collect();
        for job in jobs {
            let _ = job.await;
        }
    }
}

/// `exawatch collect`'s scraping: `scraper`'s jobs scraped on this node, every target
/// labelled with the collector's `node` (and `org`, `cluster` when set) unless its group
/// sets them, the samples published as EXAMON messages on a connection of their own to the
/// collector's broker, until `stopped`.
pub(crate) async fn run_on_node(
    mut scraper: Scraper,
    collector: &CollectorConfig,
    stopped: watch::Receiver<bool>,
) -> Result<()> {
    let node = collector.node_name();
    scraper.labels.insert(NODE_TAG.into(), node.clone());
    for (name, value) in [("org", &collector.org), ("cluster", &collector.cluster)] {
        if !value.is_empty() {
            scraper.labels.insert(name.into(), value.clone());
        }
    }
    let publisher = Arc::new(
        Publisher::start(PublisherConfig {
            connection: collector.mqtt.clone(),
            client_id: format!("exawatch-scrape-{node}-{}", std::process::id()),
            qos: collector.qos,
            offline_buffer_messages: collector.offline_buffer_messages,
        })
        .context("starting the MQTT publisher of the scraped samples")?,
    );
    scraper
        .run(Arc::new(PublisherSink(Arc::clone(&publisher))), stopped)
        .await;
    if let Ok(publisher) = Arc::try_unwrap(publisher) {
        publisher.close(PUBLISHER_DRAIN).await;
    }
    Ok(())
}

/// How long the node's publisher gets, when scraping stops, to send what it holds.
const PUBLISHER_DRAIN: Duration = Duration::from_secs(5);

/// Scraped samples published as EXAMON messages (`exawatch collect`): queued at once, sent
/// by the publisher, held in its offline buffer while the broker is away.
struct PublisherSink(Arc<Publisher>);

impl ScrapeSink for PublisherSink {
    fn write(&self, batch: Batch) -> BoxFuture<'static, Result<(), String>> {
        for sample in batch.samples() {
            self.0.publish_sample(&sample);
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

impl std::fmt::Debug for Job {
    /// The configuration (its secrets redacted), never the `Authorization` header.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Job {
    fn new(config: &ScrapeJob) -> Result<Self> {
        let relabel = config
            .metric_relabel_configs
            .iter()
            .map(Relabel::new)
            .collect::<Result<_, _>>()?;
        let mut agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs_f64(config.timeout_secs)))
            .user_agent(concat!("exawatch/", env!("CARGO_PKG_VERSION")));
        if config.scheme == UrlScheme::Https {
            agent = agent.tls_config(tls_config(config.ca_file.as_deref())?);
        }
        let authorization = match (&config.basic_auth, config.bearer_token.as_str()) {
            (Some(auth), _) => Some(format!(
                "Basic {}",
                base64(format!("{}:{}", auth.username, auth.password).as_bytes())
            )),
            (None, "") => None,
            (None, token) => Some(format!("Bearer {token}")),
        };
        Ok(Self {
            config: config.clone(),
            relabel,
            agent: agent.build().into(),
            authorization,
        })
    }
}

/// TLS with rustls (ring), trusting the certificates of `ca_file` or of the system.
pub(crate) fn tls_config(ca_file: Option<&Path>) -> Result<ureq::tls::TlsConfig> {
    let path = ca_file.unwrap_or(Path::new(SYSTEM_CA_FILE));
    let pem = std::fs::read(path)
        .with_context(|| format!("reading the CA certificates of ca_file {}", path.display()))?;
    let certs = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => Some(Ok(cert)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading the PEM file {}", path.display()))?;
    if certs.is_empty() {
        bail!("no certificate in {}", path.display());
    }
    Ok(ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .build())
}

/// Standard base64 with padding (RFC 4648), for basic authentication.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// What every target task of a job shares.
#[derive(Clone)]
struct TargetContext {
    job: Arc<Job>,
    sink: ScrapeSinkRef,
    metrics: ScrapeMetrics,
    /// [`Scraper`]'s labels for every target.
    labels: Arc<BTreeMap<String, String>>,
}

/// A target: its address and the labels of its group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Target {
    address: String,
    labels: BTreeMap<String, String>,
}

/// Keeps one task per target of the job running until `stopped`: the static targets, and
/// those of the targets file, re-read when it changes (kept as they were while it is
/// unreadable or invalid).
async fn run_job(context: TargetContext, mut stopped: watch::Receiver<bool>) {
    let config = &context.job.config;
    let static_targets: Vec<Target> = config
        .targets
        .iter()
        .map(|address| Target {
            address: address.clone(),
            labels: config.labels.clone(),
        })
        .collect();
    let mut running: HashMap<Target, JoinHandle<()>> = HashMap::new();
    let mut file = config.targets_file.clone().map(TargetsFile::new);
    loop {
        let mut wanted = static_targets.clone();
        if let Some(file) = &mut file {
            file.refresh(&config.name);
            wanted.extend(file.targets.iter().cloned());
        }
        for target in &mut wanted {
            for (name, value) in context.labels.iter() {
                target
                    .labels
                    .entry(name.clone())
                    .or_insert_with(|| value.clone());
            }
        }
        running.retain(|target, task| {
            let keep = wanted.contains(target);
            if !keep {
                task.abort();
            }
            keep
        });
        for target in wanted {
            if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(target) {
                let target = slot.key().clone();
                slot.insert(tokio::spawn(run_target(
                    context.clone(),
                    target,
                    stopped.clone(),
                )));
            }
        }
        let poll = async {
            match file {
                Some(_) => tokio::time::sleep(TARGETS_FILE_POLL).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => break,
            _ = poll => {}
        }
    }
    for (_, task) in running {
        let _ = task.await;
    }
}

/// A targets file and what was last read from it.
struct TargetsFile {
    path: PathBuf,
    modified: Option<SystemTime>,
    targets: Vec<Target>,
    /// The last error, so that it is logged once.
    error: Option<String>,
}

impl TargetsFile {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            modified: None,
            targets: Vec::new(),
            error: None,
        }
    }

    /// Re-reads the file if its modification time changed.
    fn refresh(&mut self, job: &str) {
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified());
        let result = match modified {
            Ok(modified) if Some(modified) == self.modified => return,
            Ok(modified) => {
                self.modified = Some(modified);
                std::fs::read_to_string(&self.path)
                    .map_err(|e| e.to_string())
                    .and_then(|text| parse_targets_file(&text))
            }
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(groups) => {
                self.targets = groups
                    .into_iter()
                    .flat_map(|group| {
                        group.targets.into_iter().map(move |address| Target {
                            address,
                            labels: group.labels.clone(),
                        })
                    })
                    .collect();
                self.error = None;
                tracing::info!(job, file = %self.path.display(), targets = self.targets.len(), "Read the targets file.");
            }
            Err(error) if self.error.as_ref() != Some(&error) => {
                tracing::warn!(job, file = %self.path.display(), %error, "Cannot read the targets file; its targets stay as they were.");
                self.error = Some(error);
            }
            Err(_) => {}
        }
    }
}

/// Why a scrape failed: the `reason` label and the message logged.
#[derive(Debug)]
struct Failure {
    reason: &'static str,
    message: String,
}

/// Scrapes one target every interval, at its offset, until `stopped`.
async fn run_target(context: TargetContext, target: Target, mut stopped: watch::Receiver<bool>) {
    let job = &context.job;
    let config = &job.config;
    let labeller = Labeller::new(config, &target.address, &target.labels, job.relabel.clone());
    let url = format!(
        "{}://{}{}",
        config.scheme.as_str(),
        target.address,
        config.metrics_path
    );
    let interval = Duration::from_secs_f64(config.interval_secs);
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + offset(&config.name, &target.address, interval),
        interval,
    );
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let job_labels = JobLabels {
        job: config.name.clone(),
    };
    // The reason of the last failure, or None when the last scrape worked.
    let mut state: Option<&'static str> = None;
    loop {
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => break,
            _ = ticker.tick() => {}
        }
        context.metrics.scrapes.get_or_create(&job_labels).inc();
        let outcome = scrape_once(&context, &labeller, &url).await;
        let reason = outcome.as_ref().err().map(|f| f.reason);
        if let Err(failure) = &outcome {
            context
                .metrics
                .failures
                .get_or_create(&ReasonLabels {
                    job: config.name.clone(),
                    reason: failure.reason,
                })
                .inc();
        }
        if reason != state {
            match &outcome {
                Err(failure) => tracing::warn!(
                    job = %config.name,
                    target = %target.address,
                    reason = failure.reason,
                    error = %failure.message,
                    "Scrape failed; logged again when the reason changes."
                ),
                Ok(()) => {
                    tracing::info!(job = %config.name, target = %target.address, "Scraping again.")
                }
            }
            state = reason;
        }
    }
}

/// Where in the interval a target is scraped: a hash of job and address, so that a job's
/// targets spread over the interval and each keeps its place across restarts of a build.
fn offset(job: &str, address: &str, interval: Duration) -> Duration {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (job, address).hash(&mut hasher);
    let fraction = (hasher.finish() % 1_000_000) as f64 / 1_000_000.0;
    interval.mul_f64(fraction)
}

/// One scrape: fetch, parse, label, store with the report series. A failed fetch or parse
/// still stores `up` 0.
async fn scrape_once(
    context: &TargetContext,
    labeller: &Labeller,
    url: &str,
) -> Result<(), Failure> {
    let job = &context.job;
    let start_ns = now_ns();
    let started = Instant::now();
    let fetched = {
        let (agent, url) = (job.agent.clone(), url.to_owned());
        let authorization = job.authorization.clone();
        let timeout = job.config.timeout_secs;
        tokio::task::spawn_blocking(move || fetch(&agent, &url, authorization.as_deref(), timeout))
            .await
            .unwrap_or_else(|e| {
                Err(Failure {
                    reason: "connect",
                    message: e.to_string(),
                })
            })
    };
    let parsed = fetched.and_then(|(body, format)| {
        exposition::parse(&body, format).map_err(|e| Failure {
            reason: "parse",
            message: e.to_string(),
        })
    });
    let duration = started.elapsed().as_secs_f64();
    let mut batch = Batch::new();
    let (scraped, stored) = match &parsed {
        Ok(samples) => (
            samples.len(),
            add_samples(context, labeller, samples, start_ns, &mut batch),
        ),
        Err(_) => (0, 0),
    };
    let report = labeller.target_labels();
    for (name, value) in [
        ("up", if parsed.is_ok() { 1.0 } else { 0.0 }),
        ("scrape_duration_seconds", duration),
        ("scrape_samples_scraped", scraped as f64),
        ("scrape_samples_post_metric_relabeling", stored as f64),
    ] {
        let series = batch.add_series(SeriesKey {
            metric: name.into(),
            tags: report.clone(),
        });
        batch.push(series, start_ns, Value::Float(value));
    }
    context.sink.write(batch).await.map_err(|message| Failure {
        reason: "store",
        message,
    })?;
    context
        .metrics
        .samples
        .get_or_create(&JobLabels {
            job: job.config.name.clone(),
        })
        .inc_by(stored as u64);
    parsed.map(|_| ())
}

/// Adds the labelled `samples` to `batch` (at their own timestamp, else `start_ns`); returns
/// how many were added.
fn add_samples(
    context: &TargetContext,
    labeller: &Labeller,
    samples: &[Exposed],
    start_ns: i64,
    batch: &mut Batch,
) -> usize {
    let mut added = 0;
    let mut reserved = 0;
    for sample in samples {
        match labeller.label(sample) {
            Labelled::Series(key) => {
                let series = batch.add_series(key);
                let time_ns = sample
                    .timestamp_ms
                    .map_or(start_ns, |ms| ms.saturating_mul(1_000_000));
                batch.push(series, time_ns, Value::Float(sample.value));
                added += 1;
            }
            Labelled::Dropped => {}
            Labelled::Reserved(_) => reserved += 1,
        }
    }
    if reserved > 0 {
        context
            .metrics
            .dropped
            .get_or_create(&ReasonLabels {
                job: context.job.config.name.clone(),
                reason: "reserved_label",
            })
            .inc_by(reserved);
    }
    added
}

/// GETs `url` (blocking): the body and its format, or why not.
fn fetch(
    agent: &ureq::Agent,
    url: &str,
    authorization: Option<&str>,
    timeout_secs: f64,
) -> Result<(String, Format), Failure> {
    let mut request = agent.get(url).header("Accept", exposition::ACCEPT).header(
        "X-Prometheus-Scrape-Timeout-Seconds",
        timeout_secs.to_string(),
    );
    if let Some(authorization) = authorization {
        request = request.header("Authorization", authorization);
    }
    let mut response = request.call().map_err(http_failure)?;
    let status = response.status();
    if !status.is_success() {
        return Err(Failure {
            reason: "http_status",
            message: format!("HTTP status {status}"),
        });
    }
    let format = Format::from_content_type(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
    );
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_BODY_BYTES)
        .read_to_vec()
        .map_err(http_failure)?;
    let body = String::from_utf8(body).map_err(|_| Failure {
        reason: "body",
        message: "the body is not UTF-8".into(),
    })?;
    Ok((body, format))
}

fn http_failure(error: ureq::Error) -> Failure {
    let reason = match &error {
        ureq::Error::Timeout(_) => "timeout",
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) | ureq::Error::Pem(_) => "tls",
        ureq::Error::BodyExceedsLimit(_) | ureq::Error::BodyStalled => "body",
        _ => "connect",
    };
    Failure {
        reason,
        message: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_as_rfc_4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("prometheus:s3cr3t", "cHJvbWV0aGV1czpzM2NyM3Q="),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn targets_spread_over_the_interval() {
        let interval = Duration::from_secs(15);
        let offsets: Vec<Duration> = (0..100)
            .map(|i| offset("node", &format!("cn{i:03}:9100"), interval))
            .collect();
        assert!(offsets.iter().all(|o| *o < interval));
        let first_half = offsets.iter().filter(|o| **o < interval / 2).count();
        assert!((30..70).contains(&first_half), "{first_half}");
        assert_eq!(offset("node", "cn001:9100", interval), offsets[1]);
    }
}
