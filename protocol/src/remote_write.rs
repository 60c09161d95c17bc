//! Prometheus remote write (protocol 1.0): a snappy-compressed protobuf `WriteRequest`.
//!
//! `__name__` becomes the metric, the other labels tags, timestamps (ms) nanoseconds.
//! Stale markers (Prometheus' special NaN) are kept bit for bit.

use prost::Message;

use crate::compression::MAX_DECOMPRESSED_BYTES;
use crate::{Batch, RESERVED_COLUMNS, Sample, SeriesKey, Value};

/// `prometheus.WriteRequest` (only the fields exawatch reads).
#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    /// The series.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    /// Labels, `__name__` among them.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// The samples.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<RemoteSample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Message)]
pub struct Label {
    /// Label name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Label value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, Message)]
pub struct RemoteSample {
    /// The value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// Decodes a remote-write body into samples; any error rejects the whole request, as
/// Prometheus expects (it retries only on 5xx).
pub fn decode(body: &[u8]) -> Result<Batch, String> {
    // The length header is the sender's claim: check it before allocating for it.
    let claimed = snap::raw::decompress_len(body)
        .map_err(|e| format!("the body is not snappy-compressed: {e}"))?;
    if claimed > MAX_DECOMPRESSED_BYTES {
        return Err(format!(
            "the body claims {claimed} bytes decompressed, more than {MAX_DECOMPRESSED_BYTES}"
        ));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("the body is not snappy-compressed: {e}"))?;
    let request = WriteRequest::decode(raw.as_slice())
        .map_err(|e| format!("the body is not a remote-write WriteRequest: {e}"))?;
    let mut batch = Batch::new();
    for series in request.timeseries {
        let mut metric = None;
        let mut tags = Vec::with_capacity(series.labels.len());
        for label in series.labels {
            if label.name == "__name__" {
                metric = Some(label.value);
            } else if RESERVED_COLUMNS.contains(&label.name.as_str()) {
                return Err(format!(
                    "label {:?} is reserved (time, metric, value, text, value_mantissa, value_scale)",
                    label.name
                ));
            } else if !label.value.is_empty() {
                tags.push((label.name, label.value));
            }
        }
        let metric = metric
            .filter(|m| !m.is_empty())
            .ok_or_else(|| "a series has no __name__ label".to_owned())?;
        tags.sort_unstable();
        if tags.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(format!("series {metric} has a label twice"));
        }
        let key = batch.add_series(SeriesKey { metric, tags });
        for sample in series.samples {
            let time_ns = sample
                .timestamp
                .checked_mul(1_000_000)
                .ok_or_else(|| format!("timestamp {} out of range", sample.timestamp))?;
            batch.push(key, time_ns, Value::Float(sample.value));
        }
    }
    Ok(batch)
}

/// Encodes samples as a remote-write body (for tests and clients); samples of one series
/// must be adjacent.
pub fn encode(samples: &[Sample]) -> Vec<u8> {
    let mut request = WriteRequest::default();
    for sample in samples {
        let value = match &sample.value {
            Value::Float(v) => *v,
            Value::Text(_) => continue,
        };
        let point = RemoteSample {
            value,
            timestamp: sample.time_ns.div_euclid(1_000_000),
        };
        let labels: Vec<Label> = std::iter::once(("__name__", sample.metric.as_str()))
            .chain(sample.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map(|(name, value)| Label {
                name: name.to_owned(),
                value: value.to_owned(),
            })
            .collect();
        match request.timeseries.last_mut() {
            Some(last) if last.labels == labels => last.samples.push(point),
            _ => request.timeseries.push(TimeSeries {
                labels,
                samples: vec![point],
            }),
        }
    }
    snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .expect("snappy compresses any input")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_stale_markers() {
        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        let tags = vec![
            ("instance".to_owned(), "n1:9100".to_owned()),
            ("job".to_owned(), "node".to_owned()),
        ];
        let samples = vec![
            Sample::new("node_load1", tags.clone(), 1_000_000_000, Value::Float(0.5)),
            Sample::new(
                "node_load1",
                tags.clone(),
                2_000_000_000,
                Value::Float(stale),
            ),
            Sample::new("up", vec![], 3_000_000_000, Value::Float(1.0)),
        ];
        let batch = decode(&encode(&samples)).unwrap();
        assert_eq!(batch.series().len(), 2, "one series per TimeSeries");
        let decoded: Vec<Sample> = batch.samples().collect();
        assert_eq!(decoded.len(), 3);
        assert_eq!(decoded[0], samples[0]);
        assert_eq!(decoded[2], samples[2]);
        let Value::Float(v) = decoded[1].value else {
            panic!()
        };
        assert_eq!(v.to_bits(), 0x7ff0_0000_0000_0002);
    }

    /// Found by `cargo fuzz run remote_write`: a five-byte body claiming 4 GiB made the
    /// decoder allocate it.
    #[test]
    fn a_huge_claimed_length_is_refused_before_allocating() {
        let error = decode(&[0xff, 0xff, 0xff, 0xff, 0x0f]).unwrap_err();
        assert!(error.contains("claims 4294967295 bytes"), "{error}");
    }

    #[test]
    fn bad_bodies() {
        assert!(decode(b"not snappy").unwrap_err().contains("snappy"));
        let garbage = snap::raw::Encoder::new()
            .compress_vec(&[0xff, 0xff, 0xff])
            .unwrap();
        assert!(decode(&garbage).unwrap_err().contains("WriteRequest"));
        let no_name = encode(&[Sample::new("x", vec![], 0, Value::Float(1.0))]);
        let mut request = WriteRequest::decode(
            snap::raw::Decoder::new()
                .decompress_vec(&no_name)
                .unwrap()
                .as_slice(),
        )
        .unwrap();
        request.timeseries[0].labels.clear();
        let body = snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .unwrap();
        assert!(decode(&body).unwrap_err().contains("__name__"));
    }
}
