//! The rules' API, as Prometheus answers it (Grafana's alert list and rule view read it):
//! `GET /api/v1/rules` (`?type=alert|record`), `GET /api/v1/alerts`, and `POST /-/reload`,
//! which re-reads the rule files (a bad file is refused with its error, 400, and the running
//! rules stay).

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use exawatch_alerting::file::RuleKind;
use exawatch_alerting::{Alert, AlertState, Group, rfc3339};
use serde_json::{Map, Value, json};

use crate::{ApiState, paths};

/// The rules' routes.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route(paths::PROM_RULES, get(rules))
        .route(paths::PROM_ALERTS, get(alerts))
        .route(paths::RELOAD, post(reload))
}

async fn groups(state: &ApiState) -> Vec<Group> {
    match &state.rules {
        Some(rules) => rules.groups().await,
        None => Vec::new(),
    }
}

fn success(data: Value) -> Response {
    axum::Json(json!({"status": "success", "data": data})).into_response()
}

async fn rules(State(state): State<ApiState>, RawQuery(query): RawQuery) -> Response {
    let kind = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(name, _)| name == "type")
        .map(|(_, value)| value.into_owned());
    let (want_alerts, want_records) = match kind.as_deref() {
        None | Some("") => (true, true),
        Some("alert") => (true, false),
        Some("record") => (false, true),
        Some(other) => {
            let body = json!({
                "status": "error",
                "errorType": "bad_data",
                "error": format!("unsupported type {other:?}: expected \"alert\" or \"record\""),
            });
            return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
        }
    };
    let groups: Vec<Value> = groups(&state)
        .await
        .iter()
        .map(|group| {
            let rules: Vec<Value> = group
                .rules
                .iter()
                .filter(|rule| match rule.def.kind {
                    RuleKind::Alerting { .. } => want_alerts,
                    RuleKind::Recording { .. } => want_records,
                })
                .map(|rule| {
                    let mut out = json!({
                        "name": rule.def.name(),
                        "query": rule.def.expr,
                        "labels": rule.def.raw_labels,
                        "health": rule.health.as_str(),
                        "evaluationTime": rule.evaluation_secs,
                        "lastEvaluation": last_evaluation(rule.last_evaluation_ms),
                    });
                    if let Some(error) = &rule.last_error {
                        out["lastError"] = json!(error);
                    }
                    match &rule.def.kind {
                        RuleKind::Recording { .. } => out["type"] = json!("recording"),
                        RuleKind::Alerting {
                            for_ms,
                            keep_firing_for_ms,
                            raw_annotations,
                            ..
                        } => {
                            let active: Vec<&Alert> = active_alerts(rule.active.values());
                            let state = active
                                .iter()
                                .map(|a| a.state)
                                .max()
                                .unwrap_or(AlertState::Inactive);
                            out["type"] = json!("alerting");
                            out["state"] = json!(state.as_str());
                            out["duration"] = json!(*for_ms as f64 / 1000.0);
                            out["keepFiringFor"] = json!(*keep_firing_for_ms as f64 / 1000.0);
                            out["annotations"] = json!(raw_annotations);
                            out["alerts"] = Value::Array(active.into_iter().map(alert).collect());
                        }
                    }
                    out
                })
                .collect();
            json!({
                "name": group.name,
                "file": group.file,
                "interval": group.interval_ms as f64 / 1000.0,
                "limit": group.limit,
                "rules": rules,
                "evaluationTime": group.evaluation_secs,
                "lastEvaluation": last_evaluation(group.last_evaluation_ms),
            })
        })
        .collect();
    success(json!({ "groups": groups }))
}

async fn alerts(State(state): State<ApiState>) -> Response {
    let groups = groups(&state).await;
    let alerts: Vec<Value> = groups
        .iter()
        .flat_map(|g| &g.rules)
        .flat_map(|r| active_alerts(r.active.values()))
        .map(alert)
        .collect();
    success(json!({ "alerts": alerts }))
}

async fn reload(State(state): State<ApiState>) -> Response {
    let Some(rules) = &state.rules else {
        return (StatusCode::OK, "no rules configured\n").into_response();
    };
    match rules.reload().await {
        Ok(groups) => (StatusCode::OK, format!("reloaded {groups} rule groups\n")).into_response(),
        Err(error) => (
            StatusCode::BAD_REQUEST,
            format!("failed to reload config: {error}\n"),
        )
            .into_response(),
    }
}

/// Pending and firing alerts (resolved ones are kept only to notify).
fn active_alerts<'a>(alerts: impl Iterator<Item = &'a Alert>) -> Vec<&'a Alert> {
    alerts.filter(|a| a.state != AlertState::Inactive).collect()
}

fn alert(alert: &Alert) -> Value {
    let labels: Map<String, Value> = alert
        .labels
        .iter()
        .map(|(n, v)| (n.to_owned(), json!(v)))
        .collect();
    let mut out = json!({
        "labels": labels,
        "annotations": alert.annotations,
        "state": alert.state.as_str(),
        "activeAt": rfc3339(alert.active_at_ms),
        "value": go_exponent(alert.value),
    });
    if let Some(since) = alert.keep_firing_since_ms {
        out["keepFiringSince"] = json!(rfc3339(since));
    }
    out
}

fn last_evaluation(ms: Option<i64>) -> String {
    ms.map_or_else(|| "0001-01-01T00:00:00Z".to_owned(), rfc3339)
}

/// A value as Prometheus' API writes an alert's: Go's `FormatFloat(v, 'e', -1, 64)`.
fn go_exponent(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let text = format!("{v:e}");
    let (mantissa, exp) = text.split_once('e').expect("exponent form");
    let exp: i32 = exp.parse().expect("an integer exponent");
    let (sign, exp) = if exp < 0 { ('-', -exp) } else { ('+', exp) };
    format!("{mantissa}e{sign}{exp:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_values_are_written_as_prometheus_writes_them() {
        assert_eq!(go_exponent(1.0), "1e+00");
        assert_eq!(go_exponent(1.5), "1.5e+00");
        assert_eq!(go_exponent(1234.0), "1.234e+03");
        assert_eq!(go_exponent(0.001), "1e-03");
    }
}
