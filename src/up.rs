//! `exawatch up`: broker, store, API, flusher, anomaly scoring and scheduled reports, and
//! optionally a local collector and simulated nodes, in one process (role `all`); or one role
//! of several processes over one object store: an ingester (`ingest`: the same, its files
//! under its own prefix, optionally taking a share of a front broker) or a querier (`query`:
//! the API over every ingester's files). Alerting and recording rules are evaluated where
//! samples are stored. Shutdown order: collectors and rules, ingest drain, store flush, API.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use exawatch_alerting::{RuleManager, RuleManagerArgs};
use exawatch_analytics::Analytics;
use exawatch_api::{ApiMetrics, ApiState};
use exawatch_broker::{EmbeddedBroker, Ingest, IngestConnection, IngestError};
use exawatch_store::{MqttConnection, MqttIngest, Store, UnflushedRequest};
use futures::future::BoxFuture;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Config, Role};
use crate::scrape::{ScrapeMetrics, ScrapeSink, Scraper};
use crate::tls;

/// How long MQTT connections get, when the server stops, to hand what they read to the store.
const MQTT_DRAIN: Duration = Duration::from_secs(5);

/// How often a querier asks the ingesters for what they hold and re-reads their catalogs.
const REFRESH: Duration = Duration::from_secs(1);

/// How long a querier waits for an ingester's answer before answering from its files.
const INGESTER_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the server until SIGINT or SIGTERM, then stops in order and flushes.
pub(crate) async fn run(config: Config, simulate: usize) -> Result<()> {
    match config.role {
        Role::All | Role::Ingest => run_storing(config, simulate).await,
        Role::Query => run_querier(config).await,
    }
}

/// The querier: the API over every ingester's files and what each holds in memory, asked
/// for every [`REFRESH`]. Models can be trained and reports made on demand; live scoring
/// runs where samples are stored.
async fn run_querier(config: Config) -> Result<()> {
    let http = bind_http(&config).await?;
    let store = Store::open_querier(&config.data_dir, &config.store)
        .await
        .context("opening the object store's catalogs")?;
    let (state, _) = api_state(&config, &store, Registry::default())?;
    let (stop, stopped) = watch::channel(false);
    let api = serve_api(&config, http, state, until(stopped.clone()))?;
    let refresh = {
        let store = store.clone();
        let fetch = ingester_fetcher(config.store.cluster_token.clone());
        tokio::spawn(async move {
            store.run_refresh(REFRESH, fetch, until(stopped)).await;
        })
    };
    tracing::info!(
        http = %config.api.listen,
        files = store.catalog().files.len(),
        "exawatch is up as a querier."
    );
    shutdown_signal().await;
    let _ = stop.send(true);
    let _ = refresh.await;
    let _ = api.await;
    Ok(())
}

/// How a querier asks an ingester (its base URL) for what it holds in memory, presenting
/// `token` if set.
fn ingester_fetcher(
    token: String,
) -> impl Fn(String, UnflushedRequest) -> BoxFuture<'static, Result<Vec<u8>, String>> {
    let mut agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(INGESTER_TIMEOUT))
        .user_agent(concat!("exawatch/", env!("CARGO_PKG_VERSION")));
    // HTTPS ingesters are checked against the system's certificates.
    if let Ok(tls) = crate::scrape::tls_config(None) {
        agent = agent.tls_config(tls);
    }
    let agent: ureq::Agent = agent.build().into();
    move |url, request| {
        let (agent, token) = (agent.clone(), token.clone());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let endpoint = format!(
                    "{}{}",
                    url.trim_end_matches('/'),
                    exawatch_api::paths::INTERNAL_UNFLUSHED
                );
                let mut call = agent
                    .get(&endpoint)
                    .query("epoch", request.epoch.to_string())
                    .query("from", request.from.to_string())
                    .query("catalog_version", request.catalog_version.to_string());
                if !token.is_empty() {
                    call = call.header("Authorization", format!("Bearer {token}"));
                }
                let mut response = call.call().map_err(|e| e.to_string())?;
                let status = response.status();
                let body = response
                    .body_mut()
                    .with_config()
                    .limit(u64::MAX)
                    .read_to_vec()
                    .map_err(|e| e.to_string())?;
                if !status.is_success() {
                    return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
                }
                Ok(body)
            })
            .await
            .map_err(|e| e.to_string())?
        })
    }
}

/// The URL queriers reach this process's API at: `store.advertise_url`, else the address it
/// listens on (this machine's host name when that is every address).
fn advertise_url(config: &Config, http: &TcpListener) -> Result<String> {
    if !config.store.advertise_url.is_empty() {
        return Ok(config.store.advertise_url.clone());
    }
    let address = http.local_addr()?;
    let scheme = if config.api.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let host = if address.ip().is_unspecified() {
        exawatch_collectors::hostname(std::path::Path::new("/"))
    } else if address.is_ipv6() {
        format!("[{}]", address.ip())
    } else {
        address.ip().to_string()
    };
    Ok(format!("{scheme}://{host}:{}", address.port()))
}

/// Writes where queriers reach this ingester, retrying every 5 s while the object store
/// cannot be written (it may be down at start).
async fn advertise(store: Store, url: String) {
    loop {
        match store.advertise(&url).await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(%error, %url, "Cannot write this ingester's URL to the object store; queriers see only its files until it is written. Retrying in 5 s.");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}

/// The API's state over `store`, with analytics, and its metrics in `registry`.
fn api_state(
    config: &Config,
    store: &Store,
    mut registry: Registry,
) -> Result<(ApiState, Analytics)> {
    let api_metrics = ApiMetrics::new(&mut registry, &config.api);
    let analytics = Analytics::new(store.clone(), config.analytics.clone())
        .context("invalid [analytics] configuration")?;
    let state = ApiState::new(
        store.clone(),
        Arc::new(registry),
        api_metrics,
        config.api.clone(),
    )
    .with_analytics(Arc::new(analytics.clone()));
    Ok((state, analytics))
}

/// The API over `state`, served on `http` (over TLS if configured) until `stopped`.
fn serve_api(
    config: &Config,
    http: TcpListener,
    state: ApiState,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let router = exawatch_api::router(state);
    Ok(match (&config.api.tls_cert, &config.api.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = tls::server_config(cert, key)?;
            tokio::spawn(exawatch_api::serve_tls(http, router, tls, stopped))
        }
        _ => tokio::spawn(exawatch_api::serve(http, router, stopped)),
    })
}

async fn bind_http(config: &Config) -> Result<TcpListener> {
    TcpListener::bind(&config.api.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen for HTTP on {} (api.listen, --http-port)",
                config.api.listen
            )
        })
}

/// Everything that stores: role `all`, or an ingester.
async fn run_storing(mut config: Config, simulate: usize) -> Result<()> {
    // With broker users configured there is no anonymous access: the server's own
    // collector and simulator log in as an unrestricted user known only to this process.
    let (username, password) = if config.broker.users.is_empty() {
        (String::new(), String::new())
    } else {
        let login = ("exawatch-internal".to_owned(), random_password()?);
        config.broker.users.push(exawatch_broker::BrokerUser {
            name: login.0.clone(),
            password: login.1.clone(),
            node: None,
        });
        login
    };
    let http = bind_http(&config).await?;
    let mut registry = Registry::default();
    let store = Store::open(&config.data_dir, config.store.clone(), &mut registry)
        .await
        .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
    if config.role == Role::Ingest {
        let url = advertise_url(&config, &http)?;
        tokio::spawn(advertise(store.clone(), url));
    }
    let mqtt_tls = match (&config.broker.tls_cert, &config.broker.tls_key) {
        (Some(cert), Some(key)) if config.broker.tls_listen.is_some() => {
            Some(tls::server_config(cert, key)?)
        }
        _ => None,
    };
    let broker = EmbeddedBroker::start(
        &config.broker,
        mqtt_tls,
        Arc::new(StoreIngest(store.mqtt_ingest(&config.ingest.mqtt))),
        &mut registry,
    )
    .await?;
    let scraper = Scraper::new(&config.scrape, ScrapeMetrics::new(&mut registry))?;
    let rules = RuleManager::new(RuleManagerArgs {
        store: store.clone(),
        rules: config.rules.clone(),
        alertmanager: config.alertmanager.clone(),
        query_memory_bytes: config.api.query_memory_bytes,
        max_samples: config.api.promql_max_samples,
        registry: &mut registry,
    })
    .context("invalid rule files (rules.files)")?;
    let (state, analytics) = api_state(&config, &store, registry)?;
    let state = state.with_rules(Arc::new(rules.clone()));

    let (stop_sources, sources_stopped) = watch::channel(false);
    let (stop_api, api_stopped) = watch::channel(false);

    let api = serve_api(&config, http, state, until(api_stopped))?;
    let flusher = {
        let store = store.clone();
        let stopped = sources_stopped.clone();
        tokio::spawn(async move { store.run_flusher(until(stopped)).await })
    };
    let scoring = {
        let analytics = analytics.clone();
        let stopped = until(sources_stopped.clone());
        tokio::spawn(async move { analytics.run_scoring(stopped).await })
    };
    let reports = {
        let stopped = until(sources_stopped.clone());
        tokio::spawn(async move { analytics.run_reports(stopped).await })
    };
    let rule_groups = rules.group_count().await;
    let evaluation = {
        let rules = rules.clone();
        let stopped = until(sources_stopped.clone());
        tokio::spawn(async move { rules.run(stopped).await })
    };
    let reloads = tokio::spawn(reload_on_hangup(rules, until(sources_stopped.clone())));

    let local_broker = exawatch_collectors::MqttConnection {
        broker: format!("127.0.0.1:{}", broker.listen().port()),
        username,
        password,
    };
    let mut sources = Vec::new();
    if !config.upstream.broker.is_empty() {
        let upstream = config.upstream.clone();
        let ingest = Arc::new(StoreIngest(store.mqtt_ingest(&config.ingest.mqtt)));
        let stopped = until(sources_stopped.clone());
        sources.push(tokio::spawn(async move {
            exawatch_broker::upstream::run(upstream, ingest, stopped).await;
        }));
    }
    if !scraper.is_empty() {
        let sink = Arc::new(StoreSink(store.clone()));
        let stopped = sources_stopped.clone();
        sources.push(tokio::spawn(scraper.run(sink, stopped)));
    }
    if config.local_collector {
        let collector = exawatch_collectors::CollectorConfig {
            mqtt: local_broker.clone(),
            ..config.collector.clone()
        };
        let stopped = until(sources_stopped.clone());
        sources.push(tokio::spawn(async move {
            if let Err(error) = exawatch_collectors::run(collector, false, stopped).await {
                tracing::warn!(%error, "The local collector stopped.");
            }
        }));
    }
    if simulate > 0 {
        let simulated = exawatch_collectors::SimulateConfig {
            mqtt: local_broker,
            nodes: simulate,
            ..config.simulate.clone()
        };
        let stopped = until(sources_stopped.clone());
        sources.push(tokio::spawn(async move {
            if let Err(error) = exawatch_collectors::simulate(simulated, stopped).await {
                tracing::warn!(%error, "The simulator stopped.");
            }
        }));
    }
    tracing::info!(
        role = ?config.role,
        mqtt = %broker.listen(),
        upstream = %config.upstream.broker,
        http = %config.api.listen,
        data_dir = %config.data_dir.display(),
        local_collector = config.local_collector,
        scrape_jobs = config.scrape.jobs.len(),
        simulated_nodes = simulate,
        live_models = ?config.analytics.models,
        rule_groups,
        "exawatch is up."
    );

    shutdown_signal().await;
    tracing::info!("Stopping: collectors, then MQTT connections, then a final flush.");
    let _ = stop_sources.send(true);
    for source in sources {
        let _ = source.await;
    }
    broker.shutdown(MQTT_DRAIN).await;
    let _ = scoring.await;
    let _ = reports.await;
    let _ = evaluation.await;
    let _ = reloads.await;
    let _ = flusher.await;
    let flushed = store.shutdown().await;
    let _ = stop_api.send(true);
    let _ = api.await;
    flushed.context("the final flush failed; the data stays in the WAL for the next start")?;
    tracing::info!("Stopped; everything is in Parquet files.");
    Ok(())
}

/// The store as the broker's ingest: each MQTT connection decodes into its own batch.
struct StoreIngest(MqttIngest);

impl Ingest for StoreIngest {
    fn connection(&self) -> Box<dyn IngestConnection> {
        Box::new(StoreConnection(self.0.connection()))
    }
}

struct StoreConnection(MqttConnection);

impl IngestConnection for StoreConnection {
    fn push(&mut self, topic: &[u8], payload: &[u8]) {
        self.0.push(topic, payload);
    }

    fn commit(&mut self, durable: bool) -> BoxFuture<'static, Result<(), IngestError>> {
        let commit = self.0.commit(durable);
        Box::pin(async move {
            commit.await.map_err(|error| IngestError {
                message: error.to_string(),
            })
        })
    }
}

/// The store as where scraped samples go: through the WAL, like every write.
struct StoreSink(Store);

impl ScrapeSink for StoreSink {
    fn write(&self, batch: exawatch_protocol::Batch) -> BoxFuture<'static, Result<(), String>> {
        let store = self.0.clone();
        Box::pin(async move { store.write(batch).await.map_err(|e| e.to_string()) })
    }
}

/// 32 hex digits from the OS's random source.
fn random_password() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut urandom| std::io::Read::read_exact(&mut urandom, &mut bytes))
        .context("reading /dev/urandom for the internal broker password")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Re-reads the rule files on each SIGHUP until `stopped` (a bad file is logged and the
/// running rules stay).
async fn reload_on_hangup(rules: RuleManager, stopped: impl std::future::Future<Output = ()>) {
    use exawatch_alerting::RulesHandler as _;
    let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        return;
    };
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            () = &mut stopped => return,
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading the rule files.");
                let _ = rules.reload().await;
            }
        }
    }
}

/// Resolves when the watched flag turns true (or its sender is gone).
pub(crate) async fn until(mut flag: watch::Receiver<bool>) {
    let _ = flag.wait_for(|stop| *stop).await;
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
