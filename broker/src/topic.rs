//! Topic names and filters (MQTT 3.1.1 §4.7, MQTT 5 §4.7-4.8): what is valid, what matches,
//! and the `$share/<group>/<filter>` form of shared subscriptions.

pub(crate) use exawatch_protocol::mqtt::{topic_matches as matches, valid_filter};

/// The prefix of a shared subscription's filter.
const SHARE_PREFIX: &str = "$share/";

/// A topic name a client may publish to: not empty, no wildcards, no NUL (the bytes are
/// checked to be UTF-8 as well).
pub(crate) fn valid_topic(topic: &[u8]) -> bool {
    !topic.is_empty()
        && !topic.iter().any(|b| matches!(b, b'+' | b'#' | 0))
        && std::str::from_utf8(topic).is_ok()
}

/// A subscription's filter, split into its shared-subscription group (if any) and the filter
/// proper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subscription<'a> {
    /// The group of `$share/<group>/<filter>`.
    pub(crate) group: Option<&'a str>,
    /// The filter messages are matched against.
    pub(crate) filter: &'a str,
}

/// Parses a SUBSCRIBE filter; `None` if it is invalid (including a malformed `$share/…`).
pub(crate) fn parse_subscription(full: &str) -> Option<Subscription<'_>> {
    let Some(rest) = full.strip_prefix(SHARE_PREFIX) else {
        return valid_filter(full).then_some(Subscription {
            group: None,
            filter: full,
        });
    };
    let (group, filter) = rest.split_once('/')?;
    let valid_group = !group.is_empty() && !group.contains(['+', '#']);
    (valid_group && valid_filter(filter)).then_some(Subscription {
        group: Some(group),
        filter,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_filters() {
        assert!(valid_topic(b"a/b/c"));
        assert!(valid_topic(b"/"));
        assert!(!valid_topic(b""));
        assert!(!valid_topic(b"a/+/c"));
        assert!(!valid_topic(b"a/#"));
        assert!(!valid_topic(b"a\0b"));
        assert!(!valid_topic(b"a/\xff"));

        for good in ["#", "+", "a/+/c", "a/#", "+/+", "/#", "a//b"] {
            assert!(valid_filter(good), "{good}");
        }
        for bad in ["", "a/#/c", "a+/b", "a/b#", "##", "a/\0"] {
            assert!(!valid_filter(bad), "{bad}");
        }
    }

    #[test]
    fn matching_as_the_specification_says() {
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking"
        ));
        assert!(matches("sport/#", "sport"));
        assert!(matches("#", "a/b"));
        assert!(matches("sport/+/player1", "sport/tennis/player1"));
        assert!(!matches("sport/+", "sport/tennis/player1"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(!matches("#", "$SYS/broker"));
        assert!(!matches("+/broker", "$SYS/broker"));
        assert!(matches("$SYS/#", "$SYS/broker"));
        assert!(!matches("a/b", "a/b/c"));
    }

    #[test]
    fn shared_subscriptions() {
        assert_eq!(
            parse_subscription("$share/ingest/org/#"),
            Some(Subscription {
                group: Some("ingest"),
                filter: "org/#"
            })
        );
        assert_eq!(parse_subscription("$share/g"), None);
        assert_eq!(parse_subscription("$share//a"), None);
        assert_eq!(parse_subscription("$share/g+/a"), None);
        assert_eq!(
            parse_subscription("a/+"),
            Some(Subscription {
                group: None,
                filter: "a/+"
            })
        );
    }
}
