//! Broker users and per-node access control. With users configured, a client must log in;
//! a user bound to a node may publish only under its own `…/node/<name>/…` subtree and
//! subscribe only to its own command topics (`…/node/<name>/…/chnl/cmd`). Other users are
//! unrestricted (bridges, Telegraf, the server's own collectors).

use std::collections::HashMap;

use prometheus_client::encoding::EncodeLabelSet;
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

/// The configured users: their passwords and the node each is bound to.
#[derive(Default)]
pub(crate) struct Users {
    users: HashMap<String, (String, Option<String>)>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users")
            .field("count", &self.users.len())
            .finish_non_exhaustive()
    }
}

/// A login that was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Login {
    /// No users are configured: anyone may connect, unrestricted.
    Anonymous,
    /// A known user, bound to a node or not.
    User { node: Option<String> },
}

impl Users {
    pub(crate) fn new(users: &[BrokerUser]) -> Self {
        Self {
            users: users
                .iter()
                .map(|u| (u.name.clone(), (u.password.clone(), u.node.clone())))
                .collect(),
        }
    }

    /// Checks a CONNECT's credentials: `None` if they are refused.
    pub(crate) fn login(&self, credentials: Option<(&str, &str)>) -> Option<Login> {
        if self.users.is_empty() {
            return Some(Login::Anonymous);
        }
        let (name, password) = credentials?;
        let (expected, node) = self.users.get(name)?;
        constant_time_eq(expected.as_bytes(), password.as_bytes())
            .then(|| Login::User { node: node.clone() })
    }
}

/// Compares without stopping at the first difference, so timing tells nothing of a password.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
