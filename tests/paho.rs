//! Eclipse Paho's MQTT interoperability suites (3.1.1 and 5, `tests/paho/`) against the
//! embedded broker of `exawatch up`. Debian's mosquitto 2.0.11 passes 8 of the 10 tests of
//! the 3.1.1 suite and 21 of the 27 of the MQTT 5 suite on this kind of machine; the broker
//! must pass at least as many, and the tests named below must pass.

// By path: rustfmt would look for an inline `support` module under tests/paho/.
#[path = "support/server.rs"]
mod server;

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use server::Server;

/// The suites run one at a time: each is timed with sleeps, and two suites and two servers
/// on a 2-core machine stretch the races named in [`RACY`].
static ONE_SUITE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `suite` against a fresh server; the names of the tests that passed and failed.
fn run_suite(suite: &str) -> (Vec<String>, Vec<String>) {
    let _turn = ONE_SUITE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let runner = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/paho/run_suite.py");
    let output = Command::new("python3")
        .arg(&runner)
        .args([suite, "127.0.0.1", &server.mqtt.to_string()])
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        stdout
            .lines()
            .last()
            .is_some_and(|l| l.ends_with(" failed")),
        "the suite did not finish:\n{stdout}\n{log}"
    );
    let names = |mark: &str| {
        stdout
            .lines()
            .filter_map(|l| l.strip_prefix(mark))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let (passed, failed) = (names("PASS "), names("FAIL "));
    if !failed.is_empty() {
        eprintln!("{suite}: failed {failed:?}\n{log}");
    }
    assert!(
        server.terminate().success(),
        "the server stops cleanly after the suite"
    );
    (passed, failed)
}

/// Tests that may fail through no fault of the broker: each has client B subscribe (or
/// unsubscribe) and, without waiting for B's SUBACK (UNSUBACK), has client A publish the
/// message B should (should not) receive; the first two wait on client A's callback by
/// mistake, the third waits for nothing. MQTT orders nothing across connections, and a
/// broker reading its connections on several threads may see A's PUBLISH first. Seen on a
/// loaded 2-core CI machine for `test_request_response` and `test_unsubscribe` in one run.
const RACY: [&str; 3] = [
    "test_request_response",
    "test_subscribe_options",
    "test_unsubscribe",
];

#[test]
fn paho_mqtt_3_1_1_suite() {
    let (passed, failed) = run_suite("client_test");
    // Every test but the one of subscribe failure, which needs a topic the broker refuses to
    // anyone (Paho's own test broker refuses `test/nosubscribe`; ours refuses per user).
    // Its `test_unsubscribe` has the race of the MQTT 5 one (see [`RACY`]).
    let lost_race = failed.iter().any(|name| name == "test_unsubscribe");
    let expected: &[&str] = if lost_race {
        &["test_subscribe_failure", "test_unsubscribe"]
    } else {
        &["test_subscribe_failure"]
    };
    assert_eq!(failed, expected, "passed: {passed:?}");
    assert_eq!(
        passed.len() + failed.len(),
        10,
        "every test of the suite ran"
    );
}

#[test]
fn paho_mqtt_5_suite() {
    let (passed, failed) = run_suite("client_test5");
    assert!(
        failed
            .iter()
            .all(|name| name == "test_subscribe_failure" || RACY.contains(&name.as_str())),
        "failed: {failed:?}"
    );
    assert!(failed.contains(&"test_subscribe_failure".to_owned()));
    // Every test ran, and all but the racy ones passed: at least 23 of 27, where Debian's
    // mosquitto 2.0.11 passes 21.
    assert_eq!(
        passed.len() + failed.len(),
        27,
        "every test of the suite ran"
    );
}
