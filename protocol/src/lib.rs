//! The shared vocabulary of exawatch: what a [`Sample`] is, and the codecs that turn wire
//! formats into samples and back. Pure functions only: no I/O, no async runtime.
//!
//! Data flow: a collector builds samples and encodes them with [`examon::encode_topic`] /
//! [`examon::encode_payload`]; the server decodes each MQTT message with [`examon::decode`]
//! into samples that the store ingests; [`kairosdb::decode_datapoints`] does the same for
//! KairosDB's `POST /api/v1/datapoints` JSON.
//!
//! Also shared by every crate: [`settings`], the checks each configuration section runs on
//! its values when the configuration is loaded.

mod batch;
pub mod compression;
pub mod examon;
pub mod examon_v3;
pub mod exposition;
pub mod job;
pub mod kairosdb;
pub mod line_protocol;
pub mod mqtt;
pub mod otlp;
pub mod record;
pub mod remote_write;
mod sample;
pub mod scrape;
pub mod settings;
pub mod time;

pub use batch::{Batch, Point, SeriesKey};
pub use sample::{RESERVED_COLUMNS, Sample, Value};
