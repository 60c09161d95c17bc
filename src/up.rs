//! `exawatch up`: broker, store, API, flusher, anomaly scoring and scheduled reports, and optionally a local collector and simulated
//! nodes, in one process. Shutdown order: collectors, ingest drain, store flush, API.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use exawatch_analytics::Analytics;
use exawatch_api::{ApiMetrics, ApiState};
use exawatch_broker::{EmbeddedBroker, IngestLink};
use exawatch_protocol::Batch;
use exawatch_store::Store;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::tls;

/// How long the ingest link must stay quiet, after collectors stop, before the final flush.
const DRAIN_QUIET: Duration = Duration::from_millis(300);

/// Runs the server until SIGINT or SIGTERM, then stops in order and flushes.
pub(crate) async fn run(mut config: Config, simulate: usize) -> Result<()> {
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
    let http = TcpListener::bind(&config.api.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen for HTTP on {} (api.listen, --http-port)",
                config.api.listen
            )
        })?;
    // rumqttd binds inside its task; check here so a busy port is a clear error at start.
    drop(
        std::net::TcpListener::bind(&config.broker.listen).with_context(|| {
            format!(
                "cannot listen for MQTT on {} (broker.listen, --mqtt-port)",
                config.broker.listen
            )
        })?,
    );

    let mut registry = Registry::default();
    let store = Store::open(&config.data_dir, config.store.clone(), &mut registry)
        .await
        .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
    let mqtt_tls = match config.broker.tls_listen.as_str() {
        "" => None,
        _ => Some(tls::server_config(
            config.broker.tls_cert.as_ref(),
            config.broker.tls_key.as_ref(),
        )?),
    };
    let mut broker = EmbeddedBroker::start(&config.broker, mqtt_tls, &mut registry)?;
    let link = broker
        .take_ingest_link()
        .expect("a fresh broker has its link");
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

    let (stop_sources, sources_stopped) = watch::channel(false);
    let (stop_api, api_stopped) = watch::channel(false);

    let router = exawatch_api::router(state);
    let api = match config.api.tls_cert.as_str() {
        "" => tokio::spawn(exawatch_api::serve(http, router, until(api_stopped))),
        cert => {
            let tls = tls::server_config(cert.as_ref(), config.api.tls_key.as_ref())?;
            tokio::spawn(exawatch_api::serve_tls(
                http,
                router,
                tls,
                until(api_stopped),
            ))
        }
    };
    let flusher = {
        let store = store.clone();
        let stopped = sources_stopped.clone();
        tokio::spawn(async move { store.run_flusher(until(stopped)).await })
    };
    let ingest = tokio::spawn(ingest(link, store.clone(), sources_stopped.clone()));
    let scoring = {
        let analytics = analytics.clone();
        let stopped = until(sources_stopped.clone());
        tokio::spawn(async move { analytics.run_scoring(stopped).await })
    };
    let reports = {
        let stopped = until(sources_stopped.clone());
        tokio::spawn(async move { analytics.run_reports(stopped).await })
    };

    let local_broker = format!("127.0.0.1:{}", broker.listen().port());
    let mut sources = Vec::new();
    if config.local_collector {
        let collector = exawatch_collectors::CollectorConfig {
            broker: local_broker.clone(),
            username: username.clone(),
            password: password.clone(),
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
            broker: local_broker,
            nodes: simulate,
            username,
            password,
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
        mqtt = %broker.listen(),
        http = %config.api.listen,
        data_dir = %config.data_dir.display(),
        local_collector = config.local_collector,
        simulated_nodes = simulate,
        live_models = ?config.analytics.models,
        "exawatch is up."
    );

    shutdown_signal().await;
    tracing::info!("Stopping: collectors, then ingest, then a final flush.");
    let _ = stop_sources.send(true);
    for source in sources {
        let _ = source.await;
    }
    let _ = ingest.await;
    let _ = scoring.await;
    let _ = reports.await;
    let _ = flusher.await;
    let flushed = store.shutdown().await;
    let _ = stop_api.send(true);
    let _ = api.await;
    flushed.context("the final flush failed; the data stays in the WAL for the next start")?;
    tracing::info!("Stopped; everything is in Parquet files.");
    Ok(())
}

/// Moves messages from the broker into the store until the sources have stopped and the
/// link has been quiet for [`DRAIN_QUIET`].
async fn ingest(mut link: IngestLink, store: Store, mut stopped: watch::Receiver<bool>) {
    let decoder = store.mqtt_ingest();
    let mut samples = Batch::new();
    loop {
        let batch = if *stopped.borrow() {
            match tokio::time::timeout(DRAIN_QUIET, link.next_batch()).await {
                Ok(batch) => batch,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                batch = link.next_batch() => batch,
                _ = stopped.changed() => continue,
            }
        };
        let batch = match batch {
            Ok(batch) => batch,
            Err(error) => {
                tracing::error!(%error, "The broker's ingest link failed; ingest stops.");
                break;
            }
        };
        let now_ns = now_ns();
        for message in &batch {
            decoder.decode(&message.topic, &message.payload, now_ns, &mut samples);
        }
        if decoder.write(std::mem::take(&mut samples)).await.is_err() {
            tracing::error!("The store refused writes; ingest stops.");
            break;
        }
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

/// Wall-clock time, for samples that come without a timestamp.
fn now_ns() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_nanos()).unwrap_or(i64::MAX)
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
