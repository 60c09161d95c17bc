//! One listener for MQTT 3.1.1 and 5: the protocol level in a connection's CONNECT packet
//! decides which of rumqttd's codecs handles the connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use bytes::BytesMut;
use rumqttd::protocol::v4::V4;
use rumqttd::protocol::v5::V5;
use rumqttd::protocol::{Error, Packet, Protocol};

use crate::acl::{Acl, ActionLabel, within};

const UNKNOWN: u8 = 0;

/// A rumqttd [`Protocol`] that speaks 3.1.1 or 5, as the client's CONNECT asks, and enforces
/// the per-node access control ([`crate::BrokerUser::node`]) on what a client publishes and
/// subscribes to: a packet outside the user's subtree closes the connection.
///
/// rumqttd clones the listener's protocol value for each connection; a clone starts
/// undecided, so every connection decides for itself.
#[derive(Debug, Default)]
pub struct AnyVersion {
    level: AtomicU8,
    acl: Option<Arc<Acl>>,
    /// The node this connection's user is bound to, once its CONNECT is read.
    node: Option<String>,
}

impl AnyVersion {
    /// A protocol value whose connections are checked against `acl`.
    pub(crate) fn with_acl(acl: Option<Arc<Acl>>) -> Self {
        Self {
            acl,
            ..Self::default()
        }
    }

    /// Refuses a packet this connection's user may not send.
    fn check(&mut self, packet: &Packet) -> Result<(), Error> {
        let Some(acl) = &self.acl else {
            return Ok(());
        };
        let (action, allowed, what) = match (packet, &self.node) {
            (Packet::Connect(_, _, _, _, login), _) => {
                self.node = login.as_ref().and_then(|l| acl.node_of(&l.username));
                return Ok(());
            }
            (Packet::Publish(publish, _), Some(node)) => {
                let topic = String::from_utf8_lossy(&publish.topic);
                ("publish", within(&topic, node, false), topic.into_owned())
            }
            (Packet::Subscribe(subscribe, _), Some(node)) => {
                let outside = subscribe
                    .filters
                    .iter()
                    .find(|f| !within(&f.path, node, true));
                (
                    "subscribe",
                    outside.is_none(),
                    outside.map(|f| f.path.clone()).unwrap_or_default(),
                )
            }
            _ => return Ok(()),
        };
        if allowed {
            return Ok(());
        }
        acl.denied.get_or_create(&ActionLabel { action }).inc();
        tracing::debug!(action, topic = %what, node = ?self.node, "Refused by the broker ACL; closing the connection.");
        Err(Error::InvalidProtocol)
    }
}

impl Clone for AnyVersion {
    fn clone(&self) -> Self {
        Self::with_acl(self.acl.clone())
    }
}

impl Protocol for AnyVersion {
    fn read_mut(&mut self, stream: &mut BytesMut, max_size: usize) -> Result<Packet, Error> {
        let packet = self.read_packet(stream, max_size)?;
        self.check(&packet)?;
        Ok(packet)
    }

    fn write(&self, packet: Packet, write: &mut BytesMut) -> Result<usize, Error> {
        if self.level.load(Ordering::Relaxed) == 5 {
            V5.write(packet, write)
        } else {
            V4.write(packet, write)
        }
    }
}

impl AnyVersion {
    fn read_packet(&mut self, stream: &mut BytesMut, max_size: usize) -> Result<Packet, Error> {
        let level = match *self.level.get_mut() {
            UNKNOWN => {
                let level = connect_level(stream)?;
                *self.level.get_mut() = level;
                level
            }
            level => level,
        };
        if level == 5 {
            V5.read_mut(stream, max_size)
        } else {
            V4.read_mut(stream, max_size)
        }
    }
}

/// The protocol level of the CONNECT packet at the start of `stream`: 3 and 4 (3.1 and
/// 3.1.1) or 5. Asks for more bytes until the level byte has arrived.
fn connect_level(stream: &[u8]) -> Result<u8, Error> {
    let need = |n: usize| {
        Err(Error::InsufficientBytes(
            n.saturating_sub(stream.len()).max(1),
        ))
    };
    let Some(&first) = stream.first() else {
        return need(2);
    };
    if first >> 4 != 1 {
        // Not a CONNECT: let the 3.1.1 codec reject it.
        return Ok(4);
    }
    // Remaining length: 1 to 4 bytes, 7 bits each.
    let mut header = 1;
    loop {
        let Some(&byte) = stream.get(header) else {
            return need(header + 1);
        };
        header += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if header > 4 {
            return Err(Error::MalformedRemainingLength);
        }
    }
    let (Some(&hi), Some(&lo)) = (stream.get(header), stream.get(header + 1)) else {
        return need(header + 2);
    };
    let level_at = header + 2 + usize::from(u16::from_be_bytes([hi, lo]));
    match stream.get(level_at) {
        None => need(level_at + 1),
        Some(&level @ 3..=5) => Ok(level),
        Some(&other) => Err(Error::InvalidProtocolLevel(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_of_connect_packets() {
        // CONNECT, remaining length 12, "MQTT", level 4, flags, keepalive, …
        let v4 = [0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 0];
        assert_eq!(connect_level(&v4).unwrap(), 4);
        let mut v5 = v4;
        v5[8] = 5;
        assert_eq!(connect_level(&v5).unwrap(), 5);
        // MQTT 3.1: "MQIsdp", level 3.
        let v3 = [
            0x10, 14, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 60,
        ];
        assert_eq!(connect_level(&v3).unwrap(), 3);
        for cut in 0..9 {
            assert!(
                matches!(connect_level(&v4[..cut]), Err(Error::InsufficientBytes(n)) if n > 0),
                "cut at {cut}"
            );
        }
        let mut bad = v4;
        bad[8] = 9;
        assert!(matches!(
            connect_level(&bad),
            Err(Error::InvalidProtocolLevel(9))
        ));
    }
}
