//! The `slurm` family with fake `squeue` and `scontrol` commands; `scontrol` answers with a
//! real node's output (see `tests/fixtures/slurm/README.md`).

use std::path::{Path, PathBuf};

use super::*;
use crate::testutil::{assert_close, fixture, tags, value};

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).expect("write script");
    let mut perms = std::fs::metadata(&path).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&path, perms).expect("chmod");
    path
}

#[test]
fn parses_squeue_and_scontrol() {
    let jobs = parse_squeue("4242|alice|gpu|8|1\n4243_7|bob|cpu|64|2\ngarbage\n|x|y|1|1\n");
    assert_eq!(
        jobs,
        [
            Job {
                id: "4242".into(),
                user: "alice".into(),
                partition: "gpu".into(),
                cpus: Some(8),
                nodes: Some(1)
            },
            Job {
                id: "4243_7".into(),
                user: "bob".into(),
                partition: "cpu".into(),
                cpus: Some(64),
                nodes: Some(2)
            },
        ]
    );
    let text =
        std::fs::read_to_string(fixture("slurm/binfservas07.scontrol.txt")).expect("fixture");
    let pairs = parse_scontrol_node(&text);
    let get = |key: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("NodeName"), Some("binfservas07"));
    assert_eq!(get("CPULoad"), Some("16.15"));
    assert_eq!(get("OS"), Some("Linux"));
    assert_eq!(get("CfgTRES"), Some("cpu=16,mem=250000M,billing=16"));
}

/// As found on binfservas07: fully allocated by two jobs; the job tag follows squeue.
#[test]
fn jobs_and_node_from_fake_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jobs_file = dir.path().join("jobs");
    std::fs::write(&jobs_file, "4243|bob|pall|8|1\n4242|alice|pall|8|1\n").expect("jobs");
    let squeue = script(
        dir.path(),
        "squeue",
        &format!(
            "case \"$*\" in *--nodelist=n1*--format=%i\\|%u\\|%P\\|%C\\|%D*) cat '{}' ;; *) exit 2 ;; esac\n",
            jobs_file.display()
        ),
    );
    let scontrol = script(
        dir.path(),
        "scontrol",
        &format!(
            "[ \"$1 $2 $3\" = 'show node n1' ] && cat '{}'\n",
            fixture("slurm/binfservas07.scontrol.txt").display()
        ),
    );
    let config = SlurmConfig {
        squeue: squeue.display().to_string(),
        scontrol: scontrol.display().to_string(),
        ..SlurmConfig::default()
    };
    assert!(status(&config).available);
    // Multi-threaded, as in `exawatch collect`: a current-thread runtime's handle cannot
    // drive I/O from another thread.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let jobs = SharedJobs::default();
    let mut collector = SlurmCollector::new(
        &config,
        &tags(),
        runtime.handle().clone(),
        std::sync::Arc::clone(&jobs),
    );
    let mut out = Vec::new();
    collector.collect(1_700_000_000_000_000_000, &mut out);

    assert_close(value(&out, "jobs_running", &[]), 2.0);
    let alice = [("job", "4242"), ("user", "alice"), ("partition", "pall")];
    assert_close(value(&out, "job_running", &alice), 1.0);
    assert_close(value(&out, "job_cpus", &alice), 8.0);
    assert_close(value(&out, "job_nodes", &[("job", "4243")]), 1.0);
    assert_close(value(&out, "cpus_alloc", &[]), 16.0);
    assert_close(value(&out, "cpus_total", &[]), 16.0);
    assert_close(value(&out, "cpu_load", &[]), 16.15);
    assert_close(value(&out, "mem_total_bytes", &[]), 250_000.0 * 1_048_576.0);
    assert_close(value(&out, "mem_alloc_bytes", &[]), 120_424.0 * 1_048_576.0);
    assert_close(value(&out, "mem_free_bytes", &[]), 103_877.0 * 1_048_576.0);
    let state = out.iter().find(|s| s.metric == "state").expect("state");
    assert_eq!(
        state.value,
        exawatch_protocol::Value::Text("ALLOCATED".into())
    );
    assert_eq!(jobs.read().expect("lock").as_deref(), Some("4242,4243"));
    let topic = crate::publisher::sample_topic(
        out.iter()
            .find(|s| s.metric == "job_cpus" && s.tag("job") == Some("4242"))
            .expect("job"),
    );
    assert_eq!(
        topic,
        "org/acme/cluster/c1/node/n1/plugin/slurm/chnl/data/job/4242/partition/pall/user/alice/job_cpus"
    );

    // The jobs end: the tag goes away.
    std::fs::write(&jobs_file, "").expect("jobs");
    out.clear();
    collector.collect(1_700_000_010_000_000_000, &mut out);
    assert_close(value(&out, "jobs_running", &[]), 0.0);
    assert_eq!(*jobs.read().expect("lock"), None);
}

#[test]
fn no_slurm_here() {
    let config = SlurmConfig {
        squeue: "/nonexistent/squeue".into(),
        ..SlurmConfig::default()
    };
    let status = status(&config);
    assert!(!status.available);
    assert_eq!(
        status.reason,
        "/nonexistent/squeue not found (no Slurm client here)"
    );
}
