//! The OTLP messages exawatch reads and answers, written by hand with field numbers from
//! `opentelemetry-proto` (`collector/metrics/v1/metrics_service.proto`,
//! `metrics/v1/metrics.proto`, `common/v1/common.proto`, `resource/v1/resource.proto`) and
//! `google/rpc/status.proto`. Fields exawatch does not use (exemplars, descriptions, scope,
//! schema URLs, min/max) are left out: protobuf and the JSON reader skip them.
//!
//! The same structs read OTLP's JSON encoding: lowerCamelCase keys, 64-bit integers as
//! strings or numbers, doubles as numbers or `"NaN"`/`"Infinity"`/`"-Infinity"`, enums as
//! integers (or their names), a oneof's member as a key of its parent.

use prost::Message;
use serde::Deserialize;

/// `ExportMetricsServiceRequest`: what an exporter POSTs to `/v1/metrics`.
#[derive(Clone, PartialEq, Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ExportMetricsServiceRequest {
    /// Metrics, grouped by the resource that produced them.
    #[prost(message, repeated, tag = "1")]
    pub resource_metrics: Vec<ResourceMetrics>,
}

/// `ExportMetricsServiceResponse`: the answer; `partial_success` unset when all was taken.
#[derive(Clone, PartialEq, Message)]
pub struct ExportMetricsServiceResponse {
    /// What was refused, if anything.
    #[prost(message, optional, tag = "1")]
    pub partial_success: Option<ExportMetricsPartialSuccess>,
}

/// `ExportMetricsPartialSuccess`.
#[derive(Clone, PartialEq, Message)]
pub struct ExportMetricsPartialSuccess {
    /// Data points refused.
    #[prost(int64, tag = "1")]
    pub rejected_data_points: i64,
    /// Why, for a human.
    #[prost(string, tag = "2")]
    pub error_message: String,
}

/// `google.rpc.Status`: the body of an error answer (`details` is left empty).
#[derive(Clone, PartialEq, Message)]
pub struct Status {
    /// A `google.rpc.Code`.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// What went wrong.
    #[prost(string, tag = "2")]
    pub message: String,
}

/// `ResourceMetrics`.
#[derive(Clone, PartialEq, Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ResourceMetrics {
    /// The producer: service, host, …
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    /// Metrics per instrumentation scope.
    #[prost(message, repeated, tag = "2")]
    pub scope_metrics: Vec<ScopeMetrics>,
}

/// `Resource`.
#[derive(Clone, PartialEq, Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Resource {
    /// Attributes such as `service.name`, `host.name`.
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
}

/// `ScopeMetrics` (the scope itself is not read).
#[derive(Clone, PartialEq, Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ScopeMetrics {
    /// The metrics.
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
}

/// `Metric`.
#[derive(Clone, PartialEq, Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Metric {
    /// The OpenTelemetry name, e.g. `http.server.request.duration`.
    #[prost(string, tag = "1")]
    pub name: String,
    /// UCUM unit, e.g. `s`, `By`, `1`, `{request}`.
    #[prost(string, tag = "3")]
    pub unit: String,
    /// The points, by kind; `None` for a kind this decoder does not know.
    #[prost(oneof = "metric::Data", tags = "5, 7, 9, 10, 11")]
    #[serde(flatten)]
    pub data: Option<metric::Data>,
}

/// Members of `Metric`'s `data` oneof.
pub mod metric {
    use serde::Deserialize;

    /// `Metric.data`.
    #[derive(Clone, PartialEq, prost::Oneof, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub enum Data {
        /// Instantaneous values.
        #[prost(message, tag = "5")]
        Gauge(super::Gauge),
        /// Sums over time, cumulative or delta, monotonic or not.
        #[prost(message, tag = "7")]
        Sum(super::Sum),
        /// Explicit-bucket histograms.
        #[prost(message, tag = "9")]
        Histogram(super::Histogram),
        /// Base-2 exponential histograms.
        #[prost(message, tag = "10")]
        ExponentialHistogram(super::ExponentialHistogram),
        /// Quantiles, sum and count.
        #[prost(message, tag = "11")]
        Summary(super::Summary),
    }
}

/// `AggregationTemporality`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum AggregationTemporality {
    /// Not set: invalid for sums and histograms.
    Unspecified = 0,
    /// Each point holds what happened since the previous one.
    Delta = 1,
    /// Each point holds everything since `start_time_unix_nano`.
    Cumulative = 2,
}

/// `DataPointFlags.FLAG_NO_RECORDED_VALUE`: the point marks a series as gone.
pub const FLAG_NO_RECORDED_VALUE: u32 = 1;

/// `Gauge`.
#[derive(Clone, PartialEq, Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Gauge {
    /// The points.
    #[prost(message, repeated, tag = "1")]
    pub data_points: Vec<NumberDataPoint>,
}

/// `Sum`.
#[derive(Clone, PartialEq, Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Sum {
    /// The points.
    #[prost(message, repeated, tag = "1")]
    pub data_points: Vec<NumberDataPoint>,
    /// An [`AggregationTemporality`].
    #[prost(enumeration = "AggregationTemporality", tag = "2")]
    #[serde(deserialize_with = "json::temporality")]
    pub aggregation_temporality: i32,
    /// Only grows (a counter) or not (an up-down counter).
    #[prost(bool, tag = "3")]
    pub is_monotonic: bool,
}

/// `Histogram`.
#[derive(Clone, PartialEq, Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Histogram {
    /// The points.
    #[prost(message, repeated, tag = "1")]
    pub data_points: Vec<HistogramDataPoint>,
    /// An [`AggregationTemporality`].
    #[prost(enumeration = "AggregationTemporality", tag = "2")]
    #[serde(deserialize_with = "json::temporality")]
    pub aggregation_temporality: i32,
}

/// `ExponentialHistogram`.
#[derive(Clone, PartialEq, Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ExponentialHistogram {
    /// The points.
    #[prost(message, repeated, tag = "1")]
    pub data_points: Vec<ExponentialHistogramDataPoint>,
    /// An [`AggregationTemporality`].
    #[prost(enumeration = "AggregationTemporality", tag = "2")]
    #[serde(deserialize_with = "json::temporality")]
    pub aggregation_temporality: i32,
}

/// `Summary`.
#[derive(Clone, PartialEq, Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Summary {
    /// The points.
    #[prost(message, repeated, tag = "1")]
    pub data_points: Vec<SummaryDataPoint>,
}

/// `NumberDataPoint`.
#[derive(Clone, PartialEq, Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct NumberDataPoint {
    /// Attributes: the series' own tags.
    #[prost(message, repeated, tag = "7")]
    pub attributes: Vec<KeyValue>,
    /// When the sum began (ns since the epoch).
    #[prost(fixed64, tag = "2")]
    #[serde(deserialize_with = "json::u64")]
    pub start_time_unix_nano: u64,
    /// When the value was taken (ns since the epoch).
    #[prost(fixed64, tag = "3")]
    #[serde(deserialize_with = "json::u64")]
    pub time_unix_nano: u64,
    /// The value; `None` if neither member is set.
    #[prost(oneof = "number_data_point::Value", tags = "4, 6")]
    #[serde(flatten)]
    pub value: Option<number_data_point::Value>,
    /// [`FLAG_NO_RECORDED_VALUE`] and future flags.
    #[prost(uint32, tag = "8")]
    pub flags: u32,
}

/// Members of `NumberDataPoint`'s `value` oneof.
pub mod number_data_point {
    use serde::Deserialize;

    /// `NumberDataPoint.value`.
    #[derive(Clone, Copy, PartialEq, prost::Oneof, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub enum Value {
        /// A double.
        #[prost(double, tag = "4")]
        AsDouble(#[serde(deserialize_with = "super::json::f64")] f64),
        /// A signed integer.
        #[prost(sfixed64, tag = "6")]
        AsInt(#[serde(deserialize_with = "super::json::i64")] i64),
    }
}

/// `HistogramDataPoint`.
#[derive(Clone, PartialEq, Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HistogramDataPoint {
    /// Attributes: the series' own tags.
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<KeyValue>,
    /// When the histogram began (ns since the epoch).
    #[prost(fixed64, tag = "2")]
    #[serde(deserialize_with = "json::u64")]
    pub start_time_unix_nano: u64,
    /// When it was taken (ns since the epoch).
    #[prost(fixed64, tag = "3")]
    #[serde(deserialize_with = "json::u64")]
    pub time_unix_nano: u64,
    /// Observations.
    #[prost(fixed64, tag = "4")]
    #[serde(deserialize_with = "json::u64")]
    pub count: u64,
    /// Their sum, if the producer kept it.
    #[prost(double, optional, tag = "5")]
    #[serde(deserialize_with = "json::optional_f64")]
    pub sum: Option<f64>,
    /// Observations per bucket (not cumulative): one more than `explicit_bounds`.
    #[prost(fixed64, repeated, tag = "6")]
    #[serde(deserialize_with = "json::vec_u64")]
    pub bucket_counts: Vec<u64>,
    /// Upper bounds of the buckets but the last (+Inf), ascending.
    #[prost(double, repeated, tag = "7")]
    #[serde(deserialize_with = "json::vec_f64")]
    pub explicit_bounds: Vec<f64>,
    /// [`FLAG_NO_RECORDED_VALUE`] and future flags.
    #[prost(uint32, tag = "10")]
    pub flags: u32,
}

/// `ExponentialHistogramDataPoint`.
#[derive(Clone, PartialEq, Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ExponentialHistogramDataPoint {
    /// Attributes: the series' own tags.
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
    /// When the histogram began (ns since the epoch).
    #[prost(fixed64, tag = "2")]
    #[serde(deserialize_with = "json::u64")]
    pub start_time_unix_nano: u64,
    /// When it was taken (ns since the epoch).
    #[prost(fixed64, tag = "3")]
    #[serde(deserialize_with = "json::u64")]
    pub time_unix_nano: u64,
    /// Observations.
    #[prost(fixed64, tag = "4")]
    #[serde(deserialize_with = "json::u64")]
    pub count: u64,
    /// Their sum, if the producer kept it.
    #[prost(double, optional, tag = "5")]
    #[serde(deserialize_with = "json::optional_f64")]
    pub sum: Option<f64>,
    /// Resolution: bucket bounds are powers of `2^(2^-scale)`.
    #[prost(sint32, tag = "6")]
    pub scale: i32,
    /// Observations within `zero_threshold` of zero.
    #[prost(fixed64, tag = "7")]
    #[serde(deserialize_with = "json::u64")]
    pub zero_count: u64,
    /// Buckets of positive observations.
    #[prost(message, optional, tag = "8")]
    pub positive: Option<Buckets>,
    /// Buckets of negative observations (by absolute value).
    #[prost(message, optional, tag = "9")]
    pub negative: Option<Buckets>,
    /// [`FLAG_NO_RECORDED_VALUE`] and future flags.
    #[prost(uint32, tag = "10")]
    pub flags: u32,
    /// Width of the zero bucket (0: exactly zero).
    #[prost(double, tag = "14")]
    #[serde(deserialize_with = "json::f64")]
    pub zero_threshold: f64,
}

/// `ExponentialHistogramDataPoint.Buckets`.
#[derive(Clone, PartialEq, Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Buckets {
    /// Index of the first bucket.
    #[prost(sint32, tag = "1")]
    pub offset: i32,
    /// Observations per bucket, from `offset` on.
    #[prost(uint64, repeated, tag = "2")]
    #[serde(deserialize_with = "json::vec_u64")]
    pub bucket_counts: Vec<u64>,
}

/// `SummaryDataPoint`.
#[derive(Clone, PartialEq, Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SummaryDataPoint {
    /// Attributes: the series' own tags.
    #[prost(message, repeated, tag = "7")]
    pub attributes: Vec<KeyValue>,
    /// When the summary began (ns since the epoch).
    #[prost(fixed64, tag = "2")]
    #[serde(deserialize_with = "json::u64")]
    pub start_time_unix_nano: u64,
    /// When it was taken (ns since the epoch).
    #[prost(fixed64, tag = "3")]
    #[serde(deserialize_with = "json::u64")]
    pub time_unix_nano: u64,
    /// Observations.
    #[prost(fixed64, tag = "4")]
    #[serde(deserialize_with = "json::u64")]
    pub count: u64,
    /// Their sum.
    #[prost(double, tag = "5")]
    #[serde(deserialize_with = "json::f64")]
    pub sum: f64,
    /// Quantiles.
    #[prost(message, repeated, tag = "6")]
    pub quantile_values: Vec<ValueAtQuantile>,
    /// [`FLAG_NO_RECORDED_VALUE`] and future flags.
    #[prost(uint32, tag = "8")]
    pub flags: u32,
}

/// `SummaryDataPoint.ValueAtQuantile`.
#[derive(Clone, PartialEq, Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ValueAtQuantile {
    /// The quantile, 0 to 1.
    #[prost(double, tag = "1")]
    #[serde(deserialize_with = "json::f64")]
    pub quantile: f64,
    /// Its value.
    #[prost(double, tag = "2")]
    #[serde(deserialize_with = "json::f64")]
    pub value: f64,
}

/// `KeyValue`.
#[derive(Clone, PartialEq, Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct KeyValue {
    /// Attribute name, e.g. `http.request.method`.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Its value; `None` when empty.
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

/// `AnyValue`.
#[derive(Clone, PartialEq, Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct AnyValue {
    /// The value; `None` when empty.
    #[prost(oneof = "any_value::Value", tags = "1, 2, 3, 4, 5, 6, 7")]
    #[serde(flatten)]
    pub value: Option<any_value::Value>,
}

/// Members of `AnyValue`'s `value` oneof.
pub mod any_value {
    use serde::Deserialize;

    /// `AnyValue.value`.
    #[derive(Clone, PartialEq, prost::Oneof, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub enum Value {
        /// A string.
        #[prost(string, tag = "1")]
        StringValue(String),
        /// A boolean.
        #[prost(bool, tag = "2")]
        BoolValue(bool),
        /// An integer.
        #[prost(int64, tag = "3")]
        IntValue(#[serde(deserialize_with = "super::json::i64")] i64),
        /// A double.
        #[prost(double, tag = "4")]
        DoubleValue(#[serde(deserialize_with = "super::json::f64")] f64),
        /// A list.
        #[prost(message, tag = "5")]
        ArrayValue(super::ArrayValue),
        /// A map.
        #[prost(message, tag = "6")]
        KvlistValue(super::KeyValueList),
        /// Bytes (base64 in JSON).
        #[prost(bytes, tag = "7")]
        BytesValue(#[serde(deserialize_with = "super::json::base64")] Vec<u8>),
    }
}

/// `ArrayValue`.
#[derive(Clone, PartialEq, Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ArrayValue {
    /// The elements.
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<AnyValue>,
}

/// `KeyValueList`.
#[derive(Clone, PartialEq, Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct KeyValueList {
    /// The entries.
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<KeyValue>,
}

/// Readers of the JSON encoding's scalars (proto3 JSON mapping).
mod json {
    use serde::Deserialize;
    use serde::de::{Deserializer, Error};

    /// A JSON number or a string holding one.
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        Unsigned(u64),
        Signed(i64),
        Float(f64),
        Text(String),
    }

    pub(super) fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match Number::deserialize(d)? {
            Number::Unsigned(n) => Ok(n),
            Number::Text(t) => t.parse().map_err(D::Error::custom),
            _ => Err(D::Error::custom("expected an unsigned 64-bit integer")),
        }
    }

    pub(super) fn i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        match Number::deserialize(d)? {
            Number::Unsigned(n) => i64::try_from(n).map_err(D::Error::custom),
            Number::Signed(n) => Ok(n),
            Number::Text(t) => t.parse().map_err(D::Error::custom),
            Number::Float(_) => Err(D::Error::custom("expected a 64-bit integer")),
        }
    }

    fn to_f64<E: Error>(n: Number) -> Result<f64, E> {
        match n {
            Number::Unsigned(n) => Ok(n as f64),
            Number::Signed(n) => Ok(n as f64),
            Number::Float(x) => Ok(x),
            Number::Text(t) => match t.as_str() {
                "NaN" => Ok(f64::NAN),
                "Infinity" => Ok(f64::INFINITY),
                "-Infinity" => Ok(f64::NEG_INFINITY),
                _ => t.parse().map_err(E::custom),
            },
        }
    }

    pub(super) fn f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        to_f64(Number::deserialize(d)?)
    }

    pub(super) fn optional_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        Option::<Number>::deserialize(d)?.map(to_f64).transpose()
    }

    pub(super) fn vec_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
        Vec::<Number>::deserialize(d)?
            .into_iter()
            .map(|n| match n {
                Number::Unsigned(n) => Ok(n),
                Number::Text(t) => t.parse().map_err(D::Error::custom),
                _ => Err(D::Error::custom("expected an unsigned 64-bit integer")),
            })
            .collect()
    }

    pub(super) fn vec_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Vec::<Number>::deserialize(d)?
            .into_iter()
            .map(to_f64)
            .collect()
    }

    /// An enum as its number or its name (`AGGREGATION_TEMPORALITY_DELTA`).
    pub(super) fn temporality<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
        match Number::deserialize(d)? {
            Number::Unsigned(n) => i32::try_from(n).map_err(D::Error::custom),
            Number::Signed(n) => i32::try_from(n).map_err(D::Error::custom),
            Number::Text(t) => match t.as_str() {
                "AGGREGATION_TEMPORALITY_UNSPECIFIED" => Ok(0),
                "AGGREGATION_TEMPORALITY_DELTA" => Ok(1),
                "AGGREGATION_TEMPORALITY_CUMULATIVE" => Ok(2),
                _ => Err(D::Error::custom(format!("unknown temporality {t:?}"))),
            },
            Number::Float(_) => Err(D::Error::custom("expected an enum number or name")),
        }
    }

    /// Bytes as proto3's JSON mapping writes them: base64, standard or URL-safe alphabet.
    pub(super) fn base64<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        use base64::Engine;
        let text = String::deserialize(d)?;
        let trimmed = text.trim_end_matches('=');
        base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(trimmed)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(trimmed))
            .map_err(D::Error::custom)
    }
}
