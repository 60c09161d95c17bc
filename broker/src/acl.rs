//! Broker users and per-node access control. With users configured, a client must log in;
//! a user bound to a node may publish only under its own `…/node/<name>/…` subtree and
//! subscribe only to its own command topics (`…/node/<name>/…/chnl/cmd`). Other users are
//! unrestricted (bridges, Telegraf, the server's own collectors).

use std::collections::HashMap;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::{Deserialize, Serialize};

/// One broker user (`[[broker.users]]`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerUser {
    /// MQTT user name.
    pub name: String,
    /// MQTT password.
    pub password: String,
    /// The node this user publishes for; absent: unrestricted.
    #[serde(default)]
    pub node: Option<String>,
}

impl std::fmt::Debug for BrokerUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerUser")
            .field("name", &self.name)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ActionLabel {
    pub(crate) action: &'static str,
}

/// The node each user is bound to, and the denial counter.
#[derive(Debug, Default)]
pub(crate) struct Acl {
    nodes: HashMap<String, Option<String>>,
    pub(crate) denied: Family<ActionLabel, Counter>,
}

impl Acl {
    pub(crate) fn new(users: &[BrokerUser]) -> Self {
        Self {
            nodes: users
                .iter()
                .map(|u| (u.name.clone(), u.node.clone()))
                .collect(),
            denied: Family::default(),
        }
    }

    /// The node `user` is bound to (`None`: unrestricted or unknown; unknown users are
    /// refused at login by the broker).
    pub(crate) fn node_of(&self, user: &str) -> Option<String> {
        self.nodes.get(user).cloned().flatten()
    }
}

/// Whether `topic` (a topic or a filter) has the pair `node/<node>` at a key position and,
/// with `command`, the pair `chnl/cmd`; wildcards may not stand for either.
pub(crate) fn within(topic: &str, node: &str, command: bool) -> bool {
    let segments: Vec<&str> = topic.split('/').collect();
    let has = |key: &str, value: &str| {
        segments.chunks_exact(2).any(|pair| {
            pair[0] == key
                && (pair[1] == value
                    || percent_encoding::percent_decode_str(pair[1])
                        .decode_utf8()
                        .is_ok_and(|v| v == value))
        })
    };
    let wildcard_before_node = segments
        .iter()
        .position(|s| *s == "#")
        .is_some_and(|hash| !segments[..hash].contains(&"node"));
    !wildcard_before_node && has("node", node) && (!command || has("chnl", "cmd"))
}

#[cfg(test)]
mod tests {
    use super::within;

    #[test]
    fn node_subtrees() {
        let data = "org/o/cluster/c/node/n01/plugin/linux/chnl/data/core/0/util";
        assert!(within(data, "n01", false));
        assert!(!within(data, "n02", false));
        // The name must be a value at a key position, not anywhere.
        assert!(!within("org/node/n01/m", "n01", false));
        assert!(within("org/node%2Fa/node/n%2001/m", "n 01", false));
        assert!(!within("org/+/node/+/chnl/cmd", "n01", true));
        assert!(within(
            "org/o/cluster/c/node/n01/plugin/+/chnl/cmd",
            "n01",
            true
        ));
        assert!(!within(
            "org/o/cluster/c/node/n01/plugin/+/chnl/data",
            "n01",
            true
        ));
        assert!(!within("#", "n01", true));
    }
}
