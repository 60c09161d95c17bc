//! One rule group's state and its evaluation at a time `ts`, with Prometheus' semantics
//! (`rules/alerting.go`, `rules/recording.go`, `rules/group.go`): each rule's expression
//! is evaluated at `ts` (less the group's `query_offset`), recording rules give series
//! named after the rule, alerting rules move each alert through pending → firing →
//! inactive (resolved) and give the `ALERTS` and `ALERTS_FOR_STATE` series; a series a
//! rule returned at the previous evaluation but not at this one gets a staleness marker.
//!
//! Evaluation reads through the engine and writes through a [`SampleWriter`] (the store in
//! production and in the unit-test runner).

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use async_trait::async_trait;

use exawatch_promql::{Engine, Labels, METRIC_NAME, QueryValue, stale_nan};
use exawatch_protocol::{Sample, Value as SampleValue};
use exawatch_store::Store;

use crate::file::{GroupDef, RuleDef, RuleKind};
use crate::template::TemplateData;

/// Resolved alerts are kept this long (ms), to be sent to Alertmanager as resolved and for
/// `keep_firing_for` (Prometheus' `resolvedRetention`).
const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

/// An alert's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AlertState {
    /// Resolved (kept a while to notify).
    Inactive,
    /// Active, not yet for `for`.
    Pending,
    /// Active for `for` or longer.
    Firing,
}

impl AlertState {
    /// As Prometheus names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inactive => "inactive",
            Self::Pending => "pending",
            Self::Firing => "firing",
        }
    }
}

/// One alert of an alerting rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Its labels: the series' (without `__name__`), the rule's, and `alertname`.
    pub labels: Labels,
    /// Expanded annotations.
    pub annotations: BTreeMap<String, String>,
    /// State.
    pub state: AlertState,
    /// The value at the last evaluation that returned it.
    pub value: f64,
    /// When it became active (ms).
    pub active_at_ms: i64,
    /// When it fired (ms).
    pub fired_at_ms: Option<i64>,
    /// When it resolved (ms).
    pub resolved_at_ms: Option<i64>,
    /// When it was last sent to Alertmanager (ms).
    pub last_sent_ms: Option<i64>,
    /// Until when the last notification holds (ms).
    pub valid_until_ms: i64,
    /// Since when it is kept firing by `keep_firing_for` (ms).
    pub keep_firing_since_ms: Option<i64>,
}

impl Alert {
    /// Whether to send it now (Prometheus' `needsSending`).
    fn needs_sending(&self, ts: i64, resend_delay_ms: i64) -> bool {
        if self.state == AlertState::Pending {
            return false;
        }
        if let Some(resolved) = self.resolved_at_ms
            && self.last_sent_ms.is_none_or(|sent| resolved > sent)
        {
            return true;
        }
        self.last_sent_ms
            .is_none_or(|sent| sent + resend_delay_ms < ts)
    }
}

/// How the last evaluation of a rule went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not evaluated yet.
    Unknown,
    /// Evaluated without error.
    Ok,
    /// The last evaluation failed.
    Err,
}

impl Health {
    /// As Prometheus' API names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Ok => "ok",
            Self::Err => "err",
        }
    }
}

/// A rule and its state.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The rule as written.
    pub def: RuleDef,
    /// How its last evaluation went.
    pub health: Health,
    /// Its last error.
    pub last_error: Option<String>,
    /// When it was last evaluated (ms).
    pub last_evaluation_ms: Option<i64>,
    /// How long that took (s).
    pub evaluation_secs: f64,
    /// Alerts by label set (alerting rules).
    pub active: BTreeMap<Labels, Alert>,
    /// The series it wrote at its last successful evaluation.
    previous_series: HashSet<Labels>,
}

/// A group and the state of its rules.
#[derive(Debug, Clone)]
pub struct Group {
    /// The group as written.
    pub name: String,
    /// Its file.
    pub file: String,
    /// Between evaluations (ms).
    pub interval_ms: i64,
    /// See [`GroupDef::limit`].
    pub limit: usize,
    /// See [`GroupDef::query_offset_ms`].
    pub query_offset_ms: i64,
    /// Its rules, in order.
    pub rules: Vec<Rule>,
    /// When it was last evaluated (ms).
    pub last_evaluation_ms: Option<i64>,
    /// How long that took (s).
    pub evaluation_secs: f64,
}

/// Where evaluation writes what rules produce: recorded series, `ALERTS`,
/// `ALERTS_FOR_STATE` and staleness markers. Each rule's samples are written before the
/// next rule of the group runs, so that a rule reads what the rules above it recorded.
#[async_trait]
pub trait SampleWriter: Send + Sync {
    /// Writes `samples` durably.
    async fn write(&self, samples: Vec<Sample>) -> Result<(), String>;
}

#[async_trait]
impl SampleWriter for Store {
    async fn write(&self, samples: Vec<Sample>) -> Result<(), String> {
        Store::write(self, samples).await.map_err(|e| e.to_string())
    }
}

/// What [`Group::eval`] produced.
#[derive(Debug, Default)]
pub struct EvalOutput {
    /// Alerts to send to Alertmanager, with their rule's expression.
    pub to_send: Vec<(String, Vec<Alert>)>,
    /// Rules that failed, with their error.
    pub failures: Vec<(String, String)>,
}

/// What evaluation needs besides the engine.
#[derive(Debug, Clone, Default)]
pub struct EvalContext {
    /// Added to each alert's labels when sent, and `$externalLabels` in templates.
    pub external_labels: Labels,
    /// `$externalURL` in templates.
    pub external_url: String,
    /// A firing alert is sent again after this long (ms).
    pub resend_delay_ms: i64,
}

impl Group {
    /// A group with no evaluation yet; `default_interval_ms` where the file sets none.
    pub fn new(def: GroupDef, default_interval_ms: i64) -> Self {
        Self {
            name: def.name,
            file: def.file,
            interval_ms: def.interval_ms.unwrap_or(default_interval_ms),
            limit: def.limit,
            query_offset_ms: def.query_offset_ms,
            rules: def
                .rules
                .into_iter()
                .map(|def| Rule {
                    def,
                    health: Health::Unknown,
                    last_error: None,
                    last_evaluation_ms: None,
                    evaluation_secs: 0.0,
                    active: BTreeMap::new(),
                    previous_series: HashSet::new(),
                })
                .collect(),
            last_evaluation_ms: None,
            evaluation_secs: 0.0,
        }
    }

    /// Takes over the state of the rules of `old` (the same group before a reload) that are
    /// unchanged, as Prometheus' `CopyState` does: alerts keep their `for` progress.
    pub fn copy_state(&mut self, old: &Group) {
        self.last_evaluation_ms = old.last_evaluation_ms;
        for rule in &mut self.rules {
            if let Some(previous) = old
                .rules
                .iter()
                .find(|r| r.def.name() == rule.def.name() && r.def.expr == rule.def.expr)
            {
                rule.active = previous.active.clone();
                rule.previous_series = previous.previous_series.clone();
                rule.health = previous.health;
                rule.last_error = previous.last_error.clone();
                rule.last_evaluation_ms = previous.last_evaluation_ms;
                rule.evaluation_secs = previous.evaluation_secs;
            }
        }
    }

    /// Evaluates every rule at `ts` (ms), in order, writing each one's samples to `writer`.
    pub async fn eval(
        &mut self,
        engine: &Engine,
        writer: &dyn SampleWriter,
        ts: i64,
        cx: &EvalContext,
    ) -> EvalOutput {
        let started = Instant::now();
        let mut out = EvalOutput::default();
        let t = ts - self.query_offset_ms;
        for rule in &mut self.rules {
            let rule_started = Instant::now();
            let result = match &rule.def.kind {
                RuleKind::Recording { record } => {
                    eval_recording(&rule.def, record, engine, t, self.limit).await
                }
                RuleKind::Alerting { .. } => {
                    eval_alerting(rule, engine, ts, t, self.limit, cx).await
                }
            };
            let result = match result {
                Ok(mut samples) => {
                    let returned: HashSet<Labels> = samples.iter().map(labels_of).collect();
                    for gone in rule.previous_series.difference(&returned) {
                        samples.push(sample(gone, t, stale_nan()));
                    }
                    writer
                        .write(samples)
                        .await
                        .map(|()| returned)
                        .map_err(|e| format!("writing the rule's samples: {e}"))
                }
                Err(error) => Err(error),
            };
            rule.last_evaluation_ms = Some(ts);
            rule.evaluation_secs = rule_started.elapsed().as_secs_f64();
            match result {
                Ok(returned) => {
                    rule.health = Health::Ok;
                    rule.last_error = None;
                    rule.previous_series = returned;
                    let mut to_send = Vec::new();
                    for alert in rule.active.values_mut() {
                        if alert.needs_sending(ts, cx.resend_delay_ms) {
                            alert.last_sent_ms = Some(ts);
                            let delta = cx.resend_delay_ms.max(self.interval_ms);
                            alert.valid_until_ms = ts + 4 * delta;
                            to_send.push(alert.clone());
                        }
                    }
                    if !to_send.is_empty() {
                        out.to_send.push((rule.def.expr.clone(), to_send));
                    }
                }
                Err(error) => {
                    rule.health = Health::Err;
                    out.failures
                        .push((rule.def.name().to_owned(), error.clone()));
                    rule.last_error = Some(error);
                }
            }
        }
        self.last_evaluation_ms = Some(ts);
        self.evaluation_secs = started.elapsed().as_secs_f64();
        out
    }
}

/// The labels of a sample to write, `__name__` included.
fn labels_of(s: &Sample) -> Labels {
    Labels::new(
        std::iter::once((METRIC_NAME.to_owned(), s.metric.clone())).chain(s.tags.iter().cloned()),
    )
}

/// A sample of the series `labels` at `t` (ms).
fn sample(labels: &Labels, t: i64, v: f64) -> Sample {
    let tags = labels
        .iter()
        .filter(|(n, _)| *n != METRIC_NAME)
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    Sample::new(
        labels.get_or_empty(METRIC_NAME),
        tags,
        t.saturating_mul(1_000_000),
        SampleValue::Float(v),
    )
}

/// The expression's value at `t` as an instant vector (a scalar is one series without
/// labels, as Prometheus' rule query function makes it).
async fn query(engine: &Engine, expr: &str, t: i64) -> Result<Vec<(Labels, f64)>, String> {
    let result = engine.instant(expr, t).await.map_err(|e| e.to_string())?;
    match result.value {
        QueryValue::Vector(series) => Ok(series
            .into_iter()
            .filter_map(|s| s.points.last().map(|p| (s.labels, p.v)))
            .collect()),
        QueryValue::Scalar { v, .. } => Ok(vec![(Labels::default(), v)]),
        QueryValue::String { .. } | QueryValue::Matrix(_) => {
            Err("rule result is not a vector or scalar".into())
        }
    }
}

async fn eval_recording(
    def: &RuleDef,
    record: &str,
    engine: &Engine,
    t: i64,
    limit: usize,
) -> Result<Vec<Sample>, String> {
    let vector = query(engine, &def.expr, t).await?;
    let mut seen = HashSet::new();
    let mut samples = Vec::with_capacity(vector.len());
    for (mut labels, v) in vector {
        labels.set(METRIC_NAME, record);
        for (name, value) in &def.raw_labels {
            labels.set(name, value);
        }
        if !seen.insert(labels.clone()) {
            return Err(
                "vector contains metrics with the same labelset after applying rule labels".into(),
            );
        }
        samples.push(sample(&labels, t, v));
    }
    if limit > 0 && samples.len() > limit {
        return Err(format!(
            "exceeded limit of {limit} with {} series",
            samples.len()
        ));
    }
    Ok(samples)
}

async fn eval_alerting(
    rule: &mut Rule,
    engine: &Engine,
    ts: i64,
    t: i64,
    limit: usize,
    cx: &EvalContext,
) -> Result<Vec<Sample>, String> {
    let RuleKind::Alerting {
        alert: name,
        for_ms,
        keep_firing_for_ms,
        annotations,
        ..
    } = &rule.def.kind
    else {
        unreachable!("an alerting rule");
    };
    let vector = query(engine, &rule.def.expr, t).await?;
    let mut returned: HashSet<Labels> = HashSet::new();
    let mut fresh: Vec<Alert> = Vec::with_capacity(vector.len());
    for (series, value) in &vector {
        let data = TemplateData {
            labels: series,
            value: *value,
            external_labels: &cx.external_labels,
            external_url: &cx.external_url,
        };
        let mut labels = series.without_name();
        for (label, template) in &rule.def.labels {
            labels.set(label, &template.expand_or_error(&data));
        }
        labels.set("alertname", name);
        let annotations = annotations
            .iter()
            .map(|(a, template)| (a.clone(), template.expand_or_error(&data)))
            .collect();
        if !returned.insert(labels.clone()) {
            return Err(
                "vector contains metrics with the same labelset after applying alert labels".into(),
            );
        }
        fresh.push(Alert {
            labels,
            annotations,
            state: AlertState::Pending,
            value: *value,
            active_at_ms: ts,
            fired_at_ms: None,
            resolved_at_ms: None,
            last_sent_ms: None,
            valid_until_ms: 0,
            keep_firing_since_ms: None,
        });
    }
    for alert in fresh {
        match rule.active.get_mut(&alert.labels) {
            Some(existing) if existing.state != AlertState::Inactive => {
                existing.value = alert.value;
                existing.annotations = alert.annotations;
            }
            _ => {
                rule.active.insert(alert.labels.clone(), alert);
            }
        }
    }
    let mut samples = Vec::new();
    let mut remove = Vec::new();
    let mut active_count = 0;
    for (key, alert) in rule.active.iter_mut() {
        if returned.contains(key) {
            alert.keep_firing_since_ms = None;
        } else {
            let mut keep_firing = false;
            if alert.state == AlertState::Firing && *keep_firing_for_ms > 0 {
                let since = *alert.keep_firing_since_ms.get_or_insert(ts);
                keep_firing = ts - since < *keep_firing_for_ms;
            }
            if alert.state == AlertState::Pending
                || alert
                    .resolved_at_ms
                    .is_some_and(|r| ts - r > RESOLVED_RETENTION_MS)
            {
                remove.push(key.clone());
            }
            if alert.state != AlertState::Inactive && !keep_firing {
                alert.state = AlertState::Inactive;
                alert.resolved_at_ms = Some(ts);
            }
            if !keep_firing {
                continue;
            }
        }
        active_count += 1;
        if alert.state == AlertState::Pending && ts - alert.active_at_ms >= *for_ms {
            alert.state = AlertState::Firing;
            alert.fired_at_ms = Some(ts);
        }
        let mut alerts_labels = alert.labels.clone();
        alerts_labels.set(METRIC_NAME, "ALERTS");
        alerts_labels.set("alertstate", alert.state.as_str());
        samples.push(sample(&alerts_labels, t, 1.0));
        let mut for_state = alert.labels.clone();
        for_state.set(METRIC_NAME, "ALERTS_FOR_STATE");
        samples.push(sample(
            &for_state,
            t,
            (alert.active_at_ms.div_euclid(1000)) as f64,
        ));
    }
    for key in remove {
        rule.active.remove(&key);
    }
    if limit > 0 && active_count > limit {
        rule.active.clear();
        return Err(format!(
            "exceeded limit of {limit} with {active_count} alerts"
        ));
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(state: AlertState) -> Alert {
        Alert {
            labels: Labels::default(),
            annotations: BTreeMap::new(),
            state,
            value: 1.0,
            active_at_ms: 0,
            fired_at_ms: None,
            resolved_at_ms: None,
            last_sent_ms: None,
            valid_until_ms: 0,
            keep_firing_since_ms: None,
        }
    }

    #[test]
    fn firing_alerts_are_resent_after_the_delay_and_resolved_ones_once() {
        let mut firing = alert(AlertState::Firing);
        assert!(firing.needs_sending(0, 60_000));
        firing.last_sent_ms = Some(0);
        assert!(!firing.needs_sending(60_000, 60_000));
        assert!(firing.needs_sending(60_001, 60_000));
        assert!(!alert(AlertState::Pending).needs_sending(0, 60_000));
        let mut resolved = alert(AlertState::Inactive);
        resolved.last_sent_ms = Some(10);
        resolved.resolved_at_ms = Some(20);
        assert!(resolved.needs_sending(20, 60_000));
        resolved.last_sent_ms = Some(20);
        assert!(!resolved.needs_sending(30, 60_000));
    }
}
