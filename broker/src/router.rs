//! Routing: the table of sessions, the tree of subscription filters (shared subscriptions
//! included) that says which sessions a message goes to, and the retained messages.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use rumqttc::v5::mqttbytes::QoS;
use tokio::sync::oneshot;

use crate::metrics::BrokerMetrics;
use crate::session::{Delivery, Enqueued, Message, PendingWill, Session, SubOptions};
use crate::topic::{self, Subscription};

/// One level of the subscription tree: the subscriptions whose filter ends here, and the
/// next levels (`+` and `#` are levels like any other).
#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    entries: Vec<Entry>,
}

/// One subscription in the tree.
#[derive(Debug)]
struct Entry {
    session: Arc<Session>,
    /// The group of a shared subscription (`$share/<group>/…`).
    group: Option<Box<str>>,
    options: SubOptions,
}

impl Node {
    fn node_mut(&mut self, filter: &str) -> &mut Node {
        filter.split('/').fold(self, |node, level| {
            node.children.entry(level.into()).or_default()
        })
    }

    /// Removes the entry of `session` in `group` under `levels`; true if there was one.
    /// Levels left without entries or children are removed on the way back.
    fn remove(&mut self, levels: &[&str], session: &Session, group: Option<&str>) -> bool {
        let Some((first, rest)) = levels.split_first() else {
            let before = self.entries.len();
            self.entries
                .retain(|e| !(std::ptr::eq(&*e.session, session) && e.group.as_deref() == group));
            return self.entries.len() < before;
        };
        let Some(child) = self.children.get_mut(*first) else {
            return false;
        };
        let removed = child.remove(rest, session, group);
        if child.entries.is_empty() && child.children.is_empty() {
            self.children.remove(*first);
        }
        removed
    }

    /// Pushes every node whose filter matches the topic `levels` onto `out`; `dollar`: the
    /// topic starts with `$`, so wildcards do not match its first level.
    fn matching<'a>(&'a self, levels: &[&str], dollar: bool, out: &mut Vec<&'a Node>) {
        let Some((first, rest)) = levels.split_first() else {
            out.push(self);
            // `a/#` matches `a` too.
            out.extend(self.children.get("#"));
            return;
        };
        if !dollar {
            out.extend(self.children.get("#"));
            if let Some(plus) = self.children.get("+") {
                plus.matching(rest, false, out);
            }
        }
        if let Some(child) = self.children.get(*first) {
            child.matching(rest, false, out);
        }
    }
}

/// Sessions, subscriptions and retained messages of the broker.
#[derive(Debug)]
pub(crate) struct Router {
    sessions: Mutex<HashMap<Arc<str>, Arc<Session>>>,
    tree: RwLock<Node>,
    /// Subscriptions in the tree; with none, routing is skipped.
    subscriptions: AtomicUsize,
    retained: Mutex<HashMap<Bytes, Arc<Message>>>,
    /// Turns over the members of shared subscriptions.
    share_cursor: AtomicUsize,
    /// Most messages waiting in one session's queue.
    queue_limit: usize,
    metrics: BrokerMetrics,
}

/// A session after [`Router::attach`].
#[derive(Debug)]
pub(crate) struct Attached {
    pub(crate) session: Arc<Session>,
    /// The session existed before (CONNACK's "session present").
    pub(crate) present: bool,
}

impl Router {
    pub(crate) fn new(queue_limit: usize, metrics: BrokerMetrics) -> Self {
        Self {
            sessions: Mutex::default(),
            tree: RwLock::default(),
            subscriptions: AtomicUsize::new(0),
            retained: Mutex::default(),
            share_cursor: AtomicUsize::new(0),
            queue_limit,
            metrics,
        }
    }

    /// Whether any client subscribes to anything (if not, routing is skipped).
    pub(crate) fn has_subscriptions(&self) -> bool {
        self.subscriptions.load(Ordering::Relaxed) > 0
    }

    /// Most messages waiting in one session's queue.
    pub(crate) fn queue_limit(&self) -> usize {
        self.queue_limit
    }

    /// Gives connection `connection` the session of `client_id`: a new one with
    /// `clean_start` or when there is none, else the existing one (whose connection, if any,
    /// is told to close through its takeover channel). A pending will is cancelled.
    pub(crate) fn attach(
        &self,
        client_id: &Arc<str>,
        clean_start: bool,
        connection: u64,
        expiry_secs: u32,
        takeover: oneshot::Sender<()>,
    ) -> Attached {
        let mut sessions = self.sessions.lock();
        let existing = sessions.get(client_id).cloned();
        let (session, present, discarded) = match existing {
            Some(session) if !clean_start => (session, true, None),
            old => {
                let session = Arc::new(Session::new(Arc::clone(client_id)));
                sessions.insert(Arc::clone(client_id), Arc::clone(&session));
                (session, false, old)
            }
        };
        {
            let mut state = session.state.lock();
            if let Some(previous) = state.takeover.take() {
                let _ = previous.send(());
            }
            session.set_owner(&mut state, Some(connection));
            state.takeover = Some(takeover);
            state.expiry_secs = expiry_secs;
            state.disconnected_at = None;
            state.pending_will = None;
        }
        drop(sessions);
        if let Some(old) = discarded {
            if let Some(previous) = old.state.lock().takeover.take() {
                let _ = previous.send(());
            }
            self.unsubscribe_all(&old);
        }
        Attached { session, present }
    }

    /// Ends connection `connection`'s hold on `session` (unless another connection has taken
    /// it over) with the session expiry interval it ended with. A will is returned to be
    /// published now, or kept until its delay or the session's end, whichever is first.
    pub(crate) fn detach(
        &self,
        session: &Arc<Session>,
        connection: u64,
        expiry_secs: u32,
        will: Option<(Arc<Message>, u32)>,
        now: Instant,
    ) -> Option<Arc<Message>> {
        let mut state = session.state.lock();
        if state.owner != Some(connection) {
            // Taken over: a will with a delay is cancelled by the new connection.
            return will.and_then(|(message, delay)| (delay == 0).then_some(message));
        }
        session.set_owner(&mut state, None);
        state.takeover = None;
        state.expiry_secs = expiry_secs;
        state.disconnected_at = Some(now);
        let publish_now = match will {
            Some((message, delay)) if delay > 0 && expiry_secs > 0 => {
                let delay = Duration::from_secs(u64::from(delay.min(expiry_secs)));
                state.pending_will = Some(PendingWill {
                    due: now + delay,
                    message,
                });
                None
            }
            Some((message, _)) => Some(message),
            None => None,
        };
        let ends = expiry_secs == 0;
        drop(state);
        if ends {
            self.remove_session(session);
        }
        publish_now
    }

    /// Removes `session` from the table (if it is still the one under its client id) with
    /// its subscriptions.
    fn remove_session(&self, session: &Arc<Session>) {
        {
            let mut sessions = self.sessions.lock();
            if sessions
                .get(&session.client_id)
                .is_some_and(|s| Arc::ptr_eq(s, session))
            {
                sessions.remove(&session.client_id);
            }
        }
        self.unsubscribe_all(session);
    }

    /// Ends sessions past their expiry and returns the wills now due.
    pub(crate) fn reap(&self, now: Instant) -> Vec<Arc<Message>> {
        let mut wills = Vec::new();
        let mut expired = Vec::new();
        for session in self.sessions.lock().values() {
            let mut state = session.state.lock();
            if state.owner.is_some() {
                continue;
            }
            let ends = state.expired(now);
            if ends || state.pending_will.as_ref().is_some_and(|w| w.due <= now) {
                wills.extend(state.pending_will.take().map(|w| w.message));
            }
            if ends {
                expired.push(Arc::clone(session));
            }
        }
        for session in &expired {
            self.remove_session(session);
        }
        wills
    }

    /// Adds (or replaces) `session`'s subscription to `full` (as subscribed, parsed into
    /// `subscription`); true if it is new.
    pub(crate) fn subscribe(
        &self,
        session: &Arc<Session>,
        full: &str,
        subscription: &Subscription<'_>,
        options: SubOptions,
    ) -> bool {
        let group: Option<Box<str>> = subscription.group.map(Box::from);
        let new = {
            let mut tree = self.tree.write();
            let node = tree.node_mut(subscription.filter);
            match node
                .entries
                .iter_mut()
                .find(|e| Arc::ptr_eq(&e.session, session) && e.group == group)
            {
                Some(entry) => {
                    entry.options = options;
                    false
                }
                None => {
                    node.entries.push(Entry {
                        session: Arc::clone(session),
                        group,
                        options,
                    });
                    true
                }
            }
        };
        if new {
            self.subscriptions.fetch_add(1, Ordering::Relaxed);
        }
        session
            .state
            .lock()
            .subscriptions
            .insert(full.to_owned(), options);
        new
    }

    /// Removes `session`'s subscription to `full`; true if it had one.
    pub(crate) fn unsubscribe(&self, session: &Arc<Session>, full: &str) -> bool {
        let known = session.state.lock().subscriptions.remove(full).is_some();
        if known {
            self.remove_from_tree(session, full);
        }
        known
    }

    fn unsubscribe_all(&self, session: &Arc<Session>) {
        let filters = std::mem::take(&mut session.state.lock().subscriptions);
        for full in filters.keys() {
            self.remove_from_tree(session, full);
        }
    }

    fn remove_from_tree(&self, session: &Session, full: &str) {
        let Some(subscription) = topic::parse_subscription(full) else {
            return;
        };
        let levels: Vec<&str> = subscription.filter.split('/').collect();
        if self
            .tree
            .write()
            .remove(&levels, session, subscription.group)
        {
            self.subscriptions.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Queues `message` for every session subscribed to its topic: once per session with the
    /// highest QoS of its matching subscriptions and all their identifiers, and to one member
    /// of each shared subscription. `origin` is the publishing client (for no-local).
    pub(crate) fn route(&self, message: &Arc<Message>, origin: &str) {
        if !self.has_subscriptions() {
            return;
        }
        let topic = message.topic_str();
        let levels: Vec<&str> = topic.split('/').collect();
        let mut targets: Vec<(Arc<Session>, Delivery)> = Vec::new();
        {
            let tree = self.tree.read();
            let mut nodes = Vec::new();
            tree.matching(&levels, topic.starts_with('$'), &mut nodes);
            for node in nodes {
                let mut groups: Vec<(&str, Vec<&Entry>)> = Vec::new();
                for entry in &node.entries {
                    match entry.group.as_deref() {
                        Some(group) => match groups.iter_mut().find(|(g, _)| *g == group) {
                            Some((_, members)) => members.push(entry),
                            None => groups.push((group, vec![entry])),
                        },
                        None => {
                            if entry.options.no_local && &*entry.session.client_id == origin {
                                continue;
                            }
                            self.merge(&mut targets, message, entry);
                        }
                    }
                }
                for (_, members) in groups {
                    let start = self.share_cursor.fetch_add(1, Ordering::Relaxed);
                    let chosen = (0..members.len())
                        .map(|i| members[(start + i) % members.len()])
                        .find(|m| m.session.is_online())
                        .unwrap_or(members[start % members.len()]);
                    targets.push((Arc::clone(&chosen.session), delivery(message, chosen)));
                }
            }
        }
        for (session, delivery) in targets {
            if session.enqueue(delivery, self.queue_limit) == Enqueued::QueueFull {
                self.metrics.dropped("queue_full");
            }
        }
    }

    /// Adds `entry`'s session to `targets`, or raises its QoS and adds the subscription
    /// identifier if it is there already (overlapping subscriptions).
    fn merge(
        &self,
        targets: &mut Vec<(Arc<Session>, Delivery)>,
        message: &Arc<Message>,
        entry: &Entry,
    ) {
        let Some((_, existing)) = targets
            .iter_mut()
            .find(|(s, d)| Arc::ptr_eq(s, &entry.session) && d.subscription_ids.len() < 64)
        else {
            targets.push((Arc::clone(&entry.session), delivery(message, entry)));
            return;
        };
        let more = delivery(message, entry);
        existing.qos = higher(existing.qos, more.qos);
        existing.retain |= more.retain;
        existing.subscription_ids.extend(more.subscription_ids);
    }

    /// Keeps `message` as its topic's retained message (an empty payload deletes it).
    pub(crate) fn retain(&self, message: &Arc<Message>) {
        let mut retained = self.retained.lock();
        if message.payload.is_empty() {
            retained.remove(&message.topic);
            return;
        }
        // A copy, so that a long-kept message does not pin the read buffer it arrived in.
        let kept = Message {
            topic: Bytes::copy_from_slice(&message.topic),
            payload: Bytes::copy_from_slice(&message.payload),
            qos: message.qos,
            retain: true,
            properties: message.properties.clone(),
            expires_at: message.expires_at,
        };
        retained.insert(kept.topic.clone(), Arc::new(kept));
    }

    /// The retained messages whose topic matches `filter` (expired ones are forgotten).
    pub(crate) fn retained_matching(&self, filter: &str, now: Instant) -> Vec<Arc<Message>> {
        let mut retained = self.retained.lock();
        retained.retain(|_, m| !m.expired(now));
        retained
            .values()
            .filter(|m| topic::matches(filter, m.topic_str()))
            .cloned()
            .collect()
    }
}

/// `message` as sent through subscription `entry`.
fn delivery(message: &Arc<Message>, entry: &Entry) -> Delivery {
    Delivery {
        message: Arc::clone(message),
        qos: lower(message.qos, entry.options.qos),
        retain: message.retain && entry.options.retain_as_published,
        subscription_ids: entry.options.id.into_iter().collect(),
    }
}

/// The higher of two QoS levels.
pub(crate) fn higher(a: QoS, b: QoS) -> QoS {
    if (a as u8) >= (b as u8) { a } else { b }
}

/// The lower of two QoS levels.
pub(crate) fn lower(a: QoS, b: QoS) -> QoS {
    if (a as u8) <= (b as u8) { a } else { b }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(topic: &'static str, qos: QoS) -> Arc<Message> {
        Arc::new(Message {
            topic: Bytes::from_static(topic.as_bytes()),
            payload: Bytes::from_static(b"1"),
            qos,
            retain: false,
            properties: None,
            expires_at: None,
        })
    }

    fn options(qos: QoS, id: Option<usize>) -> SubOptions {
        SubOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            id,
        }
    }

    fn online(router: &Router, id: &str, connection: u64) -> Arc<Session> {
        let (tx, _rx) = oneshot::channel();
        router.attach(&id.into(), true, connection, 0, tx).session
    }

    fn subscribe(router: &Router, session: &Arc<Session>, full: &str, options: SubOptions) {
        let parsed = topic::parse_subscription(full).unwrap();
        router.subscribe(session, full, &parsed, options);
    }

    fn queued(session: &Session) -> Vec<(QoS, Vec<usize>)> {
        session
            .state
            .lock()
            .queue
            .drain(..)
            .map(|d| (d.qos, d.subscription_ids))
            .collect()
    }

    #[test]
    fn overlapping_subscriptions_deliver_once_with_the_highest_qos() {
        let router = Router::new(100, BrokerMetrics::default());
        let a = online(&router, "a", 1);
        subscribe(&router, &a, "t/#", options(QoS::ExactlyOnce, Some(2)));
        subscribe(&router, &a, "t/+", options(QoS::AtLeastOnce, Some(3)));
        subscribe(&router, &a, "other", options(QoS::ExactlyOnce, None));
        router.route(&message("t/x", QoS::ExactlyOnce), "publisher");
        let got = queued(&a);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, QoS::ExactlyOnce);
        let mut ids = got[0].1.clone();
        ids.sort();
        assert_eq!(ids, [2, 3]);
        // The message's QoS caps the subscription's.
        router.route(&message("t/x", QoS::AtMostOnce), "publisher");
        assert_eq!(queued(&a)[0].0, QoS::AtMostOnce);
    }

    #[test]
    fn shared_subscriptions_take_turns_and_unsubscribing_prunes() {
        let router = Router::new(100, BrokerMetrics::default());
        let a = online(&router, "a", 1);
        let b = online(&router, "b", 2);
        for s in [&a, &b] {
            subscribe(
                &router,
                s,
                "$share/g/data/#",
                options(QoS::AtLeastOnce, None),
            );
        }
        for _ in 0..10 {
            router.route(&message("data/x", QoS::AtLeastOnce), "p");
        }
        assert_eq!(queued(&a).len() + queued(&b).len(), 10);
        router.route(&message("data/x", QoS::AtLeastOnce), "p");
        router.route(&message("data/x", QoS::AtLeastOnce), "p");
        assert_eq!((queued(&a).len(), queued(&b).len()), (1, 1), "in turn");

        assert!(router.unsubscribe(&a, "$share/g/data/#"));
        assert!(!router.unsubscribe(&a, "$share/g/data/#"));
        router.route(&message("data/x", QoS::AtLeastOnce), "p");
        assert_eq!((queued(&a).len(), queued(&b).len()), (0, 1));
        assert!(router.unsubscribe(&b, "$share/g/data/#"));
        assert!(
            router.tree.read().children.is_empty(),
            "empty levels pruned"
        );
        assert_eq!(router.subscriptions.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn dollar_topics_and_no_local() {
        let router = Router::new(100, BrokerMetrics::default());
        let a = online(&router, "a", 1);
        subscribe(&router, &a, "#", options(QoS::AtLeastOnce, None));
        router.route(&message("$SYS/x", QoS::AtLeastOnce), "p");
        assert!(queued(&a).is_empty());
        let no_local = SubOptions {
            no_local: true,
            ..options(QoS::AtLeastOnce, None)
        };
        subscribe(&router, &a, "#", no_local);
        router.route(&message("t", QoS::AtLeastOnce), "a");
        assert!(queued(&a).is_empty());
        router.route(&message("t", QoS::AtLeastOnce), "b");
        assert_eq!(queued(&a).len(), 1);
    }

    #[test]
    fn sessions_expire_and_wills_wait_for_their_delay() {
        let router = Router::new(100, BrokerMetrics::default());
        let now = Instant::now();
        let (tx, _rx) = oneshot::channel();
        let a = router.attach(&"a".into(), true, 1, 10, tx).session;
        subscribe(&router, &a, "t", options(QoS::AtLeastOnce, None));
        let will = message("will", QoS::AtMostOnce);
        assert!(
            router
                .detach(&a, 1, 10, Some((Arc::clone(&will), 3)), now)
                .is_none(),
            "delayed"
        );
        assert!(router.reap(now + Duration::from_secs(2)).is_empty());
        assert_eq!(router.reap(now + Duration::from_secs(3)).len(), 1);
        // Resumed before it expires: present, subscriptions kept.
        let (tx, _rx) = oneshot::channel();
        let again = router.attach(&"a".into(), false, 2, 10, tx);
        assert!(again.present);
        assert!(Arc::ptr_eq(&again.session, &a));
        router.detach(&a, 2, 10, None, now);
        assert!(router.reap(now + Duration::from_secs(9)).is_empty());
        router.reap(now + Duration::from_secs(10));
        assert!(router.sessions.lock().is_empty());
        assert_eq!(router.subscriptions.load(Ordering::Relaxed), 0);
        // Session expiry 0: the will goes at once, the session ends.
        let (tx, _rx) = oneshot::channel();
        let b = router.attach(&"b".into(), true, 3, 0, tx).session;
        assert!(router.detach(&b, 3, 0, Some((will, 5)), now).is_some());
        assert!(router.sessions.lock().is_empty());
    }

    #[test]
    fn retained_messages() {
        let router = Router::new(100, BrokerMetrics::default());
        router.retain(&message("a/b", QoS::AtLeastOnce));
        router.retain(&message("a/c", QoS::AtMostOnce));
        let now = Instant::now();
        assert_eq!(router.retained_matching("a/+", now).len(), 2);
        assert_eq!(router.retained_matching("a/b", now).len(), 1);
        router.retain(&Arc::new(Message {
            payload: Bytes::new(),
            ..Arc::try_unwrap(message("a/b", QoS::AtMostOnce)).unwrap()
        }));
        assert_eq!(router.retained_matching("#", now).len(), 1);
    }
}
