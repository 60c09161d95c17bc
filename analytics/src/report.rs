//! Anomaly reports: one self-contained HTML page (inline CSS and SVG, no scripts, no
//! external resources) per time range, kept in the store's object store as
//! `reports/<id>.html` with its metadata in `reports/<id>.json`.
//!
//! A report has a summary per model, the nodes ranked by their worst anomaly, and for each
//! of the worst incidents a plot of every metric that drove it around its time: the node's
//! values against the median of its peers, anomalous windows marked.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use exawatch_store::Store;
use serde::{Deserialize, Serialize};
use snafu::ResultExt;

use crate::anomalies::{self, Anomaly, AnomalyQuery};
use crate::features::{self, Column, FeatureSpec};
use crate::model;
use crate::{FormatSnafu, Result, StoreSnafu};
use exawatch_protocol::time::now_ns;

/// Object-store directory of reports.
pub const REPORTS_DIR: &str = "reports";
/// Most anomaly events one report reads.
const MAX_EVENTS: usize = 100_000;
/// Incidents (model, node) plotted.
const MAX_INCIDENTS: usize = 10;
/// Metrics plotted per incident.
const PLOTS_PER_INCIDENT: usize = 3;

/// A report's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportInfo {
    /// Identifier: `<from>_<to>` in compact UTC.
    pub id: String,
    /// Range start, ns.
    pub from_ns: i64,
    /// Range end, ns.
    pub to_ns: i64,
    /// When it was made, ns.
    pub created_ns: i64,
    /// Anomaly events in the range.
    pub anomalies: usize,
    /// Distinct nodes with anomalies.
    pub nodes: usize,
    /// Where the API serves it.
    pub url: String,
}

fn compact(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns)
        .format("%Y%m%dT%H%M%SZ")
        .to_string()
}

fn display_time(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns)
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// True if `id` is a report id (so it is safe in an object path).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// All events of one (model, node).
#[derive(Debug)]
struct Incident<'a> {
    model: &'a str,
    node: &'a str,
    events: Vec<&'a Anomaly>,
    worst: f64,
    metrics: Vec<(String, f64)>,
}

/// Makes the report of `[from_ns, to_ns)`, stores it and returns its metadata.
pub async fn generate(
    store: &Store,
    from_ns: i64,
    to_ns: i64,
    memory_bytes: usize,
) -> Result<ReportInfo> {
    let query = AnomalyQuery {
        from_ns,
        to_ns,
        model: None,
        node: None,
        limit: MAX_EVENTS,
    };
    let mut events = anomalies::query(store, &query, memory_bytes).await?;
    events.reverse();
    let mut grouped: BTreeMap<(&str, &str), Vec<&Anomaly>> = BTreeMap::new();
    for e in &events {
        grouped
            .entry((e.model.as_str(), e.node.as_str()))
            .or_default()
            .push(e);
    }
    let mut incidents: Vec<Incident<'_>> = grouped
        .into_iter()
        .map(|((model, node), events)| {
            let worst = events
                .iter()
                .map(|e| e.score / e.threshold)
                .fold(0.0, f64::max);
            let mut shares: BTreeMap<&str, f64> = BTreeMap::new();
            for e in &events {
                for (m, s) in &e.top_metrics {
                    *shares.entry(m.as_str()).or_default() += s;
                }
            }
            let mut metrics: Vec<(String, f64)> =
                shares.into_iter().map(|(m, s)| (m.to_owned(), s)).collect();
            metrics.sort_by(|a, b| b.1.total_cmp(&a.1));
            Incident {
                model,
                node,
                events,
                worst,
                metrics,
            }
        })
        .collect();
    incidents.sort_by(|a, b| b.worst.total_cmp(&a.worst));

    let created_ns = now_ns();
    let id = format!("{}_{}", compact(from_ns), compact(to_ns));
    let nodes = incidents
        .iter()
        .map(|i| i.node)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>exawatch anomaly report {id}</title>\
         <style>body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;margin:1em 0}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}th{{background:#eee}}\
         .plot{{display:inline-block;margin:0 1em 1em 0}}.note{{color:#666}}</style></head><body>\
         <h1>Anomaly report</h1><p>{} to {} &middot; generated {} &middot; {} anomalies on {} nodes</p>",
        display_time(from_ns),
        display_time(to_ns),
        display_time(created_ns),
        events.len(),
        nodes
    );
    summary(&mut html, &incidents);
    ranking(&mut html, &incidents);
    html.push_str("<h2>Incidents</h2>");
    if incidents.is_empty() {
        html.push_str("<p class=\"note\">No anomalies in this range.</p>");
    }
    for incident in incidents.iter().take(MAX_INCIDENTS) {
        plots(store, &mut html, incident, from_ns, to_ns, memory_bytes).await;
    }
    html.push_str("</body></html>\n");

    let info = ReportInfo {
        id: id.clone(),
        from_ns,
        to_ns,
        created_ns,
        anomalies: events.len(),
        nodes,
        url: format!("/reports/{id}.html"),
    };
    store
        .put_object(&format!("{REPORTS_DIR}/{id}.html"), html.into_bytes())
        .await
        .context(StoreSnafu)?;
    let meta = serde_json::to_vec_pretty(&info).context(FormatSnafu)?;
    store
        .put_object(&format!("{REPORTS_DIR}/{id}.json"), meta)
        .await
        .context(StoreSnafu)?;
    tracing::info!(report = %id, anomalies = info.anomalies, nodes, "Report written.");
    Ok(info)
}

fn summary(html: &mut String, incidents: &[Incident<'_>]) {
    let mut models: BTreeMap<&str, (usize, usize, f64)> = BTreeMap::new();
    for i in incidents {
        let entry = models.entry(i.model).or_default();
        entry.0 += i.events.len();
        entry.1 += 1;
        entry.2 = entry.2.max(i.worst);
    }
    html.push_str("<h2>Summary</h2><table><tr><th>model</th><th>anomalies</th><th>nodes</th><th>worst score / threshold</th></tr>");
    for (model, (events, nodes, worst)) in models {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{events}</td><td>{nodes}</td><td>{worst:.2}</td></tr>",
            escape(model)
        );
    }
    html.push_str("</table>");
}

fn ranking(html: &mut String, incidents: &[Incident<'_>]) {
    html.push_str(
        "<h2>Nodes, worst first</h2><table><tr><th>node</th><th>model</th><th>anomalies</th>\
         <th>worst score / threshold</th><th>first</th><th>last</th><th>what was unusual</th></tr>",
    );
    for i in incidents {
        let metrics: Vec<String> = i
            .metrics
            .iter()
            .take(PLOTS_PER_INCIDENT)
            .map(|(m, _)| escape(m))
            .collect();
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(i.node),
            escape(i.model),
            i.events.len(),
            i.worst,
            display_time(i.events.first().map_or(0, |e| e.time_ns)),
            display_time(i.events.last().map_or(0, |e| e.time_ns)),
            metrics.join(", ")
        );
    }
    html.push_str("</table>");
}

/// Plots of the metrics that drove `incident`, around its time.
async fn plots(
    store: &Store,
    html: &mut String,
    incident: &Incident<'_>,
    from_ns: i64,
    to_ns: i64,
    memory_bytes: usize,
) {
    let _ = write!(
        html,
        "<h3>{} on {} (worst {:.2}× threshold)</h3>",
        escape(incident.node),
        escape(incident.model),
        incident.worst
    );
    let model = match model::load_latest(store, incident.model).await {
        Ok(Some(model)) => model,
        _ => {
            html.push_str("<p class=\"note\">The model is gone; no plots.</p>");
            return;
        }
    };
    let spec = &model.info.spec;
    let window = spec.window_ns().max(1);
    let first = incident.events.first().map_or(from_ns, |e| e.time_ns);
    let last = incident.events.last().map_or(to_ns, |e| e.time_ns);
    let (start, end) = (first - 30 * window, last + 10 * window);
    for (feature, _) in incident.metrics.iter().take(PLOTS_PER_INCIDENT) {
        let Some(column) = model.columns.iter().find(|c| c.name() == *feature) else {
            continue;
        };
        match series(store, spec, column, incident.node, start, end, memory_bytes).await {
            Ok((node, peers)) => {
                let marks: Vec<i64> = incident.events.iter().map(|e| e.time_ns).collect();
                html.push_str(&svg_plot(feature, &node, &peers, &marks));
            }
            Err(error) => {
                let _ = write!(
                    html,
                    "<p class=\"note\">{}: {}</p>",
                    escape(feature),
                    escape(&error.to_string())
                );
            }
        }
    }
}

type Points = Vec<(i64, f64)>;

/// The node's values of `column` and the median over all entities, per window.
async fn series(
    store: &Store,
    spec: &FeatureSpec,
    column: &Column,
    node: &str,
    from_ns: i64,
    to_ns: i64,
    memory_bytes: usize,
) -> Result<(Points, Points)> {
    let matchers: Vec<String> = spec
        .split_by
        .iter()
        .zip(&column.split)
        .map(|(tag, value)| format!("{tag}=\"{}\"", value.replace('"', "")))
        .collect();
    let selector = format!("{}{{{}}}", column.metric, matchers.join(","));
    let one = FeatureSpec {
        select: vec![selector],
        ..spec.clone()
    };
    let aggregates = features::aggregate(store, &one, from_ns, to_ns, memory_bytes).await?;
    let mut by_window: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    let mut mine = Vec::new();
    for a in aggregates.iter().filter(|a| a.split == column.split) {
        let v = if column.rate { a.rate } else { a.mean };
        if !v.is_finite() {
            continue;
        }
        if a.entity == node {
            mine.push((a.window_ns, v));
        } else {
            by_window.entry(a.window_ns).or_default().push(v);
        }
    }
    mine.sort_by_key(|p| p.0);
    let peers = by_window
        .into_iter()
        .filter_map(|(w, v)| crate::matrix::quantile(&v, 0.5).map(|m| (w, m)))
        .collect();
    Ok((mine, peers))
}

/// An SVG line plot: the node (solid), its peers' median (dashed), anomalies (red marks).
fn svg_plot(title: &str, node: &Points, peers: &Points, marks: &[i64]) -> String {
    const W: f64 = 560.0;
    const H: f64 = 180.0;
    const PAD: f64 = 40.0;
    let all = node.iter().chain(peers);
    let (mut t0, mut t1, mut v0, mut v1) = (i64::MAX, i64::MIN, f64::INFINITY, f64::NEG_INFINITY);
    for (t, v) in all {
        t0 = t0.min(*t);
        t1 = t1.max(*t);
        v0 = v0.min(*v);
        v1 = v1.max(*v);
    }
    let mut svg = format!(
        "<div class=\"plot\"><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\">\
         <text x=\"{PAD}\" y=\"14\" font-size=\"12\">{}</text>",
        escape(title)
    );
    if node.is_empty() {
        svg.push_str("<text x=\"40\" y=\"90\" font-size=\"12\">no data</text></svg></div>");
        return svg;
    }
    if t1 == t0 {
        t1 = t0 + 1;
    }
    if v1 - v0 < 1e-12 {
        v0 -= 1.0;
        v1 += 1.0;
    }
    let x = |t: i64| PAD + (t - t0) as f64 / (t1 - t0) as f64 * (W - 2.0 * PAD);
    let y = |v: f64| H - 20.0 - (v - v0) / (v1 - v0) * (H - 40.0);
    let path = |points: &Points| {
        let mut d = String::new();
        for (i, (t, v)) in points.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1}",
                if i == 0 { "M" } else { " L" },
                x(*t),
                y(*v)
            );
        }
        d
    };
    let _ = write!(
        svg,
        "<rect x=\"{PAD}\" y=\"20\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#ccc\"/>\
         <text x=\"2\" y=\"24\" font-size=\"10\">{}</text><text x=\"2\" y=\"{}\" font-size=\"10\">{}</text>",
        W - 2.0 * PAD,
        H - 40.0,
        short(v1),
        H - 20.0,
        short(v0)
    );
    for m in marks.iter().filter(|m| (t0..=t1).contains(*m)) {
        let _ = write!(
            svg,
            "<line class=\"anomaly\" x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"20\" y2=\"{1}\" stroke=\"#e33\" stroke-opacity=\"0.35\"/>",
            x(*m),
            H - 20.0
        );
    }
    if !peers.is_empty() {
        let _ = write!(
            svg,
            "<path class=\"peers\" d=\"{}\" fill=\"none\" stroke=\"#999\" stroke-dasharray=\"4 3\"/>",
            path(peers)
        );
    }
    let _ = write!(
        svg,
        "<path class=\"node\" d=\"{}\" fill=\"none\" stroke=\"#1f5fbf\" stroke-width=\"1.5\"/>",
        path(node)
    );
    let _ = write!(
        svg,
        "<text x=\"{PAD}\" y=\"{}\" font-size=\"10\">{}</text><text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\">{}</text></svg></div>",
        H - 5.0,
        display_time(t0),
        W - PAD,
        H - 5.0,
        display_time(t1)
    );
    svg
}

fn short(v: f64) -> String {
    if v.abs() >= 1e5 || (v != 0.0 && v.abs() < 1e-2) {
        format!("{v:.2e}")
    } else {
        format!("{v:.2}")
    }
}

/// Every stored report, newest first.
pub async fn list(store: &Store) -> Result<Vec<ReportInfo>> {
    let mut out = Vec::new();
    for object in store
        .list_objects(&format!("{REPORTS_DIR}/"))
        .await
        .context(StoreSnafu)?
    {
        if !object.path.ends_with(".json") {
            continue;
        }
        if let Some(bytes) = store.get_object(&object.path).await.context(StoreSnafu)?
            && let Ok(info) = serde_json::from_slice::<ReportInfo>(&bytes)
        {
            out.push(info);
        }
    }
    out.sort_by_key(|r| std::cmp::Reverse(r.created_ns));
    Ok(out)
}

/// The HTML of report `id`, or `None`.
pub async fn html(store: &Store, id: &str) -> Result<Option<Vec<u8>>> {
    if !valid_id(id) {
        return Ok(None);
    }
    store
        .get_object(&format!("{REPORTS_DIR}/{id}.html"))
        .await
        .context(StoreSnafu)
}

/// Runs scheduled reports until `shutdown` resolves: at each time of `schedule`, a report
/// of the preceding `lookback_secs`, then a POST to `webhook` if set.
pub async fn run_schedule(
    store: Store,
    schedule: crate::schedule::Schedule,
    lookback_secs: f64,
    webhook: String,
    memory_bytes: usize,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let now = now_ns();
        let Some(next) = schedule.next_after(now) else {
            tracing::warn!("The report schedule has no next time; no more scheduled reports.");
            shutdown.await;
            return;
        };
        let wait = std::time::Duration::from_nanos(u64::try_from(next - now).unwrap_or(0));
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(wait) => {}
        }
        let from = next - (lookback_secs * 1e9) as i64;
        match generate(&store, from, next, memory_bytes).await {
            Ok(info) => {
                if !webhook.is_empty() {
                    // Retries take up to a minute; the schedule does not wait for them.
                    let webhook = webhook.clone();
                    tokio::spawn(async move { notify(&webhook, &info).await });
                }
            }
            Err(error) => tracing::warn!(%error, "The scheduled report failed."),
        }
    }
}

/// Waits before the webhook's second, third, … attempt: about a minute in all.
const WEBHOOK_RETRIES: [Duration; 6] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
    Duration::from_secs(32),
];

/// POSTs the report's metadata as JSON to `url`, retried (see [`deliver`]); the outcome is
/// logged.
async fn notify(url: &str, info: &ReportInfo) {
    let body = serde_json::to_vec(info).unwrap_or_default();
    match deliver(url, body, &WEBHOOK_RETRIES).await {
        Ok(attempts) => tracing::info!(report = %info.id, attempts, "Report webhook notified."),
        Err(error) => {
            tracing::warn!(report = %info.id, %error, "The report webhook failed; not retried further.")
        }
    }
}

/// POSTs `body` (JSON) to `url` until it is taken (2xx), waiting `retries[i]` before attempt
/// `i + 2`. A connection failure, a timeout, 408, 429 and 5xx are retried; any other answer
/// is final. Returns the attempts made, or why it gave up.
async fn deliver(url: &str, body: Vec<u8>, retries: &[Duration]) -> Result<usize, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut waits = retries.iter();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (agent, url, body) = (agent.clone(), url.to_owned(), body.clone());
        let answer = tokio::task::spawn_blocking(move || {
            agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(&body[..])
                .map(|response| response.status().as_u16())
        })
        .await
        .map_err(|e| e.to_string())?;
        let error = match answer {
            Ok(200..=299) => return Ok(attempt),
            Ok(status @ (408 | 429 | 500..=599)) => format!("HTTP {status}"),
            Ok(status) => return Err(format!("HTTP {status} (not retried)")),
            Err(error) => error.to_string(),
        };
        let Some(wait) = waits.next() else {
            return Err(format!("{error} after {attempt} attempts"));
        };
        tracing::debug!(%error, attempt, "The report webhook failed; retrying.");
        tokio::time::sleep(*wait).await;
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    use super::*;

    /// A webhook that answers each POST with the next of `statuses`; the bodies it got.
    fn webhook(statuses: &'static [u16]) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let served = std::thread::spawn(move || {
            let mut bodies = Vec::new();
            for &status in statuses {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream);
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if let Some((name, value)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("content-length")
                    {
                        length = value.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                bodies.push(String::from_utf8(body).unwrap());
                let answer = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                reader.into_inner().write_all(answer.as_bytes()).unwrap();
            }
            bodies
        });
        (url, served)
    }

    const QUICK: [Duration; 3] = [Duration::from_millis(10); 3];

    #[tokio::test]
    async fn the_webhook_is_retried_until_it_takes_the_report() {
        let (url, served) = webhook(&[503, 429, 204]);
        let body = br#"{"id":"r1"}"#.to_vec();
        assert_eq!(deliver(&url, body, &QUICK).await, Ok(3));
        assert_eq!(served.join().unwrap(), [r#"{"id":"r1"}"#; 3]);
    }

    #[tokio::test]
    async fn a_refusal_is_final_and_retries_end() {
        let (url, served) = webhook(&[404]);
        let error = deliver(&url, b"{}".to_vec(), &QUICK).await.unwrap_err();
        assert_eq!(error, "HTTP 404 (not retried)");
        assert_eq!(served.join().unwrap().len(), 1);

        let (url, served) = webhook(&[500, 502, 503, 504]);
        let error = deliver(&url, b"{}".to_vec(), &QUICK).await.unwrap_err();
        assert_eq!(error, "HTTP 504 after 4 attempts");
        assert_eq!(served.join().unwrap().len(), 4);
    }

    #[tokio::test]
    async fn an_unreachable_webhook_is_retried() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/hook");
        let error = deliver(&url, b"{}".to_vec(), &QUICK).await.unwrap_err();
        assert!(error.ends_with("after 4 attempts"), "{error}");
    }
}
