use super::*;

fn expand(list: &str) -> Vec<String> {
    expand_hostlist(list).unwrap()
}

#[test]
fn hostlists_expand_as_slurm_does() {
    assert_eq!(
        expand("cn[01-04,07]"),
        ["cn01", "cn02", "cn03", "cn04", "cn07"]
    );
    assert_eq!(expand("a[1-2]b[3-4]"), ["a1b3", "a1b4", "a2b3", "a2b4"]);
    assert_eq!(
        expand("cn[8-10],gpu07,login[1,3]"),
        ["cn8", "cn9", "cn10", "gpu07", "login1", "login3"]
    );
    assert_eq!(
        expand("rack1-n[009-011]"),
        ["rack1-n009", "rack1-n010", "rack1-n011"]
    );
    assert_eq!(expand("node1"), ["node1"]);
    assert!(expand("").is_empty());
    assert!(expand("None assigned").is_empty());
    assert!(expand("(null)").is_empty());
}

#[test]
fn bad_hostlists_are_refused() {
    for list in [
        "cn[01-04", "cn]01[", "cn[[1]]", "cn[4-1]", "cn[a-b]", "cn[]", "cn[1--2]",
    ] {
        assert!(expand_hostlist(list).is_err(), "{list}");
    }
    assert_eq!(
        expand_hostlist("n[0-99999999999]"),
        Err(HostlistError::TooMany)
    );
    assert_eq!(
        expand_hostlist("a[0-999]b[0-999]"),
        Err(HostlistError::TooMany)
    );
}

fn run(topic: &str, payload: &str) -> (Vec<JobRecord>, Vec<&'static str>) {
    let mut out = Vec::new();
    let errors = decode(topic.as_bytes(), payload.as_bytes(), &mut out);
    (out, errors.iter().map(JobError::reason).collect())
}

#[test]
fn a_full_record_decodes_and_round_trips() {
    let payload = r#"{"id": "1234_7", "name": "relax", "user": "ada", "account": "chem",
        "partition": "gpu", "qos": "normal", "state": "CANCELLED by 1000", "exit_code": 0,
        "exit_signal": 15, "submit": 1716480000, "start": 1716480060.5, "end": 1716483660,
        "nodes": "gpu[01-02]", "cpus": 64, "gpus": 8, "mem_bytes": 274877906944,
        "future_field": [1]}"#;
    let (jobs, errors) = run("exawatch/jobs/leonardo", payload);
    assert!(errors.is_empty());
    let job = &jobs[0];
    assert_eq!(job.id, "1234_7");
    assert_eq!(job.cluster, "leonardo", "from the topic");
    assert_eq!(job.state, "CANCELLED");
    assert!(job.is_final());
    assert_eq!(job.exit_signal, Some(15));
    assert_eq!(job.start_ns, Some(1_716_480_060_500_000_000));
    assert_eq!(job.nodes, ["gpu01", "gpu02"]);
    assert_eq!(job.mem_bytes, Some(256 << 30));

    let json = job.to_json().to_string();
    let (again, errors) = run(JOBS_TOPIC, &json);
    assert!(errors.is_empty());
    assert_eq!(&again[0], job);
}

#[test]
fn bad_records_are_dropped_one_by_one_with_their_reason() {
    let payload = r#"[
        {"id": "1", "state": "RUNNING"},
        {"id": "12.batch", "state": "RUNNING"},
        {"state": "RUNNING"},
        {"id": "2"},
        {"id": "3", "state": "RUNNING", "cpus": -1},
        {"id": "4", "state": "RUNNING", "start": "yesterday"},
        {"id": "5", "state": "RUNNING", "nodes": "cn[1-"},
        {"id": "6", "state": "RUNNING", "user": 7},
        7,
        {"id": 8, "state": "pending", "nodes": ["cn1", "cn3"]}
    ]"#;
    let (jobs, errors) = run(JOBS_TOPIC, payload);
    let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["1", "8"]);
    assert_eq!(jobs[1].state, "PENDING");
    assert_eq!(jobs[1].nodes, ["cn1", "cn3"]);
    assert_eq!(
        errors,
        [
            "job_bad_id",
            "job_bad_id",
            "job_missing_state",
            "job_bad_field",
            "job_bad_time",
            "job_bad_nodes",
            "job_bad_field",
            "job_not_json"
        ]
    );
    assert_eq!(run(JOBS_TOPIC, "not json").1, ["job_not_json"]);
    assert_eq!(run(JOBS_TOPIC, "42").1, ["job_not_json"]);
}

#[test]
fn topics_and_ids() {
    assert!(is_job_topic(b"exawatch/jobs"));
    assert!(is_job_topic(b"exawatch/jobs/c1"));
    assert!(!is_job_topic(b"exawatch/jobsx"));
    assert!(!is_job_topic(b"node/exawatch/jobs"));
    for id in ["1234", "1234_7", "1234+1", "1234_[1-9%2]"] {
        assert!(valid_job_id(id), "{id}");
    }
    for id in ["", "x1", "1234.batch", "1 2", &"1".repeat(65)] {
        assert!(!valid_job_id(id), "{id}");
    }
}

#[test]
fn a_final_state_is_never_replaced_by_a_running_one() {
    let running = JobRecord {
        id: "1".into(),
        state: "RUNNING".into(),
        ..JobRecord::default()
    };
    let done = JobRecord {
        state: "COMPLETED".into(),
        ..running.clone()
    };
    assert!(done.supersedes(&running));
    assert!(!running.supersedes(&done));
    assert!(running.supersedes(&running));
    assert!(done.supersedes(&done));
}
