//! exawatch's alerting and recording rules, compatible with Prometheus: rule files in its
//! format ([`file`]), evaluated by the PromQL engine over the store at each group's interval
//! ([`group`], [`RuleManager`]), alerts sent to Alertmanager ([`Notifier`]), and a runner of
//! `promtool test rules` unit-test files ([`unittest`]).
//!
//! Data flow: the binary builds a [`RuleManager`] from `[rules]` and `[alertmanager]`; each
//! group's task evaluates its rules at its interval through [`exawatch_promql::Engine`] over
//! a [`exawatch_promql::StoreSource`], writes recorded series, `ALERTS` and
//! `ALERTS_FOR_STATE` back into the store (WAL first, as every write), and queues the alerts
//! due for sending. The HTTP API reads rules and alerts and asks for reloads through
//! [`RulesHandler`].

mod config;
pub mod file;
pub mod group;
mod manager;
mod notifier;
pub mod template;
pub mod unittest;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use snafu::Snafu;

pub use config::{AlertmanagerConfig, RulesConfig};
pub use group::{Alert, AlertState, Group, Health};
pub use manager::{RuleManager, RuleManagerArgs};
pub use notifier::Notifier;

/// Errors loading rule files.
#[derive(Debug, Snafu)]
#[snafu(visibility(pub(crate)))]
pub enum Error {
    /// A file could not be read.
    #[snafu(display("reading the rule file {}: {source}", path.display()))]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A glob of `rules.files` is not a valid pattern.
    #[snafu(display("rules.files: bad pattern {pattern:?}: {source}"))]
    Glob {
        /// The pattern.
        pattern: String,
        /// Why.
        source: glob::PatternError,
    },
    /// A file is not a valid rule file.
    #[snafu(display("{file}: {message}"))]
    InvalidFile {
        /// The file.
        file: String,
        /// Where (line, column) and what is wrong.
        message: String,
    },
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the HTTP API asks of the rules: their state, and reloads.
#[async_trait]
pub trait RulesHandler: Send + Sync + std::fmt::Debug {
    /// Every group with its rules' state and alerts, in file order.
    async fn groups(&self) -> Vec<Group>;

    /// Re-reads the rule files; on an error the running rules stay and the error is returned.
    /// Returns the number of groups loaded.
    async fn reload(&self) -> Result<usize, String>;
}

/// The rules as the API holds them.
pub type RulesHandlerRef = Arc<dyn RulesHandler>;

/// Formats a time (ms) as RFC 3339, as Prometheus' API does.
pub fn rfc3339(ms: i64) -> String {
    notifier::rfc3339(ms)
}
