//! OpenTelemetry metrics over HTTP (OTLP/HTTP, `POST /v1/metrics`): an
//! `ExportMetricsServiceRequest` in protobuf or OTLP's JSON into samples, translated as
//! Prometheus 3 stores OTLP by default (`UnderscoreEscapingWithSuffixes`).
//!
//! - **Names**: the OpenTelemetry name split at every character but `[a-zA-Z0-9:]`, joined
//!   with `_`; the unit as a suffix (`s` → `_seconds`, `By` → `_bytes`, `By/s` →
//!   `_bytes_per_second`, annotations such as `{request}` dropped), `_total` for monotonic
//!   sums, `_ratio` for gauges of unit `1`; `_` before a leading digit.
//! - **Tags**: point attributes, names sanitized (`http.method` → `http_method`, a leading
//!   digit gets `key_`; names that meet are joined with `;` as Prometheus does), empty values
//!   left out. From the resource: `service.namespace/service.name` (or `service.name`) →
//!   `job`, `service.instance.id` → `instance`, `host.name` → `node`; these override a point
//!   attribute of the same name. Every other resource attribute goes, with `job`, `instance`
//!   and `node`, to one `target_info` sample (value 1) per resource and request, as in
//!   Prometheus.
//! - **Points**: gauges and cumulative sums as they are; delta sums and histograms made
//!   cumulative by [`DeltaTotals`]; explicit-bucket histograms as classic ones (`_bucket{le}`
//!   cumulative with `+Inf`, `_sum`, `_count`); exponential histograms as classic ones too
//!   (see [`exponential_buckets`]); summaries as `{quantile}`, `_sum`, `_count`.
//! - **Refused** ([`Rejection`]), each point counted in the answer's `partial_success` with a
//!   message naming the metric: a histogram without buckets, a point flagged "no recorded
//!   value" (staleness is not kept), without a value or a time, of an unknown kind or
//!   temporality, malformed, or a delta point not newer than the last one of its series.

pub mod proto;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::sync::Mutex;

use base64::Engine;
use prost::Message;
use snafu::Snafu;

use self::proto::any_value::Value as Any;
use self::proto::metric::Data;
use self::proto::number_data_point::Value as Number;
use self::proto::{
    AggregationTemporality, ExportMetricsPartialSuccess, ExportMetricsServiceRequest,
    ExportMetricsServiceResponse, FLAG_NO_RECORDED_VALUE, KeyValue, Status,
};
use crate::{Batch, RESERVED_COLUMNS, SeriesKey, Value};

/// The tag `host.name` becomes: exawatch's node tag.
pub const NODE_TAG: &str = "node";

/// A delta series not written to for this long is forgotten (its total restarts at 0).
pub const DELTA_IDLE_NS: i64 = 3_600_000_000_000;

/// At most this many rejection messages are kept for `partial_success.error_message`.
const MAX_MESSAGES: usize = 5;

/// The encoding of a request body, and of its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json`: OTLP's JSON encoding.
    Json,
}

impl Format {
    /// The format a `Content-Type` names, if OTLP/HTTP has it.
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if essence.eq_ignore_ascii_case("application/x-protobuf") {
            Some(Self::Protobuf)
        } else if essence.eq_ignore_ascii_case("application/json") {
            Some(Self::Json)
        } else {
            None
        }
    }

    /// The `Content-Type` of a body in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }
}

/// Why a request could not be read at all (answered 400).
#[derive(Debug, Clone, PartialEq, Eq, Snafu)]
pub enum DecodeError {
    /// Not a protobuf `ExportMetricsServiceRequest`.
    #[snafu(display("the body is not a protobuf ExportMetricsServiceRequest: {message}"))]
    Protobuf {
        /// The decoder's reason.
        message: String,
    },
    /// Not an OTLP JSON `ExportMetricsServiceRequest`.
    #[snafu(display("the body is not an OTLP JSON ExportMetricsServiceRequest: {message}"))]
    Json {
        /// The decoder's reason.
        message: String,
    },
}

impl DecodeError {
    /// The `reason` under which an unreadable request is counted.
    pub const REASON: &'static str = "otlp_request";
}

/// Why a data point was refused; each is counted in `partial_success.rejected_data_points`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rejection {
    /// A histogram point with neither bucket counts nor bounds.
    NoBuckets,
    /// A point flagged `FLAG_NO_RECORDED_VALUE` (exawatch keeps no staleness markers).
    NoRecordedValue,
    /// A number point with neither `as_double` nor `as_int`.
    NoValue,
    /// A point without `time_unix_nano`.
    NoTime,
    /// A metric of no kind this decoder knows (counted as one point).
    UnknownType,
    /// A sum or histogram whose temporality is unspecified.
    Temporality,
    /// Malformed: bucket counts not matching the bounds, bounds not ascending, a scale out of
    /// range, a time past 2262, a name that translates to nothing, a reserved tag name, a
    /// delta that is not a finite number.
    Invalid,
    /// A delta point not newer than its series' last one (a retry, or out of order).
    OutOfOrder,
}

impl Rejection {
    /// Every reason, for meters created up front.
    pub const REASONS: [&'static str; 8] = [
        "otlp_no_buckets",
        "otlp_no_recorded_value",
        "otlp_no_value",
        "otlp_no_time",
        "otlp_unknown_type",
        "otlp_temporality",
        "otlp_invalid",
        "otlp_delta_out_of_order",
    ];

    /// The `reason` label under which it is counted.
    pub fn reason(self) -> &'static str {
        Self::REASONS[self as usize]
    }
}

/// The points refused from one request, by reason, and why.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rejections {
    counts: BTreeMap<Rejection, u64>,
    messages: Vec<String>,
    /// Reasons given after the first [`MAX_MESSAGES`].
    untold: u64,
}

impl Rejections {
    /// Points refused in all (`partial_success.rejected_data_points`).
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Points refused per reason.
    pub fn counts(&self) -> impl Iterator<Item = (Rejection, u64)> + '_ {
        self.counts.iter().map(|(r, n)| (*r, *n))
    }

    /// `partial_success.error_message`: the first few reasons, each naming its metric; empty
    /// when nothing was refused.
    pub fn message(&self) -> String {
        let total = self.total();
        if total == 0 {
            return String::new();
        }
        let mut message = format!("{total} data points rejected: {}", self.messages.join("; "));
        if self.untold > 0 {
            message.push_str(&format!("; {} more", self.untold));
        }
        message
    }

    fn add(&mut self, rejection: Rejection, points: u64, metric: &str, why: impl Display) {
        *self.counts.entry(rejection).or_default() += points;
        if self.messages.len() < MAX_MESSAGES {
            self.messages.push(format!("metric {metric:?}: {why}"));
        } else {
            self.untold += 1;
        }
    }
}

/// What one request gave: samples to store, points refused, and how to undo the delta
/// totals it advanced if storing fails.
#[derive(Debug, Default)]
pub struct Export {
    /// The samples.
    pub batch: Batch,
    /// The points refused.
    pub rejections: Rejections,
    /// Pass to [`DeltaTotals::revert`] if the batch could not be stored.
    pub receipt: DeltaReceipt,
}

/// Decodes an OTLP/HTTP metrics request. Samples of delta points are running totals kept in
/// `deltas` (`now_ns` dates their use). Refused points are in [`Export::rejections`]; only a
/// body that is not a request at all is an error.
pub fn decode(
    body: &[u8],
    format: Format,
    now_ns: i64,
    deltas: &DeltaTotals,
) -> Result<Export, DecodeError> {
    let request = match format {
        Format::Protobuf => {
            ExportMetricsServiceRequest::decode(body).map_err(|e| DecodeError::Protobuf {
                message: e.to_string(),
            })?
        }
        Format::Json => serde_json::from_slice(body).map_err(|e| DecodeError::Json {
            message: e.to_string(),
        })?,
    };
    let mut translation = Translation::default();
    for resource_metrics in request.resource_metrics {
        let attributes = resource_metrics
            .resource
            .map(|r| r.attributes)
            .unwrap_or_default();
        let resource = ResourceTags::new(&attributes);
        translation.latest_ns = None;
        for scope in resource_metrics.scope_metrics {
            for metric in scope.metrics {
                translation.metric(&resource, metric);
            }
        }
        if let Some(time_ns) = translation.latest_ns
            && !resource.info.is_empty()
        {
            let mut tags = resource.info.clone();
            merge(&mut tags, &resource.tags);
            let key = translation.export.batch.add_series(SeriesKey {
                metric: "target_info".to_owned(),
                tags,
            });
            translation
                .export
                .batch
                .push(key, time_ns, Value::Float(1.0));
        }
    }
    let Translation {
        mut export,
        pending,
        ..
    } = translation;
    if !pending.is_empty() {
        deltas.apply(pending, now_ns, &mut export);
    }
    Ok(export)
}

/// The answer to a request that was read: `ExportMetricsServiceResponse`, with
/// `partial_success` when points were refused.
pub fn encode_response(format: Format, rejections: &Rejections) -> Vec<u8> {
    let rejected = rejections.total();
    let partial_success = (rejected > 0).then(|| ExportMetricsPartialSuccess {
        rejected_data_points: i64::try_from(rejected).unwrap_or(i64::MAX),
        error_message: rejections.message(),
    });
    match format {
        Format::Protobuf => ExportMetricsServiceResponse { partial_success }.encode_to_vec(),
        Format::Json => {
            let body = match partial_success {
                None => serde_json::json!({}),
                Some(p) => serde_json::json!({
                    "partialSuccess": {
                        // proto3 JSON writes 64-bit integers as strings.
                        "rejectedDataPoints": p.rejected_data_points.to_string(),
                        "errorMessage": p.error_message,
                    }
                }),
            };
            body.to_string().into_bytes()
        }
    }
}

/// An error answer: a `google.rpc.Status` with `code` (a `google.rpc.Code`) and `message`.
pub fn encode_status(format: Format, code: i32, message: &str) -> Vec<u8> {
    match format {
        Format::Protobuf => Status {
            code,
            message: message.to_owned(),
        }
        .encode_to_vec(),
        Format::Json => serde_json::json!({ "code": code, "message": message })
            .to_string()
            .into_bytes(),
    }
}

/// Running totals that turn delta points into cumulative samples, per series (metric name
/// and tags after translation, `le` and `quantile` included).
///
/// A delta point adds to its series' total, which is stored as the sample: what a cumulative
/// exporter would have sent, counted from the first point this server saw. A point not newer
/// than its series' last one is refused ([`Rejection::OutOfOrder`]), so an exporter's retry
/// of a stored request is not counted twice. Totals live in memory: they restart at 0 when
/// the server restarts or after a series was idle for [`DELTA_IDLE_NS`], which `rate()` and
/// `increase()` read as a counter reset.
#[derive(Debug, Default)]
pub struct DeltaTotals {
    state: Mutex<DeltaState>,
}

#[derive(Debug, Default)]
struct DeltaState {
    series: HashMap<SeriesKey, Running>,
    /// When idle series were last forgotten.
    swept_ns: i64,
}

#[derive(Debug)]
struct Running {
    total: f64,
    /// Time of the last point added.
    last_ns: i64,
    /// When it was added (server time).
    seen_ns: i64,
}

/// What a request added to [`DeltaTotals`], to take back if it was not stored.
#[derive(Debug, Default)]
pub struct DeltaReceipt(Vec<Undo>);

#[derive(Debug)]
struct Undo {
    key: SeriesKey,
    value: f64,
    time_ns: i64,
    previous_ns: i64,
}

/// One delta point's samples, before they are added to the totals.
#[derive(Debug)]
struct DeltaPoint {
    metric: String,
    time_ns: i64,
    samples: Vec<(SeriesKey, f64)>,
}

impl DeltaTotals {
    /// Series with a running total.
    pub fn len(&self) -> usize {
        self.lock().series.len()
    }

    /// True when no series has a running total.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes back what a request added (its samples were not stored, and the client will
    /// send them again).
    pub fn revert(&self, receipt: DeltaReceipt) {
        let mut state = self.lock();
        for undo in receipt.0.into_iter().rev() {
            if let Some(running) = state.series.get_mut(&undo.key) {
                running.total -= undo.value;
                if running.last_ns == undo.time_ns {
                    running.last_ns = undo.previous_ns;
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DeltaState> {
        // The state stays consistent if a holder panicked: each update is a few assignments.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn apply(&self, points: Vec<DeltaPoint>, now_ns: i64, export: &mut Export) {
        let mut state = self.lock();
        if now_ns.saturating_sub(state.swept_ns) > DELTA_IDLE_NS / 6 {
            state
                .series
                .retain(|_, running| now_ns.saturating_sub(running.seen_ns) <= DELTA_IDLE_NS);
            state.swept_ns = now_ns;
        }
        for point in points {
            let stale = point.samples.iter().find_map(|(key, _)| {
                let last = state.series.get(key)?.last_ns;
                (last >= point.time_ns).then_some(last)
            });
            if let Some(last_ns) = stale {
                export.rejections.add(
                    Rejection::OutOfOrder,
                    1,
                    &point.metric,
                    format_args!(
                        "delta point at {} ns is not newer than the series' last one at {last_ns} ns",
                        point.time_ns
                    ),
                );
                continue;
            }
            for (key, value) in point.samples {
                let running = state.series.entry(key.clone()).or_insert(Running {
                    total: 0.0,
                    last_ns: i64::MIN,
                    seen_ns: now_ns,
                });
                export.receipt.0.push(Undo {
                    key: key.clone(),
                    value,
                    time_ns: point.time_ns,
                    previous_ns: running.last_ns,
                });
                running.total += value;
                running.last_ns = point.time_ns;
                running.seen_ns = now_ns;
                let total = running.total;
                let series = export.batch.add_series(key);
                export
                    .batch
                    .push(series, point.time_ns, Value::Float(total));
            }
        }
    }
}

/// The tags a resource gives every series, and those that go to `target_info`.
#[derive(Debug, Default)]
struct ResourceTags {
    /// `job`, `instance`, `node`, sorted.
    tags: Vec<(String, String)>,
    /// The other attributes, sanitized and sorted.
    info: Vec<(String, String)>,
}

impl ResourceTags {
    fn new(attributes: &[KeyValue]) -> Self {
        let value = |key: &str| {
            attributes
                .iter()
                .find(|kv| kv.key == key)
                .map(|kv| any_text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
                .filter(|v| !v.is_empty())
        };
        let mut tags = Vec::new();
        if let Some(name) = value("service.name") {
            let job = match value("service.namespace") {
                Some(namespace) => format!("{namespace}/{name}"),
                None => name,
            };
            tags.push(("job".to_owned(), job));
        }
        if let Some(instance) = value("service.instance.id") {
            tags.push(("instance".to_owned(), instance));
        }
        if let Some(node) = value("host.name") {
            tags.push((NODE_TAG.to_owned(), node));
        }
        tags.sort_unstable();
        const PROMOTED: [&str; 4] = [
            "service.name",
            "service.namespace",
            "service.instance.id",
            "host.name",
        ];
        // target_info is derived, not sent: an attribute whose name cannot be a tag is left
        // out of it rather than refusing the resource's points.
        let info = tags_of(
            attributes
                .iter()
                .filter(|kv| !PROMOTED.contains(&kv.key.as_str())),
        )
        .map(|mut info| {
            info.retain(|(k, _)| !RESERVED_COLUMNS.contains(&k.as_str()));
            info
        })
        .unwrap_or_default();
        Self { tags, info }
    }
}

/// How a metric's points are named and converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gauge,
    Counter,
    UpDownCounter,
    Histogram,
    Summary,
}

/// The decoder's work in progress.
#[derive(Debug, Default)]
struct Translation {
    export: Export,
    /// Delta points, added to the running totals once the request is read.
    pending: Vec<DeltaPoint>,
    /// The time of the latest point of the current resource.
    latest_ns: Option<i64>,
}

impl Translation {
    fn metric(&mut self, resource: &ResourceTags, metric: proto::Metric) {
        let proto::Metric { name, unit, data } = metric;
        let Some(data) = data else {
            self.export.rejections.add(
                Rejection::UnknownType,
                1,
                &name,
                "no data of a known kind (gauge, sum, histogram, exponential histogram, summary)",
            );
            return;
        };
        let (kind, temporality, points) = match &data {
            Data::Gauge(g) => (Kind::Gauge, None, g.data_points.len()),
            Data::Sum(s) => (
                match s.is_monotonic {
                    true => Kind::Counter,
                    false => Kind::UpDownCounter,
                },
                Some(s.aggregation_temporality),
                s.data_points.len(),
            ),
            Data::Histogram(h) => (
                Kind::Histogram,
                Some(h.aggregation_temporality),
                h.data_points.len(),
            ),
            Data::ExponentialHistogram(h) => (
                Kind::Histogram,
                Some(h.aggregation_temporality),
                h.data_points.len(),
            ),
            Data::Summary(s) => (Kind::Summary, None, s.data_points.len()),
        };
        let delta = match temporality.map(AggregationTemporality::try_from) {
            None | Some(Ok(AggregationTemporality::Cumulative)) => false,
            Some(Ok(AggregationTemporality::Delta)) => true,
            Some(_) => {
                self.export.rejections.add(
                    Rejection::Temporality,
                    points as u64,
                    &name,
                    "aggregation temporality is neither cumulative nor delta",
                );
                return;
            }
        };
        let base = metric_name(&name, &unit, kind);
        if base.is_empty() {
            self.export.rejections.add(
                Rejection::Invalid,
                points as u64,
                &name,
                "the name translates to an empty metric name",
            );
            return;
        }
        let mut convert =
            |attributes: &[KeyValue], flags: u32, time: u64, samples: &Samples<'_>| {
                let result = point_time(flags, time).and_then(|time_ns| {
                    let tags = point_tags(resource, attributes)?;
                    Ok((time_ns, samples(&base, tags)?))
                });
                match result {
                    Ok((time_ns, samples)) => self.emit(&name, time_ns, samples, delta),
                    Err((rejection, why)) => self.export.rejections.add(rejection, 1, &name, why),
                }
            };
        match data {
            Data::Gauge(proto::Gauge { data_points })
            | Data::Sum(proto::Sum { data_points, .. }) => {
                for point in data_points {
                    convert(
                        &point.attributes,
                        point.flags,
                        point.time_unix_nano,
                        &|base: &str, tags| number_samples(base, tags, point.value, delta),
                    );
                }
            }
            Data::Histogram(histogram) => {
                for point in histogram.data_points {
                    convert(
                        &point.attributes,
                        point.flags,
                        point.time_unix_nano,
                        &|base: &str, tags| histogram_samples(base, tags, &point),
                    );
                }
            }
            Data::ExponentialHistogram(histogram) => {
                for point in histogram.data_points {
                    convert(
                        &point.attributes,
                        point.flags,
                        point.time_unix_nano,
                        &|base: &str, tags| exponential_samples(base, tags, &point),
                    );
                }
            }
            Data::Summary(summary) => {
                for point in summary.data_points {
                    convert(
                        &point.attributes,
                        point.flags,
                        point.time_unix_nano,
                        &|base: &str, tags| summary_samples(base, tags, &point),
                    );
                }
            }
        }
    }

    /// Adds one point's samples: to the batch, or to the delta points.
    fn emit(&mut self, metric: &str, time_ns: i64, samples: Vec<(SeriesKey, f64)>, delta: bool) {
        self.latest_ns = Some(self.latest_ns.map_or(time_ns, |t| t.max(time_ns)));
        if delta {
            self.pending.push(DeltaPoint {
                metric: metric.to_owned(),
                time_ns,
                samples,
            });
            return;
        }
        let batch = &mut self.export.batch;
        for (key, value) in samples {
            let series = batch.add_series(key);
            batch.push(series, time_ns, Value::Float(value));
        }
    }
}

type PointResult<T> = Result<T, (Rejection, String)>;

/// Makes a point's samples from the metric's base name and the point's tags.
type Samples<'a> = dyn Fn(&str, Vec<(String, String)>) -> PointResult<Vec<(SeriesKey, f64)>> + 'a;

fn invalid<T>(why: impl Display) -> PointResult<T> {
    Err((Rejection::Invalid, why.to_string()))
}

/// The point's time in ns since the epoch, unless it must be refused.
fn point_time(flags: u32, time_unix_nano: u64) -> PointResult<i64> {
    if flags & FLAG_NO_RECORDED_VALUE != 0 {
        return Err((
            Rejection::NoRecordedValue,
            "point flagged \"no recorded value\" (staleness markers are not kept)".to_owned(),
        ));
    }
    if time_unix_nano == 0 {
        return Err((Rejection::NoTime, "point without time_unix_nano".to_owned()));
    }
    i64::try_from(time_unix_nano)
        .or_else(|_| invalid(format_args!("time_unix_nano {time_unix_nano} is past 2262")))
}

/// A series of `metric` with `tags` and one more tag (`le`, `quantile`) if any.
fn series(metric: String, tags: &[(String, String)], extra: Option<(&str, String)>) -> SeriesKey {
    let mut tags = tags.to_vec();
    if let Some((key, value)) = extra {
        merge(&mut tags, &[(key.to_owned(), value)]);
    }
    SeriesKey { metric, tags }
}

fn number_samples(
    base: &str,
    tags: Vec<(String, String)>,
    value: Option<Number>,
    delta: bool,
) -> PointResult<Vec<(SeriesKey, f64)>> {
    let value = match value {
        Some(Number::AsDouble(v)) => v,
        Some(Number::AsInt(v)) => v as f64,
        None => {
            return Err((
                Rejection::NoValue,
                "number point with neither as_double nor as_int".to_owned(),
            ));
        }
    };
    if delta && !value.is_finite() {
        return invalid(format_args!("delta value {value} is not a finite number"));
    }
    Ok(vec![(
        SeriesKey {
            metric: base.to_owned(),
            tags,
        },
        value,
    )])
}

/// `_bucket{le}` (cumulative, ending with `+Inf` = count), `_sum` when known, `_count`.
fn classic_histogram(
    base: &str,
    tags: &[(String, String)],
    buckets: Vec<(f64, f64)>,
    count: u64,
    sum: Option<f64>,
) -> Vec<(SeriesKey, f64)> {
    let bucket = format!("{base}_bucket");
    let mut samples: Vec<(SeriesKey, f64)> = buckets
        .into_iter()
        .map(|(le, cumulative)| {
            let key = series(bucket.clone(), tags, Some(("le", format_float(le))));
            (key, cumulative)
        })
        .collect();
    let inf = series(bucket, tags, Some(("le", "+Inf".to_owned())));
    samples.push((inf, count as f64));
    if let Some(sum) = sum {
        samples.push((series(format!("{base}_sum"), tags, None), sum));
    }
    samples.push((series(format!("{base}_count"), tags, None), count as f64));
    samples
}

fn histogram_samples(
    base: &str,
    tags: Vec<(String, String)>,
    point: &proto::HistogramDataPoint,
) -> PointResult<Vec<(SeriesKey, f64)>> {
    let (counts, bounds) = (&point.bucket_counts, &point.explicit_bounds);
    if counts.is_empty() && bounds.is_empty() {
        return Err((
            Rejection::NoBuckets,
            "histogram point without buckets (no bucket_counts, no explicit_bounds)".to_owned(),
        ));
    }
    if counts.len() != bounds.len() + 1 {
        return invalid(format_args!(
            "histogram point with {} bucket counts for {} bounds (want one more count than bounds)",
            counts.len(),
            bounds.len()
        ));
    }
    if bounds.iter().any(|b| !b.is_finite()) || bounds.windows(2).any(|w| w[0] >= w[1]) {
        return invalid("histogram bounds are not finite and strictly ascending");
    }
    let mut cumulative = 0u64;
    let buckets = bounds
        .iter()
        .zip(counts)
        .map(|(&le, &n)| {
            cumulative = cumulative.saturating_add(n);
            (le, cumulative as f64)
        })
        .collect();
    Ok(classic_histogram(
        base,
        &tags,
        buckets,
        point.count,
        point.sum,
    ))
}

/// The classic buckets of an exponential histogram point: `(le, cumulative count)`.
///
/// Bucket `i` of scale `s` holds values in `(b^i, b^(i+1)]` with `b = 2^(2^-s)`: a positive
/// bucket becomes `le = b^(i+1)`, a negative one (values in `[-b^(i+1), -b^i)`) `le = -b^i`,
/// and the zero bucket (`[-zero_threshold, zero_threshold]`) `le = zero_threshold`, which
/// is always present (0 when the threshold is). A point whose bounds do not ascend (a zero
/// threshold reaching into the buckets) or overflow is refused.
pub fn exponential_buckets(
    point: &proto::ExponentialHistogramDataPoint,
) -> Result<Vec<(f64, f64)>, String> {
    let scale = point.scale;
    if !(-10..=20).contains(&scale) {
        return Err(format!(
            "exponential histogram scale {scale} is outside -10..=20"
        ));
    }
    let threshold = point.zero_threshold;
    if !(threshold.is_finite() && threshold >= 0.0) {
        return Err(format!(
            "zero_threshold {threshold} is not a finite, non-negative number"
        ));
    }
    let step = 2f64.powi(-scale);
    let bound = |index: i64| (index as f64 * step).exp2();
    let empty = proto::Buckets::default();
    let negative = point.negative.as_ref().unwrap_or(&empty);
    let positive = point.positive.as_ref().unwrap_or(&empty);
    let mut buckets =
        Vec::with_capacity(negative.bucket_counts.len() + positive.bucket_counts.len() + 1);
    let mut cumulative = 0u64;
    for (i, &n) in negative.bucket_counts.iter().enumerate().rev() {
        cumulative = cumulative.saturating_add(n);
        buckets.push((
            -bound(i64::from(negative.offset) + i as i64),
            cumulative as f64,
        ));
    }
    cumulative = cumulative.saturating_add(point.zero_count);
    buckets.push((threshold, cumulative as f64));
    for (i, &n) in positive.bucket_counts.iter().enumerate() {
        cumulative = cumulative.saturating_add(n);
        buckets.push((
            bound(i64::from(positive.offset) + i as i64 + 1),
            cumulative as f64,
        ));
    }
    if buckets.iter().any(|(le, _)| !le.is_finite()) || buckets.windows(2).any(|w| w[0].0 >= w[1].0)
    {
        return Err(format!(
            "exponential histogram bounds (scale {scale}, offsets {} and {}, zero_threshold {threshold}) overflow or do not ascend",
            negative.offset, positive.offset
        ));
    }
    Ok(buckets)
}

fn exponential_samples(
    base: &str,
    tags: Vec<(String, String)>,
    point: &proto::ExponentialHistogramDataPoint,
) -> PointResult<Vec<(SeriesKey, f64)>> {
    let buckets = exponential_buckets(point).map_err(|why| (Rejection::Invalid, why))?;
    Ok(classic_histogram(
        base,
        &tags,
        buckets,
        point.count,
        point.sum,
    ))
}

fn summary_samples(
    base: &str,
    tags: Vec<(String, String)>,
    point: &proto::SummaryDataPoint,
) -> PointResult<Vec<(SeriesKey, f64)>> {
    let mut samples = Vec::with_capacity(point.quantile_values.len() + 2);
    for q in &point.quantile_values {
        if !(0.0..=1.0).contains(&q.quantile) {
            return invalid(format_args!("quantile {} is outside 0..=1", q.quantile));
        }
        let key = series(
            base.to_owned(),
            &tags,
            Some(("quantile", format_float(q.quantile))),
        );
        samples.push((key, q.value));
    }
    samples.push((series(format!("{base}_sum"), &tags, None), point.sum));
    samples.push((
        series(format!("{base}_count"), &tags, None),
        point.count as f64,
    ));
    Ok(samples)
}

/// A point's tags: its attributes, then the resource's tags over them.
fn point_tags(
    resource: &ResourceTags,
    attributes: &[KeyValue],
) -> PointResult<Vec<(String, String)>> {
    let mut tags = tags_of(attributes.iter()).map_err(|why| (Rejection::Invalid, why))?;
    merge(&mut tags, &resource.tags);
    if let Some((key, _)) = tags
        .iter()
        .find(|(k, _)| RESERVED_COLUMNS.contains(&k.as_str()) || k == "le" || k == "quantile")
    {
        return invalid(format_args!(
            "attribute {key:?} is a reserved name (time, metric, value, text, value_mantissa, value_scale, le, quantile)"
        ));
    }
    Ok(tags)
}

/// Attributes as tags sorted by name: names sanitized, empty values left out, the values of
/// attributes whose names meet joined with `;` (in the order of their original names).
fn tags_of<'a>(
    attributes: impl Iterator<Item = &'a KeyValue>,
) -> Result<Vec<(String, String)>, String> {
    let mut named = Vec::new();
    for kv in attributes {
        let value = any_text(kv.value.as_ref().and_then(|v| v.value.as_ref()));
        if value.is_empty() {
            continue;
        }
        let name = label_name(&kv.key)
            .ok_or_else(|| format!("attribute name {:?} cannot be a tag name", kv.key))?;
        named.push((name, kv.key.as_str(), value));
    }
    named.sort_unstable_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let mut tags: Vec<(String, String)> = Vec::with_capacity(named.len());
    for (name, _, value) in named {
        match tags.last_mut() {
            Some((last, joined)) if *last == name => {
                joined.push(';');
                joined.push_str(&value);
            }
            _ => tags.push((name, value)),
        }
    }
    Ok(tags)
}

/// Sets `over` in the sorted `tags`, replacing tags of the same name.
fn merge(tags: &mut Vec<(String, String)>, over: &[(String, String)]) {
    for (key, value) in over {
        match tags.binary_search_by(|(k, _)| k.cmp(key)) {
            Ok(i) => tags[i].1.clone_from(value),
            Err(i) => tags.insert(i, (key.clone(), value.clone())),
        }
    }
}

/// An attribute value as text, as OpenTelemetry's collector renders it: lists and maps as
/// JSON, bytes as base64.
fn any_text(value: Option<&Any>) -> String {
    match value {
        None => String::new(),
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::BoolValue(b)) => b.to_string(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::DoubleValue(d)) => format_float(*d),
        Some(Any::BytesValue(b)) => base64::engine::general_purpose::STANDARD.encode(b),
        Some(other) => any_json(Some(other)).to_string(),
    }
}

fn any_json(value: Option<&Any>) -> serde_json::Value {
    use serde_json::Value as Json;
    match value {
        None => Json::Null,
        Some(Any::StringValue(s)) => Json::from(s.as_str()),
        Some(Any::BoolValue(b)) => Json::from(*b),
        Some(Any::IntValue(i)) => Json::from(*i),
        Some(Any::DoubleValue(d)) => Json::from(*d),
        Some(Any::BytesValue(b)) => Json::from(base64::engine::general_purpose::STANDARD.encode(b)),
        Some(Any::ArrayValue(a)) => a
            .values
            .iter()
            .map(|v| any_json(v.value.as_ref()))
            .collect(),
        Some(Any::KvlistValue(m)) => Json::Object(
            m.values
                .iter()
                .map(|kv| {
                    (
                        kv.key.clone(),
                        any_json(kv.value.as_ref().and_then(|v| v.value.as_ref())),
                    )
                })
                .collect(),
        ),
    }
}

/// A float as Prometheus writes `le` and `quantile` (Go's `FormatFloat(f, 'f', -1, 64)`):
/// shortest round-trip digits, no exponent; `+Inf`, `-Inf`, `NaN`.
pub fn format_float(value: f64) -> String {
    match value {
        f64::INFINITY => "+Inf".to_owned(),
        f64::NEG_INFINITY => "-Inf".to_owned(),
        v if v.is_nan() => "NaN".to_owned(),
        v => v.to_string(),
    }
}

/// The Prometheus 3 name of an OpenTelemetry metric (`UnderscoreEscapingWithSuffixes`);
/// empty if nothing of it is left.
fn metric_name(name: &str, unit: &str, kind: Kind) -> String {
    let mut tokens: Vec<String> = name
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == ':'))
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    let (main, per) = unit_suffixes(unit);
    add_unit_tokens(&mut tokens, clean_unit(&main), clean_unit(&per));
    if kind == Kind::Counter {
        tokens.retain(|t| t != "total");
        tokens.push("total".to_owned());
    }
    if unit == "1" && kind == Kind::Gauge {
        tokens.retain(|t| t != "ratio");
        tokens.push("ratio".to_owned());
    }
    let name = tokens.join("_");
    match name.starts_with(|c: char| c.is_ascii_digit()) {
        true => format!("_{name}"),
        false => name,
    }
}

/// The Prometheus suffixes of a UCUM unit: main (`By` → `bytes`) and per (`/s` →
/// `per_second`); units in braces are annotations and give none.
fn unit_suffixes(unit: &str) -> (String, String) {
    let (main, per) = match unit.split_once('/') {
        Some((main, per)) => (main, Some(per)),
        None => (unit, None),
    };
    let usable = |u: &str| !u.is_empty() && !u.contains(['{', '}']);
    let main = main.trim();
    let main = match usable(main) {
        true => main_unit(main).to_owned(),
        false => String::new(),
    };
    let per = per.map(str::trim).filter(|p| usable(p)).map(per_unit);
    (main, per.map(|p| format!("per_{p}")).unwrap_or_default())
}

fn main_unit(unit: &str) -> &str {
    match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "1" => "",
        "%" => "percent",
        other => other,
    }
}

fn per_unit(unit: &str) -> &str {
    match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => other,
    }
}

/// A unit suffix with every character but `[a-zA-Z0-9:]` as `_`, runs of `_` as one, no
/// leading `_`.
fn clean_unit(unit: &str) -> String {
    let mut clean = String::with_capacity(unit.len());
    for c in unit.chars() {
        let c = match c.is_ascii_alphanumeric() || c == ':' {
            true => c,
            false => '_',
        };
        if !(c == '_' && clean.ends_with('_')) {
            clean.push(c);
        }
    }
    match clean.strip_prefix('_') {
        Some(rest) => rest.to_owned(),
        None => clean,
    }
}

/// Appends the unit suffixes the name does not already have as tokens.
fn add_unit_tokens(tokens: &mut Vec<String>, mut main: String, per: String) {
    if tokens.contains(&main) {
        main.clear();
    }
    let per = match per.as_str() {
        "per_" => "",
        p => p.strip_suffix('_').unwrap_or(p),
    };
    let per = match tokens.iter().any(|t| t == per) {
        true => "",
        false => per,
    };
    if !per.is_empty()
        && let Some(trimmed) = main.strip_suffix('_')
    {
        main = trimmed.to_owned();
    }
    if !main.is_empty() {
        tokens.push(main);
    }
    if !per.is_empty() {
        tokens.push(per.to_owned());
    }
}

/// The Prometheus 3 tag name of an attribute: every character but `[a-zA-Z0-9]` as `_`,
/// runs of them as one (`__name__`-style names keep their double underscores), `key_`
/// before a leading digit; `None` if only underscores are left.
fn label_name(key: &str) -> Option<String> {
    let (inner, reserved) = match key.len() >= 4 && key.starts_with("__") && key.ends_with("__") {
        true => (&key[2..key.len() - 2], true),
        false => (key, false),
    };
    let mut name = String::with_capacity(key.len() + 4);
    for c in inner.chars() {
        if c.is_ascii_alphanumeric() {
            name.push(c);
        } else if !name.ends_with('_') {
            name.push('_');
        }
    }
    if reserved {
        name = format!("__{name}__");
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert_str(0, "key_");
    }
    match name.chars().all(|c| c == '_') {
        true => None,
        false => Some(name),
    }
}
