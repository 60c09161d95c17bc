//! The forecast detector on synthetic series: a daily-like cycle with noise, anomalies
//! injected into the test part, checked by rank (the anomaly must score above every normal
//! row) as well as by flag.

use super::*;
use crate::detect::{Detector, DetectorKind, EntityState, FitOptions, Fitted};

const PERIOD: usize = 48;

/// `periods` periods of two features: a cycle (`sin`, and `1 + cos` scaled) plus noise.
fn cycle(periods: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..periods * PERIOD)
        .map(|t| {
            let phase = t as f64 * std::f64::consts::TAU / PERIOD as f64;
            vec![
                10.0 + 5.0 * phase.sin() + rng.f64() - 0.5,
                100.0 * (1.0 + phase.cos()) + 10.0 * (rng.f64() - 0.5),
            ]
        })
        .collect()
}

fn fit(train: &[Vec<f64>]) -> Fitted {
    let m = Matrix::from_rows(train).unwrap();
    let steps: Vec<i64> = (0..m.rows() as i64).collect();
    Fitted::fit(
        DetectorKind::Forecast,
        vec!["a".into(), "b".into()],
        &m,
        std::slice::from_ref(&(0..m.rows())),
        &steps,
        FitOptions::default(),
    )
    .unwrap()
}

/// Scores `test` after `train` (the state warmed on the training rows, as `eval` does).
fn scores(fitted: &Fitted, train: &[Vec<f64>], test: &[Vec<f64>]) -> Vec<f64> {
    let mut state = EntityState::default();
    for (t, row) in train.iter().enumerate() {
        fitted.score(t as i64, row, &mut state);
    }
    test.iter()
        .enumerate()
        .map(|(i, row)| {
            fitted
                .score((train.len() + i) as i64, row, &mut state)
                .score
        })
        .collect()
}

/// The lowest score inside `anomaly` is above every score before it.
fn ranks_on_top(scores: &[f64], anomaly: std::ops::Range<usize>) -> bool {
    let normal = scores[..anomaly.start].iter().copied().fold(0.0, f64::max);
    scores[anomaly].iter().all(|s| *s > normal)
}

#[test]
fn finds_the_period_and_ranks_a_missing_peak_on_top() {
    let train = cycle(12, 1);
    let fitted = fit(&train);
    let Detector::Forecast(forecast) = &fitted.detector else {
        panic!("not a forecast: {:?}", fitted.detector.kind());
    };
    let season = &forecast.seasonal.as_ref().expect("a period").season;
    assert_eq!(season.period, PERIOD as i64);
    // Test: four more periods; in the last one the peak of feature a (a quarter period in)
    // stays at its mean for 6 rows: each value is common, at that phase it is not.
    let mut test = cycle(4, 2);
    let anomaly = 3 * PERIOD + 9..3 * PERIOD + 15;
    for row in &mut test[anomaly.clone()] {
        row[0] = 10.0;
    }
    let s = scores(&fitted, &train, &test);
    assert!(
        ranks_on_top(&s, anomaly.clone()),
        "{:?}",
        &s[anomaly.clone()]
    );
    assert!(s[anomaly.start + 2] > fitted.threshold);
    let false_alarms = s[..anomaly.start]
        .iter()
        .filter(|v| **v > fitted.threshold)
        .count();
    assert!(false_alarms <= 2, "{false_alarms} false alarms");
}

#[test]
fn a_lasting_shift_keeps_scoring_and_a_spike_is_explained() {
    let train = cycle(12, 3);
    let fitted = fit(&train);
    let mut test = cycle(3, 4);
    let shift = 2 * PERIOD..2 * PERIOD + 12;
    for row in &mut test[shift.clone()] {
        row[1] += 40.0;
    }
    let s = scores(&fitted, &train, &test);
    assert!(ranks_on_top(&s, shift.clone()), "{:?}", &s[shift]);
    // One row of feature b far out: b explains it.
    let mut state = EntityState::default();
    let mut spike = train[5].clone();
    spike[1] += 500.0;
    let scored = fitted.score(5, &spike, &mut state);
    assert!(scored.score > fitted.threshold);
    assert_eq!(fitted.explain(&scored, 1)[0].0, "b");
}

#[test]
fn without_a_period_it_uses_the_recent_forecast_alone() {
    // White noise around a slowly rising level: no period, and the rise is not anomalous.
    let mut rng = fastrand::Rng::with_seed(5);
    let rows: Vec<Vec<f64>> = (0..400)
        .map(|t| vec![t as f64 * 0.01 + rng.f64(), 3.0 + rng.f64()])
        .collect();
    let fitted = fit(&rows[..300]);
    let Detector::Forecast(forecast) = &fitted.detector else {
        panic!("not a forecast");
    };
    assert!(forecast.seasonal.is_none());
    assert_eq!(fitted.detector.warm_up(), RECENT_WARM_UP);
    let mut test = rows[300..].to_vec();
    test[60][1] += 8.0;
    let s = scores(&fitted, &rows[..300], &test);
    assert!(ranks_on_top(&s, 60..61));
    let flagged = s.iter().filter(|v| **v > fitted.threshold).count();
    assert!((1..=3).contains(&flagged), "{flagged} flagged");
}

#[test]
fn memory_is_bounded_by_the_bins() {
    // A period longer than MAX_BINS is binned: the state of an entity holds SEASONS × bins
    // means per feature, however long the period.
    let season = Season {
        period: 8640,
        bins: season::MAX_BINS,
        profile: vec![vec![0.0; 3]; season::MAX_BINS],
    };
    let mut memory = season::Memory::default();
    for step in 0..3 * 8640 {
        memory.remember(&season, step, &[1.0, 2.0, 3.0]);
    }
    let mut out = Vec::new();
    assert!(memory.forecast(&season, 3 * 8640, &mut out));
    assert_eq!(out, [1.0, 2.0, 3.0]);
    assert_eq!(
        std::mem::size_of_val(memory.means()),
        4 * 3 * SEASONS * season::MAX_BINS
    );
}

#[test]
fn an_entity_starting_cold_is_judged_against_training() {
    // Scoring starts (a model loaded, a node added) with no memory of the entity: its first
    // rows are compared with what training knows, so a usual row is not flagged and an
    // entity already off when scoring starts is.
    let train = cycle(12, 6);
    let fitted = fit(&train);
    let fresh = cycle(14, 7);
    let start = 12 * PERIOD;
    let mut state = EntityState::default();
    let false_alarms = fresh[start..start + 2 * PERIOD]
        .iter()
        .enumerate()
        .filter(|(i, row)| {
            fitted.score((start + i) as i64, row, &mut state).score > fitted.threshold
        })
        .count();
    // The first periods are judged against one or two remembered periods and the profile:
    // a little noisier than three, not a flood.
    assert!(false_alarms <= 2, "{false_alarms} false alarms");
    let mut state = EntityState::default();
    let mut off = fresh[start].clone();
    off[1] += 300.0;
    assert!(fitted.score(start as i64, &off, &mut state).score > fitted.threshold);
}
