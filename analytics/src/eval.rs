//! Detection quality on labelled data laid out as the JumpStarter data sets: `train/`,
//! `test/` and `labels/` directories holding one header-less CSV per service (rows = time
//! steps, columns = metrics; labels one 0/1 per line).
//!
//! Each service gets its own model, fitted on its training file; the test file is scored
//! row by row in order (stateful detectors continue from the end of training). Reported per
//! service and as the mean over services: precision, recall and F1 point-wise and with the
//! usual point-adjusted protocol (a labelled segment counts as found, every point of it, if
//! any point in it is flagged), and ROC AUC of the raw scores. The naive baseline flags a
//! row when any metric is more than 3 standard deviations from its training mean.

use std::fmt::Write as _;
use std::path::Path;

use snafu::{OptionExt, ResultExt, ensure};

use crate::detect::{DetectorKind, EntityState, FitOptions, Fitted};
use crate::matrix::{Matrix, mean_std};
use crate::{CsvSnafu, EvalDataSnafu, IoSnafu, Result};

/// One service's files.
#[derive(Debug, Clone)]
pub struct Service {
    /// File name without `.csv`.
    pub name: String,
    /// Training rows.
    pub train: Matrix,
    /// Test rows.
    pub test: Matrix,
    /// One label per test row.
    pub labels: Vec<bool>,
}

/// Quality figures of one service (or their mean).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Quality {
    /// Point-wise precision.
    pub precision: f64,
    /// Point-wise recall.
    pub recall: f64,
    /// Point-wise F1.
    pub f1: f64,
    /// Point-adjusted precision.
    pub pa_precision: f64,
    /// Point-adjusted recall.
    pub pa_recall: f64,
    /// Point-adjusted F1.
    pub pa_f1: f64,
    /// ROC AUC of the scores.
    pub auc: f64,
}

impl Quality {
    /// Figures of `flags` and `scores` against `labels`.
    pub fn measure(scores: &[f64], flags: &[bool], labels: &[bool]) -> Self {
        let (precision, recall, f1) = prf(flags, labels);
        let adjusted = point_adjust(flags, labels);
        let (pa_precision, pa_recall, pa_f1) = prf(&adjusted, labels);
        Self {
            precision,
            recall,
            f1,
            pa_precision,
            pa_recall,
            pa_f1,
            auc: auc(scores, labels),
        }
    }

    /// The mean of each figure.
    pub fn mean(all: &[Self]) -> Self {
        let n = all.len().max(1) as f64;
        let sum = |f: fn(&Self) -> f64| all.iter().map(f).sum::<f64>() / n;
        Self {
            precision: sum(|q| q.precision),
            recall: sum(|q| q.recall),
            f1: sum(|q| q.f1),
            pa_precision: sum(|q| q.pa_precision),
            pa_recall: sum(|q| q.pa_recall),
            pa_f1: sum(|q| q.pa_f1),
            auc: sum(|q| q.auc),
        }
    }
}

/// Which detector an evaluation ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// One of exawatch's detectors.
    Detector(DetectorKind),
    /// Any metric beyond 3 standard deviations of its training mean.
    ThreeSigma,
}

impl Method {
    /// Display name.
    pub fn name(self) -> String {
        match self {
            Self::Detector(kind) => kind.to_string(),
            Self::ThreeSigma => "3-sigma".to_owned(),
        }
    }
}

/// The figures of one method on every service.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The method.
    pub method: Method,
    /// `(service, figures)` in service order.
    pub services: Vec<(String, Quality)>,
    /// Mean over services.
    pub mean: Quality,
}

/// Reads every service present in all three directories (matched by file name).
pub fn load(train: &Path, test: &Path, labels: &Path) -> Result<Vec<Service>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(train).context(IoSnafu { path: train })? {
        let path = entry.context(IoSnafu { path: train })?.path();
        if path.extension().is_some_and(|e| e == "csv") {
            names.push(
                path.file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    names.sort_by_key(|n| natural_key(n));
    ensure!(
        !names.is_empty(),
        EvalDataSnafu {
            message: format!("no .csv files in {}", train.display())
        }
    );
    let mut services = Vec::new();
    for name in names {
        let file = format!("{name}.csv");
        let train_rows = read_matrix(&train.join(&file))?;
        let test_rows = read_matrix(&test.join(&file))?;
        let label_path = labels.join(&file);
        let labels = read_labels(&label_path)?;
        ensure!(
            train_rows.cols() == test_rows.cols(),
            EvalDataSnafu {
                message: format!(
                    "{name}: {} columns in train, {} in test",
                    train_rows.cols(),
                    test_rows.cols()
                )
            }
        );
        ensure!(
            labels.len() == test_rows.rows(),
            EvalDataSnafu {
                message: format!(
                    "{name}: {} labels for {} test rows",
                    labels.len(),
                    test_rows.rows()
                )
            }
        );
        services.push(Service {
            name,
            train: train_rows,
            test: test_rows,
            labels,
        });
    }
    Ok(services)
}

/// `service10` sorts after `service9`.
fn natural_key(name: &str) -> (String, u64) {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (stem, number) = name.split_at(name.len() - digits);
    (stem.to_owned(), number.parse().unwrap_or(0))
}

fn read_matrix(path: &Path) -> Result<Matrix> {
    let text = std::fs::read_to_string(path).context(IoSnafu { path })?;
    let mut matrix: Option<Matrix> = None;
    let mut row = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        row.clear();
        for field in line.split(',') {
            let value = field.trim().parse::<f64>().ok().with_context(|| CsvSnafu {
                path,
                line: i + 1,
                message: format!("{field:?} is not a number"),
            })?;
            row.push(value);
        }
        let m = matrix.get_or_insert_with(|| Matrix::new(row.len()));
        ensure!(
            m.cols() == row.len(),
            CsvSnafu {
                path,
                line: i + 1,
                message: format!("{} fields, the first row has {}", row.len(), m.cols())
            }
        );
        m.push(&row);
    }
    matrix.filter(|m| m.rows() > 0).with_context(|| CsvSnafu {
        path,
        line: 0usize,
        message: "no rows",
    })
}

fn read_labels(path: &Path) -> Result<Vec<bool>> {
    let text = std::fs::read_to_string(path).context(IoSnafu { path })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| match l.trim() {
            "0" | "0.0" => Ok(false),
            "1" | "1.0" => Ok(true),
            other => CsvSnafu {
                path,
                line: i + 1,
                message: format!("label {other:?} is not 0 or 1"),
            }
            .fail(),
        })
        .collect()
}

/// Runs `method` on every service.
pub fn evaluate(services: &[Service], method: Method, options: FitOptions) -> Result<Evaluation> {
    let mut results = Vec::new();
    for service in services {
        let (scores, flags) = match method {
            Method::Detector(kind) => run_detector(service, kind, options)?,
            Method::ThreeSigma => three_sigma(service),
        };
        results.push((
            service.name.clone(),
            Quality::measure(&scores, &flags, &service.labels),
        ));
    }
    let mean = Quality::mean(&results.iter().map(|(_, q)| *q).collect::<Vec<_>>());
    Ok(Evaluation {
        method,
        services: results,
        mean,
    })
}

fn run_detector(
    service: &Service,
    kind: DetectorKind,
    options: FitOptions,
) -> Result<(Vec<f64>, Vec<bool>)> {
    let features = (0..service.train.cols()).map(|j| format!("m{j}")).collect();
    let rows = service.train.rows();
    let model = Fitted::fit(
        kind,
        features,
        &service.train,
        std::slice::from_ref(&(0..rows)),
        options,
    )?;
    let mut state = EntityState::default();
    for row in service.train.iter_rows() {
        model.score(row, &mut state);
    }
    let scores: Vec<f64> = service
        .test
        .iter_rows()
        .map(|row| model.score(row, &mut state).score)
        .collect();
    let flags = scores.iter().map(|s| *s > model.threshold).collect();
    Ok((scores, flags))
}

fn three_sigma(service: &Service) -> (Vec<f64>, Vec<bool>) {
    let stats: Vec<(f64, f64)> = (0..service.train.cols())
        .map(|j| mean_std(&service.train.column(j)))
        .collect();
    let scores: Vec<f64> = service
        .test
        .iter_rows()
        .map(|row| {
            row.iter()
                .zip(&stats)
                .map(|(x, (mean, std))| {
                    if *std > 0.0 {
                        (x - mean).abs() / std
                    } else if x != mean {
                        f64::INFINITY
                    } else {
                        0.0
                    }
                })
                .fold(0.0, f64::max)
        })
        .collect();
    let flags = scores.iter().map(|s| *s > 3.0).collect();
    (scores, flags)
}

fn prf(flags: &[bool], labels: &[bool]) -> (f64, f64, f64) {
    let tp = flags.iter().zip(labels).filter(|(f, l)| **f && **l).count() as f64;
    let flagged = flags.iter().filter(|f| **f).count() as f64;
    let positive = labels.iter().filter(|l| **l).count() as f64;
    let precision = if flagged > 0.0 { tp / flagged } else { 0.0 };
    let recall = if positive > 0.0 { tp / positive } else { 0.0 };
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    (precision, recall, f1)
}

/// Point adjustment: every point of a labelled segment is flagged if any point of it is.
pub fn point_adjust(flags: &[bool], labels: &[bool]) -> Vec<bool> {
    let mut adjusted = flags.to_vec();
    let mut i = 0;
    while i < labels.len() {
        if !labels[i] {
            i += 1;
            continue;
        }
        let start = i;
        while i < labels.len() && labels[i] {
            i += 1;
        }
        if flags[start..i].iter().any(|f| *f) {
            adjusted[start..i].iter_mut().for_each(|f| *f = true);
        }
    }
    adjusted
}

/// ROC AUC by the rank-sum (Mann–Whitney) statistic, ties counted half.
pub fn auc(scores: &[f64], labels: &[bool]) -> f64 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut ranks = vec![0.0; scores.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            ranks[order[k]] = rank;
        }
        i = j + 1;
    }
    let positives = labels.iter().filter(|l| **l).count() as f64;
    let negatives = labels.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return f64::NAN;
    }
    let rank_sum: f64 = ranks
        .iter()
        .zip(labels)
        .filter(|(_, l)| **l)
        .map(|(r, _)| r)
        .sum();
    (rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives)
}

/// The evaluations as a text table: one block per method, then one summary line.
pub fn render(evaluations: &[Evaluation], options: &FitOptions) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Thresholds learned on each service's training data for a target false-positive rate of {}.",
        options.target_fpr
    );
    for evaluation in evaluations {
        let _ = writeln!(out, "\n{}", evaluation.method.name());
        let _ = writeln!(
            out,
            "{:<12} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}",
            "service", "P", "R", "F1", "PA-P", "PA-R", "PA-F1", "AUC"
        );
        let rows = evaluation
            .services
            .iter()
            .map(|(n, q)| (n.as_str(), q))
            .chain([("mean", &evaluation.mean)]);
        for (name, q) in rows {
            let _ = writeln!(
                out,
                "{:<12} {:>6.3} {:>6.3} {:>6.3} {:>6.3} {:>6.3} {:>6.3} {:>6.3}",
                name, q.precision, q.recall, q.f1, q.pa_precision, q.pa_recall, q.pa_f1, q.auc
            );
        }
    }
    let _ = writeln!(out);
    let summary: Vec<String> = evaluations
        .iter()
        .map(|e| {
            format!(
                "{} PA-F1 {:.3} F1 {:.3} AUC {:.3}",
                e.method.name(),
                e.mean.pa_f1,
                e.mean.f1,
                e.mean.auc
            )
        })
        .collect();
    let _ = write!(
        out,
        "summary: {} services: {}",
        evaluations.first().map_or(0, |e| e.services.len()),
        summary.join("; ")
    );
    out
}
