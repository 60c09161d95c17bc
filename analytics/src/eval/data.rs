//! Labelled data laid out as the JumpStarter data sets (`train/`, `test/` and `test_label/`
//! directories of header-less CSV files, one per service: rows = time steps, columns =
//! metrics; labels one 0/1 per line), and the per-point scores written back.

use std::fmt::Write as _;
use std::path::Path;

use snafu::{OptionExt, ResultExt, ensure};

use crate::matrix::Matrix;
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

/// A named set of services.
#[derive(Debug, Clone)]
pub struct DataSet {
    /// The set's name (its directory's name).
    pub name: String,
    /// Its services, in natural order of their names.
    pub services: Vec<Service>,
}

impl DataSet {
    /// Reads the set in `dir`: `dir/train`, `dir/test` and `dir/test_label` (or
    /// `dir/labels`).
    pub fn open(dir: &Path) -> Result<Self> {
        let labels = ["test_label", "labels"]
            .iter()
            .map(|d| dir.join(d))
            .find(|d| d.is_dir())
            .with_context(|| EvalDataSnafu {
                message: format!("{}: no test_label/ or labels/ directory", dir.display()),
            })?;
        Ok(Self {
            name: set_name(dir),
            services: load(&dir.join("train"), &dir.join("test"), &labels)?,
        })
    }
}

/// The name of the set in `dir`: its last component.
pub fn set_name(dir: &Path) -> String {
    dir.canonicalize()
        .unwrap_or_else(|_| dir.to_path_buf())
        .file_name()
        .map_or_else(|| "set".to_owned(), |n| n.to_string_lossy().into_owned())
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
        let labels = read_labels(&labels.join(&file))?;
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

/// Writes `path` (and its directory): a `score,flag` header, then one line per test point,
/// the score with all its digits and the flag as 0 or 1.
pub fn write_scores(path: &Path, scores: &[f64], flags: &[bool]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).context(IoSnafu { path: dir })?;
    }
    let mut text = String::with_capacity(24 * scores.len() + 12);
    text.push_str("score,flag\n");
    for (score, flag) in scores.iter().zip(flags) {
        let _ = writeln!(text, "{score},{}", u8::from(*flag));
    }
    std::fs::write(path, text).context(IoSnafu { path })
}
