//! Sends alerts to Alertmanager's v2 API (`POST <url>/api/v2/alerts`), as Prometheus'
//! notifier does: evaluation only puts alerts in a bounded queue ([`Notifier::send`] never
//! waits); one task takes batches of up to 64 and posts each to every Alertmanager, with
//! `max_attempts` tries and a doubling backoff. A full queue drops its oldest alerts. Sent,
//! failed and dropped alerts are counted in `/metrics` and failures logged.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat};
use exawatch_promql::Labels;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::config::AlertmanagerConfig;
use crate::group::{Alert, AlertState};

/// Alerts per request.
const BATCH: usize = 64;

type UrlLabel = Vec<(&'static str, String)>;

/// The notifier's meters.
#[derive(Debug, Clone, Default)]
struct NotifierMetrics {
    sent: Family<UrlLabel, Counter>,
    errors: Family<UrlLabel, Counter>,
    dropped: Counter,
    queue_length: Gauge,
}

/// The queue of alerts to send, and its sender ([`Notifier::run`]).
#[derive(Debug, Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: AlertmanagerConfig,
    external_labels: Labels,
    generator_url: String,
    queue: Mutex<VecDeque<Value>>,
    wake: Notify,
    metrics: NotifierMetrics,
}

impl Notifier {
    /// A notifier for `config`, its meters registered in `registry`. `external_labels` are
    /// added to every alert; `external_url` is the base of each alert's `generatorURL`.
    pub fn new(
        config: AlertmanagerConfig,
        external_labels: Labels,
        external_url: &str,
        registry: &mut Registry,
    ) -> Self {
        let metrics = NotifierMetrics::default();
        let r = registry.sub_registry_with_prefix("exawatch");
        r.register(
            "notifications_sent",
            "Alerts sent to Alertmanager, by Alertmanager",
            metrics.sent.clone(),
        );
        r.register(
            "notifications_errors",
            "Alerts that could not be sent to an Alertmanager (after every attempt)",
            metrics.errors.clone(),
        );
        r.register(
            "notifications_dropped",
            "Alerts dropped because the notification queue was full",
            metrics.dropped.clone(),
        );
        r.register(
            "notifications_queue_length",
            "Alerts waiting to be sent",
            metrics.queue_length.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                config,
                external_labels,
                generator_url: external_url.trim_end_matches('/').to_owned(),
                queue: Mutex::new(VecDeque::new()),
                wake: Notify::new(),
                metrics,
            }),
        }
    }

    /// Queues `alerts` (firing or resolved) for sending; `expr` is the rule's expression,
    /// for the link back. Never waits.
    pub fn send(&self, expr: &str, alerts: &[Alert]) {
        if self.inner.config.urls.is_empty() || alerts.is_empty() {
            return;
        }
        let mut queue = self.inner.queue.lock();
        for alert in alerts {
            queue.push_back(self.inner.encode(expr, alert));
        }
        let capacity = self.inner.config.queue_capacity;
        if queue.len() > capacity {
            let excess = queue.len() - capacity;
            queue.drain(..excess);
            self.inner.metrics.dropped.inc_by(excess as u64);
            tracing::warn!(
                dropped = excess,
                "Alert notification queue full: oldest alerts dropped."
            );
        }
        self.inner.metrics.queue_length.set(queue.len() as i64);
        drop(queue);
        self.inner.wake.notify_one();
    }

    /// Sends queued alerts until `shutdown` resolves, then what is queued once more.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                () = self.inner.wake.notified() => {}
            }
            self.drain().await;
        }
        self.drain().await;
    }

    async fn drain(&self) {
        loop {
            let batch: Vec<Value> = {
                let mut queue = self.inner.queue.lock();
                let n = queue.len().min(BATCH);
                let batch = queue.drain(..n).collect();
                self.inner.metrics.queue_length.set(queue.len() as i64);
                batch
            };
            if batch.is_empty() {
                return;
            }
            let n = batch.len() as u64;
            let body = Value::Array(batch).to_string();
            for url in &self.inner.config.urls {
                let label = vec![("alertmanager", url.clone())];
                match self.post(url, &body).await {
                    Ok(()) => {
                        self.inner.metrics.sent.get_or_create(&label).inc_by(n);
                    }
                    Err(error) => {
                        self.inner.metrics.errors.get_or_create(&label).inc_by(n);
                        tracing::warn!(alertmanager = %url, %error, alerts = n, "Cannot send alerts to Alertmanager.");
                    }
                }
            }
        }
    }

    /// Posts `body` to one Alertmanager, with retries.
    async fn post(&self, url: &str, body: &str) -> Result<(), String> {
        let config = &self.inner.config;
        let endpoint = format!("{}/api/v2/alerts", url.trim_end_matches('/'));
        let timeout = Duration::from_secs_f64(config.timeout_secs);
        let mut backoff = Duration::from_millis(500);
        let mut last_error = String::new();
        for attempt in 1..=config.max_attempts {
            let (endpoint, body) = (endpoint.clone(), body.to_owned());
            let result = tokio::task::spawn_blocking(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(timeout))
                    .build()
                    .into();
                let mut response = agent
                    .post(&endpoint)
                    .header("Content-Type", "application/json")
                    .send(body)
                    .map_err(|e| e.to_string())?;
                let status = response.status();
                if status.is_success() {
                    Ok(())
                } else {
                    let text = response.body_mut().read_to_string().unwrap_or_default();
                    Err(format!("{status}: {}", text.trim()))
                }
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            match result {
                Ok(()) => return Ok(()),
                Err(error) => last_error = error,
            }
            if attempt < config.max_attempts {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
        Err(last_error)
    }
}

impl Inner {
    /// An alert in Alertmanager's v2 JSON (`postableAlert`).
    fn encode(&self, expr: &str, alert: &Alert) -> Value {
        let mut labels = serde_json::Map::new();
        for (name, value) in self.external_labels.iter() {
            labels.insert(name.to_owned(), json!(value));
        }
        for (name, value) in alert.labels.iter() {
            labels.insert(name.to_owned(), json!(value));
        }
        let ends_at = match (alert.state, alert.resolved_at_ms) {
            (AlertState::Inactive, Some(resolved)) => resolved,
            _ => alert.valid_until_ms,
        };
        let starts_at = alert.fired_at_ms.unwrap_or(alert.active_at_ms);
        let mut body = json!({
            "labels": labels,
            "annotations": alert.annotations,
            "startsAt": rfc3339(starts_at),
            "endsAt": rfc3339(ends_at),
        });
        if !self.generator_url.is_empty() {
            let query: String =
                form_urlencoded_pair("g0.expr", expr) + "&" + &form_urlencoded_pair("g0.tab", "1");
            body["generatorURL"] = json!(format!("{}/graph?{query}", self.generator_url));
        }
        body
    }
}

fn form_urlencoded_pair(name: &str, value: &str) -> String {
    let encode = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    format!("{}={}", encode(name), encode(value))
}

/// A time (ms) as RFC 3339, UTC.
pub(crate) fn rfc3339(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::AutoSi, true)
}
