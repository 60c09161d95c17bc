//! The sampling scheduler: one task per family, each on its own period, and EXAMON's
//! command channel that changes a period or switches a family on or off at run time.
//!
//! A family's [`Collector::collect`] runs on tokio's blocking pool, so a slow family (a
//! BMC over the network, a stuck filesystem) delays only itself, never the others or the
//! publisher. Periods follow `MissedTickBehavior::Skip`: a collection that overruns its
//! period skips the ticks it missed.
//!
//! Commands arrive on `org/<org>/cluster/<cluster>/node/<node>/plugin/<family>/chnl/cmd`
//! with payloads `-s <seconds>` (new period, as EXAMON's plugins take it), `on` or `off`.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use exawatch_protocol::Sample;
use exawatch_protocol::examon::encode_topic;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::publisher::{Message, Publisher};
use crate::{Collector, NodeTags};

/// The job ids running on this node, comma-separated, as the `slurm` family last saw them.
pub(crate) type SharedJobs = Arc<RwLock<Option<String>>>;

/// Messages other than samples that families hand over for publishing (the `slurm`
/// family's job records); drained after every collection.
pub(crate) type Outbox = Arc<std::sync::Mutex<Vec<Message>>>;

/// Publishes what waits in `outbox`.
pub(crate) fn publish_outbox(publisher: &Publisher, outbox: &Outbox) {
    let messages = std::mem::take(&mut *outbox.lock().unwrap_or_else(PoisonError::into_inner));
    if !messages.is_empty() {
        publisher.publish_many(messages);
    }
}

/// Commands a family task may receive at most before the dispatcher drops them.
const COMMAND_QUEUE: usize = 8;

/// A command from `.../plugin/<family>/chnl/cmd`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Command {
    /// `-s <seconds>`: sample every this often from now on.
    Period(Duration),
    /// `on` / `off`.
    Enable(bool),
}

/// Parses a command payload; the error says what was wrong.
pub(crate) fn parse_command(payload: &[u8]) -> Result<Command, String> {
    let text = std::str::from_utf8(payload).map_err(|_| "not UTF-8".to_owned())?;
    let mut words = text.split_ascii_whitespace();
    match words.next() {
        Some("-s") => {
            let secs = words
                .next()
                .and_then(|w| w.parse::<f64>().ok())
                .ok_or_else(|| format!("{text:?}: -s needs a number of seconds"))?;
            crate::period(secs)
                .map(Command::Period)
                .map_err(|e| e.to_string())
        }
        Some("on") => Ok(Command::Enable(true)),
        Some("off") => Ok(Command::Enable(false)),
        _ => Err(format!(
            "{text:?}: unknown command (use -s SECONDS, on or off)"
        )),
    }
}

/// The topic filter that matches every family's command topic of this node.
pub(crate) fn command_filter(tags: &NodeTags) -> String {
    let prefix = encode_topic(
        [
            ("org", tags.org.as_str()),
            ("cluster", tags.cluster.as_str()),
            ("node", tags.node.as_str()),
        ],
        "plugin",
    );
    format!("{prefix}/+/chnl/cmd")
}

/// The family a command topic matched by [`command_filter`] is for.
pub(crate) fn command_family<'a>(filter: &str, topic: &'a str) -> Option<&'a str> {
    let prefix = filter.strip_suffix("+/chnl/cmd")?;
    topic.strip_prefix(prefix)?.strip_suffix("/chnl/cmd")
}

/// Adds the `job` tag (keeping tags sorted), unless the sample has one.
pub(crate) fn tag_job(sample: &mut Sample, job: &str) {
    if let Err(at) = sample.tags.binary_search_by(|(k, _)| k.as_str().cmp("job")) {
        sample.tags.insert(at, ("job".to_owned(), job.to_owned()));
    }
}

/// Builds a family's collector; called when the family is first switched on.
pub(crate) type Builder = Box<dyn Fn() -> Result<Box<dyn Collector>, String> + Send + Sync>;

/// One family as the scheduler runs it.
pub(crate) struct FamilyTask {
    /// The family name.
    pub(crate) name: &'static str,
    /// Whether it samples now.
    pub(crate) enabled: bool,
    /// Its current period.
    pub(crate) period: Duration,
    /// Makes the collector the first time the family samples.
    pub(crate) build: Builder,
    /// Whether its samples get the `job` tag.
    pub(crate) tag_jobs: bool,
}

impl std::fmt::Debug for FamilyTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FamilyTask")
            .field("name", &self.name)
            .field("enabled", &self.enabled)
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

/// Runs one family until `stop` turns true (or its sender goes away).
pub(crate) async fn drive(
    mut task: FamilyTask,
    publisher: Arc<Publisher>,
    jobs: SharedJobs,
    outbox: Outbox,
    mut commands: mpsc::Receiver<Command>,
    mut stop: watch::Receiver<bool>,
) {
    let mut collector: Option<Box<dyn Collector>> = None;
    let mut broken = false;
    let mut next = Instant::now();
    loop {
        let due = task.enabled && !broken;
        tokio::select! {
            () = stopped(&mut stop) => return,
            command = commands.recv() => {
                let Some(command) = command else { return };
                apply(&mut task, command, &mut next);
            }
            () = tokio::time::sleep_until(next), if due => {
                let mut owned = match collector.take() {
                    Some(c) => c,
                    None => match (task.build)() {
                        Ok(c) => c,
                        Err(reason) => {
                            warn!(family = task.name, %reason, "Collector family cannot start; it stays off.");
                            broken = true;
                            continue;
                        }
                    },
                };
                let now = exawatch_protocol::time::now_ns();
                let result = tokio::task::spawn_blocking(move || {
                    let mut samples = Vec::new();
                    owned.collect(now, &mut samples);
                    (owned, samples)
                })
                .await;
                match result {
                    Ok((back, samples)) => {
                        collector = Some(back);
                        publish(&publisher, samples, task.tag_jobs.then_some(&jobs));
                        publish_outbox(&publisher, &outbox);
                    }
                    Err(error) => {
                        warn!(family = task.name, %error, "Collector family failed; it stays off.");
                        broken = true;
                    }
                }
                next += task.period;
                let now = Instant::now();
                if next <= now {
                    // Overran: skip the missed ticks.
                    next = now + task.period;
                }
            }
        }
    }
}

/// Resolves once `stop` is true or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Applies a command to a family's schedule.
fn apply(task: &mut FamilyTask, command: Command, next: &mut Instant) {
    match command {
        Command::Period(period) => {
            info!(
                family = task.name,
                period_secs = period.as_secs_f64(),
                "Sampling period changed by command."
            );
            task.period = period;
            *next = Instant::now() + period;
        }
        Command::Enable(enabled) => {
            if enabled != task.enabled {
                info!(family = task.name, enabled, "Family switched by command.");
                if enabled {
                    *next = Instant::now();
                }
            }
            task.enabled = enabled;
        }
    }
}

/// Hands samples to the publisher, tagged with the running jobs when there are some.
pub(crate) fn publish(publisher: &Publisher, mut samples: Vec<Sample>, jobs: Option<&SharedJobs>) {
    let job = jobs.and_then(|jobs| jobs.read().unwrap_or_else(PoisonError::into_inner).clone());
    for sample in &mut samples {
        if let Some(job) = &job {
            tag_job(sample, job);
        }
        publisher.publish_sample(sample);
    }
}

/// Routes command messages to the family tasks until the channel closes.
pub(crate) async fn dispatch(
    mut incoming: mpsc::Receiver<Message>,
    filter: String,
    families: Vec<(&'static str, mpsc::Sender<Command>)>,
) {
    while let Some(message) = incoming.recv().await {
        let Some(family) = command_family(&filter, &message.topic) else {
            debug!(topic = %message.topic, "Message on an unexpected topic ignored.");
            continue;
        };
        let Some((_, sender)) = families.iter().find(|(name, _)| *name == family) else {
            warn!(
                family,
                "Command for a family that does not run here ignored."
            );
            continue;
        };
        match parse_command(&message.payload) {
            Ok(command) => {
                if sender.try_send(command).is_err() {
                    warn!(family, "Command dropped: the family has too many pending.");
                }
            }
            Err(reason) => warn!(family, %reason, "Bad command ignored."),
        }
    }
}

/// A bounded command queue for one family.
pub(crate) fn command_channel() -> (mpsc::Sender<Command>, mpsc::Receiver<Command>) {
    mpsc::channel(COMMAND_QUEUE)
}

#[cfg(test)]
mod tests {
    use exawatch_protocol::Value;

    use super::*;

    #[test]
    fn commands_as_examon_sends_them() {
        assert_eq!(
            parse_command(b"-s 2"),
            Ok(Command::Period(Duration::from_secs(2)))
        );
        assert_eq!(
            parse_command(b" -s 0.5\n"),
            Ok(Command::Period(Duration::from_millis(500)))
        );
        assert_eq!(parse_command(b"on"), Ok(Command::Enable(true)));
        assert_eq!(parse_command(b"off\n"), Ok(Command::Enable(false)));
        for bad in [
            &b"-s"[..],
            b"-s x",
            b"-s 0",
            b"-s -1",
            b"reboot",
            b"",
            b"\xff",
        ] {
            assert!(parse_command(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn command_topics_of_this_node() {
        let tags = NodeTags {
            org: "acme".into(),
            cluster: "c 1".into(),
            node: "n1".into(),
        };
        let filter = command_filter(&tags);
        assert_eq!(filter, "org/acme/cluster/c%201/node/n1/plugin/+/chnl/cmd");
        assert_eq!(
            command_family(
                &filter,
                "org/acme/cluster/c%201/node/n1/plugin/rapl/chnl/cmd"
            ),
            Some("rapl")
        );
        assert_eq!(
            command_family(
                &filter,
                "org/acme/cluster/c%201/node/n2/plugin/rapl/chnl/cmd"
            ),
            None
        );
        assert_eq!(
            command_family(
                &filter,
                "org/acme/cluster/c%201/node/n1/plugin/rapl/chnl/data"
            ),
            None
        );
    }

    #[test]
    fn job_tag_keeps_tags_sorted() {
        let mut sample = Sample::new(
            "load1",
            vec![
                ("node".into(), "n1".into()),
                ("plugin".into(), "linux".into()),
                ("chnl".into(), "data".into()),
            ],
            1,
            Value::Float(1.0),
        );
        tag_job(&mut sample, "4242,4243");
        let keys: Vec<&str> = sample.tags.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["chnl", "job", "node", "plugin"]);
        assert_eq!(sample.tag("job"), Some("4242,4243"));
        // A sample that has its own job tag (slurm's) keeps it.
        tag_job(&mut sample, "other");
        assert_eq!(sample.tag("job"), Some("4242,4243"));
    }

    /// A family task samples on its period, follows `-s` and `off`/`on`, and stops.
    #[tokio::test(start_paused = true)]
    async fn commands_change_a_running_family() {
        use std::sync::atomic::{AtomicU32, Ordering};

        #[derive(Debug)]
        struct Counting(Arc<AtomicU32>);
        impl Collector for Counting {
            fn name(&self) -> &'static str {
                "counting"
            }
            fn collect(&mut self, _now_ns: i64, _out: &mut Vec<Sample>) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }

        let count = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&count);
        let task = FamilyTask {
            name: "counting",
            enabled: true,
            period: Duration::from_secs(10),
            build: Box::new(move || {
                Ok(Box::new(Counting(Arc::clone(&counter))) as Box<dyn Collector>)
            }),
            tag_jobs: false,
        };
        let publisher = Arc::new(
            Publisher::start(crate::publisher::PublisherConfig {
                connection: crate::MqttConnection::anonymous("127.0.0.1:9"),
                client_id: "t".into(),
                qos: 0,
                offline_buffer_messages: 10,
            })
            .expect("publisher"),
        );
        let (tx, rx) = command_channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        let handle = tokio::spawn(drive(
            task,
            publisher,
            SharedJobs::default(),
            Outbox::default(),
            rx,
            stop_rx,
        ));
        let settle = || async {
            for _ in 0..20 {
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        settle().await;
        assert_eq!(count.load(Ordering::SeqCst), 1, "samples at once");
        tokio::time::sleep(Duration::from_secs(10)).await;
        settle().await;
        assert_eq!(count.load(Ordering::SeqCst), 2, "then every 10 s");
        tx.send(Command::Period(Duration::from_secs(1)))
            .await
            .expect("send");
        tokio::time::sleep(Duration::from_millis(3500)).await;
        settle().await;
        assert_eq!(count.load(Ordering::SeqCst), 5, "-s 1: every second");
        tx.send(Command::Enable(false)).await.expect("send");
        tokio::time::sleep(Duration::from_secs(5)).await;
        settle().await;
        assert_eq!(count.load(Ordering::SeqCst), 5, "off: no samples");
        tx.send(Command::Enable(true)).await.expect("send");
        settle().await;
        assert_eq!(count.load(Ordering::SeqCst), 6, "on: samples again at once");
        stop_tx.send_replace(true);
        handle.await.expect("task ends");
    }
}
