//! Helpers shared by the families' tests.

use std::path::{Path, PathBuf};

use exawatch_protocol::{Sample, Value};

use crate::NodeTags;

/// `tests/fixtures/<name>`.
pub(crate) fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// `org=acme`, `cluster=c1`, `node=n1`.
pub(crate) fn tags() -> NodeTags {
    NodeTags {
        org: "acme".into(),
        cluster: "c1".into(),
        node: "n1".into(),
    }
}

/// The value of the one sample of `metric` having all the tags of `items`; panics if
/// several match.
pub(crate) fn value(samples: &[Sample], metric: &str, items: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.metric == metric && items.iter().all(|(k, v)| s.tag(k) == Some(*v)))
        .collect();
    assert!(
        found.len() <= 1,
        "{metric} {items:?} matches {} samples",
        found.len()
    );
    found.first().map(|s| match &s.value {
        Value::Float(v) => *v,
        Value::Text(t) => panic!("{metric}: text value {t:?}"),
    })
}

/// Asserts `actual` is `expected` up to floating-point rounding.
#[track_caller]
pub(crate) fn assert_close(actual: Option<f64>, expected: f64) {
    let actual = actual.unwrap_or_else(|| panic!("no sample, expected {expected}"));
    assert!(
        (actual - expected).abs() <= 1e-9 * expected.abs().max(1.0),
        "{actual} != {expected}"
    );
}

/// Copies a fixture tree (symlinks as symlinks) into a temporary directory, to edit.
pub(crate) fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_tree(&fixture(name), dir.path());
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read fixture dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        let kind = entry.file_type().expect("file type");
        if kind.is_symlink() {
            let link = std::fs::read_link(entry.path()).expect("read link");
            std::os::unix::fs::symlink(link, &target).expect("symlink");
        } else if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy fixture file");
        }
    }
}

/// Writes `content` to `<root>/<file>`.
pub(crate) fn write(root: &Path, file: &str, content: &str) {
    std::fs::write(root.join(file), content).expect("write fixture copy");
}
