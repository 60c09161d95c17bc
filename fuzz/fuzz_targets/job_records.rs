//! The job-record decoder and the hostlist expansion: never panic, never expand beyond
//! `MAX_HOSTLIST_NODES`, and every record kept has a valid id and a state, and reads back
//! the same from its own wire JSON (times to the microsecond: seconds are doubles there).
#![no_main]

use exawatch_protocol::job::{self, JOBS_TOPIC, MAX_HOSTLIST_NODES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(nodes) = job::expand_hostlist(text)
    {
        assert!(nodes.len() <= MAX_HOSTLIST_NODES);
    }
    let mut out = Vec::new();
    let _ = job::decode(JOBS_TOPIC.as_bytes(), data, &mut out);
    for record in out {
        assert!(job::valid_job_id(&record.id));
        assert!(!record.state.is_empty());
        let mut again = Vec::new();
        let errors = job::decode(
            JOBS_TOPIC.as_bytes(),
            record.to_json().to_string().as_bytes(),
            &mut again,
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(again.len(), 1);
        let near = |a: Option<i64>, b: Option<i64>| match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() <= 1_000 + a.abs() / 1_000_000_000_000,
            (a, b) => a == b,
        };
        let back = &again[0];
        assert!(near(back.submit_ns, record.submit_ns));
        assert!(near(back.start_ns, record.start_ns));
        assert!(near(back.end_ns, record.end_ns));
        let untimed = |r: &job::JobRecord| job::JobRecord {
            submit_ns: None,
            start_ns: None,
            end_ns: None,
            ..r.clone()
        };
        assert_eq!(untimed(back), untimed(&record));
    }
});
