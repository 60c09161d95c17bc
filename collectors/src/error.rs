//! The crate's error type: what stops a collector or simulator from starting or finishing.
//!
//! Problems met while running (a missing procfs file, a lost broker connection) are logged and
//! counted instead, never returned.

use snafu::Snafu;

/// Why [`run`](crate::run) or [`simulate`](crate::simulate()) could not start or finish.
#[derive(Debug, Snafu, PartialEq)]
#[snafu(visibility(pub(crate)))]
pub enum Error {
    /// The broker address is not `HOST[:PORT]`.
    #[snafu(display("broker address {broker:?} is not HOST[:PORT]"))]
    BrokerAddress {
        /// The address as configured.
        broker: String,
    },
    /// The MQTT QoS is not 0 or 1.
    #[snafu(display("qos {qos} is not supported (use 0 or 1)"))]
    Qos {
        /// The QoS as configured.
        qos: u8,
    },
    /// The sampling period is not between 1 ms and one day.
    #[snafu(display("period_secs {period_secs} is not between 0.001 and 86400 seconds"))]
    Period {
        /// The period as configured.
        period_secs: f64,
    },
    /// The offline buffer cannot hold a single message.
    #[snafu(display("offline_buffer_messages must be at least 1"))]
    OfflineBuffer,
    /// No sensor family can run on this node.
    #[snafu(display("no collector family can run on this node: {reasons}"))]
    NoFamily {
        /// Each family's reason, `name: reason; …`.
        reasons: String,
    },
    /// With `once`, the broker did not take every message in time.
    #[snafu(display(
        "{pending} of {total} messages not delivered to {broker} within {timeout_secs} s"
    ))]
    FlushTimeout {
        /// The broker address.
        broker: String,
        /// Messages still queued or unacknowledged.
        pending: u64,
        /// Messages handed to the publisher.
        total: u64,
        /// How long the flush waited.
        timeout_secs: u64,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
