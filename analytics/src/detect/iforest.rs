//! Isolation forest (Liu, Ting and Zhou, 2008) for any number of features: random
//! axis-parallel splits isolate unusual rows in few steps. Score `2^(−E[h(x)] / c(ψ))`.
//!
//! One addition: each split remembers the range `[low, high]` of its feature among the
//! training rows that reached it. In the original algorithm a row outside that range follows
//! the most extreme training rows to their leaf, so a value far beyond anything seen in
//! training scores no higher than the training extremes (a fan at 0 rpm scores like the
//! slowest fan seen). Had the row been among the tree's rows, the split value would have
//! been drawn from `[low, x]` (for `x > high`), isolating it with probability
//! `(x − high) / (x − low)`; the expected path length is computed with that probability at
//! every such split, which is ~0 for a row just outside a small node's range and → 1 for a
//! value far beyond the training data.
//!
//! A feature that is constant among a node's training rows cannot split it: trained on a
//! series that never varies, the forest is a single leaf and scores every row the same (the
//! forecast and mad detectors flag any change from such a series).
//!
//! Explanation: each split along the row's path shrinks the set of training rows that share
//! the row's cell from `n` to `m`; the split's feature is credited `ln(n / m)` (and
//! `ln(n) + 1` when the row is isolated there), weighted by the probability that the path
//! got that far; summed over the trees these are the contributions.

use serde::{Deserialize, Serialize};

use super::Scored;
use crate::matrix::Matrix;

/// Trees in the forest.
const TREES: usize = 100;
/// Training rows each tree is built from.
const SAMPLE: usize = 256;

/// One node of a tree, in a flat array.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Node {
    /// Rows with `feature < value` go to `left`, the others to `right`.
    Split {
        /// Feature index.
        feature: usize,
        /// Split value.
        value: f64,
        /// Smallest value of the feature among the training rows that reached this node.
        low: f64,
        /// Largest value of the feature among the training rows that reached this node.
        high: f64,
        /// Index of the left child.
        left: usize,
        /// Index of the right child.
        right: usize,
        /// Training rows that reached the left child.
        left_size: usize,
        /// Training rows that reached the right child.
        right_size: usize,
    },
    /// A leaf holding `size` training rows.
    Leaf {
        /// Training rows that reached it.
        size: usize,
    },
}

/// The fitted forest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IsolationForest {
    /// Each tree's nodes; the root is node 0.
    pub trees: Vec<Vec<Node>>,
    /// Rows per tree (ψ).
    pub sample: usize,
}

impl IsolationForest {
    pub(crate) fn fit(z: &Matrix, seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let sample = SAMPLE.min(z.rows()).max(1);
        let max_depth = (sample as f64).log2().ceil() as usize;
        let trees = (0..TREES)
            .map(|_| {
                let rows: Vec<usize> = if z.rows() <= sample {
                    (0..z.rows()).collect()
                } else {
                    let mut all: Vec<usize> = (0..z.rows()).collect();
                    rng.shuffle(&mut all);
                    all.truncate(sample);
                    all
                };
                let mut nodes = Vec::new();
                build(z, rows, 0, max_depth, &mut rng, &mut nodes);
                nodes
            })
            .collect();
        Self { trees, sample }
    }

    pub(crate) fn score(&self, z: &[f64]) -> Scored {
        let mut contributions = vec![0.0; z.len()];
        let mut total_depth = 0.0;
        for tree in &self.trees {
            let mut i = 0;
            let mut depth = 0.0;
            // Probability that the row is not isolated yet.
            let mut alive = 1.0;
            loop {
                match &tree[i] {
                    Node::Leaf { size } => {
                        total_depth += alive * (depth + average_path(*size));
                        break;
                    }
                    Node::Split {
                        feature,
                        value,
                        low,
                        high,
                        left,
                        right,
                        left_size,
                        right_size,
                    } => {
                        let x = z[*feature];
                        let reached = (left_size + right_size) as f64;
                        depth += 1.0;
                        let isolated = if x > *high {
                            (x - high) / (x - low)
                        } else if x < *low {
                            (low - x) / (high - x)
                        } else {
                            0.0
                        };
                        if isolated > 0.0 {
                            contributions[*feature] += alive * isolated * (reached.ln() + 1.0);
                            total_depth += alive * isolated * depth;
                            alive *= 1.0 - isolated;
                        }
                        let (next, here) = if x < *value {
                            (*left, *left_size)
                        } else {
                            (*right, *right_size)
                        };
                        contributions[*feature] += alive * (reached / here.max(1) as f64).ln();
                        i = next;
                    }
                }
            }
        }
        let mean_depth = total_depth / self.trees.len().max(1) as f64;
        Scored {
            score: 2f64.powf(-mean_depth / average_path(self.sample).max(1e-9)),
            contributions,
        }
    }
}

/// Builds the subtree for `rows`, pushing its nodes; returns the index of its root.
fn build(
    z: &Matrix,
    rows: Vec<usize>,
    depth: usize,
    max_depth: usize,
    rng: &mut fastrand::Rng,
    nodes: &mut Vec<Node>,
) -> usize {
    let index = nodes.len();
    nodes.push(Node::Leaf { size: rows.len() });
    if rows.len() <= 1 || depth >= max_depth {
        return index;
    }
    // Features that still vary among these rows.
    let ranges: Vec<(usize, f64, f64)> = (0..z.cols())
        .filter_map(|j| {
            let (lo, hi) = rows
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &r| {
                    let v = z.row(r)[j];
                    (lo.min(v), hi.max(v))
                });
            (hi > lo).then_some((j, lo, hi))
        })
        .collect();
    if ranges.is_empty() {
        return index;
    }
    let (feature, low, high) = ranges[rng.usize(..ranges.len())];
    let value = low + (high - low) * rng.f64();
    let (left_rows, right_rows): (Vec<usize>, Vec<usize>) =
        rows.into_iter().partition(|&r| z.row(r)[feature] < value);
    let (left_size, right_size) = (left_rows.len(), right_rows.len());
    let left = build(z, left_rows, depth + 1, max_depth, rng, nodes);
    let right = build(z, right_rows, depth + 1, max_depth, rng, nodes);
    nodes[index] = Node::Split {
        feature,
        value,
        low,
        high,
        left,
        right,
        left_size,
        right_size,
    };
    index
}

/// c(n): the average path length of an unsuccessful search in a binary search tree of `n`
/// rows, used to normalise depths and to finish paths that end in a leaf of `n` rows.
fn average_path(n: usize) -> f64 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        n => {
            let n = n as f64;
            2.0 * ((n - 1.0).ln() + 0.577_215_664_901_532_9) - 2.0 * (n - 1.0) / n
        }
    }
}
