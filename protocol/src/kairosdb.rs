//! KairosDB's write format: the JSON body of `POST /api/v1/datapoints` (KairosDB 1.2/1.3
//! REST API, "Add Data Points"), as EXAMON's `examon-common` `KairosDB.put_metrics` and other
//! KairosDB clients send it.
//!
//! - the body is one metric object or a list of them;
//! - a metric has a `name`, `tags` (an object of strings), and either `datapoints`
//!   (`[[ms, value], …]`, optionally `[ms, value, type]`) or one `timestamp` (alias `time`) +
//!   `value`;
//! - timestamps are milliseconds since the epoch; a fractional number is truncated as KairosDB
//!   does;
//! - a value is a number, or a string: a numeric string is a number, any other string is a
//!   text sample; `type` (`long`, `double`, `string`) overrides that guess, as in KairosDB;
//! - `ttl` and `skip_validate` are accepted and ignored.
//!
//! Unlike KairosDB, a body with any invalid data point is refused as a whole (nothing of it
//! is stored), and data points without tags are accepted. [`Error::messages`] lists every
//! problem, in KairosDB's wording (`metric[0](name=x).datapoints[2].value cannot be null or
//! empty.`).

use serde_json::Value as Json;
use snafu::Snafu;

use crate::{RESERVED_COLUMNS, Sample, Value};

#[cfg(test)]
mod tests;

/// At most this many problems are reported for one body.
pub const MAX_REPORTED_ERRORS: usize = 100;

/// Why a `POST /api/v1/datapoints` body was refused.
#[derive(Debug, Snafu, PartialEq)]
#[snafu(visibility(pub(crate)))]
pub enum Error {
    /// The body is not JSON.
    #[snafu(display("Invalid json. {message}"))]
    Json { message: String },
    /// The body is neither an object nor a list of objects.
    #[snafu(display("Invalid start of json."))]
    Shape,
    /// Some metrics or data points are invalid; one message per problem.
    #[snafu(display("{}", errors.join(" ")))]
    Invalid { errors: Vec<String> },
}

impl Error {
    /// The problems, one message each, for KairosDB's `{"errors": [...]}` answer.
    pub fn messages(&self) -> Vec<String> {
        match self {
            Self::Invalid { errors } => errors.clone(),
            other => vec![other.to_string()],
        }
    }
}

/// Decodes a (plain JSON) `POST /api/v1/datapoints` body into samples.
///
/// On error nothing is returned: the caller stores all of the body or none of it.
pub fn decode_datapoints(body: &[u8]) -> Result<Vec<Sample>, Error> {
    let json: Json = serde_json::from_slice(body).map_err(|e| Error::Json {
        message: e.to_string(),
    })?;
    let metrics = match json {
        Json::Array(items) => items,
        object @ Json::Object(_) => vec![object],
        _ => return ShapeSnafu.fail(),
    };
    let mut samples = Vec::new();
    let mut errors = Errors::default();
    for (i, metric) in metrics.iter().enumerate() {
        decode_metric(i, metric, &mut samples, &mut errors);
    }
    if errors.list.is_empty() {
        Ok(samples)
    } else {
        InvalidSnafu {
            errors: errors.list,
        }
        .fail()
    }
}

/// Collected problems, capped at [`MAX_REPORTED_ERRORS`].
#[derive(Debug, Default)]
struct Errors {
    list: Vec<String>,
}

impl Errors {
    fn add(&mut self, context: &str, problem: &str) {
        if self.list.len() < MAX_REPORTED_ERRORS {
            self.list.push(format!("{context} {problem}"));
        }
    }
}

/// The declared type of a value: KairosDB's registered types `long`, `double`, `string`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Declared {
    Number,
    Text,
}

fn declared_type(
    context: &str,
    json: Option<&Json>,
    errors: &mut Errors,
) -> Result<Option<Declared>, ()> {
    match json {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(t)) => match t.as_str() {
            "long" | "double" => Ok(Some(Declared::Number)),
            "string" => Ok(Some(Declared::Text)),
            other => {
                errors.add(
                    context,
                    &format!("Unregistered data point type '{other}' (long, double or string)."),
                );
                Err(())
            }
        },
        Some(_) => {
            errors.add(context, "must be a string (long, double or string).");
            Err(())
        }
    }
}

fn decode_metric(index: usize, metric: &Json, out: &mut Vec<Sample>, errors: &mut Errors) {
    let Json::Object(object) = metric else {
        errors.add(&format!("metric[{index}]"), "must be an object.");
        return;
    };
    let name = match object.get("name") {
        Some(Json::String(name)) if !name.is_empty() => name.clone(),
        _ => {
            errors.add(&format!("metric[{index}].name"), "cannot be null or empty.");
            return;
        }
    };
    let context = format!("metric[{index}](name={name})");
    let before = errors.list.len();
    let tags = decode_tags(&context, object.get("tags"), errors);
    let Ok(metric_type) = declared_type(&format!("{context}.type"), object.get("type"), errors)
    else {
        return;
    };

    let mut points: Vec<(i64, Value)> = Vec::new();
    let timestamp = object.get("timestamp").or_else(|| object.get("time"));
    let value = object.get("value").filter(|v| !v.is_null());
    match (timestamp.filter(|t| !t.is_null()), value) {
        (Some(t), Some(v)) => {
            let time = timestamp_ns(&format!("{context}.timestamp"), t, errors);
            let value = point_value(&format!("{context}.value"), v, metric_type, errors);
            if let (Some(time), Some(value)) = (time, value) {
                points.push((time, value));
            }
        }
        (Some(_), None) => errors.add(&format!("{context}.value"), "cannot be null or empty."),
        (None, Some(_)) => errors.add(&format!("{context}.timestamp"), "cannot be null."),
        (None, None) => {}
    }
    match object.get("datapoints") {
        None | Some(Json::Null) => {}
        Some(Json::Array(list)) => {
            for (j, point) in list.iter().enumerate() {
                let at = format!("{context}.datapoints[{j}]");
                if let Some(point) = datapoint(&at, point, metric_type, errors) {
                    points.push(point);
                }
            }
        }
        Some(_) => errors.add(
            &format!("{context}.datapoints"),
            "must be a list of [timestamp, value] pairs.",
        ),
    }
    if errors.list.len() > before {
        return;
    }
    let Some(tags) = tags else { return };
    out.extend(points.into_iter().map(|(time_ns, value)| Sample {
        metric: name.clone(),
        tags: tags.clone(),
        time_ns,
        value,
    }));
}

/// `[ms, value]` or `[ms, value, type]`.
fn datapoint(
    context: &str,
    point: &Json,
    metric_type: Option<Declared>,
    errors: &mut Errors,
) -> Option<(i64, Value)> {
    let Json::Array(parts) = point else {
        errors.add(context, "must be a [timestamp, value] pair.");
        return None;
    };
    let (time, value) = match parts.as_slice() {
        [] => {
            errors.add(&format!("{context}.timestamp"), "cannot be null or empty.");
            return None;
        }
        [_] => {
            errors.add(&format!("{context}.value"), "cannot be null or empty.");
            return None;
        }
        [time, value, ..] => (time, value),
    };
    let declared = match parts.get(2) {
        Some(t) => declared_type(&format!("{context}.type"), Some(t), errors).ok()?,
        None => metric_type,
    };
    if time.is_null() {
        errors.add(&format!("{context}.timestamp"), "cannot be null.");
        return None;
    }
    let time = timestamp_ns(&format!("{context}.timestamp"), time, errors);
    let value = point_value(&format!("{context}.value"), value, declared, errors);
    Some((time?, value?))
}

/// Milliseconds (integer, float, or a numeric string) to nanoseconds; fractions are
/// truncated.
fn timestamp_ns(context: &str, json: &Json, errors: &mut Errors) -> Option<i64> {
    let ms = match json {
        Json::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && f.abs() < 9.2e15)
                .map(|f| f as i64)
        }),
        Json::String(s) => s.trim().parse::<i64>().ok().or_else(|| {
            s.trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite() && f.abs() < 9.2e15)
                .map(|f| f as i64)
        }),
        _ => None,
    };
    match ms.and_then(|ms| ms.checked_mul(1_000_000)) {
        Some(ns) => Some(ns),
        None => {
            errors.add(context, "must be milliseconds since the epoch.");
            None
        }
    }
}

fn point_value(
    context: &str,
    json: &Json,
    declared: Option<Declared>,
    errors: &mut Errors,
) -> Option<Value> {
    let text = match json {
        Json::Number(n) => {
            let v = n.as_f64().unwrap_or(f64::NAN);
            return Some(match declared {
                Some(Declared::Text) => Value::Text(n.to_string()),
                _ => Value::Float(v),
            });
        }
        Json::String(s) if s.is_empty() => {
            errors.add(context, "cannot be null or empty.");
            return None;
        }
        Json::String(s) => s,
        Json::Null => {
            errors.add(context, "cannot be null or empty.");
            return None;
        }
        _ => {
            errors.add(context, "must be a number or a string.");
            return None;
        }
    };
    let number = text.trim().parse::<f64>().ok();
    match (declared, number) {
        (Some(Declared::Text), _) => Some(Value::Text(text.clone())),
        (_, Some(v)) => Some(Value::Float(v)),
        (None, None) => Some(Value::Text(text.clone())),
        (Some(Declared::Number), None) => {
            errors.add(context, &format!("{text:?} is not a number."));
            None
        }
    }
}

/// Tags sorted by key; `None` (with the problems recorded) when invalid.
fn decode_tags(
    context: &str,
    json: Option<&Json>,
    errors: &mut Errors,
) -> Option<Vec<(String, String)>> {
    let object = match json {
        None | Some(Json::Null) => return Some(Vec::new()),
        Some(Json::Object(object)) => object,
        Some(_) => {
            errors.add(&format!("{context}.tags"), "must be an object.");
            return None;
        }
    };
    let mut ok = true;
    let mut tags = Vec::with_capacity(object.len());
    for (i, (key, value)) in object.iter().enumerate() {
        let at = format!("{context}.tag[{key}]");
        if key.is_empty() {
            errors.add(
                &format!("{context}.tag[{i}].name"),
                "cannot be null or empty.",
            );
            ok = false;
            continue;
        }
        if RESERVED_COLUMNS.contains(&key.as_str()) {
            errors.add(
                &format!("{at}.name"),
                "is reserved (time, metric, value, text, value_mantissa and value_scale are columns).",
            );
            ok = false;
            continue;
        }
        let value = match value {
            Json::String(s) if !s.is_empty() => s.clone(),
            Json::Number(n) => n.to_string(),
            Json::Bool(b) => b.to_string(),
            _ => {
                errors.add(&format!("{at}.value"), "cannot be null or empty.");
                ok = false;
                continue;
            }
        };
        tags.push((key.clone(), value));
    }
    // JSON object keys are unique after parsing (the last one wins), so no duplicates here.
    tags.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    ok.then_some(tags)
}
