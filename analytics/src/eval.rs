//! Detection quality on labelled data laid out as the JumpStarter data sets ([`data`]).
//!
//! Each service gets its own model, fitted on its training file with [`Fitted::fit`]; the
//! training rows are then scored to warm the model's state, and the test rows scored in
//! order with [`Fitted::score`], the function the live scorer calls: row `i` of the test
//! file is step `train rows + i`. Flags are `score > threshold`, the threshold learned on the
//! training file. Reported per service and as the mean over the services with labelled
//! anomalies ([`Quality::mean`]): precision, recall and F1 point-wise and with the usual
//! point-adjusted protocol (a labelled segment counts as found, every point of it, if any
//! point in it is flagged), ROC AUC of the scores, and the best F1 of any threshold; with
//! the time each method took. The naive baseline flags a row when any metric is more than 3
//! standard deviations from its training mean.

pub mod data;
pub mod quality;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::Result;
use crate::detect::{DetectorKind, EntityState, FitOptions, Fitted};
use crate::matrix::mean_std;
pub use data::{DataSet, Service};
pub use quality::Quality;

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

/// What a method did on one service.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The service.
    pub service: String,
    /// Its figures.
    pub quality: Quality,
    /// The score of each test point.
    pub scores: Vec<f64>,
    /// Whether each test point was flagged.
    pub flags: Vec<bool>,
}

/// The figures of one method on every service of a set.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The method.
    pub method: Method,
    /// Per service, in service order.
    pub services: Vec<Outcome>,
    /// Mean over the services with labelled anomalies.
    pub mean: Quality,
    /// How many services have labelled anomalies (and normal points).
    pub with_anomalies: usize,
    /// Wall time of fitting and scoring every service.
    pub elapsed: Duration,
}

/// Runs `method` on every service.
pub fn evaluate(services: &[Service], method: Method, options: FitOptions) -> Result<Evaluation> {
    let started = Instant::now();
    let mut outcomes = Vec::new();
    for service in services {
        let (scores, flags) = match method {
            Method::Detector(kind) => run_detector(service, kind, options)?,
            Method::ThreeSigma => three_sigma(service),
        };
        outcomes.push(Outcome {
            service: service.name.clone(),
            quality: Quality::measure(&scores, &flags, &service.labels),
            scores,
            flags,
        });
    }
    let elapsed = started.elapsed();
    let qualities: Vec<Quality> = outcomes.iter().map(|o| o.quality).collect();
    let (mean, with_anomalies) = Quality::mean(&qualities);
    Ok(Evaluation {
        method,
        services: outcomes,
        mean,
        with_anomalies,
        elapsed,
    })
}

/// Fits `kind` on the service's training rows and scores its test rows as the live scorer
/// would; returns each test row's score and flag.
fn run_detector(
    service: &Service,
    kind: DetectorKind,
    options: FitOptions,
) -> Result<(Vec<f64>, Vec<bool>)> {
    let features = (0..service.train.cols()).map(|j| format!("m{j}")).collect();
    let rows = service.train.rows();
    let steps: Vec<i64> = (0..rows as i64).collect();
    let model = Fitted::fit(
        kind,
        features,
        &service.train,
        std::slice::from_ref(&(0..rows)),
        &steps,
        options,
    )?;
    let mut state = EntityState::default();
    for (step, row) in service.train.iter_rows().enumerate() {
        model.score(step as i64, row, &mut state);
    }
    let scores: Vec<f64> = service
        .test
        .iter_rows()
        .enumerate()
        .map(|(i, row)| model.score((rows + i) as i64, row, &mut state).score)
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

/// The evaluations of each named set as text: per set, one table per method (per service
/// and the mean); then a summary line per set and method, and with several sets the mean
/// over the sets.
pub fn render(sets: &[(String, Vec<Evaluation>)], options: &FitOptions) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Thresholds learned on each service's training data for a target false-positive rate of {}.",
        options.target_fpr
    );
    let _ = writeln!(
        out,
        "Means over the services with labelled anomalies; best-F1 is the best point-wise F1 of any threshold (chosen with the labels, for reference)."
    );
    for (set, evaluations) in sets {
        for evaluation in evaluations {
            let _ = writeln!(
                out,
                "\n{set}: {} ({:.2} s)",
                evaluation.method.name(),
                evaluation.elapsed.as_secs_f64()
            );
            let _ = writeln!(
                out,
                "{:<12} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>7}",
                "service", "P", "R", "F1", "PA-P", "PA-R", "PA-F1", "AUC", "best-F1"
            );
            let rows = evaluation
                .services
                .iter()
                .map(|o| (o.service.as_str(), &o.quality))
                .chain([("mean", &evaluation.mean)]);
            for (name, q) in rows {
                let _ = writeln!(
                    out,
                    "{:<12} {:>6.3} {:>6.3} {:>6.3} {:>6.3} {:>6.3} {:>6.3} {:>6.3} {:>7.3}",
                    name,
                    q.precision,
                    q.recall,
                    q.f1,
                    q.pa_precision,
                    q.pa_recall,
                    q.pa_f1,
                    q.auc,
                    q.best_f1
                );
            }
        }
    }
    let _ = writeln!(out, "\nsummary (mean over services):");
    for (set, evaluations) in sets {
        let (services, with) = evaluations
            .first()
            .map_or((0, 0), |e| (e.services.len(), e.with_anomalies));
        let _ = writeln!(out, "{set}: {services} services, {with} with anomalies");
        for e in evaluations {
            let _ = writeln!(out, "  {}", summary(e.method, &e.mean, e.elapsed));
        }
    }
    if sets.len() > 1 {
        let _ = writeln!(out, "mean over the {} sets:", sets.len());
        let methods: Vec<Method> = sets[0].1.iter().map(|e| e.method).collect();
        for (i, method) in methods.into_iter().enumerate() {
            let means: Vec<Quality> = sets
                .iter()
                .filter_map(|(_, e)| e.get(i))
                .map(|e| e.mean)
                .collect();
            let elapsed = sets
                .iter()
                .filter_map(|(_, e)| e.get(i))
                .map(|e| e.elapsed)
                .sum();
            let (mean, _) = Quality::mean(&means);
            let _ = writeln!(out, "  {}", summary(method, &mean, elapsed));
        }
    }
    out.truncate(out.trim_end().len());
    out
}

fn summary(method: Method, q: &Quality, elapsed: Duration) -> String {
    format!(
        "{:<9} AUC {:.3}  PA-F1 {:.3}  F1 {:.3}  best-F1 {:.3}  ({:.2} s)",
        method.name(),
        q.auc,
        q.pa_f1,
        q.f1,
        q.best_f1,
        elapsed.as_secs_f64()
    )
}
