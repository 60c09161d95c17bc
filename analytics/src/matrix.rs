//! A dense, row-major matrix of `f64` (rows = observations, columns = features), the one
//! shape every detector takes; copied into `ndarray` only at the linfa boundary.

use ndarray::Array2;

/// Rows of equal length, stored row-major. `NaN` marks a missing value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Matrix {
    cols: usize,
    data: Vec<f64>,
}

impl Matrix {
    /// An empty matrix with `cols` columns.
    pub fn new(cols: usize) -> Self {
        Self {
            cols,
            data: Vec::new(),
        }
    }

    /// A matrix from rows; every row must have the same length (`None` otherwise).
    pub fn from_rows(rows: &[Vec<f64>]) -> Option<Self> {
        let cols = rows.first().map_or(0, Vec::len);
        let mut matrix = Self::new(cols);
        for row in rows {
            if row.len() != cols {
                return None;
            }
            matrix.push(row);
        }
        Some(matrix)
    }

    /// Appends a row. Panics if its length differs from [`Matrix::cols`] (a caller bug).
    pub fn push(&mut self, row: &[f64]) {
        assert_eq!(row.len(), self.cols, "row length");
        self.data.extend_from_slice(row);
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.data.len().checked_div(self.cols).unwrap_or(0)
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// Iterates over the rows.
    pub fn iter_rows(&self) -> impl Iterator<Item = &[f64]> {
        self.data.chunks_exact(self.cols.max(1))
    }

    /// Column `j`, copied.
    pub fn column(&self, j: usize) -> Vec<f64> {
        self.iter_rows().map(|r| r[j]).collect()
    }

    /// The rows in `range`, copied.
    pub fn slice_rows(&self, range: std::ops::Range<usize>) -> Self {
        Self {
            cols: self.cols,
            data: self.data[range.start * self.cols..range.end * self.cols].to_vec(),
        }
    }

    /// Copies into an `ndarray` matrix (linfa's input).
    pub(crate) fn to_array(&self) -> Array2<f64> {
        Array2::from_shape_vec((self.rows(), self.cols), self.data.clone())
            .expect("shape matches the data")
    }
}

/// The `q`-quantile (0..=1) of `values` by linear interpolation, ignoring NaN; `None` if
/// nothing is left.
pub(crate) fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64))
}

/// Mean and population standard deviation of the finite values.
pub(crate) fn mean_std(values: &[f64]) -> (f64, f64) {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return (0.0, 0.0);
    }
    let n = finite.len() as f64;
    let mean = finite.iter().sum::<f64>() / n;
    let var = finite.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}
