//! The body of `POST /api/v1/datapoints/query` (and `/query/tags`), checked as KairosDB checks
//! it and turned into a [`Query`]; every problem is reported in KairosDB's wording
//! (`query.metric[0].aggregators[1].sampling.unit must be one of …`).
//!
//! Accepted as KairosDB 1.2/1.3 does: `start_absolute`/`end_absolute` (ms) or
//! `start_relative`/`end_relative` (`{value, unit}`; the end defaults to now), `time_zone`
//! (IANA name, default UTC), `cache_time` (ignored); per metric `name`, `tags` (tag → value or
//! list of values), `group_by` (`tag` only), `aggregators`, `limit`, `order`, `exclude_tags`.
//! Unknown top-level and metric fields are ignored as KairosDB ignores them; an unknown
//! aggregator property is an error, except the range properties (`sampling`, `align_*`) on
//! `diff` and `rate`, which ExamonQL sends with every aggregator.

use chrono_tz::Tz;
use serde_json::{Map, Value as Json};

use super::aggregate::{Aggregator, Align, RangeKind};
use super::time::{Span, Unit};

/// A checked query.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Query {
    /// First millisecond queried (inclusive).
    pub(crate) start_ms: i64,
    /// Last millisecond queried (inclusive, as in KairosDB).
    pub(crate) end_ms: i64,
    pub(crate) metrics: Vec<MetricQuery>,
}

/// `order`: of the points fed to `limit`, and of the returned values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    Asc,
    Desc,
}

/// One entry of `metrics`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MetricQuery {
    pub(crate) name: String,
    /// Tag filters: the series must have one of the values for every key.
    pub(crate) tags: Vec<(String, Vec<String>)>,
    /// `group_by` tag names, in the order given.
    pub(crate) group_by: Option<Vec<String>>,
    pub(crate) aggregators: Vec<Aggregator>,
    /// Points kept per group before the aggregators (`limit`; 0 or absent is no limit).
    pub(crate) limit: Option<usize>,
    pub(crate) order: Order,
    pub(crate) exclude_tags: bool,
}

/// The problems of a refused query, one message each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueryError(pub(crate) Vec<String>);

impl QueryError {
    fn one(message: String) -> Self {
        Self(vec![message])
    }
}

type Result<T, E = QueryError> = std::result::Result<T, E>;

/// Parses and checks a query body; relative times are taken from `now_ms`.
pub(crate) fn parse(body: &[u8], now_ms: i64) -> Result<Query> {
    let json: Json =
        serde_json::from_slice(body).map_err(|e| QueryError::one(format!("Invalid json. {e}")))?;
    let Json::Object(query) = json else {
        return Err(QueryError::one("query must be a JSON object".into()));
    };
    let tz = time_zone("query.time_zone", query.get("time_zone"))?.unwrap_or(Tz::UTC);
    let start_ms = match (query.get("start_absolute"), query.get("start_relative")) {
        (Some(abs), _) if !abs.is_null() => millis("query.start_absolute", abs)?,
        (_, Some(rel)) if !rel.is_null() => relative("query.start_relative", rel, now_ms)?,
        _ => {
            return Err(QueryError::one(
                "query.start_time relative or absolute time must be set".into(),
            ));
        }
    };
    let end_ms = match (query.get("end_absolute"), query.get("end_relative")) {
        (Some(abs), _) if !abs.is_null() => millis("query.end_absolute", abs)?,
        (_, Some(rel)) if !rel.is_null() => relative("query.end_relative", rel, now_ms)?,
        _ => now_ms,
    };
    if end_ms < start_ms {
        return Err(QueryError::one(
            "query.end_time must be greater than the start time".into(),
        ));
    }
    let metrics = match query.get("metrics") {
        Some(Json::Array(metrics)) if !metrics.is_empty() => metrics,
        _ => {
            return Err(QueryError::one(
                "query.metric[] must have a size of at least 1".into(),
            ));
        }
    };
    let mut errors = Vec::new();
    let mut parsed = Vec::with_capacity(metrics.len());
    for (i, metric) in metrics.iter().enumerate() {
        match parse_metric(&format!("query.metric[{i}]"), metric, tz) {
            Ok(metric) => parsed.push(metric),
            Err(QueryError(mut more)) => errors.append(&mut more),
        }
    }
    if !errors.is_empty() {
        return Err(QueryError(errors));
    }
    Ok(Query {
        start_ms,
        end_ms,
        metrics: parsed,
    })
}

fn parse_metric(context: &str, json: &Json, tz: Tz) -> Result<MetricQuery> {
    let Json::Object(metric) = json else {
        return Err(QueryError::one(format!("{context} must be an object")));
    };
    let name = match metric.get("name") {
        Some(Json::String(name)) if !name.is_empty() => name.clone(),
        _ => return Err(QueryError::one(format!("{context}.name may not be empty"))),
    };
    let tags = tag_filters(&format!("{context}.tags"), metric.get("tags"))?;
    let group_by = group_by(context, metric.get("group_by"))?;
    let aggregators = match metric.get("aggregators") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(j, a)| aggregator(&format!("{context}.aggregators[{j}]"), a, tz))
            .collect::<Result<_>>()?,
        Some(_) => {
            return Err(QueryError::one(format!(
                "{context}.aggregators must be a list"
            )));
        }
    };
    let limit = match metric.get("limit") {
        None | Some(Json::Null) => None,
        Some(json) => match integer(json) {
            Some(0) => None,
            Some(n) if n > 0 => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            _ => {
                return Err(QueryError::one(format!(
                    "{context}.limit must be a non-negative integer"
                )));
            }
        },
    };
    let order = match metric.get("order") {
        None | Some(Json::Null) => Order::Asc,
        Some(Json::String(o)) if o.eq_ignore_ascii_case("asc") => Order::Asc,
        Some(Json::String(o)) if o.eq_ignore_ascii_case("desc") => Order::Desc,
        Some(other) => {
            return Err(QueryError::one(format!(
                "{context}.order {other} is not asc or desc"
            )));
        }
    };
    let exclude_tags = match metric.get("exclude_tags") {
        None | Some(Json::Null) => false,
        Some(Json::Bool(b)) => *b,
        Some(_) => {
            return Err(QueryError::one(format!(
                "{context}.exclude_tags must be true or false"
            )));
        }
    };
    Ok(MetricQuery {
        name,
        tags,
        group_by,
        aggregators,
        limit,
        order,
        exclude_tags,
    })
}

/// `{"host": ["a", "b"], "dc": "x"}`: a key with no values filters nothing (KairosDB keeps
/// tags in a multimap, where such a key does not exist).
fn tag_filters(context: &str, json: Option<&Json>) -> Result<Vec<(String, Vec<String>)>> {
    let object = match json {
        None | Some(Json::Null) => return Ok(Vec::new()),
        Some(Json::Object(object)) => object,
        Some(_) => return Err(QueryError::one(format!("{context} must be an object"))),
    };
    let mut filters = Vec::new();
    for (key, values) in object {
        let values = match values {
            Json::Array(values) => values
                .iter()
                .map(|v| scalar_string(v).ok_or(()))
                .collect::<Result<Vec<_>, ()>>(),
            one => scalar_string(one).map(|v| vec![v]).ok_or(()),
        }
        .map_err(|()| {
            QueryError::one(format!(
                "{context}.{key} must be a string or a list of strings"
            ))
        })?;
        if !values.is_empty() {
            filters.push((key.clone(), values));
        }
    }
    Ok(filters)
}

fn scalar_string(json: &Json) -> Option<String> {
    match json {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The tag names of the first `tag` grouper (KairosDB uses only one).
fn group_by(context: &str, json: Option<&Json>) -> Result<Option<Vec<String>>> {
    let list = match json {
        None | Some(Json::Null) => return Ok(None),
        Some(Json::Array(list)) => list,
        Some(_) => {
            return Err(QueryError::one(format!(
                "{context}.group_by must be a list"
            )));
        }
    };
    let mut tags = None;
    for (j, grouper) in list.iter().enumerate() {
        let at = format!("{context}.group_by[{j}]");
        let name = grouper.get("name").and_then(Json::as_str).unwrap_or("");
        match name {
            "" => return Err(QueryError::one(format!("{at} must have a name"))),
            "tag" => {
                let names = match grouper.get("tags") {
                    Some(Json::Array(names)) if !names.is_empty() => names
                        .iter()
                        .map(|n| n.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>(),
                    _ => None,
                }
                .ok_or_else(|| {
                    QueryError::one(format!("{at}.tags may not be empty (a list of tag names)"))
                })?;
                tags.get_or_insert(names);
            }
            "time" | "value" | "bin" => {
                return Err(QueryError::one(format!(
                    "{at}.{name} grouping is not supported by exawatch (group by tag)"
                )));
            }
            other => {
                return Err(QueryError::one(format!(
                    "{at}.{other} invalid group_by name"
                )));
            }
        }
    }
    Ok(tags)
}

const RANGE_PROPERTIES: [&str; 5] = [
    "sampling",
    "align_sampling",
    "align_start_time",
    "align_end_time",
    "time_zone",
];

fn aggregator(context: &str, json: &Json, query_tz: Tz) -> Result<Aggregator> {
    let Json::Object(object) = json else {
        return Err(QueryError::one(format!("{context} must be an object")));
    };
    let name = match object.get("name") {
        Some(Json::String(name)) if !name.is_empty() => name.as_str(),
        _ => return Err(QueryError::one(format!("{context} must have a name"))),
    };
    let kind = match name {
        "avg" => Some(RangeKind::Avg),
        "min" => Some(RangeKind::Min),
        "max" => Some(RangeKind::Max),
        "sum" => Some(RangeKind::Sum),
        "count" => Some(RangeKind::Count),
        "first" => Some(RangeKind::First),
        "last" => Some(RangeKind::Last),
        "dev" => Some(RangeKind::Dev),
        "percentile" => Some(RangeKind::Percentile(percentile_property(context, object)?)),
        "rate" | "diff" => None,
        other => {
            return Err(QueryError::one(format!(
                "{context}.{other} invalid aggregator name (exawatch supports avg, min, max, \
                 sum, count, first, last, dev, percentile, rate, diff)"
            )));
        }
    };
    let allowed: &[&str] = match name {
        "percentile" => &[
            "sampling",
            "align_sampling",
            "align_start_time",
            "align_end_time",
            "time_zone",
            "percentile",
        ],
        "rate" => &[
            "sampling",
            "align_sampling",
            "align_start_time",
            "align_end_time",
            "time_zone",
            "unit",
        ],
        _ => &RANGE_PROPERTIES,
    };
    if let Some(unknown) = object
        .keys()
        .find(|k| *k != "name" && !allowed.contains(&k.as_str()))
    {
        return Err(QueryError::one(format!(
            "{context}: property '{unknown}' is not known for aggregator '{name}'"
        )));
    }
    let tz =
        time_zone(&format!("{context}.time_zone"), object.get("time_zone"))?.unwrap_or(query_tz);
    let sampling = match object.get("sampling") {
        None | Some(Json::Null) => None,
        Some(json) => Some(span(&format!("{context}.sampling"), json)?),
    };
    let Some(kind) = kind else {
        if name == "diff" {
            return Ok(Aggregator::Diff);
        }
        let sampling = match (object.get("unit"), sampling) {
            (Some(unit), _) if !unit.is_null() => Span {
                value: 1,
                unit: unit_of(&format!("{context}.unit"), unit)?,
            },
            (_, Some(sampling)) => sampling,
            _ => Span {
                value: 1,
                unit: Unit::Milliseconds,
            },
        };
        return Ok(Aggregator::Rate { sampling, tz });
    };
    let flag = |key: &str| -> Result<bool> {
        match object.get(key) {
            None | Some(Json::Null) => Ok(false),
            Some(Json::Bool(b)) => Ok(*b),
            Some(Json::String(s)) if s == "true" || s == "false" => Ok(s == "true"),
            Some(_) => Err(QueryError::one(format!(
                "{context}.{key} must be true or false"
            ))),
        }
    };
    let align = if flag("align_start_time")? {
        Align::Start
    } else if flag("align_end_time")? {
        Align::End
    } else {
        Align::Point
    };
    Ok(Aggregator::Range {
        kind,
        sampling: sampling.unwrap_or(Span {
            value: 1,
            unit: Unit::Milliseconds,
        }),
        align_sampling: flag("align_sampling")?,
        align,
        tz,
    })
}

fn percentile_property(context: &str, object: &Map<String, Json>) -> Result<f64> {
    let p = match object.get("percentile") {
        Some(Json::Number(n)) => n.as_f64(),
        Some(Json::String(s)) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match p {
        Some(p) if p > 0.0 && p <= 1.0 => Ok(p),
        _ => Err(QueryError::one(format!(
            "{context}.percentile must be a number greater than 0 and at most 1"
        ))),
    }
}

/// `{"value": 1, "unit": "minutes"}` (the value may be a numeric string).
fn span(context: &str, json: &Json) -> Result<Span> {
    let Json::Object(object) = json else {
        return Err(QueryError::one(format!(
            "{context} must be an object {{\"value\": …, \"unit\": …}}"
        )));
    };
    let value = object
        .get("value")
        .and_then(integer)
        .filter(|v| *v >= 1)
        .ok_or_else(|| {
            QueryError::one(format!(
                "{context}.value must be an integer greater than or equal to 1"
            ))
        })?;
    let unit = unit_of(
        &format!("{context}.unit"),
        object.get("unit").unwrap_or(&Json::Null),
    )?;
    Ok(Span { value, unit })
}

fn unit_of(context: &str, json: &Json) -> Result<Unit> {
    json.as_str()
        .and_then(Unit::parse)
        .ok_or_else(|| QueryError::one(format!("{context} must be one of {}", Unit::NAMES)))
}

fn relative(context: &str, json: &Json, now_ms: i64) -> Result<i64> {
    let span = span(context, json)?;
    span.before(now_ms)
        .ok_or_else(|| QueryError::one(format!("{context} reaches out of range")))
}

fn millis(context: &str, json: &Json) -> Result<i64> {
    integer(json)
        .filter(|ms| ms.checked_mul(1_000_000).is_some())
        .ok_or_else(|| QueryError::one(format!("{context} must be milliseconds since the epoch")))
}

/// An integer given as a JSON number (fractions truncated) or a numeric string.
fn integer(json: &Json) -> Option<i64> {
    let from_f64 = |f: f64| (f.is_finite() && f.abs() < 9.2e18).then_some(f as i64);
    match json {
        Json::Number(n) => n.as_i64().or_else(|| n.as_f64().and_then(from_f64)),
        Json::String(s) => {
            let s = s.trim();
            s.parse::<i64>()
                .ok()
                .or_else(|| s.parse::<f64>().ok().and_then(from_f64))
        }
        _ => None,
    }
}

fn time_zone(context: &str, json: Option<&Json>) -> Result<Option<Tz>> {
    match json {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(name)) => name.parse::<Tz>().map(Some).map_err(|_| {
            QueryError::one(format!(
                "{context} {name:?} is not a time zone (an IANA name such as Europe/Rome)"
            ))
        }),
        Some(_) => Err(QueryError::one(format!("{context} must be a string"))),
    }
}
