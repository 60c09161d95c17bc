//! Online scoring: each configured model scores every window as soon as it is complete
//! (window end + `lateness_secs`), for every entity with data; results go back into the
//! store as `anomaly_score` samples and `anomaly` events ([`crate::anomalies`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use exawatch_protocol::{Sample, Value};
use exawatch_store::Store;
use tokio::sync::Notify;

use crate::anomalies::{ANOMALY_METRIC, Anomaly, SCORE_METRIC};
use crate::config::AnalyticsConfig;
use crate::detect::EntityState;
use crate::features::{self, rfc3339};
use crate::model::{self, Model};
use crate::{Result, StoreSnafu};
use exawatch_protocol::time::now_ns;
use snafu::ResultExt;

/// What scoring one window produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowResult {
    /// Samples to write: one score per entity, one event per anomaly.
    pub samples: Vec<Sample>,
    /// Entities scored.
    pub scored: usize,
    /// Anomalies found.
    pub anomalies: Vec<Anomaly>,
}

/// Scores the window starting at `window_ns` for every entity with data, updating their
/// states in `states`.
pub async fn score_window(
    store: &Store,
    model: &Model,
    states: &mut HashMap<String, EntityState>,
    window_ns: i64,
    top_metrics: usize,
    memory_bytes: usize,
) -> Result<WindowResult> {
    let spec = &model.info.spec;
    let aggregates = features::aggregate(
        store,
        spec,
        window_ns,
        window_ns + spec.window_ns(),
        memory_bytes,
    )
    .await?;
    let frame = features::pivot(&aggregates, &model.columns);
    let mut result = WindowResult::default();
    for (i, (window, entity)) in frame.keys.iter().enumerate() {
        let state = states.entry(entity.clone()).or_default();
        let step = window.div_euclid(spec.window_ns().max(1));
        let scored = model.fitted.score(step, frame.matrix.row(i), state);
        let tags = vec![
            ("model".to_owned(), model.info.name.clone()),
            (spec.group_by.clone(), entity.clone()),
        ];
        result.scored += 1;
        let ratio = scored.score / model.fitted.threshold;
        if ratio.is_finite() {
            result.samples.push(Sample::new(
                SCORE_METRIC,
                tags.clone(),
                *window,
                Value::Float(ratio),
            ));
        }
        if scored.score > model.fitted.threshold {
            let anomaly = Anomaly {
                time_ns: *window,
                time: rfc3339(*window),
                model: model.info.name.clone(),
                node: entity.clone(),
                score: scored.score,
                threshold: model.fitted.threshold,
                top_metrics: model.fitted.explain(&scored, top_metrics),
            };
            result.samples.push(Sample::new(
                ANOMALY_METRIC,
                tags,
                *window,
                Value::Text(anomaly.encode()),
            ));
            result.anomalies.push(anomaly);
        }
    }
    Ok(result)
}

/// One live model and its per-entity state.
#[derive(Debug)]
struct Live {
    model: Model,
    states: HashMap<String, EntityState>,
    next_window_ns: i64,
}

/// The scoring loop of `exawatch up`.
#[derive(Debug)]
pub struct Scorer {
    store: Store,
    config: AnalyticsConfig,
    reload: Arc<Notify>,
    live: HashMap<String, Live>,
}

impl Scorer {
    /// A scorer for `config.models`; `reload` is notified when a model is trained.
    pub fn new(store: Store, config: AnalyticsConfig, reload: Arc<Notify>) -> Self {
        Self {
            store,
            config,
            reload,
            live: HashMap::new(),
        }
    }

    /// Loads the newest version of each configured model, keeping the state of models whose
    /// version did not change.
    async fn load_models(&mut self) {
        for name in &self.config.models {
            match model::load_latest(&self.store, name).await {
                Ok(Some(model)) => {
                    let current = self.live.get(name).map(|l| l.model.info.version);
                    if current != Some(model.info.version) {
                        let window = model.info.spec.window_ns().max(1);
                        let lateness = (self.config.lateness_secs * 1e9) as i64;
                        // Start with the newest complete window.
                        let next_window_ns =
                            (now_ns() - lateness).div_euclid(window) * window - window;
                        tracing::info!(model = %name, version = model.info.version, detector = %model.info.detector, "Scoring with a model.");
                        self.live.insert(
                            name.clone(),
                            Live {
                                model,
                                states: HashMap::new(),
                                next_window_ns,
                            },
                        );
                    }
                }
                Ok(None) => tracing::debug!(model = %name, "Configured model not trained yet."),
                Err(error) => tracing::warn!(model = %name, %error, "Cannot load a model."),
            }
        }
    }

    /// Scores windows as they complete until `shutdown` resolves.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        if self.config.models.is_empty() {
            shutdown.await;
            return;
        }
        tokio::pin!(shutdown);
        self.load_models().await;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut reload_tick = 0u32;
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                () = self.reload.notified() => self.load_models().await,
                _ = tick.tick() => {
                    reload_tick += 1;
                    // Models trained elsewhere (another process) show up within a minute.
                    if reload_tick.is_multiple_of(120) {
                        self.load_models().await;
                    }
                    self.score_due().await;
                }
            }
        }
    }

    async fn score_due(&mut self) {
        let lateness = (self.config.lateness_secs * 1e9) as i64;
        let now = now_ns();
        for live in self.live.values_mut() {
            let window = live.model.info.spec.window_ns().max(1);
            while live.next_window_ns + window + lateness <= now {
                let result = score_window(
                    &self.store,
                    &live.model,
                    &mut live.states,
                    live.next_window_ns,
                    self.config.top_metrics,
                    self.config.query_memory_bytes,
                )
                .await;
                match result {
                    Ok(result) => {
                        for anomaly in &result.anomalies {
                            tracing::info!(model = %anomaly.model, node = %anomaly.node, score = anomaly.score, threshold = anomaly.threshold, "Anomaly.");
                        }
                        if let Err(error) =
                            self.store.write(result.samples).await.context(StoreSnafu)
                        {
                            tracing::warn!(%error, "Cannot store anomaly scores; the window is skipped.");
                        }
                    }
                    Err(error) => {
                        tracing::warn!(model = %live.model.info.name, %error, "Scoring a window failed; it is skipped.")
                    }
                }
                live.next_window_ns += window;
            }
        }
    }
}
