//! The broker's MQTT 3.1.1/5 packet decoding (a CONNECT, then any packets) as a connection
//! reads it: never panics, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let packets = exawatch_broker::read_client_bytes(data);
    assert!(packets <= data.len() / 2 + 1, "a packet takes at least two bytes");
});
