//! Runs rule unit-test files in `promtool test rules` format
//! (<https://prometheus.io/docs/prometheus/latest/configuration/unit_testing_rules/>)
//! through exawatch's evaluator over a real store, as promtool runs them through
//! Prometheus': each test loads its `input_series` (expanding notation, one value per
//! `interval`) into a fresh store, evaluates every group at 0, `evaluation_interval`, … up
//! to the latest `eval_time`, writing what rules produce into the store, checks the firing
//! alerts of each `alert_rule_test` at its `eval_time`, then runs each `promql_expr_test`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use exawatch_promql::promqltest::{TestStore, parse_series};
use exawatch_promql::{
    Engine, EngineOptions, Labels, METRIC_NAME, QueryValue, StoreSource, almost_equal,
};
use exawatch_protocol::{Sample, Value as SampleValue};
use serde::Deserialize;

use crate::file::{PromDuration, load_globs};
use crate::group::{AlertState, EvalContext, Group};

/// Memory one test query may use.
const QUERY_MEMORY: usize = 256 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default)]
    rule_files: Vec<String>,
    #[serde(default)]
    evaluation_interval: Option<PromDuration>,
    /// Accepted as promtool does; groups are evaluated in file order.
    #[serde(default, rename = "group_eval_order")]
    _group_eval_order: serde::de::IgnoredAny,
    /// Accepted; values are always compared within a relative 1e-6.
    #[serde(default, rename = "fuzzy_compare")]
    _fuzzy_compare: serde::de::IgnoredAny,
    tests: Vec<TestGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestGroup {
    #[serde(default)]
    name: String,
    #[serde(default)]
    interval: Option<PromDuration>,
    #[serde(default)]
    input_series: Vec<InputSeries>,
    #[serde(default)]
    alert_rule_test: Vec<AlertTest>,
    #[serde(default)]
    promql_expr_test: Vec<ExprTest>,
    #[serde(default)]
    external_labels: BTreeMap<String, String>,
    #[serde(default)]
    external_url: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSeries {
    series: String,
    #[serde(default)]
    values: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertTest {
    eval_time: PromDuration,
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<ExpAlert>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpAlert {
    #[serde(default)]
    exp_labels: BTreeMap<String, String>,
    #[serde(default)]
    exp_annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExprTest {
    expr: String,
    eval_time: PromDuration,
    #[serde(default)]
    exp_samples: Vec<ExpSample>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpSample {
    #[serde(default)]
    labels: String,
    value: f64,
}

/// The outcome of one test file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TestReport {
    /// Tests (entries of `tests:`) that passed.
    pub passed: usize,
    /// One entry per failed test, with every difference found.
    pub failures: Vec<String>,
}

/// Runs the unit-test file at `path`; `Err` when it cannot be read, parsed, or its rule
/// files loaded.
pub async fn run_file(path: &Path) -> Result<TestReport, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file: TestFile =
        serde_yaml_ng::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let patterns: Vec<String> = file
        .rule_files
        .iter()
        .map(|f| dir.join(f).display().to_string())
        .collect();
    let defs = load_globs(&patterns).map_err(|e| e.to_string())?;
    let interval = file.evaluation_interval.map_or(60_000, |d| d.0);
    let mut report = TestReport::default();
    for (i, test) in file.tests.iter().enumerate() {
        let groups: Vec<Group> = defs
            .iter()
            .map(|def| Group::new(def.clone(), interval))
            .collect();
        let name = if test.name.is_empty() {
            format!("test {}", i + 1)
        } else {
            test.name.clone()
        };
        match run_test(test, groups, interval).await {
            Ok(()) => report.passed += 1,
            Err(problems) => report.failures.push(format!("{name}:\n{problems}")),
        }
    }
    Ok(report)
}

async fn run_test(test: &TestGroup, mut groups: Vec<Group>, interval: i64) -> Result<(), String> {
    let store = TestStore::open().await?;
    let step = test.interval.map_or(60_000, |d| d.0);
    let mut samples = Vec::new();
    for input in &test.input_series {
        let line = format!("{} {}", input.series, input.values);
        let (labels, values) = parse_series(&line)?;
        for (i, value) in values.into_iter().enumerate() {
            if let Some(v) = value {
                samples.push(sample(&labels, i as i64 * step, v));
            }
        }
    }
    store
        .store
        .write(samples)
        .await
        .map_err(|e| e.to_string())?;
    store.store.flush().await.map_err(|e| e.to_string())?;
    let engine = Engine::new(
        Arc::new(StoreSource::new(store.store.clone(), QUERY_MEMORY)),
        EngineOptions::default(),
    );
    let cx = EvalContext {
        external_labels: Labels::new(test.external_labels.clone()),
        external_url: test.external_url.clone(),
        resend_delay_ms: 60_000,
    };
    let max_time = test
        .alert_rule_test
        .iter()
        .map(|t| t.eval_time.0)
        .chain(test.promql_expr_test.iter().map(|t| t.eval_time.0))
        .max()
        .unwrap_or(0);
    let mut alert_tests: Vec<&AlertTest> = test.alert_rule_test.iter().collect();
    alert_tests.sort_by_key(|t| t.eval_time.0);
    let mut next_alert_test = 0;
    let mut problems = String::new();
    let mut ts = 0;
    while ts <= max_time {
        for group in &mut groups {
            let output = group.eval(&engine, &store.store, ts, &cx).await;
            if let Some((rule, error)) = output.failures.first() {
                return Err(format!(
                    "    rule: {rule}, time: {}, err: {error}",
                    format_ms(ts)
                ));
            }
        }
        // Alert tests whose time falls in [ts, ts + interval) look at this evaluation.
        while let Some(t) = alert_tests.get(next_alert_test)
            && t.eval_time.0 >= ts
            && t.eval_time.0 < ts + interval
        {
            check_alerts(t, &groups, &mut problems);
            next_alert_test += 1;
        }
        ts += interval;
    }
    for t in &test.promql_expr_test {
        check_expr(&engine, t, &mut problems).await;
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

type AlertSet = Vec<(Labels, BTreeMap<String, String>)>;

fn check_alerts(test: &AlertTest, groups: &[Group], problems: &mut String) {
    let mut got: AlertSet = groups
        .iter()
        .flat_map(|g| &g.rules)
        .filter(|r| r.def.name() == test.alertname)
        .flat_map(|r| r.active.values())
        .filter(|a| a.state == AlertState::Firing)
        .map(|a| (a.labels.clone(), a.annotations.clone()))
        .collect();
    let mut want: AlertSet = test
        .exp_alerts
        .iter()
        .map(|e| {
            let mut labels = Labels::new(e.exp_labels.clone());
            labels.set("alertname", &test.alertname);
            (labels, e.exp_annotations.clone())
        })
        .collect();
    got.sort();
    want.sort();
    if got != want {
        let _ = writeln!(
            problems,
            "    alertname: {}, time: {},\n        exp:{}\n        got:{}",
            test.alertname,
            format_ms(test.eval_time.0),
            show_alerts(&want),
            show_alerts(&got)
        );
    }
}

fn show_alerts(alerts: &AlertSet) -> String {
    let items: Vec<String> = alerts
        .iter()
        .map(|(labels, annotations)| {
            format!("\n            labels: {labels}, annotations: {annotations:?}")
        })
        .collect();
    if items.is_empty() {
        "[]".into()
    } else {
        items.concat()
    }
}

async fn check_expr(engine: &Engine, test: &ExprTest, problems: &mut String) {
    let result = match engine.instant(&test.expr, test.eval_time.0).await {
        Ok(result) => result,
        Err(error) => {
            let _ = writeln!(
                problems,
                "    expr: {:?}, time: {}, err: {error}",
                test.expr,
                format_ms(test.eval_time.0)
            );
            return;
        }
    };
    let mut got: Vec<(Labels, f64)> = match result.value {
        QueryValue::Vector(series) => series
            .into_iter()
            .filter_map(|s| s.points.last().map(|p| (s.labels, p.v)))
            .collect(),
        QueryValue::Scalar { v, .. } => vec![(Labels::default(), v)],
        other => {
            let _ = writeln!(
                problems,
                "    expr: {:?}: not an instant vector or scalar: {other:?}",
                test.expr
            );
            return;
        }
    };
    let mut want = Vec::new();
    for sample in &test.exp_samples {
        match parse_series(&sample.labels) {
            Ok((labels, _)) => want.push((labels, sample.value)),
            Err(error) => {
                let _ = writeln!(problems, "    bad labels {:?}: {error}", sample.labels);
                return;
            }
        }
    }
    got.sort_by(|a, b| a.0.cmp(&b.0));
    want.sort_by(|a, b| a.0.cmp(&b.0));
    let same = got.len() == want.len()
        && got
            .iter()
            .zip(&want)
            .all(|(g, w)| g.0 == w.0 && almost_equal(g.1, w.1, 1e-6));
    if !same {
        let show = |samples: &[(Labels, f64)]| {
            samples
                .iter()
                .map(|(l, v)| format!("{l} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            problems,
            "    expr: {:?}, time: {},\n        exp: [{}]\n        got: [{}]",
            test.expr,
            format_ms(test.eval_time.0),
            show(&want),
            show(&got)
        );
    }
}

fn sample(labels: &Labels, t_ms: i64, v: f64) -> Sample {
    let tags = labels
        .iter()
        .filter(|(n, _)| *n != METRIC_NAME)
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    Sample::new(
        labels.get_or_empty(METRIC_NAME),
        tags,
        t_ms * 1_000_000,
        SampleValue::Float(v),
    )
}

fn format_ms(ms: i64) -> String {
    if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}s", ms as f64 / 1000.0)
    }
}
