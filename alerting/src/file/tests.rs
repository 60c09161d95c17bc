use super::*;

const GOOD: &str = r#"groups:
  - name: nodes
    interval: 30s
    rules:
      - record: node:power:sum
        expr: sum by (node) (power)
        labels:
          source: rules
      - alert: NodeHot
        expr: temp > 90
        for: 5m
        keep_firing_for: 1m
        labels:
          severity: "{{ if true }}x{{ end }}"
"#;

#[test]
fn a_good_file_loads() {
    let text = GOOD.replace("\"{{ if true }}x{{ end }}\"", "critical");
    let groups = parse(&text, "good.yml").unwrap();
    assert_eq!(groups.len(), 1);
    let group = &groups[0];
    assert_eq!(
        (group.name.as_str(), group.interval_ms),
        ("nodes", Some(30_000))
    );
    assert_eq!(group.rules[0].name(), "node:power:sum");
    match &group.rules[1].kind {
        RuleKind::Alerting {
            for_ms,
            keep_firing_for_ms,
            ..
        } => assert_eq!((*for_ms, *keep_firing_for_ms), (300_000, 60_000)),
        other => panic!("{other:?}"),
    }
}

/// Each bad file is refused with the file, the line and the reason: the line of the value
/// at fault, or of its rule when the fault is the rule's (a template, a missing field).
#[test]
fn bad_files_name_file_line_and_reason() {
    let cases = [
        (
            GOOD.to_owned(),
            "line 9 ",
            "template action \"if\" is not supported",
        ),
        (
            GOOD.replace("temp > 90", "temp >"),
            "line 10 ",
            "could not parse expression",
        ),
        (
            GOOD.replace("expr: sum", "exp: sum"),
            "line 5 ",
            "unknown field `exp`",
        ),
        (
            GOOD.replace("for: 5m", "for: 5 minutes"),
            "line 11 ",
            "not a valid duration",
        ),
        (
            GOOD.replace("- record: node:power:sum", "- record: node-power"),
            "line 5 ",
            "invalid recording rule name",
        ),
        (
            GOOD.replace("    interval: 30s\n", "    interval: [30s]\n"),
            "line 3 ",
            "invalid type",
        ),
        (
            GOOD.replace("\"{{ if true }}x{{ end }}\"", "critical")
                .replace("name: nodes", "name: nodes\n    rules: []\n  - name: nodes"),
            "line 4:",
            "is repeated in the same file",
        ),
    ];
    for (text, line, reason) in cases {
        let error = parse(&text, "bad.yml").unwrap_err().to_string();
        assert!(error.starts_with("bad.yml: "), "{error}");
        assert!(error.contains(line), "{line}: {error}");
        assert!(error.contains(reason), "{reason}: {error}");
    }
}

#[test]
fn durations_parse_as_prometheus_parses_them() {
    assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
    assert_eq!(parse_duration("0"), Ok(0));
    assert_eq!(parse_duration("100ms"), Ok(100));
    for bad in ["", "5", "1m1h", "-1m", "1.5m"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
}
