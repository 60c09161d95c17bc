//! Runs Prometheus' test-language files against the engine over a real store: each `load`
//! writes its samples into a [`Store`] opened on a temporary directory (and flushes them to
//! Parquet, so queries read files as in production), each `eval` runs through [`Engine`]
//! and [`StoreSource`], and the result is compared as Prometheus' `promqltest` compares it
//! (values within a relative 1e-6, NaN equal to NaN).
//!
//! An eval that fails and involves native histograms (which exawatch does not store: their
//! samples are skipped at load) counts as *unsupported* rather than failed.

mod script;

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use exawatch_protocol::{Sample, Value as SampleValue};
use exawatch_store::{Store, StoreConfig};
use promql_parser::parser::{Expr, VectorSelector};

use crate::value::{Labels, METRIC_NAME, QueryValue};
use crate::{Engine, EngineOptions, QueryResult, StoreSource, almost_equal};
use script::{Command, EvalKind, Expectations, Expected, Item, Matcher};

/// Values are equal when within this relative difference (Prometheus' `defaultEpsilon`).
const EPSILON: f64 = 1e-6;

/// Memory one test query may use.
const QUERY_MEMORY: usize = 256 << 20;

/// The outcome of one file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// Evals that passed.
    pub passed: usize,
    /// Evals that failed.
    pub failed: usize,
    /// Evals that failed and involve native histograms.
    pub unsupported: usize,
    /// One line per failed or unsupported eval: line number, query and reason.
    pub failures: Vec<String>,
    /// Set when the file could not be read or parsed (nothing ran).
    pub error: Option<String>,
}

/// Runs the test file at `path`.
pub async fn run_file(path: &Path) -> FileReport {
    match std::fs::read_to_string(path) {
        Ok(text) => run_script(&text).await,
        Err(e) => FileReport {
            error: Some(format!("{}: {e}", path.display())),
            ..FileReport::default()
        },
    }
}

/// Parses a series description in the test language's expanding notation, as Prometheus'
/// rule unit tests write them too: `name{label="v"} 1 2+3x4 _ stale` gives the labels and
/// one value per step (`None` where `_` leaves the step empty).
pub fn parse_series(text: &str) -> Result<(Labels, Vec<Option<f64>>), String> {
    let (labels, rest) = script::parse_labels(text.trim())?;
    let values = script::parse_items(rest.trim())?
        .into_iter()
        .map(|item| match item {
            Item::Value(v) => Ok(Some(v)),
            Item::Omitted => Ok(None),
            Item::Histogram => Err(format!("native histograms are not stored: {text}")),
        })
        .collect::<Result<_, _>>()?;
    Ok((labels, values))
}

/// An empty store on a temporary directory, dropped with it: what each test file runs on,
/// and what the crate's own tests over a real store start from.
#[derive(Debug)]
pub struct TestStore {
    /// The store ([`StoreConfig::test_config`]).
    pub store: Store,
    _dir: tempfile::TempDir,
}

impl TestStore {
    /// Opens it.
    pub async fn open() -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut registry = prometheus_client::registry::Registry::default();
        let store = Store::open(dir.path(), StoreConfig::test_config(), &mut registry)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self { store, _dir: dir })
    }
}

/// Runs the text of a test file.
pub async fn run_script(text: &str) -> FileReport {
    let mut report = FileReport::default();
    let commands = match script::parse(text) {
        Ok(commands) => commands,
        Err(e) => {
            report.error = Some(e);
            return report;
        }
    };
    let mut store = match TestStore::open().await {
        Ok(s) => s,
        Err(e) => {
            report.error = Some(e);
            return report;
        }
    };
    // Series that have native histogram samples in the current data.
    let mut histogram_series: Vec<Labels> = Vec::new();
    for command in commands {
        match command {
            Command::Clear => {
                match TestStore::open().await {
                    Ok(s) => store = s,
                    Err(e) => {
                        report.error = Some(e);
                        return report;
                    }
                }
                histogram_series.clear();
            }
            Command::Load {
                interval,
                series,
                nhcb,
            } => {
                let mut samples = Vec::new();
                for s in &series {
                    let metric = s.labels.get_or_empty(METRIC_NAME).to_owned();
                    let tags: Vec<(String, String)> = s
                        .labels
                        .iter()
                        .filter(|(n, _)| *n != METRIC_NAME)
                        .map(|(n, v)| (n.to_owned(), v.to_owned()))
                        .collect();
                    for (i, item) in s.items.iter().enumerate() {
                        match item {
                            Item::Value(v) => samples.push(Sample::new(
                                metric.clone(),
                                tags.clone(),
                                i as i64 * interval * 1_000_000,
                                SampleValue::Float(*v),
                            )),
                            Item::Histogram => {
                                if !histogram_series.contains(&s.labels) {
                                    histogram_series.push(s.labels.clone());
                                }
                            }
                            Item::Omitted => {}
                        }
                    }
                }
                if nhcb {
                    // The native histogram made of `x_bucket`, `x_count` and `x_sum` is `x`.
                    for s in &series {
                        let name = s.labels.get_or_empty(METRIC_NAME);
                        if let Some(base) = ["_bucket", "_count", "_sum"]
                            .iter()
                            .find_map(|suffix| name.strip_suffix(suffix))
                        {
                            let mut labels = s.labels.clone();
                            labels.set(METRIC_NAME, base);
                            labels.remove("le");
                            if !histogram_series.contains(&labels) {
                                histogram_series.push(labels);
                            }
                        }
                    }
                }
                let written = match store.store.write(samples).await {
                    Ok(()) => store.store.flush().await,
                    Err(e) => Err(e),
                };
                if let Err(e) = written {
                    report.error = Some(format!("loading data: {e}"));
                    return report;
                }
            }
            Command::Eval {
                line,
                kind,
                expr,
                expect,
                expected,
                text,
            } => {
                let engine = Engine::new(
                    Arc::new(StoreSource::new(store.store.clone(), QUERY_MEMORY)),
                    EngineOptions::default(),
                );
                let result = match kind {
                    EvalKind::Instant { at } => engine.instant(&expr, at).await,
                    EvalKind::Range { start, end, step } => {
                        engine.range(&expr, start, end, step).await
                    }
                };
                let outcome = check(result, &kind, &expect, &expected);
                match outcome {
                    Ok(()) => report.passed += 1,
                    Err(reason) => {
                        let native = uses_native_histograms(&expr, &text, &histogram_series);
                        if native {
                            report.unsupported += 1;
                        } else {
                            report.failed += 1;
                        }
                        report.failures.push(format!(
                            "line {line}{}: {expr}: {reason}",
                            if native { " (native histograms)" } else { "" }
                        ));
                    }
                }
            }
        }
    }
    report
}

/// True if an eval involves native histograms: in its expected output, in the functions it
/// calls, or through a selector that matches a series with native histogram samples.
fn uses_native_histograms(expr: &str, text: &str, histogram_series: &[Labels]) -> bool {
    const NATIVE_FUNCTIONS: [&str; 6] = [
        "histogram_count",
        "histogram_sum",
        "histogram_avg",
        "histogram_stddev",
        "histogram_stdvar",
        "histogram_fraction",
    ];
    if text.contains("{{")
        || text.contains("native histogram")
        || NATIVE_FUNCTIONS.iter().any(|f| text.contains(f))
    {
        return true;
    }
    let Ok(expr) = crate::parse(expr) else {
        return false;
    };
    let mut selectors = Vec::new();
    collect_selectors(&expr, &mut selectors);
    selectors.iter().any(|vs| {
        crate::matcher_sets(vs).iter().any(|matchers| {
            histogram_series.iter().any(|labels| {
                matchers
                    .iter()
                    .all(|m| m.is_match(labels.get_or_empty(&m.name)))
            })
        })
    })
}

fn collect_selectors<'e>(expr: &'e Expr, out: &mut Vec<&'e VectorSelector>) {
    match expr {
        Expr::VectorSelector(vs) => out.push(vs),
        Expr::MatrixSelector(ms) => out.push(&ms.vs),
        Expr::Subquery(sq) => collect_selectors(&sq.expr, out),
        Expr::Paren(p) => collect_selectors(&p.expr, out),
        Expr::Unary(u) => collect_selectors(&u.expr, out),
        Expr::Binary(b) => {
            collect_selectors(&b.lhs, out);
            collect_selectors(&b.rhs, out);
        }
        Expr::Aggregate(a) => {
            collect_selectors(&a.expr, out);
            if let Some(p) = &a.param {
                collect_selectors(p, out);
            }
        }
        Expr::Call(c) => c.args.args.iter().for_each(|a| collect_selectors(a, out)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// Strips a trailing position like ` (1:21)`: exawatch's parser does not report positions.
fn without_position(message: &str) -> &str {
    let trimmed = message.trim_end();
    if trimmed.ends_with(')')
        && let Some(open) = trimmed.rfind(" (")
    {
        let inner = &trimmed[open + 2..trimmed.len() - 1];
        if inner.split(':').count() == 2 && inner.split(':').all(|p| p.parse::<u32>().is_ok()) {
            return &trimmed[..open];
        }
    }
    trimmed
}

fn matches_message(matcher: &Matcher, message: &str) -> bool {
    match matcher {
        Matcher::Any => true,
        Matcher::Exact(m) => without_position(m) == without_position(message),
        Matcher::Regex(r) => regex::Regex::new(r).is_ok_and(|re| re.is_match(message)),
    }
}

fn check_annotations(expect: &Expectations, result: &QueryResult) -> Result<(), String> {
    let pairs = [
        (
            &expect.warn,
            expect.no_warn,
            &result.annotations.warnings,
            "warning",
        ),
        (
            &expect.info,
            expect.no_info,
            &result.annotations.infos,
            "info",
        ),
    ];
    for (wanted, none, got, kind) in pairs {
        if none && !got.is_empty() {
            return Err(format!("expected no {kind}, got {got:?}"));
        }
        if let Some(matcher) = wanted {
            let matcher = matcher.clone().unwrap_or(Matcher::Any);
            let found = got.iter().any(|m| matches_message(&matcher, m));
            if !found {
                return Err(format!(
                    "expected a {kind} matching {matcher:?}, got {got:?}"
                ));
            }
        }
    }
    Ok(())
}

fn check(
    result: crate::Result<QueryResult>,
    kind: &EvalKind,
    expect: &Expectations,
    expected: &[Expected],
) -> Result<(), String> {
    let result = match (result, &expect.fail) {
        (Err(e), Some(matcher)) => {
            return if matches_message(matcher, &e.to_string()) {
                Ok(())
            } else {
                Err(format!(
                    "failed with {:?}, expected {matcher:?}",
                    e.to_string()
                ))
            };
        }
        (Ok(_), Some(_)) => return Err("expected the query to fail, it succeeded".into()),
        (Err(e), None) => return Err(format!("error: {e}")),
        (Ok(result), None) => result,
    };
    check_annotations(expect, &result)?;
    if let Some(string) = &expect.string {
        return match &result.value {
            QueryValue::String { v, .. } if v == string => Ok(()),
            other => Err(format!("expected string {string:?}, got {other:?}")),
        };
    }
    match (&result.value, kind) {
        (QueryValue::Scalar { v, .. }, _) => match expected {
            [Expected::Scalar(e)] if almost_equal(*e, *v, EPSILON) => Ok(()),
            _ => Err(format!("expected {expected:?}, got scalar {v}")),
        },
        (QueryValue::String { v, .. }, _) => Err(format!("unexpected string {v:?}")),
        (QueryValue::Vector(series), _) => {
            let got: Vec<(Labels, Vec<Option<f64>>)> = series
                .iter()
                .map(|s| {
                    (
                        s.labels.clone(),
                        s.points.iter().map(|p| Some(p.v)).collect(),
                    )
                })
                .collect();
            compare(&got, expected, expect.ordered)
        }
        (QueryValue::Matrix(series), EvalKind::Range { start, end, step }) => {
            let n = ((end - start) / step + 1) as usize;
            let got: Vec<(Labels, Vec<Option<f64>>)> = series
                .iter()
                .map(|s| {
                    let mut values = vec![None; n];
                    for p in &s.points {
                        values[((p.t - start) / step) as usize] = Some(p.v);
                    }
                    (s.labels.clone(), values)
                })
                .collect();
            compare(&got, expected, false)
        }
        (QueryValue::Matrix(series), EvalKind::Instant { .. }) => {
            let got: Vec<(Labels, Vec<Option<f64>>)> = series
                .iter()
                .map(|s| {
                    (
                        s.labels.clone(),
                        s.points.iter().map(|p| Some(p.v)).collect(),
                    )
                })
                .collect();
            compare(&got, expected, false)
        }
    }
}

/// Compares series (values per step, `None` where absent) with the expected lines.
fn compare(
    got: &[(Labels, Vec<Option<f64>>)],
    expected: &[Expected],
    ordered: bool,
) -> Result<(), String> {
    let mut wanted = Vec::new();
    for e in expected {
        match e {
            Expected::Series(s) => wanted.push(s),
            Expected::Scalar(v) => return Err(format!("expected scalar {v}, got a vector")),
        }
    }
    if wanted.len() != got.len() {
        let mut message = format!("expected {} series, got {}:", wanted.len(), got.len());
        for (labels, values) in got.iter().take(10) {
            let _ = write!(message, " {labels} {values:?};");
        }
        return Err(message);
    }
    for (position, w) in wanted.iter().enumerate() {
        let Some(index) = got.iter().position(|(labels, _)| *labels == w.labels) else {
            return Err(format!("expected series {} not in the result", w.labels));
        };
        if ordered && index != position {
            return Err(format!(
                "series {} at position {index}, expected {position}",
                w.labels
            ));
        }
        let values = &got[index].1;
        let expected_values: Vec<Option<f64>> = w
            .items
            .iter()
            .map(|i| match i {
                Item::Value(v) => Some(*v),
                Item::Omitted | Item::Histogram => None,
            })
            .collect();
        let mut expected_values = expected_values;
        // Trailing omitted values may be left out of the expectation.
        expected_values.resize(values.len().max(expected_values.len()), None);
        let mut values = values.clone();
        values.resize(expected_values.len(), None);
        let same = expected_values
            .iter()
            .zip(&values)
            .all(|(e, g)| match (e, g) {
                (None, None) => true,
                (Some(e), Some(g)) => almost_equal(*e, *g, EPSILON),
                _ => false,
            });
        if !same {
            return Err(format!(
                "series {}: expected {expected_values:?}, got {values:?}",
                w.labels
            ));
        }
    }
    Ok(())
}

/// Totals over several files.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Evals that passed.
    pub passed: usize,
    /// Evals that failed (files that could not run count as one failure each).
    pub failed: usize,
    /// Evals that failed and involve native histograms.
    pub unsupported: usize,
}

/// Runs `paths` in order, writing per file `PATH: N passed, N failed, N unsupported` and its
/// failures to `out`, then the closing line `N passed, N failed`.
pub async fn run_files(
    paths: &[std::path::PathBuf],
    out: &mut impl std::io::Write,
) -> std::io::Result<Totals> {
    let mut totals = Totals::default();
    for path in paths {
        let report = run_file(path).await;
        if let Some(error) = &report.error {
            writeln!(out, "{}: error: {error}", path.display())?;
            totals.failed += 1;
        }
        writeln!(
            out,
            "{}: {} passed, {} failed, {} unsupported",
            path.display(),
            report.passed,
            report.failed,
            report.unsupported
        )?;
        for failure in &report.failures {
            writeln!(out, "  {failure}")?;
        }
        totals.passed += report.passed;
        totals.failed += report.failed;
        totals.unsupported += report.unsupported;
    }
    writeln!(out, "{} passed, {} failed", totals.passed, totals.failed)?;
    Ok(totals)
}
