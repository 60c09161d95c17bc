//! The web console in a real browser: `exawatch up --simulate 16`, then
//! `tests/console/console.test.mjs` drives Debian's Chromium (headless, through
//! `playwright-core` from npm) over every page: the overview shows 16 nodes, a node page draws
//! charts with data, a PromQL query draws a chart, an SQL query fills a table and downloads as
//! CSV, bad queries show the API's error, the anomalies page degrades without analytics, the
//! status page shows the server's figures, a 401 brings up the login form. Screenshots of each
//! page go to `target/tmp/console-screenshots/`.
//!
//! Needs `node`, `/usr/bin/chromium` (`apt-get install chromium`) and `npm ci` in
//! `tests/console/`; `.ci/run` does all three. Without them the test fails, it does not skip.

// A `#[path]`, as `tests/console/` (the browser script) would otherwise be taken for this
// module's directory.
#[path = "support/server.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::Server;

const NODES: u64 = 16;
const CHROMIUM: &str = "/usr/bin/chromium";

fn require(what: &str, ok: bool, how: &str) {
    assert!(ok, "the console test needs {what}: {how}");
}

/// Waits until every simulated node has sent a few samples of each metric the pages show.
fn wait_for_nodes(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let query = "SELECT count(*) AS n FROM (SELECT node FROM samples WHERE metric = 'node_power' \
                 GROUP BY node HAVING count(*) >= 4)";
    loop {
        let nodes = server.count_or_zero(query);
        if nodes == NODES {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {nodes} of {NODES} simulated nodes reported within 30 s:\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn console_in_headless_chromium() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let script_dir = root.join("tests/console");
    require(
        "node",
        Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "install Node.js (Debian: apt-get install nodejs npm)",
    );
    require(
        CHROMIUM,
        Path::new(CHROMIUM).exists(),
        "apt-get install chromium",
    );
    require(
        "playwright-core",
        script_dir.join("node_modules/playwright-core").is_dir(),
        "run `npm ci` in tests/console",
    );

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &[
            "--simulate",
            &NODES.to_string(),
            "--set",
            "simulate.period_secs=0.5",
        ],
    );
    wait_for_nodes(&server);

    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    // Output to a file, not a pipe: a pipe nobody reads while waiting could fill up.
    let log_path = dir.path().join("node.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new("node")
        .arg(script_dir.join("console.test.mjs"))
        .arg(server.url(""))
        .arg(&shots)
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("node starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = std::fs::read_to_string(&log_path).unwrap_or_default();
    println!("{out}");
    println!("screenshots: {}", shots.display());
    assert!(
        status.success(),
        "console test failed ({status}):\n{out}\nserver log:\n{}",
        server.log_text()
    );
    for page in [
        "overview",
        "node",
        "query-promql",
        "query-sql",
        "query-error",
        "anomalies",
        "status",
        "login",
    ] {
        let file = shots.join(format!("{page}.png"));
        assert!(file.is_file(), "no screenshot {}", file.display());
    }
}
