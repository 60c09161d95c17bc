//! KairosDB's JSON answers, written straight into a buffer (a raw query can return millions
//! of points):
//!
//! ```json
//! {"queries": [{"sample_size": 3, "results": [{"name": "temp",
//!   "group_by": [{"name": "tag", "tags": ["node"], "group": {"node": "n01"}},
//!                {"name": "type", "type": "number"}],
//!   "tags": {"node": ["n01"], "core": ["0", "1"]},
//!   "values": [[1700000000000, 41.5], [1700000060000, 42]]}]}]}
//! ```
//!
//! As KairosDB (whose JSON writer drops a trailing `.0`), a whole number is written without a
//! fraction; text values are strings; a NaN or infinite value, which JSON cannot carry, is
//! `null`. A metric without data has one result with empty `tags` and `values` and no
//! `group_by`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use super::aggregate::Values;
use super::execute::{Group, MetricResult};
use super::query::MetricQuery;

fn string(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
}

/// A number as KairosDB writes it.
pub(crate) fn number(out: &mut Vec<u8>, v: f64) {
    if !v.is_finite() {
        out.extend_from_slice(b"null");
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        write!(out, "{}", v as i64).expect("writing to a Vec cannot fail");
    } else {
        serde_json::to_writer(&mut *out, &v).expect("writing to a Vec cannot fail");
    }
}

fn tags(out: &mut Vec<u8>, tags: &BTreeMap<String, BTreeSet<String>>) {
    out.push(b'{');
    for (i, (key, values)) in tags.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, key);
        out.extend_from_slice(b":[");
        for (j, value) in values.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            string(out, value);
        }
        out.push(b']');
    }
    out.push(b'}');
}

fn values(out: &mut Vec<u8>, values: &Values) {
    out.push(b'[');
    match values {
        Values::Numbers(points) => {
            for (i, (t, v)) in points.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write!(out, "[{t},").expect("writing to a Vec cannot fail");
                number(out, *v);
                out.push(b']');
            }
        }
        Values::Texts(points) => {
            for (i, (t, v)) in points.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write!(out, "[{t},").expect("writing to a Vec cannot fail");
                string(out, v);
                out.push(b']');
            }
        }
    }
    out.push(b']');
}

fn group_by(out: &mut Vec<u8>, names: Option<&[String]>, group: &Group) {
    out.extend_from_slice(b"\"group_by\":[");
    if let Some(names) = names {
        out.extend_from_slice(b"{\"name\":\"tag\",\"tags\":[");
        for (i, name) in names.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(out, name);
        }
        out.extend_from_slice(b"],\"group\":{");
        let present = names
            .iter()
            .zip(&group.key.tags)
            .filter_map(|(name, value)| Some((name, value.as_ref()?)));
        for (i, (name, value)) in present.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(out, name);
            out.push(b':');
            string(out, value);
        }
        out.extend_from_slice(b"}},");
    }
    let kind: &[u8] = if group.key.text { b"text" } else { b"number" };
    out.extend_from_slice(b"{\"name\":\"type\",\"type\":\"");
    out.extend_from_slice(kind);
    out.extend_from_slice(b"\"}]");
}

/// The answer to `POST /api/v1/datapoints/query`.
pub(crate) fn query(results: &[(&MetricQuery, MetricResult)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    out.extend_from_slice(b"{\"queries\":[");
    for (i, (metric, result)) in results.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write!(
            out,
            "{{\"sample_size\":{},\"results\":[",
            result.sample_size
        )
        .expect("writing to a Vec cannot fail");
        if result.groups.is_empty() {
            out.extend_from_slice(b"{\"name\":");
            string(&mut out, &metric.name);
            if !metric.exclude_tags {
                out.extend_from_slice(b",\"tags\":{}");
            }
            out.extend_from_slice(b",\"values\":[]}");
        }
        for (j, group) in result.groups.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"name\":");
            string(&mut out, &metric.name);
            out.push(b',');
            group_by(&mut out, metric.group_by.as_deref(), group);
            if !metric.exclude_tags {
                out.extend_from_slice(b",\"tags\":");
                tags(&mut out, &group.tags);
            }
            out.extend_from_slice(b",\"values\":");
            values(&mut out, &group.values);
            out.push(b'}');
        }
        out.extend_from_slice(b"]}");
    }
    out.extend_from_slice(b"]}");
    out
}

/// The answer to `POST /api/v1/datapoints/query/tags`: per metric, every tag and its values.
pub(crate) fn query_tags(results: &[(&str, BTreeMap<String, BTreeSet<String>>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    out.extend_from_slice(b"{\"queries\":[");
    for (i, (name, found)) in results.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"results\":[{\"name\":");
        string(&mut out, name);
        out.extend_from_slice(b",\"tags\":");
        tags(&mut out, found);
        out.extend_from_slice(b",\"values\":[]}]}");
    }
    out.extend_from_slice(b"]}");
    out
}

/// `{"results": [...]}`, the answer of `metricnames`, `tagnames` and `tagvalues`.
pub(crate) fn names<'a>(names: impl IntoIterator<Item = &'a String>) -> Vec<u8> {
    let mut out = b"{\"results\":[".to_vec();
    for (i, name) in names.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(&mut out, name);
    }
    out.extend_from_slice(b"]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_as_kairosdb_writes_them() {
        let cases = [
            (42.0, "42"),
            (-3.0, "-3"),
            (0.0, "0"),
            (2.5, "2.5"),
            (0.1, "0.1"),
            (1e20, "1e+20"),
            (f64::NAN, "null"),
            (f64::INFINITY, "null"),
        ];
        for (v, want) in cases {
            let mut out = Vec::new();
            number(&mut out, v);
            assert_eq!(String::from_utf8(out).unwrap(), want, "{v}");
        }
    }
}
