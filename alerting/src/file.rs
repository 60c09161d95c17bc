//! Rule files in Prometheus' format
//! (<https://prometheus.io/docs/prometheus/latest/configuration/recording_rules/>): `groups:`
//! with `name`, `interval`, `limit`, `query_offset`, `labels` and `rules:`, each rule a
//! `record:` or an `alert:` with `expr`, `for`, `keep_firing_for`, `labels` and
//! `annotations`. Every check Prometheus makes at load is made here, each error naming the
//! file, the line and the reason; expressions and templates are parsed once, at load.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use snafu::ResultExt;

use crate::template::Template;
use crate::{Error, GlobSnafu, ReadSnafu, Result};

/// A group of rules, evaluated in order at one interval.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupDef {
    /// The group's name, unique in its file.
    pub name: String,
    /// The file it was read from.
    pub file: String,
    /// Between evaluations (ms); `None`: the configured default.
    pub interval_ms: Option<i64>,
    /// Series a rule may return (alerts for an alerting rule); 0: no limit.
    pub limit: usize,
    /// How far back each evaluation looks (ms).
    pub query_offset_ms: i64,
    /// The rules.
    pub rules: Vec<RuleDef>,
}

/// One rule.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleDef {
    /// The PromQL expression.
    pub expr: String,
    /// Labels added to (or replacing those of) every result; templates for alerting rules.
    pub labels: Vec<(String, Template)>,
    /// The same labels as written, for the API.
    pub raw_labels: BTreeMap<String, String>,
    /// Recording or alerting.
    pub kind: RuleKind,
}

/// What a rule does with its result.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    /// Writes the result as series named `record`.
    Recording {
        /// The new metric name.
        record: String,
    },
    /// Turns each result series into an alert.
    Alerting {
        /// The alert's name.
        alert: String,
        /// How long a series must be returned before the alert fires (ms).
        for_ms: i64,
        /// How long a firing alert keeps firing after its series stopped (ms).
        keep_firing_for_ms: i64,
        /// Templates of the annotations.
        annotations: Vec<(String, Template)>,
        /// The annotations as written, for the API.
        raw_annotations: BTreeMap<String, String>,
    },
}

impl RuleDef {
    /// The rule's name: the recorded metric or the alert.
    pub fn name(&self) -> &str {
        match &self.kind {
            RuleKind::Recording { record } => record,
            RuleKind::Alerting { alert, .. } => alert,
        }
    }
}

/// Reads every file the glob `patterns` match (sorted, each once), refusing the whole set at
/// the first bad file. A pattern that matches nothing is not an error (Prometheus' way).
pub fn load_globs(patterns: &[String]) -> Result<Vec<GroupDef>> {
    let mut paths: Vec<PathBuf> = Vec::new();
    for pattern in patterns {
        let matches = glob::glob(pattern).context(GlobSnafu {
            pattern: pattern.clone(),
        })?;
        for path in matches {
            let path = path.map_err(|e| Error::Read {
                path: e.path().to_owned(),
                source: e.into(),
            })?;
            if !paths.contains(&path) {
                paths.push(path);
            }
        }
    }
    paths.sort();
    let mut groups = Vec::new();
    for path in paths {
        groups.extend(load_file(&path)?);
    }
    Ok(groups)
}

/// Reads one rule file.
pub fn load_file(path: &Path) -> Result<Vec<GroupDef>> {
    let text = std::fs::read_to_string(path).context(ReadSnafu { path })?;
    parse(&text, &path.display().to_string())
}

/// Parses the text of the rule file `file`.
pub fn parse(text: &str, file: &str) -> Result<Vec<GroupDef>> {
    let invalid = |message: String| Error::InvalidFile {
        file: file.to_owned(),
        message,
    };
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let raw: RawFile = serde_yaml_ng::from_str(text).map_err(|e| invalid(yaml_message(&e)))?;
    let mut names = HashSet::new();
    let mut groups = Vec::new();
    for group in raw.groups {
        let group_name = group.name.0;
        if !names.insert(group_name.clone()) {
            let line = text
                .lines()
                .enumerate()
                .filter(|(_, l)| {
                    l.trim_start_matches([' ', '-']).starts_with("name:") && l.contains(&group_name)
                })
                .nth(1)
                .map(|(i, _)| format!("line {}: ", i + 1))
                .unwrap_or_default();
            return Err(invalid(format!(
                "{line}groupname: \"{}\" is repeated in the same file",
                group_name
            )));
        }
        let mut rules = group.rules;
        for rule in &mut rules {
            for (name, value) in &group.labels {
                if !rule.raw_labels.contains_key(name) {
                    rule.raw_labels.insert(name.clone(), value.clone());
                    let template = Template::parse(value)
                        .map_err(|e| invalid(format!("group {group_name:?}: label {name}: {e}")))?;
                    rule.labels.push((name.clone(), template));
                }
            }
        }
        groups.push(GroupDef {
            name: group_name,
            file: file.to_owned(),
            interval_ms: group.interval.map(|d| d.0),
            limit: group.limit,
            query_offset_ms: group.query_offset.map_or(0, |d| d.0),
            rules,
        });
    }
    Ok(groups)
}

/// serde_yaml's message with its location as `line L column C: path: reason`.
fn yaml_message(error: &serde_yaml_ng::Error) -> String {
    let text = error.to_string();
    let Some(location) = error.location() else {
        return text;
    };
    let suffix = format!(" at line {} column {}", location.line(), location.column());
    let reason = text.strip_suffix(&suffix).unwrap_or(&text);
    format!(
        "line {} column {}: {reason}",
        location.line(),
        location.column()
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    groups: Vec<RawGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: GroupName,
    #[serde(default)]
    interval: Option<PromDuration>,
    #[serde(default)]
    query_offset: Option<PromDuration>,
    #[serde(default)]
    limit: usize,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    rules: Vec<RuleDef>,
}

/// A group name, which must not be empty.
#[derive(Debug)]
struct GroupName(String);

impl<'de> Deserialize<'de> for GroupName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        if name.is_empty() {
            return Err(de::Error::custom("groupname must not be empty"));
        }
        Ok(Self(name))
    }
}

/// A duration as Prometheus writes them: `1h30m`, `5m`, `0s`, `100ms`; in ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PromDuration(pub(crate) i64);

impl<'de> Deserialize<'de> for PromDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(DurationVisitor)
    }
}

/// Parses where the value is read, so that an error points at the duration's own line.
struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = PromDuration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as 5m or 1h30m")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<PromDuration, E> {
        parse_duration(text).map(PromDuration).map_err(E::custom)
    }

    // `for: 0`.
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<PromDuration, E> {
        self.visit_str(&v.to_string())
    }
}

/// Parses a Prometheus duration (`1h30m`, `0`, units `ms s m h d w y`) into ms.
pub(crate) fn parse_duration(text: &str) -> Result<i64, String> {
    if text == "0" {
        return Ok(0);
    }
    let bad = || format!("not a valid duration string: {text:?}");
    let mut total: i64 = 0;
    let mut rest = text;
    let mut last_unit = i64::MAX;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: i64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "y" => 31_536_000_000,
            _ => return Err(bad()),
        };
        // Units in decreasing order, each once.
        if unit >= last_unit {
            return Err(bad());
        }
        last_unit = unit;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// A valid label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A valid metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// A rule is read key by key so that every error, however many keys it involves, is
/// reported at the rule's own line.
impl<'de> Deserialize<'de> for RuleDef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(RuleVisitor)
    }
}

struct RuleVisitor;

const RULE_FIELDS: &[&str] = &[
    "record",
    "alert",
    "expr",
    "for",
    "keep_firing_for",
    "labels",
    "annotations",
];

impl<'de> Visitor<'de> for RuleVisitor {
    type Value = RuleDef;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a rule: a mapping with record or alert, and expr")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RuleDef, A::Error> {
        let mut record: Option<String> = None;
        let mut alert: Option<String> = None;
        let mut expr: Option<Expr> = None;
        let mut for_ms: Option<PromDuration> = None;
        let mut keep_firing_for: Option<PromDuration> = None;
        let mut labels: BTreeMap<String, String> = BTreeMap::new();
        let mut annotations: Option<BTreeMap<String, String>> = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "record" => record = Some(map.next_value()?),
                "alert" => alert = Some(map.next_value()?),
                "expr" => expr = Some(map.next_value()?),
                "for" => for_ms = Some(map.next_value()?),
                "keep_firing_for" => keep_firing_for = Some(map.next_value()?),
                "labels" => labels = map.next_value::<Option<_>>()?.unwrap_or_default(),
                "annotations" => annotations = map.next_value()?,
                other => return Err(de::Error::unknown_field(other, RULE_FIELDS)),
            }
        }
        let error = |message: String| -> A::Error {
            let name = record.as_deref().or(alert.as_deref()).unwrap_or("");
            de::Error::custom(format!("rule {name:?}: {message}"))
        };
        let expr = expr
            .filter(|e| !e.0.is_empty())
            .ok_or_else(|| error("field 'expr' must be set in rule".into()))?
            .0;
        for name in labels.keys() {
            if !is_label_name(name) || name == "__name__" {
                return Err(error(format!("invalid label name: {name}")));
            }
        }
        let kind = match (record.clone(), alert.clone()) {
            (Some(_), Some(_)) => {
                return Err(error("only one of 'record' and 'alert' must be set".into()));
            }
            (None, None) => {
                return Err(error("one of 'record' or 'alert' must be set".into()));
            }
            (Some(record), None) => {
                if annotations.is_some() {
                    return Err(error(
                        "invalid field 'annotations' in recording rule".into(),
                    ));
                }
                if for_ms.is_some() {
                    return Err(error("invalid field 'for' in recording rule".into()));
                }
                if keep_firing_for.is_some() {
                    return Err(error(
                        "invalid field 'keep_firing_for' in recording rule".into(),
                    ));
                }
                if !is_metric_name(&record) {
                    return Err(error(format!("invalid recording rule name: {record}")));
                }
                RuleKind::Recording { record }
            }
            (None, Some(alert)) => {
                if alert.is_empty() {
                    return Err(error("one of 'record' or 'alert' must be set".into()));
                }
                let raw_annotations = annotations.unwrap_or_default();
                let mut parsed = Vec::new();
                for (name, text) in &raw_annotations {
                    if !is_label_name(name) {
                        return Err(error(format!("invalid annotation name: {name}")));
                    }
                    let template = Template::parse(text)
                        .map_err(|e| error(format!("annotation {name}: {e}")))?;
                    parsed.push((name.clone(), template));
                }
                RuleKind::Alerting {
                    alert,
                    for_ms: for_ms.map_or(0, |d| d.0),
                    keep_firing_for_ms: keep_firing_for.map_or(0, |d| d.0),
                    annotations: parsed,
                    raw_annotations,
                }
            }
        };
        let mut parsed_labels = Vec::new();
        for (name, text) in &labels {
            let template = match kind {
                RuleKind::Alerting { .. } => {
                    Template::parse(text).map_err(|e| error(format!("label {name}: {e}")))?
                }
                // Recording rules' labels are plain values.
                RuleKind::Recording { .. } => Template::literal(text),
            };
            parsed_labels.push((name.clone(), template));
        }
        Ok(RuleDef {
            expr,
            labels: parsed_labels,
            raw_labels: labels,
            kind,
        })
    }
}

/// An expression, checked with the PromQL parser where it is read.
struct Expr(String);

impl<'de> Deserialize<'de> for Expr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ExprVisitor)
    }
}

/// Parses where the value is read, so that an error points at the expression's own line.
struct ExprVisitor;

impl Visitor<'_> for ExprVisitor {
    type Value = Expr;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a PromQL expression")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Expr, E> {
        if !text.is_empty() {
            exawatch_promql::parse(text)
                .map_err(|e| E::custom(format!("could not parse expression: {e}")))?;
        }
        Ok(Expr(text.to_owned()))
    }

    // YAML may give a number (`expr: 1`).
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Expr, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Expr, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Expr, E> {
        self.visit_str(&v.to_string())
    }
}

#[cfg(test)]
mod tests;
