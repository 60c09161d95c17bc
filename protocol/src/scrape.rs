//! Scraping Prometheus exporters, the pure part: the `[scrape]` section ([`ScrapeConfig`],
//! one [`ScrapeJob`] per `[[scrape.jobs]]`), targets files in Prometheus' `file_sd` JSON
//! ([`parse_targets_file`]), and how an exposed sample becomes a series ([`Labeller`]):
//! target labels merged with Prometheus' `honor_labels` rule, the `node` tag, then
//! `metric_relabel_configs` ([`Relabel`]: keep, drop, replace, labeldrop). The HTTP client
//! and the schedule live in the binary.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::exposition::{Exposed, valid_label_name};
use crate::settings::{InvalidSetting, Validate, redacted, within};
use crate::{RESERVED_COLUMNS, SeriesKey};

/// The tag exawatch's own collectors name a machine by; a scraped series gets it from the
/// host of its `instance` (see [`ScrapeJob::node_label`]).
pub const NODE_TAG: &str = "node";

/// The `[scrape]` section: the exporters the server scrapes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScrapeConfig {
    /// `[[scrape.jobs]]`, each scraping its targets on its own schedule.
    pub jobs: Vec<ScrapeJob>,
}

/// One `[[scrape.jobs]]`: targets scraped alike, their series labelled `job = name`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeJob {
    /// The `job` label of its series; unique among jobs.
    pub name: String,
    /// Static targets, `host:port` each.
    #[serde(default)]
    pub targets: Vec<String>,
    /// A Prometheus `file_sd` JSON file, `[{"targets": ["host:port", …], "labels": {…}}]`,
    /// re-read when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets_file: Option<PathBuf>,
    /// Labels added to every series of the job's static targets.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Seconds between two scrapes of a target.
    #[serde(default = "default_interval_secs")]
    pub interval_secs: f64,
    /// Seconds a scrape may take (at most `interval_secs`), after which the target is down.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: f64,
    /// The path of the metrics on each target.
    #[serde(default = "default_metrics_path")]
    pub metrics_path: String,
    /// `http` or `https`.
    #[serde(default)]
    pub scheme: UrlScheme,
    /// For `https`: a PEM file of the CA certificates to trust (default: the system's,
    /// `/etc/ssl/certs/ca-certificates.crt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// HTTP basic authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    /// Sent as `Authorization: Bearer …` (not with `basic_auth`); empty for none.
    #[serde(default)]
    pub bearer_token: String,
    /// Whether labels the exporter exposes win over the target's (`job`, `instance`, the
    /// targets file's); when false, as by default, the exposed ones are kept as
    /// `exported_<name>`.
    #[serde(default)]
    pub honor_labels: bool,
    /// Whether every series without a `node` label gets one: the host of its `instance`
    /// (`cn01:9100` → `cn01`; the exporter's own `instance` with `honor_labels`), so that
    /// exawatch's per-node views and analytics see it.
    #[serde(default = "default_true")]
    pub node_label: bool,
    /// Rules applied to each scraped sample after the target labels, in order.
    #[serde(default)]
    pub metric_relabel_configs: Vec<RelabelConfig>,
}

const fn default_interval_secs() -> f64 {
    15.0
}

const fn default_timeout_secs() -> f64 {
    10.0
}

fn default_metrics_path() -> String {
    "/metrics".into()
}

const fn default_true() -> bool {
    true
}

impl ScrapeJob {
    /// A job scraping `targets` with every default (for tests).
    pub fn new(name: &str, targets: &[&str]) -> Self {
        Self {
            name: name.into(),
            targets: targets.iter().map(|t| (*t).into()).collect(),
            targets_file: None,
            labels: BTreeMap::new(),
            interval_secs: default_interval_secs(),
            timeout_secs: default_timeout_secs(),
            metrics_path: default_metrics_path(),
            scheme: UrlScheme::Http,
            ca_file: None,
            basic_auth: None,
            bearer_token: String::new(),
            honor_labels: false,
            node_label: true,
            metric_relabel_configs: Vec::new(),
        }
    }
}

impl fmt::Debug for ScrapeJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScrapeJob")
            .field("name", &self.name)
            .field("targets", &self.targets)
            .field("targets_file", &self.targets_file)
            .field("labels", &self.labels)
            .field("interval_secs", &self.interval_secs)
            .field("timeout_secs", &self.timeout_secs)
            .field("metrics_path", &self.metrics_path)
            .field("scheme", &self.scheme)
            .field("ca_file", &self.ca_file)
            .field("basic_auth", &self.basic_auth)
            .field("bearer_token", &redacted(&self.bearer_token))
            .field("honor_labels", &self.honor_labels)
            .field("node_label", &self.node_label)
            .field("metric_relabel_configs", &self.metric_relabel_configs)
            .finish()
    }
}

/// How a target is reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UrlScheme {
    /// Plain HTTP.
    #[default]
    Http,
    /// HTTP over TLS.
    Https,
}

impl UrlScheme {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

/// HTTP basic authentication: a user name and its password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// The user name.
    pub username: String,
    /// The password.
    #[serde(default)]
    pub password: String,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .finish()
    }
}

/// One of `metric_relabel_configs`, with Prometheus' fields and defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelabelConfig {
    /// What the rule does.
    #[serde(default)]
    pub action: RelabelAction,
    /// The labels whose values, joined by `separator`, the regex is matched against
    /// (`__name__` is the metric name).
    #[serde(default)]
    pub source_labels: Vec<String>,
    /// What joins the source labels' values.
    #[serde(default = "default_separator")]
    pub separator: String,
    /// A regular expression matched against the whole value (anchored at both ends); for
    /// `labeldrop`, against label names.
    #[serde(default = "default_regex")]
    pub regex: String,
    /// For `replace`: the label set to the replacement (`$1` groups allowed).
    #[serde(default)]
    pub target_label: String,
    /// For `replace`: the new value, `$1`, `${name}` groups expanded; empty removes the
    /// label.
    #[serde(default = "default_replacement")]
    pub replacement: String,
}

fn default_separator() -> String {
    ";".into()
}

fn default_regex() -> String {
    "(.*)".into()
}

fn default_replacement() -> String {
    "$1".into()
}

/// What a [`RelabelConfig`] does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelabelAction {
    /// Sets `target_label` to the expanded `replacement` when the regex matches.
    #[default]
    Replace,
    /// Drops the sample unless the regex matches.
    Keep,
    /// Drops the sample when the regex matches.
    Drop,
    /// Removes every label whose name the regex matches.
    LabelDrop,
}

impl Validate for ScrapeConfig {
    fn validate(&self) -> Result<(), InvalidSetting> {
        for (i, job) in self.jobs.iter().enumerate() {
            let invalid = |key: &str, value: String, allowed: &str| InvalidSetting {
                key: format!("jobs[{i}].{key}"),
                value,
                allowed: allowed.to_owned(),
            };
            if job.name.is_empty() || self.jobs[..i].iter().any(|j| j.name == job.name) {
                return Err(invalid(
                    "name",
                    format!("{:?}", job.name),
                    "a name of its own for each job",
                ));
            }
            if job.targets.is_empty() && job.targets_file.is_none() {
                return Err(invalid(
                    "targets",
                    "[]".into(),
                    "at least one host:port, unless targets_file is set",
                ));
            }
            if let Some(target) = job.targets.iter().find(|t| !valid_target(t)) {
                return Err(invalid(
                    "targets",
                    format!("{target:?}"),
                    "host:port each (no scheme, path or credentials)",
                ));
            }
            check_labels(&job.labels).map_err(|label| {
                invalid(
                    "labels",
                    format!("{label:?}"),
                    "label names ([a-zA-Z_][a-zA-Z0-9_]*, not __…, not time, metric, value, text)",
                )
            })?;
            within("interval_secs", job.interval_secs, 0.001..=86_400.0)
                .map_err(|e| e.in_section(&format!("jobs[{i}]")))?;
            within("timeout_secs", job.timeout_secs, 0.001..=job.interval_secs)
                .map_err(|e| e.in_section(&format!("jobs[{i}]")))?;
            if !job.metrics_path.starts_with('/') {
                return Err(invalid(
                    "metrics_path",
                    format!("{:?}", job.metrics_path),
                    "a path starting with /",
                ));
            }
            if job.basic_auth.is_some() && !job.bearer_token.is_empty() {
                return Err(invalid(
                    "bearer_token",
                    "…".into(),
                    "only without basic_auth (one Authorization header)",
                ));
            }
            if job.ca_file.is_some() && job.scheme != UrlScheme::Https {
                return Err(invalid(
                    "ca_file",
                    format!("{:?}", job.ca_file),
                    "only with scheme = \"https\"",
                ));
            }
            for (j, rule) in job.metric_relabel_configs.iter().enumerate() {
                Relabel::new(rule)
                    .map_err(|e| e.in_section(&format!("jobs[{i}].metric_relabel_configs[{j}]")))?;
            }
        }
        Ok(())
    }
}

/// Whether `target` is `host:port` (or a bare host): no scheme, path, query or credentials.
fn valid_target(target: &str) -> bool {
    !target.is_empty()
        && !target
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '/' | '@' | '?' | '#'))
}

/// The first label name a series may not carry, if any.
fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), String> {
    match labels.keys().find(|name| {
        !valid_label_name(name)
            || name.starts_with("__")
            || RESERVED_COLUMNS.contains(&name.as_str())
    }) {
        Some(name) => Err(name.clone()),
        None => Ok(()),
    }
}

/// A [`RelabelConfig`] ready to apply: its regex compiled, anchored as Prometheus anchors it.
#[derive(Debug, Clone)]
pub struct Relabel {
    action: RelabelAction,
    source_labels: Vec<String>,
    separator: String,
    regex: Regex,
    target_label: String,
    replacement: String,
}

impl Relabel {
    /// Compiles `config`; an invalid regex or a rule missing what its action needs is an
    /// [`InvalidSetting`] (key relative to the rule).
    pub fn new(config: &RelabelConfig) -> Result<Self, InvalidSetting> {
        let regex = Regex::new(&format!("^(?:{})$", config.regex)).map_err(|e| InvalidSetting {
            key: "regex".into(),
            value: format!("{:?}", config.regex),
            allowed: format!("a regular expression (RE2 syntax): {e}"),
        })?;
        let needs = |key: &str, value: String, allowed: &str| InvalidSetting {
            key: key.into(),
            value,
            allowed: allowed.into(),
        };
        match config.action {
            RelabelAction::Replace if config.target_label.is_empty() => {
                return Err(needs(
                    "target_label",
                    "\"\"".into(),
                    "a label name for action = \"replace\"",
                ));
            }
            RelabelAction::Keep | RelabelAction::Drop if config.source_labels.is_empty() => {
                return Err(needs(
                    "source_labels",
                    "[]".into(),
                    "at least one label for action = \"keep\" or \"drop\"",
                ));
            }
            RelabelAction::LabelDrop
                if !config.source_labels.is_empty() || !config.target_label.is_empty() =>
            {
                return Err(needs(
                    "source_labels",
                    format!("{:?}", config.source_labels),
                    "none, nor a target_label, for action = \"labeldrop\" (regex matches label names)",
                ));
            }
            _ => {}
        }
        Ok(Self {
            action: config.action,
            source_labels: config.source_labels.clone(),
            separator: config.separator.clone(),
            regex,
            target_label: config.target_label.clone(),
            replacement: config.replacement.clone(),
        })
    }

    /// Applies the rule to `labels` (with `__name__`); false when the sample is dropped.
    pub fn apply(&self, labels: &mut Vec<(String, String)>) -> bool {
        let source = || {
            self.source_labels
                .iter()
                .map(|name| get(labels, name).unwrap_or(""))
                .collect::<Vec<_>>()
                .join(&self.separator)
        };
        match self.action {
            RelabelAction::Keep => self.regex.is_match(&source()),
            RelabelAction::Drop => !self.regex.is_match(&source()),
            RelabelAction::LabelDrop => {
                labels.retain(|(name, _)| !self.regex.is_match(name));
                true
            }
            RelabelAction::Replace => {
                let value = source();
                let Some(groups) = self.regex.captures(&value) else {
                    return true;
                };
                let mut target = String::new();
                groups.expand(&self.target_label, &mut target);
                if !valid_label_name(&target) {
                    return true;
                }
                let mut replaced = String::new();
                groups.expand(&self.replacement, &mut replaced);
                labels.retain(|(name, _)| *name != target);
                if !replaced.is_empty() {
                    labels.push((target, replaced));
                }
                true
            }
        }
    }
}

fn get<'a>(labels: &'a [(String, String)], name: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// One group of a targets file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TargetGroup {
    /// `host:port` each.
    pub targets: Vec<String>,
    /// Labels of every series of these targets.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The groups of a Prometheus `file_sd` JSON targets file, each target and label checked as
/// `[[scrape.jobs]]` checks its own.
pub fn parse_targets_file(text: &str) -> Result<Vec<TargetGroup>, String> {
    let groups: Vec<TargetGroup> = serde_json::from_str(text).map_err(|e| {
        format!("not file_sd JSON ([{{\"targets\": [...], \"labels\": {{...}}}}]): {e}")
    })?;
    for group in &groups {
        if let Some(target) = group.targets.iter().find(|t| !valid_target(t)) {
            return Err(format!("target {target:?} is not host:port"));
        }
        check_labels(&group.labels)
            .map_err(|name| format!("label name {name:?} is not allowed"))?;
    }
    Ok(groups)
}

/// How the samples of one target are labelled: its target labels, `honor_labels`, the
/// `node` tag and the relabel rules.
#[derive(Debug, Clone)]
pub struct Labeller {
    target: Vec<(String, String)>,
    honor_labels: bool,
    node_label: bool,
    relabel: Vec<Relabel>,
}

/// What became of one exposed sample.
#[derive(Debug, Clone, PartialEq)]
pub enum Labelled {
    /// Its series.
    Series(SeriesKey),
    /// A relabel rule dropped it (or removed its name).
    Dropped,
    /// It carries a label the store cannot take as a tag (`time`, `value`, …).
    Reserved(String),
}

impl Labeller {
    /// For a target at `address` of `job`, with the `labels` of its group (static or from
    /// the targets file); `relabel` compiled from the job's rules.
    pub fn new(
        job: &ScrapeJob,
        address: &str,
        labels: &BTreeMap<String, String>,
        relabel: Vec<Relabel>,
    ) -> Self {
        // As Prometheus: the group's labels, then `job` and `instance` unless they set them.
        let mut target: Vec<(String, String)> = labels
            .iter()
            .filter(|(k, v)| !k.starts_with("__") && !v.is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (name, value) in [("job", job.name.as_str()), ("instance", address)] {
            if get(&target, name).is_none() {
                target.push((name.into(), value.into()));
            }
        }
        target.sort();
        Self {
            target,
            honor_labels: job.honor_labels,
            node_label: job.node_label,
            relabel,
        }
    }

    /// The target's labels, sorted (those of its `up` and `scrape_*` series, with `node`).
    pub fn target_labels(&self) -> Vec<(String, String)> {
        let mut labels = self.target.clone();
        if self.node_label
            && get(&labels, NODE_TAG).is_none()
            && let Some(instance) = get(&labels, "instance")
        {
            let node = host_of(instance);
            labels.push((NODE_TAG.into(), node));
            labels.sort();
        }
        labels
    }

    /// The series `sample` is stored as, after target labels, `node` and relabelling.
    pub fn label(&self, sample: &Exposed) -> Labelled {
        let mut labels = Vec::with_capacity(sample.labels.len() + self.target.len() + 2);
        labels.push(("__name__".to_owned(), sample.name.clone()));
        labels.extend(sample.labels.iter().cloned());
        for (name, value) in &self.target {
            match get(&labels, name) {
                Some(_) if self.honor_labels => continue,
                Some(_) => {
                    // The exposed label is kept as exported_<name> (exported_exported_… if
                    // taken), as Prometheus keeps it.
                    let mut exported = format!("exported_{name}");
                    while get(&labels, &exported).is_some() {
                        exported.insert_str(0, "exported_");
                    }
                    for label in labels.iter_mut().filter(|(k, _)| k == name) {
                        label.0 = exported.clone();
                    }
                }
                None => {}
            }
            labels.push((name.clone(), value.clone()));
        }
        // The host of the series' own `instance` (the exporter's, with honor_labels).
        if self.node_label
            && get(&labels, NODE_TAG).is_none()
            && let Some(instance) = get(&labels, "instance")
        {
            let node = host_of(instance);
            labels.push((NODE_TAG.into(), node));
        }
        for rule in &self.relabel {
            if !rule.apply(&mut labels) {
                return Labelled::Dropped;
            }
        }
        let mut metric = None;
        let mut tags = Vec::with_capacity(labels.len());
        for (name, value) in labels {
            if value.is_empty() {
                continue;
            }
            if name == "__name__" {
                metric = Some(value);
            } else if RESERVED_COLUMNS.contains(&name.as_str()) {
                return Labelled::Reserved(name);
            } else {
                tags.push((name, value));
            }
        }
        let Some(metric) = metric else {
            return Labelled::Dropped;
        };
        tags.sort();
        Labelled::Series(SeriesKey { metric, tags })
    }
}

/// The host of an `instance`: `cn01:9100` → `cn01`, `[::1]:9100` → `::1`, `cn01` → `cn01`.
pub fn host_of(instance: &str) -> String {
    if let Some(rest) = instance.strip_prefix('[')
        && let Some((host, _)) = rest.split_once(']')
    {
        return host.to_owned();
    }
    match instance.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host.to_owned()
        }
        _ => instance.to_owned(),
    }
}

#[cfg(test)]
mod tests;
