//! The Prometheus text exposition format 0.0.4 and OpenMetrics 1.0 text, as exporters serve
//! them on `/metrics`: [`parse`] turns a whole scrape into [`Exposed`] samples the way
//! Prometheus stores them (`_bucket{le}`, `_sum`, `_count`, `{quantile}`; OpenMetrics
//! counters keep `_total`; OpenMetrics `_created` samples and exemplars are dropped).
//!
//! Written here rather than taken from a crate: `prometheus-parse` reads neither OpenMetrics
//! nor escapes in label values correctly, and `openmetrics-parser` (pest) builds a typed
//! tree per family with an API its author says keeps changing; what a scrape needs is one
//! pass over the lines with Prometheus' rules, which is short. As in Prometheus, one bad
//! line fails the whole scrape ([`ParseError`] names it).

use std::collections::HashMap;

use snafu::Snafu;

/// The `Accept` header of a scrape: OpenMetrics preferred, the text format otherwise.
pub const ACCEPT: &str =
    "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";

/// Which format a body is in, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4 (`text/plain`, and anything not OpenMetrics).
    Text,
    /// OpenMetrics 1.0 text (`application/openmetrics-text`).
    OpenMetrics,
}

impl Format {
    /// The format a `Content-Type` header names (the text format when absent or unknown,
    /// as Prometheus falls back).
    pub fn from_content_type(content_type: Option<&str>) -> Self {
        match content_type {
            Some(ct)
                if ct
                    .trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/openmetrics-text") =>
            {
                Self::OpenMetrics
            }
            _ => Self::Text,
        }
    }
}

/// One sample of a scrape, as Prometheus would store it.
#[derive(Debug, Clone, PartialEq)]
pub struct Exposed {
    /// The series name (`node_cpu_seconds_total`, `http_request_duration_seconds_bucket`).
    pub name: String,
    /// The labels in exposition order, unescaped; `le` and `quantile` values normalized
    /// as Prometheus 3 does (`1` → `1.0`).
    pub labels: Vec<(String, String)>,
    /// The value (NaN and ±Inf included).
    pub value: f64,
    /// The exposition's timestamp in milliseconds since the epoch, if it had one.
    pub timestamp_ms: Option<i64>,
}

/// Why a scrape body was refused: the first bad line.
#[derive(Debug, Clone, PartialEq, Eq, Snafu)]
#[snafu(display("line {line}: {message}"))]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

/// Every sample of `body` in `format`, or the first error.
pub fn parse(body: &str, format: Format) -> Result<Vec<Exposed>, ParseError> {
    let mut types: HashMap<&str, &str> = HashMap::new();
    let mut out = Vec::new();
    let mut eof = false;
    for (i, line) in body.lines().enumerate() {
        let fail = |message: String| ParseError {
            line: i + 1,
            message,
        };
        if eof {
            return Err(fail("content after # EOF".into()));
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            match (words.next(), format) {
                (Some("EOF"), Format::OpenMetrics) if comment == " EOF" => eof = true,
                (Some("TYPE"), _) => {
                    let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                        return Err(fail("# TYPE needs a name and a type".into()));
                    };
                    types.insert(name, kind);
                }
                _ => {}
            }
            continue;
        }
        if line.trim().is_empty() {
            if format == Format::OpenMetrics {
                return Err(fail("empty line".into()));
            }
            continue;
        }
        let mut sample = parse_sample(line, format).map_err(fail)?;
        if format == Format::OpenMetrics && is_created(&sample.name, &types) {
            continue;
        }
        normalize_bounds(&mut sample, &types);
        out.push(sample);
    }
    if format == Format::OpenMetrics && !eof {
        return Err(ParseError {
            line: body.lines().count(),
            message: "OpenMetrics data does not end with # EOF".into(),
        });
    }
    Ok(out)
}

/// Whether `name` is the `_created` sample of a counter, histogram, summary or gauge
/// histogram family (Prometheus does not store them).
fn is_created(name: &str, types: &HashMap<&str, &str>) -> bool {
    name.strip_suffix("_created").is_some_and(|family| {
        matches!(
            types.get(family),
            Some(&("counter" | "histogram" | "summary" | "gaugehistogram"))
        )
    })
}

/// Writes the `le` of a histogram's buckets and the `quantile` of a summary's samples as
/// Prometheus 3 stores them (`le="1"` and `le="1.0"` are then the same series).
fn normalize_bounds(sample: &mut Exposed, types: &HashMap<&str, &str>) {
    let key = match sample.name.strip_suffix("_bucket") {
        Some(family) if types.get(family) == Some(&"histogram") => "le",
        _ if types.get(sample.name.as_str()) == Some(&"summary") => "quantile",
        _ => return,
    };
    for (name, value) in &mut sample.labels {
        if name == key
            && let Some(number) = parse_float(value)
        {
            *value = format_float(number);
        }
    }
}

fn parse_sample(line: &str, format: Format) -> Result<Exposed, String> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if !valid_metric_name(name) {
        return Err(format!("invalid metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inside) = rest.strip_prefix('{') {
        rest = parse_labels(inside, &mut labels)?;
    }
    // An OpenMetrics exemplar (` # {…} value [ts]`) follows the sample; it is not stored.
    if format == Format::OpenMetrics
        && let Some(at) = rest.find(" # ")
    {
        rest = &rest[..at];
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = fields
        .next()
        .ok_or_else(|| format!("no value after {name}"))?;
    let value = parse_float(value).ok_or_else(|| format!("invalid value {value:?}"))?;
    let timestamp_ms = match fields.next() {
        None => None,
        Some(ts) => {
            Some(parse_timestamp(ts, format).ok_or_else(|| format!("invalid timestamp {ts:?}"))?)
        }
    };
    if let Some(extra) = fields.next() {
        return Err(format!("unexpected {extra:?} after the timestamp"));
    }
    Ok(Exposed {
        name: name.to_owned(),
        labels,
        value,
        timestamp_ms,
    })
}

/// Reads `name="value",…}` into `labels`; returns what follows the `}`.
fn parse_labels<'a>(
    mut rest: &'a str,
    labels: &mut Vec<(String, String)>,
) -> Result<&'a str, String> {
    loop {
        rest = rest.trim_start_matches([' ', '\t']);
        if let Some(after) = rest.strip_prefix('}') {
            return Ok(after);
        }
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .ok_or("unterminated label set")?;
        let name = &rest[..name_end];
        if !valid_label_name(name) {
            return Err(format!("invalid label name {name:?}"));
        }
        if labels.iter().any(|(k, _)| k == name) {
            return Err(format!("duplicate label {name:?}"));
        }
        rest = rest[name_end..].trim_start_matches([' ', '\t']);
        rest = rest
            .strip_prefix('=')
            .ok_or_else(|| format!("no = after label {name:?}"))?
            .trim_start_matches([' ', '\t']);
        rest = rest
            .strip_prefix('"')
            .ok_or_else(|| format!("label {name:?}: value not quoted"))?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("label {name:?}: unterminated value")),
                Some((i, '"')) => break i,
                // As Prometheus unescapes: \\, \" and \n; any other escape stays as written.
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, other)) => {
                        value.push('\\');
                        value.push(other);
                    }
                    None => return Err(format!("label {name:?}: unterminated value")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((name.to_owned(), value));
        rest = rest[end + 1..].trim_start_matches([' ', '\t']);
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err(format!("expected , or }} after label {name:?}"));
        }
    }
}

/// A Prometheus metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// A Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A value as Go's `strconv.ParseFloat` reads exposition values: decimal or exponent
/// notation, `NaN`, `Inf`, `+Inf`, `-Inf` (any case).
fn parse_float(text: &str) -> Option<f64> {
    // Rust's parser also takes "infinity" and "nan" in any case, as Go's does; it refuses
    // the "_" separators and hex floats Go takes, which no exporter writes.
    text.parse::<f64>().ok()
}

/// A timestamp: integer milliseconds (text format) or float seconds (OpenMetrics).
fn parse_timestamp(text: &str, format: Format) -> Option<i64> {
    match format {
        Format::Text => text.parse::<i64>().ok(),
        Format::OpenMetrics => {
            let seconds = text.parse::<f64>().ok().filter(|s| s.is_finite())?;
            let ms = (seconds * 1000.0).round();
            (ms.abs() < 9.2e15).then_some(ms as i64)
        }
    }
}

/// A float as Prometheus 3 writes `le` and `quantile` values (Go's `%g` with the shortest
/// digits, `.0` added to integers): `1.0`, `0.005`, `2.5e+06`, `+Inf`, `NaN`.
pub fn format_float(value: f64) -> String {
    if value == 0.0 {
        return "0.0".into();
    }
    if value.is_nan() {
        return "NaN".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    // Shortest round-trip digits and the decimal exponent, e.g. "2.5e6"; Go's `%g` with
    // the shortest digits switches to exponent notation below 1e-4 and from 1e6.
    let sci = format!("{value:e}");
    let (mantissa, exponent) = sci.split_once('e').expect("`{:e}` has an e");
    let exponent: i32 = exponent.parse().expect("an integer exponent");
    if !(-4..6).contains(&exponent) {
        let sign = if exponent < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exponent.abs());
    }
    let text = format!("{value}");
    if text.contains('.') {
        text
    } else {
        format!("{text}.0")
    }
}

#[cfg(test)]
mod tests;
