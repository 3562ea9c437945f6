//! `net::proxy_header::parse` on arbitrary bytes: it never panics, a
//! complete header lies within the input and within the bounds, every
//! prefix of a complete header is incomplete, and a proxied v2 header
//! re-encodes to one that parses to the same addresses.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sockloop::net::proxy_header::{encode_v2, parse, Parsed, ProxyHeader, V2_MAX};

fuzz_target!(|data: &[u8]| {
    let _ = sockloop::net::proxy_header::begins_header(data);
    let Ok(Parsed::Complete { header, len }) = parse(data) else {
        return;
    };
    assert!(len <= data.len() && len <= V2_MAX);
    assert_eq!(parse(&data[..len]), Ok(Parsed::Complete { header, len }));
    for end in 1..len {
        assert_eq!(parse(&data[..end]), Ok(Parsed::Incomplete), "{end} of {len}");
    }
    let mut again = Vec::new();
    encode_v2(&header, &mut again);
    match parse(&again) {
        Ok(Parsed::Complete { header: back, .. }) if header == ProxyHeader::Local => {
            assert_eq!(back, ProxyHeader::Local)
        }
        Ok(Parsed::Complete { header: back, .. }) => {
            let ports = |h: ProxyHeader| match h {
                ProxyHeader::Proxied { source, destination } => (source.port(), destination.port()),
                ProxyHeader::Local => panic!("a proxied header came back local"),
            };
            assert_eq!(ports(back), ports(header));
        }
        other => panic!("re-encoded header does not parse: {other:?}"),
    }
});
