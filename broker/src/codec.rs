//! MQTT packets on the wire, for both versions the broker speaks: 3.1.1 (protocol level 4)
//! and 5. Packets are read into, and written from, rumqttc's MQTT 5 types; a 3.1.1
//! connection's packets are converted at this edge, so the rest of the broker handles one
//! model. PUBLISH, the packet that carries the data, is framed here without copying its topic
//! or payload.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    self as m5, Disconnect, DisconnectReasonCode, LastWill, Login, Packet, PublishProperties,
};

/// The protocol version of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5.
    V5,
}

/// Why no packet could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// The packet is not complete yet: read more bytes.
    Incomplete,
    /// The packet (of this many bytes) is larger than allowed.
    TooLarge(usize),
    /// Not a valid packet; the connection must be closed.
    Malformed(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Incomplete => f.write_str("incomplete packet"),
            Self::TooLarge(size) => write!(f, "packet of {size} bytes is too large"),
            Self::Malformed(why) => write!(f, "malformed packet: {why}"),
        }
    }
}

/// A connection's first packet.
#[derive(Debug)]
pub(crate) struct ConnectPacket {
    pub(crate) version: Version,
    pub(crate) connect: m5::Connect,
    pub(crate) will: Option<LastWill>,
    pub(crate) login: Option<Login>,
}

/// Why a connection's first packet is refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ConnectError {
    /// A packet error (see [`ReadError`]).
    Read(ReadError),
    /// A CONNECT of a protocol level the broker does not speak (MQTT 3.1 is level 3): answered
    /// with CONNACK "unacceptable protocol version".
    UnsupportedLevel(u8),
}

impl From<ReadError> for ConnectError {
    fn from(error: ReadError) -> Self {
        Self::Read(error)
    }
}

fn malformed(why: impl std::fmt::Display) -> ReadError {
    ReadError::Malformed(why.to_string())
}

/// The first byte, fixed-header length and total length of the packet at the start of
/// `buf`. Packets larger than `max` bytes are refused as soon as their length is known.
fn frame(buf: &[u8], max: usize) -> Result<(u8, usize, usize), ReadError> {
    let Some(&first) = buf.first() else {
        return Err(ReadError::Incomplete);
    };
    let mut remaining = 0usize;
    for i in 1..5 {
        let Some(&byte) = buf.get(i) else {
            return Err(ReadError::Incomplete);
        };
        remaining |= usize::from(byte & 0x7f) << (7 * (i - 1));
        if byte & 0x80 == 0 {
            let header = i + 1;
            let total = header + remaining;
            if total > max {
                return Err(ReadError::TooLarge(total));
            }
            if buf.len() < total {
                return Err(ReadError::Incomplete);
            }
            return Ok((first, header, total));
        }
    }
    Err(malformed("remaining length longer than four bytes"))
}

/// Reads a connection's first packet, which must be a CONNECT.
pub(crate) fn read_connect(buf: &mut BytesMut, max: usize) -> Result<ConnectPacket, ConnectError> {
    if buf.first().is_some_and(|&first| first != 0x10) {
        return Err(malformed("the first packet is not a CONNECT").into());
    }
    let (_, header, total) = frame(buf, max)?;
    let body = &buf[header..total];
    let name_len = match body {
        [hi, lo, ..] => usize::from(u16::from_be_bytes([*hi, *lo])),
        _ => return Err(malformed("CONNECT without a protocol name").into()),
    };
    let (Some(name), Some(&level)) = (body.get(2..2 + name_len), body.get(2 + name_len)) else {
        return Err(malformed("CONNECT without a protocol level").into());
    };
    match (name, level) {
        (b"MQTT", 4) => match v4::Packet::read(buf, max).map_err(malformed)? {
            v4::Packet::Connect(c) => Ok(ConnectPacket {
                version: Version::V311,
                connect: m5::Connect {
                    keep_alive: c.keep_alive,
                    client_id: c.client_id,
                    clean_start: c.clean_session,
                    properties: None,
                },
                will: c.last_will.map(|w| LastWill {
                    topic: Bytes::from(w.topic),
                    message: w.message,
                    qos: qos(w.qos as u8),
                    retain: w.retain,
                    properties: None,
                }),
                login: c.login.map(|l| Login {
                    username: l.username,
                    password: l.password,
                }),
            }),
            _ => Err(malformed("the first packet is not a CONNECT").into()),
        },
        (b"MQTT", 5) => match Packet::read(buf, Some(max as u32)).map_err(malformed)? {
            Packet::Connect(connect, will, login) => Ok(ConnectPacket {
                version: Version::V5,
                connect,
                will,
                login,
            }),
            _ => Err(malformed("the first packet is not a CONNECT").into()),
        },
        (b"MQTT" | b"MQIsdp", level) => Err(ConnectError::UnsupportedLevel(level)),
        _ => Err(malformed("unknown protocol name").into()),
    }
}

/// Reads the next packet of an established connection.
pub(crate) fn read(version: Version, buf: &mut BytesMut, max: usize) -> Result<Packet, ReadError> {
    let (first, header, total) = frame(buf, max)?;
    if first >> 4 == 3 {
        let bytes = buf.split_to(total).freeze();
        return read_publish(version, first, header, bytes).map(Packet::Publish);
    }
    match version {
        // DISCONNECT without properties (and maybe without reason), which rumqttc reads as
        // an error.
        Version::V5 if first == 0xe0 && total <= 3 => {
            let reason_code = match total {
                3 => DisconnectReasonCode::try_from(buf[2]).map_err(malformed)?,
                _ => DisconnectReasonCode::NormalDisconnection,
            };
            buf.advance(total);
            Ok(Packet::Disconnect(Disconnect {
                reason_code,
                properties: None,
            }))
        }
        Version::V5 => Packet::read(buf, Some(max as u32)).map_err(malformed),
        Version::V311 => from_v4(v4::Packet::read(buf, max).map_err(malformed)?),
    }
}

/// A PUBLISH packet (`bytes` is the whole packet), topic and payload sharing its memory.
fn read_publish(
    version: Version,
    first: u8,
    header: usize,
    mut bytes: Bytes,
) -> Result<m5::Publish, ReadError> {
    let qos = match (first >> 1) & 3 {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        _ => return Err(malformed("PUBLISH with QoS 3")),
    };
    bytes.advance(header);
    let short = || malformed("PUBLISH shorter than its header");
    if bytes.len() < 2 {
        return Err(short());
    }
    let topic_len = usize::from(bytes.get_u16());
    if bytes.len() < topic_len {
        return Err(short());
    }
    let topic = bytes.split_to(topic_len);
    let pkid = if qos == QoS::AtMostOnce {
        0
    } else {
        if bytes.len() < 2 {
            return Err(short());
        }
        match bytes.get_u16() {
            0 => return Err(malformed("PUBLISH with packet identifier 0")),
            pkid => pkid,
        }
    };
    let properties = match version {
        Version::V5 => PublishProperties::read(&mut bytes).map_err(malformed)?,
        Version::V311 => None,
    };
    Ok(m5::Publish {
        dup: first & 0b1000 != 0,
        qos,
        retain: first & 1 != 0,
        topic,
        pkid,
        payload: bytes,
        properties,
    })
}

/// A 3.1.1 packet a client sends, as its MQTT 5 equivalent.
fn from_v4(packet: v4::Packet) -> Result<Packet, ReadError> {
    Ok(match packet {
        v4::Packet::PubAck(p) => Packet::PubAck(m5::PubAck {
            pkid: p.pkid,
            reason: m5::PubAckReason::Success,
            properties: None,
        }),
        v4::Packet::PubRec(p) => Packet::PubRec(m5::PubRec {
            pkid: p.pkid,
            reason: m5::PubRecReason::Success,
            properties: None,
        }),
        v4::Packet::PubRel(p) => Packet::PubRel(m5::PubRel {
            pkid: p.pkid,
            reason: m5::PubRelReason::Success,
            properties: None,
        }),
        v4::Packet::PubComp(p) => Packet::PubComp(m5::PubComp {
            pkid: p.pkid,
            reason: m5::PubCompReason::Success,
            properties: None,
        }),
        v4::Packet::Subscribe(s) => Packet::Subscribe(m5::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| m5::Filter {
                    path: f.path,
                    qos: qos(f.qos as u8),
                    nolocal: false,
                    preserve_retain: false,
                    retain_forward_rule: m5::RetainForwardRule::OnEverySubscribe,
                })
                .collect(),
            properties: None,
        }),
        v4::Packet::Unsubscribe(u) => Packet::Unsubscribe(m5::Unsubscribe {
            pkid: u.pkid,
            filters: u.topics,
            properties: None,
        }),
        v4::Packet::PingReq => Packet::PingReq(m5::PingReq),
        v4::Packet::Disconnect => Packet::Disconnect(Disconnect {
            reason_code: DisconnectReasonCode::NormalDisconnection,
            properties: None,
        }),
        v4::Packet::Connect(_) => return Err(malformed("a second CONNECT")),
        other => return Err(malformed(format!("{other:?} is not a client's packet"))),
    })
}

/// The QoS of a wire value (0, 1 or 2; larger values count as 2).
pub(crate) fn qos(value: u8) -> QoS {
    match value {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Appends `packet` to `out` as `version` spells it. A 3.1.1 client is sent no DISCONNECT
/// (that version has none from the server).
pub(crate) fn write(version: Version, packet: &Packet, out: &mut BytesMut) {
    match version {
        Version::V5 => {
            // Fails only with a size limit (none given) or packet identifier 0 (never sent).
            let _ = packet.write(out, None);
        }
        Version::V311 => write_v4(packet, out),
    }
}

fn write_v4(packet: &Packet, out: &mut BytesMut) {
    use m5::ConnectReturnCode as Code;
    let written = match packet {
        Packet::Publish(p) => {
            write_publish_v4(p, out);
            return;
        }
        Packet::ConnAck(ack) => v4::ConnAck {
            session_present: ack.session_present,
            code: match ack.code {
                Code::Success => v4::ConnectReturnCode::Success,
                Code::UnsupportedProtocolVersion | Code::RefusedProtocolVersion => {
                    v4::ConnectReturnCode::RefusedProtocolVersion
                }
                Code::ClientIdentifierNotValid | Code::BadClientId => {
                    v4::ConnectReturnCode::BadClientId
                }
                Code::BadUserNamePassword => v4::ConnectReturnCode::BadUserNamePassword,
                Code::NotAuthorized | Code::Banned => v4::ConnectReturnCode::NotAuthorized,
                _ => v4::ConnectReturnCode::ServiceUnavailable,
            },
        }
        .write(out),
        Packet::PubAck(p) => v4::PubAck { pkid: p.pkid }.write(out),
        Packet::PubRec(p) => v4::PubRec { pkid: p.pkid }.write(out),
        Packet::PubRel(p) => v4::PubRel { pkid: p.pkid }.write(out),
        Packet::PubComp(p) => v4::PubComp { pkid: p.pkid }.write(out),
        Packet::SubAck(s) => v4::SubAck {
            pkid: s.pkid,
            return_codes: s
                .return_codes
                .iter()
                .map(|code| match code {
                    m5::SubscribeReasonCode::Success(q) => {
                        v4::SubscribeReasonCode::Success(match q {
                            QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
                            QoS::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
                            QoS::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
                        })
                    }
                    _ => v4::SubscribeReasonCode::Failure,
                })
                .collect(),
        }
        .write(out),
        Packet::UnsubAck(u) => v4::UnsubAck { pkid: u.pkid }.write(out),
        Packet::PingResp(_) => {
            out.put_slice(&[0xd0, 0]);
            return;
        }
        // Not in 3.1.1 from a server, or never sent by one.
        _ => return,
    };
    debug_assert!(written.is_ok(), "{written:?}");
}

/// A 3.1.1 PUBLISH (no properties).
fn write_publish_v4(p: &m5::Publish, out: &mut BytesMut) {
    let with_id = p.qos != QoS::AtMostOnce;
    let remaining = 2 + p.topic.len() + if with_id { 2 } else { 0 } + p.payload.len();
    out.reserve(5 + remaining);
    out.put_u8(0x30 | u8::from(p.dup) << 3 | (p.qos as u8) << 1 | u8::from(p.retain));
    let mut n = remaining;
    loop {
        let byte = (n % 128) as u8;
        n /= 128;
        out.put_u8(if n > 0 { byte | 0x80 } else { byte });
        if n == 0 {
            break;
        }
    }
    out.put_u16(p.topic.len() as u16);
    out.put_slice(&p.topic);
    if with_id {
        out.put_u16(p.pkid);
    }
    out.put_slice(&p.payload);
}

/// The size `packet` takes on the wire in `version`.
pub(crate) fn size(version: Version, packet: &m5::Publish) -> usize {
    match version {
        Version::V5 => packet.size(),
        Version::V311 => {
            let remaining = 2
                + packet.topic.len()
                + if packet.qos == QoS::AtMostOnce { 0 } else { 2 }
                + packet.payload.len();
            1 + varint_len(remaining) + remaining
        }
    }
}

fn varint_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(qos: QoS, pkid: u16) -> m5::Publish {
        m5::Publish {
            dup: false,
            qos,
            retain: true,
            topic: Bytes::from_static(b"org/o/node/n1/temp"),
            pkid,
            payload: Bytes::from_static(b"40.5;1700000000.123"),
            properties: None,
        }
    }

    #[test]
    fn publish_round_trips_in_both_versions() {
        for version in [Version::V311, Version::V5] {
            for (qos, pkid) in [(QoS::AtMostOnce, 0), (QoS::AtLeastOnce, 7)] {
                let sent = publish(qos, pkid);
                let mut buf = BytesMut::new();
                write(version, &Packet::Publish(sent.clone()), &mut buf);
                assert_eq!(buf.len(), size(version, &sent));
                // Byte by byte, it is incomplete until the last one.
                let whole = buf.clone();
                for cut in 0..whole.len() {
                    let mut part = BytesMut::from(&whole[..cut]);
                    assert_eq!(
                        read(version, &mut part, 1 << 20),
                        Err(ReadError::Incomplete)
                    );
                }
                let Ok(Packet::Publish(got)) = read(version, &mut buf, 1 << 20) else {
                    panic!("not a publish");
                };
                assert_eq!(got, sent);
                assert!(buf.is_empty());
            }
        }
    }

    #[test]
    fn limits_and_garbage() {
        let mut buf = BytesMut::new();
        write(
            Version::V311,
            &Packet::Publish(publish(QoS::AtMostOnce, 0)),
            &mut buf,
        );
        assert!(matches!(
            read(Version::V311, &mut buf.clone(), 10),
            Err(ReadError::TooLarge(_))
        ));
        let mut qos3 = buf.clone();
        qos3[0] |= 0b110;
        assert!(matches!(
            read(Version::V311, &mut qos3, 1 << 20),
            Err(ReadError::Malformed(_))
        ));
        let mut long = BytesMut::from(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01][..]);
        assert!(matches!(
            read(Version::V311, &mut long, usize::MAX),
            Err(ReadError::Malformed(_))
        ));
        // A PUBLISH whose topic length runs past its end.
        let mut short = BytesMut::from(&[0x30, 0x03, 0x00, 0x09, b'a'][..]);
        assert!(matches!(
            read(Version::V311, &mut short, 1 << 20),
            Err(ReadError::Malformed(_))
        ));
    }

    #[test]
    fn short_disconnect() {
        let mut buf = BytesMut::from(&[0xe0, 0][..]);
        let Ok(Packet::Disconnect(d)) = read(Version::V5, &mut buf, 1 << 20) else {
            panic!("not a DISCONNECT");
        };
        assert_eq!(d.reason_code, DisconnectReasonCode::NormalDisconnection);
        assert!(buf.is_empty());
        // With a reason code (0x04: with will) and no properties.
        let mut buf = BytesMut::from(&[0xe0, 1, 4][..]);
        let Ok(Packet::Disconnect(d)) = read(Version::V5, &mut buf, 1 << 20) else {
            panic!("not a DISCONNECT");
        };
        assert_eq!(
            d.reason_code,
            DisconnectReasonCode::DisconnectWithWillMessage
        );
    }

    #[test]
    fn connect_of_each_level() {
        // CONNECT 3.1.1, clean session, keep-alive 0, client id "c".
        let v4 = [
            0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 0, 0, 1, b'c',
        ];
        let got = read_connect(&mut BytesMut::from(&v4[..]), 1 << 20).unwrap();
        assert_eq!(got.version, Version::V311);
        assert_eq!(got.connect.keep_alive, 0);
        assert_eq!(got.connect.client_id, "c");
        assert!(got.connect.clean_start);
        // The same in MQTT 5 (an empty property list).
        let v5 = [
            0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 0, 0, 0, 1, b'c',
        ];
        let got = read_connect(&mut BytesMut::from(&v5[..]), 1 << 20).unwrap();
        assert_eq!(got.version, Version::V5);
        assert_eq!(got.connect.client_id, "c");
        // MQTT 3.1 is refused with a reason, a HTTP request is garbage.
        let v3 = [
            0x10, 15, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 60, 0, 1, b'c',
        ];
        assert_eq!(
            read_connect(&mut BytesMut::from(&v3[..]), 1 << 20).unwrap_err(),
            ConnectError::UnsupportedLevel(3)
        );
        assert!(matches!(
            read_connect(&mut BytesMut::from(&b"GET / HTTP/1.1\r\n\r\n"[..]), 1 << 20),
            Err(ConnectError::Read(ReadError::Malformed(_)))
        ));
        for cut in 0..v4.len() {
            assert_eq!(
                read_connect(&mut BytesMut::from(&v4[..cut]), 1 << 20).unwrap_err(),
                ConnectError::Read(ReadError::Incomplete)
            );
        }
    }
}
