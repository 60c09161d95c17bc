//! Differential test against Prometheus' own rule unit tests: every `*_test.yml` here
//! (`tests/rules/`, Prometheus' rule semantics) and of the shipped rules (`rules/` at the
//! repository's top) passes both through exawatch's evaluator and through Debian's
//! `promtool test rules`; a wrong expectation fails in both; `promtool check rules` and
//! exawatch's loader accept every shipped rule file.

use std::path::{Path, PathBuf};
use std::process::Command;

fn files(dir: &Path, test_files: bool) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .filter(|p| p.to_string_lossy().ends_with("_test.yml") == test_files)
        .collect();
    paths.sort();
    paths
}

fn test_dirs() -> [PathBuf; 2] {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    [
        crate_dir.join("tests/rules"),
        crate_dir.parent().unwrap().join("rules"),
    ]
}

fn promtool(args: &[&str], file: &Path) -> (bool, String) {
    let output = Command::new("promtool")
        .args(args)
        .arg(file)
        .output()
        .expect("promtool (Debian package prometheus; `cargo xtask test` installs it)");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_unit_tests_pass_in_exawatch_and_in_promtool() {
    let mut checked = 0;
    for dir in test_dirs() {
        for file in files(&dir, true) {
            let (ok, text) = promtool(&["test", "rules"], &file);
            assert!(ok, "promtool test rules {}:\n{text}", file.display());
            let report = exawatch_alerting::unittest::run_file(&file)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert!(
                report.failures.is_empty(),
                "exawatch test-rules {}:\n{}",
                file.display(),
                report.failures.join("\n")
            );
            assert!(report.passed > 0, "{}", file.display());
            checked += report.passed;
        }
    }
    assert!(checked >= 12, "only {checked} tests ran");
}

/// Each expectation changed to a wrong one fails in both: the comparison is not vacuous.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_expectations_fail_in_both() {
    let dir = tempfile::tempdir().unwrap();
    let rules_dir = &test_dirs()[0];
    std::fs::copy(
        rules_dir.join("semantics.yml"),
        dir.path().join("semantics.yml"),
    )
    .unwrap();
    let original = std::fs::read_to_string(rules_dir.join("semantics_test.yml")).unwrap();
    let wrong = [
        ("value: 33", "value: 34"),
        ("summary: n1 load 12", "summary: n1 load 12.0"),
        (
            "      - eval_time: 4m\n        alertname: HighLoad\n        exp_alerts: []",
            "      - eval_time: 4m\n        alertname: HighLoad\n        exp_alerts:\n          - exp_labels: {severity: page, node: n1, node_upper: N1}",
        ),
        (
            "      - eval_time: 6m\n        alertname: Flapping\n        exp_alerts: []",
            "      - eval_time: 6m\n        alertname: Flapping\n        exp_alerts:\n          - exp_labels: {severity: ticket, node: n1}",
        ),
        ("value: 120", "value: 180"),
    ];
    for (from, to) in wrong {
        assert!(original.contains(from), "{from}");
        let file = dir.path().join("wrong_test.yml");
        std::fs::write(&file, original.replacen(from, to, 1)).unwrap();
        let (ok, _) = promtool(&["test", "rules"], &file);
        assert!(!ok, "promtool accepted {to:?}");
        let report = exawatch_alerting::unittest::run_file(&file).await.unwrap();
        assert_eq!(report.failures.len(), 1, "exawatch with {to:?}: {report:?}");
    }
}

#[test]
fn shipped_rule_files_are_accepted_by_promtool_and_exawatch() {
    let shipped = files(&test_dirs()[1], false);
    assert!(!shipped.is_empty());
    for file in shipped {
        let (ok, text) = promtool(&["check", "rules"], &file);
        assert!(ok, "promtool check rules {}:\n{text}", file.display());
        let groups = exawatch_alerting::file::load_file(&file).unwrap();
        assert!(!groups.is_empty(), "{}", file.display());
    }
}
