use super::*;

fn exposed(name: &str, labels: &[(&str, &str)]) -> Exposed {
    Exposed {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
        value: 1.0,
        timestamp_ms: None,
    }
}

fn series(metric: &str, tags: &[(&str, &str)]) -> Labelled {
    let mut tags: Vec<(String, String)> = tags
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    tags.sort();
    Labelled::Series(SeriesKey {
        metric: metric.into(),
        tags,
    })
}

fn rule(toml_text: &str) -> Relabel {
    Relabel::new(&toml::from_str(toml_text).unwrap()).unwrap()
}

fn labeller(job: &ScrapeJob, address: &str) -> Labeller {
    let rules = job
        .metric_relabel_configs
        .iter()
        .map(|r| Relabel::new(r).unwrap())
        .collect();
    Labeller::new(job, address, &job.labels, rules)
}

#[test]
fn target_labels_win_unless_honor_labels() {
    let mut job = ScrapeJob::new("dcgm", &["gpu01:9400"]);
    job.labels.insert("rack".into(), "r1".into());
    let exported = exposed(
        "DCGM_FI_DEV_GPU_TEMP",
        &[("gpu", "0"), ("job", "inner"), ("exported_job", "x")],
    );
    assert_eq!(
        labeller(&job, "gpu01:9400").label(&exported),
        series(
            "DCGM_FI_DEV_GPU_TEMP",
            &[
                ("gpu", "0"),
                ("exported_job", "x"),
                ("exported_exported_job", "inner"),
                ("job", "dcgm"),
                ("instance", "gpu01:9400"),
                ("node", "gpu01"),
                ("rack", "r1"),
            ]
        )
    );
    job.honor_labels = true;
    assert_eq!(
        labeller(&job, "gpu01:9400").label(&exported),
        series(
            "DCGM_FI_DEV_GPU_TEMP",
            &[
                ("gpu", "0"),
                ("exported_job", "x"),
                ("job", "inner"),
                ("instance", "gpu01:9400"),
                ("node", "gpu01"),
                ("rack", "r1"),
            ]
        )
    );
}

#[test]
fn node_comes_from_the_instance_unless_the_sample_names_one() {
    let job = ScrapeJob::new("ipmi", &["[fe80::1]:9290"]);
    let labeller = labeller(&job, "[fe80::1]:9290");
    assert_eq!(
        labeller.target_labels(),
        [
            ("instance".to_owned(), "[fe80::1]:9290".to_owned()),
            ("job".to_owned(), "ipmi".to_owned()),
            ("node".to_owned(), "fe80::1".to_owned()),
        ]
    );
    assert_eq!(
        labeller.label(&exposed("ipmi_up", &[("node", "cn07")])),
        series(
            "ipmi_up",
            &[
                ("node", "cn07"),
                ("job", "ipmi"),
                ("instance", "[fe80::1]:9290")
            ]
        )
    );
    let mut job = ScrapeJob::new("ipmi", &["cn01:9290"]);
    job.node_label = false;
    assert_eq!(
        Labeller::new(&job, "cn01:9290", &BTreeMap::new(), vec![]).label(&exposed("m", &[])),
        series("m", &[("job", "ipmi"), ("instance", "cn01:9290")])
    );
    assert_eq!(host_of("10.0.0.5:9100"), "10.0.0.5");
    assert_eq!(host_of("cn01"), "cn01");
}

#[test]
fn relabel_actions_as_prometheus_applies_them() {
    let mut labels = vec![
        ("__name__".to_owned(), "node_cpu_seconds_total".to_owned()),
        ("cpu".to_owned(), "3".to_owned()),
        ("mode".to_owned(), "idle".to_owned()),
    ];
    // keep: anchored, so "idl" does not match "idle".
    assert!(!rule("action = 'keep'\nsource_labels = ['mode']\nregex = 'idl'").apply(&mut labels));
    assert!(
        rule("action = 'keep'\nsource_labels = ['mode']\nregex = 'idle|user'").apply(&mut labels)
    );
    // drop: the source labels joined by the separator.
    assert!(
        !rule("action = 'drop'\nsource_labels = ['__name__', 'mode']\nregex = 'node_cpu.*;idle'")
            .apply(&mut labels)
    );
    assert!(
        rule("action = 'drop'\nsource_labels = ['__name__', 'missing']\nregex = '.*;.+'")
            .apply(&mut labels)
    );
    // replace with groups, into a new label and over the name.
    assert!(rule("source_labels = ['__name__', 'cpu']\nseparator = '/'\nregex = 'node_(\\w+?)_seconds_total/(\\d+)'\ntarget_label = 'what'\nreplacement = '${1}-$2'").apply(&mut labels));
    assert_eq!(get(&labels, "what"), Some("cpu-3"));
    assert!(
        rule("source_labels = ['mode']\ntarget_label = '__name__'\nreplacement = 'cpu_$1'")
            .apply(&mut labels)
    );
    assert_eq!(get(&labels, "__name__"), Some("cpu_idle"));
    // No match: nothing changes; an empty replacement removes the target label.
    assert!(
        rule("source_labels = ['mode']\nregex = 'user'\ntarget_label = 'mode'\nreplacement = 'x'")
            .apply(&mut labels)
    );
    assert_eq!(get(&labels, "mode"), Some("idle"));
    assert!(
        rule("source_labels = ['mode']\ntarget_label = 'what'\nreplacement = ''")
            .apply(&mut labels)
    );
    assert_eq!(get(&labels, "what"), None);
    // labeldrop matches label names.
    assert!(rule("action = 'labeldrop'\nregex = 'c.u|mode'").apply(&mut labels));
    assert_eq!(labels, [("__name__".to_owned(), "cpu_idle".to_owned())]);
}

#[test]
fn relabel_rules_run_after_target_labels_and_can_drop_or_rename() {
    let mut job = ScrapeJob::new("node", &["cn01:9100"]);
    job.metric_relabel_configs = toml::from_str::<ScrapeConfig>(
        r#"
[[jobs]]
name = "node"
targets = ["cn01:9100"]
[[jobs.metric_relabel_configs]]
action = "drop"
source_labels = ["__name__"]
regex = "go_.*"
[[jobs.metric_relabel_configs]]
source_labels = ["instance"]
regex = "(.*):\\d+"
target_label = "host"
[[jobs.metric_relabel_configs]]
action = "labeldrop"
regex = "instance"
[[jobs.metric_relabel_configs]]
source_labels = ["__name__"]
regex = "unnamed"
target_label = "__name__"
replacement = ""
"#,
    )
    .unwrap()
    .jobs
    .remove(0)
    .metric_relabel_configs;
    let labeller = labeller(&job, "cn01:9100");
    assert_eq!(
        labeller.label(&exposed("go_goroutines", &[])),
        Labelled::Dropped
    );
    assert_eq!(
        labeller.label(&exposed("node_load1", &[])),
        series(
            "node_load1",
            &[("host", "cn01"), ("job", "node"), ("node", "cn01")]
        )
    );
    assert_eq!(labeller.label(&exposed("unnamed", &[])), Labelled::Dropped);
    assert_eq!(
        labeller.label(&exposed("m", &[("value", "x")])),
        Labelled::Reserved("value".into())
    );
    // An empty exposed label is no label.
    assert_eq!(
        labeller.label(&exposed("m", &[("empty", "")])),
        series("m", &[("host", "cn01"), ("job", "node"), ("node", "cn01")])
    );
}

#[test]
fn targets_files_are_file_sd_json() {
    let groups = parse_targets_file(
        r#"[{"targets": ["cn01:9100", "cn02:9100"], "labels": {"rack": "r1"}}, {"targets": ["gpu01:9400"]}]"#,
    )
    .unwrap();
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0].targets, ["cn01:9100", "cn02:9100"]);
    assert_eq!(groups[0].labels.get("rack").map(String::as_str), Some("r1"));
    assert!(groups[1].labels.is_empty());
    assert!(
        parse_targets_file("targets: [a]")
            .unwrap_err()
            .starts_with("not file_sd JSON")
    );
    assert_eq!(
        parse_targets_file(r#"[{"targets": ["http://cn01:9100/metrics"]}]"#).unwrap_err(),
        "target \"http://cn01:9100/metrics\" is not host:port"
    );
    assert_eq!(
        parse_targets_file(r#"[{"targets": ["cn01:1"], "labels": {"time": "x"}}]"#).unwrap_err(),
        "label name \"time\" is not allowed"
    );
}

#[test]
fn bad_jobs_are_refused_naming_the_key() {
    let refused = [
        (
            "name = ''\ntargets = ['a:1']",
            "jobs[0].name = \"\": allowed a name of its own for each job",
        ),
        (
            "name = 'j'",
            "jobs[0].targets = []: allowed at least one host:port, unless targets_file is set",
        ),
        (
            "name = 'j'\ntargets = ['http://a:1']",
            "jobs[0].targets = \"http://a:1\": allowed host:port each (no scheme, path or credentials)",
        ),
        (
            "name = 'j'\ntargets = ['a:1']\ninterval_secs = 0",
            "jobs[0].interval_secs = 0: allowed from 0.001 to 86400",
        ),
        (
            "name = 'j'\ntargets = ['a:1']\ninterval_secs = 5\ntimeout_secs = 10",
            "jobs[0].timeout_secs = 10: allowed from 0.001 to 5",
        ),
        (
            "name = 'j'\ntargets = ['a:1']\nmetrics_path = 'metrics'",
            "jobs[0].metrics_path = \"metrics\": allowed a path starting with /",
        ),
        (
            "name = 'j'\ntargets = ['a:1']\nbearer_token = 't'\nbasic_auth = {username = 'u', password = 'p'}",
            "jobs[0].bearer_token = …: allowed only without basic_auth (one Authorization header)",
        ),
        (
            "name = 'j'\ntargets = ['a:1']\nlabels = {value = 'x'}",
            "jobs[0].labels = \"value\": allowed label names ([a-zA-Z_][a-zA-Z0-9_]*, not __…, not time, metric, value, text)",
        ),
        (
            "name = 'j'\ntargets = ['a:1']\nmetric_relabel_configs = [{action = 'keep', regex = 'x'}]",
            "jobs[0].metric_relabel_configs[0].source_labels = []: allowed at least one label for action = \"keep\" or \"drop\"",
        ),
        (
            "name = 'j'\ntargets = ['a:1']\nmetric_relabel_configs = [{source_labels = ['a']}]",
            "jobs[0].metric_relabel_configs[0].target_label = \"\": allowed a label name for action = \"replace\"",
        ),
    ];
    for (job, error) in refused {
        let config: ScrapeConfig = toml::from_str(&format!("[[jobs]]\n{job}")).unwrap();
        assert_eq!(config.validate().unwrap_err().to_string(), error, "{job}");
    }
    let config: ScrapeConfig = toml::from_str(
        "[[jobs]]\nname = 'j'\ntargets = ['a:1']\nmetric_relabel_configs = [{action = 'drop', source_labels = ['a'], regex = '(unclosed'}]",
    )
    .unwrap();
    assert!(config.validate().unwrap_err().to_string().starts_with(
        "jobs[0].metric_relabel_configs[0].regex = \"(unclosed\": allowed a regular expression"
    ),);
    let config: ScrapeConfig = toml::from_str("[[jobs]]\nname = 'j'\ntargets = ['a:1']\nbasic_auth = {username = 'u', password = 'hunter2'}\n[[jobs]]\nname = 'k'\ntargets = ['b:1']\nbearer_token = 'sekrit'").unwrap();
    assert_eq!(config.validate(), Ok(()));
    let debug = format!("{config:?}");
    assert!(
        !debug.contains("hunter2") && !debug.contains("sekrit"),
        "{debug}"
    );
}
