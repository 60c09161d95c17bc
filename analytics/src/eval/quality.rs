//! Detection-quality figures of one series: precision, recall and F1 point-wise and
//! point-adjusted, ROC AUC, and the best F1 any threshold on the scores would give.

/// Quality figures of one series (or their mean over series).
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
    /// ROC AUC of the scores (NaN if the labels are all one class).
    pub auc: f64,
    /// The best point-wise F1 of any threshold on the scores (an upper bound of what a
    /// threshold rule can reach, chosen with the labels: not a result).
    pub best_f1: f64,
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
            best_f1: best_f1(scores, labels),
        }
    }

    /// The mean of each figure over the series whose AUC is defined (those with both
    /// anomalous and normal points: the others have no recall, F1 or AUC), and how many
    /// those are.
    pub fn mean(all: &[Self]) -> (Self, usize) {
        let kept: Vec<&Self> = all.iter().filter(|q| q.auc.is_finite()).collect();
        let n = kept.len().max(1) as f64;
        let mean = |f: fn(&Self) -> f64| kept.iter().map(|q| f(q)).sum::<f64>() / n;
        let quality = Self {
            precision: mean(|q| q.precision),
            recall: mean(|q| q.recall),
            f1: mean(|q| q.f1),
            pa_precision: mean(|q| q.pa_precision),
            pa_recall: mean(|q| q.pa_recall),
            pa_f1: mean(|q| q.pa_f1),
            auc: if kept.is_empty() {
                f64::NAN
            } else {
                mean(|q| q.auc)
            },
            best_f1: mean(|q| q.best_f1),
        };
        (quality, kept.len())
    }
}

/// Precision, recall and F1 of `flags` against `labels` (0 where undefined).
fn prf(flags: &[bool], labels: &[bool]) -> (f64, f64, f64) {
    let tp = flags.iter().zip(labels).filter(|(f, l)| **f && **l).count() as f64;
    let flagged = flags.iter().filter(|f| **f).count() as f64;
    let positive = labels.iter().filter(|l| **l).count() as f64;
    let precision = if flagged > 0.0 { tp / flagged } else { 0.0 };
    let recall = if positive > 0.0 { tp / positive } else { 0.0 };
    (precision, recall, f1(precision, recall))
}

fn f1(precision: f64, recall: f64) -> f64 {
    if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    }
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

/// Indices of `scores` from the highest score down (NaN lowest).
fn descending(scores: &[f64]) -> Vec<usize> {
    let key = |s: f64| if s.is_nan() { f64::NEG_INFINITY } else { s };
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| key(scores[b]).total_cmp(&key(scores[a])));
    order
}

/// ROC AUC by the rank-sum (Mann–Whitney) statistic, ties counted half; NaN if the labels
/// are all one class.
pub fn auc(scores: &[f64], labels: &[bool]) -> f64 {
    let positives = labels.iter().filter(|l| **l).count() as f64;
    let negatives = labels.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return f64::NAN;
    }
    let order = descending(scores);
    // Walk down the scores a tie group at a time: each anomaly in the group beats every
    // normal point below the group and half of the normal points in it.
    let (mut wins, mut normals_above) = (0.0, 0.0);
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]].total_cmp(&scores[order[i]]).is_eq() {
            j += 1;
        }
        let group = &order[i..=j];
        let anomalies = group.iter().filter(|&&k| labels[k]).count() as f64;
        let normals = group.len() as f64 - anomalies;
        wins += anomalies * (negatives - normals_above - normals + normals / 2.0);
        normals_above += normals;
        i = j + 1;
    }
    wins / (positives * negatives)
}

/// The best point-wise F1 over every threshold on `scores`.
pub fn best_f1(scores: &[f64], labels: &[bool]) -> f64 {
    let positives = labels.iter().filter(|l| **l).count() as f64;
    if positives == 0.0 {
        return 0.0;
    }
    let order = descending(scores);
    let (mut best, mut tp) = (0.0f64, 0.0);
    for (n, &k) in order.iter().enumerate() {
        tp += if labels[k] { 1.0 } else { 0.0 };
        // Only between distinct scores can a threshold separate the points.
        let last_of_tie = order
            .get(n + 1)
            .is_none_or(|&next| !scores[next].total_cmp(&scores[k]).is_eq());
        if last_of_tie {
            best = best.max(f1(tp / (n + 1) as f64, tp / positives));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_ties_half_and_is_nan_without_anomalies() {
        let labels = [false, false, true, true];
        assert_eq!(auc(&[0.1, 0.2, 0.3, 0.4], &labels), 1.0);
        assert_eq!(auc(&[0.4, 0.3, 0.2, 0.1], &labels), 0.0);
        assert_eq!(auc(&[1.0; 4], &labels), 0.5);
        // The anomaly at 0.5 beats the normal point at 0.1 and ties the one at 0.5 (half a
        // win); the one at 0.9 beats both: 3.5 of 4.
        assert_eq!(auc(&[0.1, 0.5, 0.5, 0.9], &labels), 0.875);
        assert!(auc(&[0.1, 0.2], &[false, false]).is_nan());
    }

    #[test]
    fn best_f1_finds_the_best_threshold() {
        let labels = [false, true, false, true, true];
        // Best between 0.1 and 0.3: four points flagged, the three anomalies among them.
        let scores = [0.1, 0.9, 0.5, 0.6, 0.3];
        assert!((best_f1(&scores, &labels) - f1(0.75, 1.0)).abs() < 1e-12);
        // Ties cannot be split.
        assert_eq!(best_f1(&[1.0; 5], &labels), f1(0.6, 1.0));
    }

    #[test]
    fn point_adjustment_and_means_skip_series_without_anomalies() {
        let labels = [false, true, true, true, false, true];
        let flags = [false, false, true, false, true, false];
        assert_eq!(
            point_adjust(&flags, &labels),
            [false, true, true, true, true, false]
        );
        let q = Quality::measure(&[0.0, 0.0, 1.0, 0.0, 1.0, 0.0], &flags, &labels);
        assert_eq!((q.precision, q.recall), (0.5, 0.25));
        assert_eq!((q.pa_precision, q.pa_recall), (0.75, 0.75));
        let none = Quality::measure(&[0.0, 1.0], &[false, true], &[false, false]);
        assert!(none.auc.is_nan());
        let (mean, kept) = Quality::mean(&[q, none]);
        assert_eq!(kept, 1);
        assert_eq!(mean, q);
    }
}
