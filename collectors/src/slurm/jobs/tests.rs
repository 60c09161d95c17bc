//! Job records from the hand-written `sacct`/`squeue` fixtures (see
//! `tests/fixtures/slurm/README.md`), and the cursor across restarts.

use super::*;
use crate::testutil::fixture;

fn read(name: &str) -> String {
    String::from_utf8_lossy(&std::fs::read(fixture(name)).expect("fixture")).into_owned()
}

fn by_id<'a>(jobs: &'a [JobRecord], id: &str) -> &'a JobRecord {
    jobs.iter().find(|j| j.id == id).expect(id)
}

const S: i64 = 1_000_000_000;

#[test]
fn sacct_fixture() {
    let jobs = parse_sacct(&read("slurm/sacct.parsable2.txt"));
    let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "4711", "4712_1", "4712_2", "4713+0", "4713+1", "4714", "4715"
        ]
    );

    let md = by_id(&jobs, "4711");
    assert_eq!(md.nodes, ["cn01", "cn02", "cn03", "cn04", "cn07"]);
    assert_eq!((md.user.as_str(), md.account.as_str()), ("ada", "chem"));
    assert_eq!((md.partition.as_str(), md.qos.as_str()), ("cpu", "normal"));
    assert_eq!(md.state, "COMPLETED");
    assert_eq!((md.exit_code, md.exit_signal), (Some(0), Some(0)));
    assert_eq!(md.submit_ns, Some(1_716_476_400 * S));
    assert_eq!(md.start_ns, Some(1_716_476_460 * S));
    assert_eq!(md.end_ns, Some(1_716_480_060 * S));
    assert_eq!(md.cpus, Some(160));
    assert_eq!(md.gpus, None);
    assert_eq!(md.mem_bytes, Some(5 * (64 << 30)), "64G per node, 5 nodes");

    let task = by_id(&jobs, "4712_1");
    assert_eq!((task.state.as_str(), task.exit_code), ("FAILED", Some(2)));
    assert_eq!(task.gpus, Some(4), "gres/gpu=4, not counted again by type");
    let timeout = by_id(&jobs, "4712_2");
    assert_eq!(timeout.nodes, ["gpu08", "gpu09"]);
    assert_eq!(timeout.exit_signal, Some(15));
    assert_eq!(timeout.mem_bytes, Some(2 * (128 << 30)), "128Gn: per node");

    let het = by_id(&jobs, "4713+0");
    assert_eq!(het.nodes, ["a1b3", "a1b4", "a2b3", "a2b4"]);
    assert_eq!(
        het.name, "het|pipe",
        "a name holding the separator stays whole"
    );
    assert_eq!(het.mem_bytes, Some((16 * 1000) << 20), "1000Mc: per CPU");

    let never = by_id(&jobs, "4714");
    assert_eq!(never.state, "CANCELLED");
    assert_eq!(never.start_ns, None);
    assert!(never.nodes.is_empty());

    let odd = by_id(&jobs, "4715");
    assert_eq!(
        odd.nodes,
        ["rack1-n009", "rack1-n010", "rack1-n011", "login2"]
    );
    assert_eq!(odd.state, "OUT_OF_MEMORY");
    assert_eq!(
        odd.name, "\u{fffd}t\u{fffd}_\u{fffd}_run",
        "invalid bytes replaced"
    );
}

#[test]
fn squeue_fixture() {
    let jobs = parse_squeue(&read("slurm/squeue.jobs.txt"));
    assert_eq!(jobs.len(), 5);
    let md = by_id(&jobs, "4720");
    assert_eq!(md.nodes, ["cn05", "cn06"]);
    assert_eq!(md.state, "RUNNING");
    assert_eq!(md.start_ns, Some(1_716_480_100 * S));
    assert_eq!(md.end_ns, None);
    assert_eq!(md.gpus, None);
    assert_eq!(md.mem_bytes, Some(2 * (64 << 30)));
    assert_eq!(by_id(&jobs, "4721_3").gpus, Some(4));
    assert_eq!(by_id(&jobs, "4722+0").nodes, ["a3b1", "a4b1"]);
    assert_eq!(by_id(&jobs, "4722+1").gpus, Some(1));
    assert_eq!(by_id(&jobs, "4722+1").name, "het|pipe");
    assert_eq!(by_id(&jobs, "4723").nodes, ["cn08", "cn09", "cn10", "cn12"]);
}

#[test]
fn memory_and_gpus() {
    assert_eq!(memory_bytes("4000M", Some(8), 1), Some(4000 << 20));
    assert_eq!(memory_bytes("2Gn", Some(8), 3), Some(6 << 30));
    assert_eq!(memory_bytes("512Mc", Some(8), 3), Some(8 * (512 << 20)));
    assert_eq!(memory_bytes("100", None, 1), Some(100 << 20));
    assert_eq!(memory_bytes("", None, 1), None);
    assert_eq!(gpus("cpu=4,gres/gpu=2,mem=8G"), Some(2));
    assert_eq!(gpus("gres/gpu:a100:4"), Some(4));
    assert_eq!(gpus("N/A"), None);
}

#[test]
fn sacct_starts_at_the_cursor_less_the_overlap_in_utc() {
    let args = sacct_args(1_716_480_060 * S);
    assert!(
        args.contains(&"--starttime=2024-05-23T16:01:00".to_owned()),
        "{args:?}"
    );
    assert!(args.contains(&format!("--format={SACCT_FORMAT}")));
}

fn decode(messages: &[Message]) -> Vec<JobRecord> {
    let mut out = Vec::new();
    for m in messages {
        assert_eq!(m.topic, "exawatch/jobs/c1");
        let errors = exawatch_protocol::job::decode(m.topic.as_bytes(), &m.payload, &mut out);
        assert!(errors.is_empty(), "{errors:?}");
    }
    out
}

#[test]
fn the_cursor_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cursor");
    let ended = parse_sacct(&read("slurm/sacct.parsable2.txt"));
    let running = parse_squeue(&read("slurm/squeue.jobs.txt"));
    let now = 1_716_490_000 * S;

    let mut poller = JobPoller::new(&file, "c1", 600 * S, 86_400 * S, now);
    assert_eq!(
        poller.cursor_ns(),
        now - 86_400 * S,
        "no cursor yet: the lookback"
    );
    let first = decode(&poller.poll(ended[..3].to_vec(), Some(running.clone())));
    assert_eq!(first.len(), 3 + 5);
    assert_eq!(first[0].cluster, "c1", "from the topic");
    assert_eq!(poller.cursor_ns(), 1_716_480_130 * S, "the latest end");
    // The same answers again publish nothing; a changed running job is published again.
    let mut changed = running.clone();
    changed[0].cpus = Some(81);
    let again = decode(&poller.poll(ended[..3].to_vec(), Some(changed)));
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].cpus, Some(81));

    // A restart: the cursor comes back from the file. The overlap is published again (the
    // store ignores what it holds) and a job that ended meanwhile is not lost.
    let mut restarted = JobPoller::new(&file, "c1", 600 * S, 86_400 * S, now + 3600 * S);
    assert_eq!(restarted.cursor_ns(), 1_716_480_130 * S);
    assert_eq!(restarted.sacct_from_ns(), (1_716_480_130 - 600) * S);
    let mut answer = ended.clone();
    answer.push(JobRecord {
        id: "4799".into(),
        end_ns: Some(1_716_481_000 * S),
        ..ended[0].clone()
    });
    let after = decode(&restarted.poll(answer.clone(), None));
    let ids: Vec<&str> = after.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["4711", "4712_2", "4799"]);
    assert_eq!(restarted.cursor_ns(), 1_716_481_000 * S);
    assert!(decode(&restarted.poll(answer, None)).is_empty());
}
