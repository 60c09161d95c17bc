//! [`RuleManager`]: the rule groups of the configured files, each evaluated by its own task at
//! its interval over the store, writing what rules produce back through the store's normal
//! write path (WAL first) and handing alerts to the [`Notifier`]. A reload re-reads the
//! files; when one is bad the running groups stay as they are.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use exawatch_promql::{Engine, EngineOptions, Labels, StoreSource};
use exawatch_protocol::time::now_ms;
use exawatch_store::Store;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use crate::config::{AlertmanagerConfig, RulesConfig};
use crate::file::load_globs;
use crate::group::{EvalContext, Group};
use crate::notifier::Notifier;
use crate::{Result, RulesHandler};

/// What [`RuleManager::new`] needs.
#[derive(Debug)]
pub struct RuleManagerArgs<'a> {
    /// Where rules read from and write to.
    pub store: Store,
    /// `[rules]`.
    pub rules: RulesConfig,
    /// `[alertmanager]`.
    pub alertmanager: AlertmanagerConfig,
    /// Memory one rule's query may use.
    pub query_memory_bytes: usize,
    /// Samples one rule's query may hold.
    pub max_samples: usize,
    /// Where the meters go.
    pub registry: &'a mut Registry,
}

/// The rule groups and their evaluation.
#[derive(Debug, Clone)]
pub struct RuleManager {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    engine: Engine,
    config: RulesConfig,
    context: EvalContext,
    notifier: Notifier,
    running: Mutex<Running>,
    metrics: RuleMetrics,
}

/// The groups and the tasks evaluating them.
#[derive(Debug, Default)]
struct Running {
    groups: Vec<Arc<Mutex<Group>>>,
    tasks: Vec<JoinHandle<()>>,
    /// `None` until [`RuleManager::run`] starts the tasks.
    stopped: Option<watch::Receiver<bool>>,
}

#[derive(Debug, Clone)]
struct RuleMetrics {
    evaluations: Counter,
    failures: Counter,
    missed: Counter,
    group_seconds: Histogram,
    reload_ok: Gauge,
}

impl RuleManager {
    /// Loads the configured files (an error names the file, the line and the reason).
    pub fn new(args: RuleManagerArgs<'_>) -> Result<Self> {
        let RuleManagerArgs {
            store,
            rules,
            alertmanager,
            query_memory_bytes,
            max_samples,
            registry,
        } = args;
        let defs = load_globs(&rules.files)?;
        let external_labels = Labels::new(rules.external_labels.clone());
        let resend_delay_ms = (alertmanager.resend_delay_secs * 1000.0) as i64;
        let notifier = Notifier::new(
            alertmanager,
            external_labels.clone(),
            &rules.external_url,
            registry,
        );
        let metrics = RuleMetrics {
            evaluations: Counter::default(),
            failures: Counter::default(),
            missed: Counter::default(),
            group_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            reload_ok: Gauge::default(),
        };
        metrics.reload_ok.set(1);
        let r = registry.sub_registry_with_prefix("exawatch");
        r.register(
            "rule_evaluations",
            "Rule evaluations",
            metrics.evaluations.clone(),
        );
        r.register(
            "rule_evaluation_failures",
            "Rule evaluations that failed",
            metrics.failures.clone(),
        );
        r.register(
            "rule_group_iterations_missed",
            "Group evaluations skipped because the previous one ran too long",
            metrics.missed.clone(),
        );
        r.register(
            "rule_group_duration_seconds",
            "How long a group's evaluation took",
            metrics.group_seconds.clone(),
        );
        r.register(
            "rule_config_last_reload_successful",
            "Whether the last reload of the rule files succeeded",
            metrics.reload_ok.clone(),
        );
        let interval_ms = (rules.evaluation_interval_secs * 1000.0) as i64;
        let groups = defs
            .into_iter()
            .map(|def| Arc::new(Mutex::new(Group::new(def, interval_ms))))
            .collect();
        let engine = Engine::new(
            Arc::new(StoreSource::new(store.clone(), query_memory_bytes)),
            EngineOptions {
                max_samples,
                ..EngineOptions::default()
            },
        );
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                engine,
                context: EvalContext {
                    external_labels,
                    external_url: rules.external_url.clone(),
                    resend_delay_ms,
                },
                config: rules,
                notifier,
                running: Mutex::new(Running {
                    groups,
                    ..Running::default()
                }),
                metrics,
            }),
        })
    }

    /// The number of groups loaded.
    pub async fn group_count(&self) -> usize {
        self.inner.running.lock().await.groups.len()
    }

    /// Evaluates every group at its interval, and sends alerts, until `shutdown` resolves.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
        let (stop, stopped) = watch::channel(false);
        let notifier = {
            let notifier = self.inner.notifier.clone();
            let mut stopped = stopped.clone();
            tokio::spawn(notifier.run(async move {
                let _ = stopped.wait_for(|s| *s).await;
            }))
        };
        {
            let mut running = self.inner.running.lock().await;
            running.stopped = Some(stopped.clone());
            running.tasks = running
                .groups
                .iter()
                .map(|g| spawn_group(Arc::clone(&self.inner), Arc::clone(g), stopped.clone()))
                .collect();
        }
        shutdown.await;
        let _ = stop.send(true);
        let tasks = std::mem::take(&mut self.inner.running.lock().await.tasks);
        for task in tasks {
            let _ = task.await;
        }
        let _ = notifier.await;
    }
}

#[async_trait]
impl RulesHandler for RuleManager {
    async fn groups(&self) -> Vec<Group> {
        let groups = self.inner.running.lock().await.groups.clone();
        let mut out = Vec::with_capacity(groups.len());
        for group in groups {
            out.push(group.lock().await.clone());
        }
        out
    }

    async fn reload(&self) -> Result<usize, String> {
        let defs = match load_globs(&self.inner.config.files) {
            Ok(defs) => defs,
            Err(error) => {
                self.inner.metrics.reload_ok.set(0);
                tracing::error!(%error, "Rule files not reloaded; the previous rules keep running.");
                return Err(error.to_string());
            }
        };
        let interval_ms = (self.inner.config.evaluation_interval_secs * 1000.0) as i64;
        let mut running = self.inner.running.lock().await;
        for task in running.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
        let mut groups = Vec::with_capacity(defs.len());
        for def in defs {
            let mut group = Group::new(def, interval_ms);
            for old in &running.groups {
                let old = old.lock().await;
                if old.name == group.name && old.file == group.file {
                    group.copy_state(&old);
                }
            }
            groups.push(Arc::new(Mutex::new(group)));
        }
        running.groups = groups;
        if let Some(stopped) = running.stopped.clone() {
            running.tasks = running
                .groups
                .iter()
                .map(|g| spawn_group(Arc::clone(&self.inner), Arc::clone(g), stopped.clone()))
                .collect();
        }
        self.inner.metrics.reload_ok.set(1);
        tracing::info!(groups = running.groups.len(), "Rule files reloaded.");
        Ok(running.groups.len())
    }
}

/// The task evaluating one group: at each multiple of its interval (shifted by an offset
/// of its own, so that groups spread over the interval) until `stopped`.
fn spawn_group(
    inner: Arc<Inner>,
    group: Arc<Mutex<Group>>,
    mut stopped: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let (interval, offset) = {
            let g = group.lock().await;
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            (g.file.as_str(), g.name.as_str()).hash(&mut hasher);
            let interval = g.interval_ms.max(1);
            (interval, (hasher.finish() % interval as u64) as i64)
        };
        let mut last: Option<i64> = None;
        loop {
            let now = now_ms();
            let next = ((now - offset).div_euclid(interval) + 1) * interval + offset;
            if let Some(last) = last {
                let missed = (next - last) / interval - 1;
                if missed > 0 {
                    inner.metrics.missed.inc_by(missed as u64);
                }
            }
            let wait = Duration::from_millis((next - now).max(0) as u64);
            tokio::select! {
                _ = stopped.wait_for(|s| *s) => return,
                () = tokio::time::sleep(wait) => {}
            }
            last = Some(next);
            let started = std::time::Instant::now();
            let mut g = group.lock().await;
            let output = g
                .eval(&inner.engine, &inner.store, next, &inner.context)
                .await;
            let rules = g.rules.len() as u64;
            drop(g);
            inner.metrics.evaluations.inc_by(rules);
            inner.metrics.failures.inc_by(output.failures.len() as u64);
            for (rule, error) in &output.failures {
                tracing::warn!(rule, %error, "Rule evaluation failed.");
            }
            for (expr, alerts) in &output.to_send {
                inner.notifier.send(expr, alerts);
            }
            inner
                .metrics
                .group_seconds
                .observe(started.elapsed().as_secs_f64());
        }
    })
}
