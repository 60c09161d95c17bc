//! Small readers for sysfs attribute files: one value per file, trailing newline.

use std::path::{Path, PathBuf};

/// The file's content without surrounding whitespace; `None` if unreadable or empty.
pub(crate) fn read_string(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// The file as an unsigned integer.
pub(crate) fn read_u64(path: &Path) -> Option<u64> {
    read_string(path)?.parse().ok()
}

/// The file as a signed integer (temperatures may be negative).
pub(crate) fn read_i64(path: &Path) -> Option<i64> {
    read_string(path)?.parse().ok()
}

/// Entries of `dir` whose names start with `prefix` and continue with a number, sorted by
/// that number: `hwmon2` before `hwmon10`.
pub(crate) fn numbered(dir: &Path, prefix: &str) -> Vec<(u32, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name();
            let n = name.to_str()?.strip_prefix(prefix)?.parse().ok()?;
            Some((n, entry.path()))
        })
        .collect();
    found.sort_unstable_by_key(|(n, _)| *n);
    found
}

/// Names of the entries of `dir`, sorted.
pub(crate) fn names(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    names.sort_unstable();
    names
}
