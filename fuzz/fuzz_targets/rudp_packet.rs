//! `rudp::Packet::parse` on arbitrary bytes: whatever parses re-encodes to
//! exactly the input (one packet has one wire form), and parses again to
//! the same packet.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sockloop::rudp::packet::DATA_HEADER;
use sockloop::rudp::{Packet, PacketError};

const MAX_PAYLOAD: usize = 1200;

fuzz_target!(|data: &[u8]| {
    let parsed = Packet::parse(data, MAX_PAYLOAD);
    // The limit only ever refuses data payloads over it.
    let unlimited = Packet::parse(data, usize::MAX);
    match parsed {
        Ok(packet) => {
            let mut out = Vec::new();
            packet.encode(&mut out);
            assert_eq!(out, data, "{packet:?} re-encodes differently");
            assert_eq!(Packet::parse(&out, MAX_PAYLOAD), Ok(packet));
            assert_eq!(unlimited, Ok(packet));
            if let Packet::Data {
                fragment,
                fragments,
                payload,
                ..
            } = packet
            {
                assert!(fragment < fragments);
                assert!(payload.len() <= MAX_PAYLOAD);
                assert_eq!(payload.len(), data.len() - DATA_HEADER);
            }
        }
        Err(PacketError::PayloadTooLarge) => {
            assert!(data.len() > DATA_HEADER + MAX_PAYLOAD);
            assert!(
                matches!(unlimited, Ok(Packet::Data { .. })),
                "{unlimited:?}"
            );
        }
        Err(e) => assert_eq!(unlimited, Err(e)),
    }
});
