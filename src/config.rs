//! `exawatch.toml`: every section with its defaults, loaded in layers: built-in defaults, then
//! the file, then `--set key=value` overrides, then the named command-line flags; then every
//! section checks its values once ([`Validate`]), so that none fails later where it is used.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use exawatch_alerting::{AlertmanagerConfig, RulesConfig};
use exawatch_analytics::AnalyticsConfig;
use exawatch_api::ApiConfig;
use exawatch_broker::BrokerConfig;
use exawatch_broker::upstream::UpstreamConfig;
use exawatch_collectors::{CollectorConfig, SimulateConfig};
use exawatch_protocol::mqtt::IngestConfig;
use exawatch_protocol::scrape::ScrapeConfig;
use exawatch_protocol::settings::{InvalidSetting, Validate};
use exawatch_store::StoreConfig;
use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Config {
    /// What this process does: everything, or one role of several processes sharing one
    /// object store.
    pub(crate) role: Role,
    /// Where the WAL and the object store (Parquet files, catalog) live.
    pub(crate) data_dir: PathBuf,
    /// Run a collector for this machine inside `exawatch up`.
    pub(crate) local_collector: bool,
    /// The embedded MQTT broker.
    pub(crate) broker: BrokerConfig,
    /// A front broker to take a share of (MQTT 5 shared subscription), for ingesters.
    pub(crate) upstream: UpstreamConfig,
    /// How MQTT topics are read (`[[ingest.mqtt]]` rules).
    pub(crate) ingest: IngestConfig,
    /// Prometheus exporters the server scrapes (`[[scrape.jobs]]`).
    pub(crate) scrape: ScrapeConfig,
    /// WAL, buffer and files.
    pub(crate) store: StoreConfig,
    /// The HTTP API.
    pub(crate) api: ApiConfig,
    /// The node collector (`exawatch collect`, and the local one in `exawatch up`).
    pub(crate) collector: CollectorConfig,
    /// Simulated nodes for `exawatch up --simulate N`.
    pub(crate) simulate: SimulateConfig,
    /// Anomaly detection and reports.
    pub(crate) analytics: AnalyticsConfig,
    /// Alerting and recording rules.
    pub(crate) rules: RulesConfig,
    /// Where alerts are sent.
    pub(crate) alertmanager: AlertmanagerConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            role: Role::All,
            data_dir: PathBuf::from("./exawatch-data"),
            local_collector: true,
            broker: BrokerConfig::default(),
            upstream: UpstreamConfig::default(),
            ingest: IngestConfig::default(),
            scrape: ScrapeConfig::default(),
            store: StoreConfig::default(),
            api: ApiConfig::default(),
            collector: CollectorConfig::default(),
            simulate: SimulateConfig::default(),
            analytics: AnalyticsConfig::default(),
            rules: RulesConfig::default(),
            alertmanager: AlertmanagerConfig::default(),
        }
    }
}

impl Config {
    /// Defaults, then `file` (if any), then each `key=value` of `overrides`
    /// (`store.flush_interval_secs=10`; the value is TOML, bare words are strings).
    pub(crate) fn load(file: Option<&Path>, overrides: &[String]) -> Result<Self> {
        let mut tree = toml::Value::try_from(Self::default()).context("serializing defaults")?;
        if let Some(file) = file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading the config file {}", file.display()))?;
            let layer: toml::Value = toml::from_str(&text)
                .with_context(|| format!("parsing the config file {}", file.display()))?;
            merge(&mut tree, layer);
        }
        for assignment in overrides {
            let Some((key, value)) = assignment.split_once('=') else {
                bail!(
                    "--set {assignment:?}: expected key=value, e.g. store.flush_interval_secs=10"
                );
            };
            let value = toml::from_str::<toml::Table>(&format!("v = {value}"))
                .map(|mut t| t.remove("v").expect("one key"))
                .unwrap_or_else(|_| toml::Value::String(value.to_owned()));
            let mut layer = value;
            for part in key.trim().split('.').rev() {
                let mut table = toml::Table::new();
                table.insert(part.to_owned(), layer);
                layer = toml::Value::Table(table);
            }
            merge(&mut tree, layer);
        }
        let source = file.map_or("defaults and --set".to_owned(), |f| f.display().to_string());
        let config: Self = tree
            .try_into()
            .with_context(|| format!("invalid configuration (from {source})"))?;
        config
            .validate()
            .with_context(|| format!("invalid configuration (from {source})"))?;
        Ok(config)
    }

    /// Every section's values, the first one out of range named by its whole key.
    fn validate(&self) -> Result<(), InvalidSetting> {
        // A section plugs its own checks in here by implementing `Validate` (`[analytics]`
        // does not yet).
        let sections: [(&str, &dyn Validate); 9] = [
            ("broker", &self.broker),
            ("ingest", &self.ingest),
            ("scrape", &self.scrape),
            ("store", &self.store),
            ("api", &self.api),
            ("collector", &self.collector),
            ("simulate", &self.simulate),
            ("rules", &self.rules),
            ("alertmanager", &self.alertmanager),
        ];
        for (name, section) in sections {
            section.validate().map_err(|e| e.in_section(name))?;
        }
        let needs = |key: &str, allowed: &str, value: &str| InvalidSetting {
            key: key.into(),
            value: format!("{value:?}"),
            allowed: allowed.into(),
        };
        if self.role == Role::Ingest && self.store.ingester.is_empty() {
            return Err(needs(
                "store.ingester",
                "a name of its own for each ingester (role = \"ingest\")",
                "",
            ));
        }
        if self.role == Role::Query && !self.store.ingester.is_empty() {
            return Err(needs(
                "store.ingester",
                "empty for role = \"query\" (a querier reads every ingester)",
                &self.store.ingester,
            ));
        }
        if self.role == Role::Query && !self.scrape.jobs.is_empty() {
            return Err(needs(
                "scrape.jobs",
                "none for role = \"query\" (a querier stores nothing: scrape from an ingester)",
                &format!("{} jobs", self.scrape.jobs.len()),
            ));
        }
        if self.role == Role::Query && !self.rules.files.is_empty() {
            return Err(needs(
                "rules.files",
                "none for role = \"query\" (rules write what they produce: evaluate them on an ingester)",
                &format!("{} patterns", self.rules.files.len()),
            ));
        }
        if !self.upstream.broker.is_empty() && self.upstream.client_id.is_empty() {
            return Err(needs(
                "upstream.client_id",
                "a client id of its own, stable across restarts, when upstream.broker is set",
                "",
            ));
        }
        Ok(())
    }
}

/// What one `exawatch up` process does ([README: Running on several
/// machines](../README.md#running-on-several-machines)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Role {
    /// Everything in one process: broker, store, API, analytics.
    All,
    /// Stores what it receives (its embedded broker, a share of a front broker, HTTP
    /// writes) under its own prefix of the object store; answers queries on its own data.
    Ingest,
    /// Answers every query from all ingesters' files in the object store; stores nothing.
    Query,
}

fn merge(base: &mut toml::Value, layer: toml::Value) {
    match (base, layer) {
        (toml::Value::Table(base), toml::Value::Table(layer)) => {
            for (key, value) in layer {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, layer) => *base = layer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_is_the_defaults() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("exawatch.example.toml");
        assert_eq!(
            Config::load(Some(&example), &[]).unwrap(),
            Config::default()
        );
    }

    /// Values out of range are refused at load with one error naming the key and its range,
    /// instead of panicking where they are used (issue 28).
    #[test]
    fn values_out_of_range_are_refused_at_load() {
        // Each as the error names it; what is set is the same `key = value`.
        let refused = [
            "api.query_timeout_secs = -1: allowed from 0.001 to 86400",
            "api.query_timeout_secs = NaN: allowed from 0.001 to 86400",
            "store.delete_delay_secs = -5: allowed from 0 to 31536000",
            "store.s3_retry_timeout_secs = inf: allowed from 0 to 31536000",
            "store.zstd_level = 0: allowed from 1 to 22",
            "store.flush_max_rows = 0: allowed 1 or more",
            "collector.period_secs = 0: allowed from 0.001 to 86400",
            "collector.qos = 2: allowed from 0 to 1",
            "collector.rapl.period_secs = -1: allowed from 0.001 to 86400",
            "collector.ipmi.timeout_secs = NaN: allowed from 0.1 to 3600",
            "collector.slurm.timeout_secs = 0: allowed from 0.1 to 3600",
            "simulate.period_secs = -2: allowed from 0.001 to 86400",
            "broker.max_inflight = 0: allowed from 1 to 65535",
            "broker.max_packet_bytes = 10: allowed from 64 to 268435455",
            "broker.tls_listen = localhost: allowed only with tls_cert and tls_key",
        ];
        for message in refused {
            let (assignment, _) = message.split_once(": allowed").unwrap();
            let set = assignment.replace(" = ", "=").to_lowercase();
            let error = Config::load(None, std::slice::from_ref(&set)).unwrap_err();
            assert_eq!(
                format!("{error:#}"),
                format!("invalid configuration (from defaults and --set): {message}"),
                "--set {set}"
            );
        }
        let error = Config::load(
            None,
            &[r#"scrape.jobs=[{name = "n", targets = ["a:1"], timeout_secs = 20}]"#.into()],
        )
        .unwrap_err();
        assert_eq!(
            format!("{error:#}"),
            "invalid configuration (from defaults and --set): scrape.jobs[0].timeout_secs = 20: allowed from 0.001 to 15"
        );
        let error = Config::load(
            None,
            &[
                "role=query".into(),
                r#"scrape.jobs=[{name = "n", targets = ["a:1"]}]"#.into(),
            ],
        )
        .unwrap_err();
        assert!(
            format!("{error:#}").ends_with(
                r#"scrape.jobs = "1 jobs": allowed none for role = "query" (a querier stores nothing: scrape from an ingester)"#
            ),
            "{error:#}"
        );
        let error = Config::load(None, &["api.tls_cert=/etc/api.crt".into()]).unwrap_err();
        assert!(
            format!("{error:#}")
                .ends_with("api.tls_key = none: allowed a PEM key file when tls_cert is set"),
            "{error:#}"
        );
    }

    /// `Debug` of a configuration with every secret set shows none of them (issue 28).
    #[test]
    fn debug_output_shows_no_secret() {
        let secrets = [
            "s3-secret-value",
            "collector-mqtt-password",
            "simulate-mqtt-password",
            "api-user-token",
            "api-user-password",
            "broker-user-password",
            "scrape-password",
            "scrape-token",
        ];
        let mut config = Config::load(
            None,
            &[
                format!("store.s3_secret_access_key={}", secrets[0]),
                "store.s3_access_key_id=AKIDEXAMPLE".into(),
                "collector.username=collector".into(),
                format!("collector.password={}", secrets[1]),
                "simulate.username=simulator".into(),
                format!("simulate.password={}", secrets[2]),
                format!(
                    r#"api.users=[{{name = "u", role = "read", token = "{}", password = "{}"}}]"#,
                    secrets[3], secrets[4]
                ),
                format!(
                    r#"broker.users=[{{name = "n01", password = "{}", node = "n01"}}]"#,
                    secrets[5]
                ),
                format!(
                    r#"scrape.jobs=[{{name = "a", targets = ["a:1"], basic_auth = {{username = "u", password = "{}"}}}}, {{name = "b", targets = ["b:1"], bearer_token = "{}"}}]"#,
                    secrets[6], secrets[7]
                ),
            ],
        )
        .unwrap();
        config.api.tls_cert = Some("/etc/exawatch/api.crt".into());
        config.api.tls_key = Some("/etc/exawatch/api.key".into());
        assert_eq!(config.collector.mqtt.password, secrets[1]);
        let debug = format!("{config:?} {config:#?}");
        for secret in secrets {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        assert!(
            debug.contains("AKIDEXAMPLE") && debug.contains("collector"),
            "{debug}"
        );
    }

    #[test]
    fn overrides_and_typos() {
        let config = Config::load(
            None,
            &[
                "store.flush_interval_secs=5".into(),
                "broker.listen=127.0.0.1:1999".into(),
                "data_dir=/tmp/x".into(),
                "store.wal_fsync=always".into(),
            ],
        )
        .unwrap();
        assert_eq!(config.store.flush_interval_secs, 5.0);
        assert_eq!(config.broker.listen, "127.0.0.1:1999");
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(config.store.wal_fsync, exawatch_store::FsyncPolicy::Always);
        let typo = Config::load(None, &["store.flush_intervall_secs=5".into()]).unwrap_err();
        assert!(
            format!("{typo:#}").contains("flush_intervall_secs"),
            "{typo:#}"
        );
        assert!(Config::load(None, &["nonsense".into()]).is_err());
    }
}
