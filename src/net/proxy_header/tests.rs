use proptest::prelude::*;

use super::*;

fn proxied(source: &str, destination: &str) -> ProxyHeader {
    ProxyHeader::Proxied {
        source: source.parse().unwrap(),
        destination: destination.parse().unwrap(),
    }
}

fn complete(header: ProxyHeader, len: usize) -> Result<Parsed, ProxyError> {
    Ok(Parsed::Complete { header, len })
}

#[test]
fn v1_tcp4_tcp6_and_unknown() {
    let line = b"PROXY TCP4 192.0.2.1 198.51.100.7 51000 443\r\n";
    let header = proxied("192.0.2.1:51000", "198.51.100.7:443");
    assert_eq!(parse(line), complete(header, line.len()));
    let line = b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\nrest";
    let header = proxied("[2001:db8::1]:1", "[::1]:65535");
    assert_eq!(parse(line), complete(header, line.len() - 4));
    assert_eq!(
        parse(b"PROXY UNKNOWN\r\n"),
        complete(ProxyHeader::Local, 15)
    );
    let unknown = b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n";
    assert_eq!(parse(unknown), complete(ProxyHeader::Local, unknown.len()));
}

#[test]
fn v1_every_prefix_of_a_header_is_incomplete() {
    let line = b"PROXY TCP6 2001:db8::1 2001:db8::2 65535 65535\r\n";
    for end in 1..line.len() {
        assert_eq!(parse(&line[..end]), Ok(Parsed::Incomplete), "{end} bytes");
    }
}

#[test]
fn v1_grammar_errors_say_which_part() {
    let cases: [(&[u8], ProxyError); 13] = [
        (
            b"PROXY UDP4 1.2.3.4 1.2.3.4 1 2\r\n",
            ProxyError::V1Syntax("protocol"),
        ),
        (
            b"PROXY TCP4 1.2.3 1.2.3.4 1 2\r\n",
            ProxyError::V1Syntax("address"),
        ),
        (
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            ProxyError::V1Syntax("address"),
        ),
        (
            b"PROXY TCP6 1.2.3.4 1.2.3.4 1 2\r\n",
            ProxyError::V1Syntax("address"),
        ),
        (
            b"PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n",
            ProxyError::V1Syntax("port"),
        ),
        (
            b"PROXY TCP4 1.2.3.4 1.2.3.4 +1 2\r\n",
            ProxyError::V1Syntax("port"),
        ),
        (
            b"PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n",
            ProxyError::V1Syntax("port"),
        ),
        (
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n",
            ProxyError::V1Syntax("destination port"),
        ),
        (
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3\r\n",
            ProxyError::V1Syntax("trailing field"),
        ),
        (
            b"PROXY TCP4  1.2.3.4 1.2.3.4 1 2\r\n",
            ProxyError::V1Syntax("address"),
        ),
        (b"PROXY TCP4 1.2.3.4\n", ProxyError::V1Syntax("line end")),
        (b"PROXY \xff\r\n", ProxyError::V1Syntax("characters")),
        (b"PROXY UNKNOWN a\rb\r\n", ProxyError::V1Syntax("line end")),
    ];
    for (bytes, error) in cases {
        assert_eq!(
            parse(bytes),
            Err(error),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn v1_longer_than_107_bytes_is_refused() {
    let mut line = b"PROXY UNKNOWN ".to_vec();
    line.resize(V1_MAX - 2, b'x');
    line.extend_from_slice(b"\r\n");
    assert_eq!(parse(&line), complete(ProxyHeader::Local, V1_MAX));
    line.insert(20, b'x');
    assert_eq!(parse(&line), Err(ProxyError::TooLong));
    assert_eq!(parse(&[b'x'; 200][..]), Err(ProxyError::NotProxy));
    let mut long = b"PROXY ".to_vec();
    long.resize(V1_MAX, b'y');
    assert_eq!(parse(&long), Err(ProxyError::TooLong));
    assert_eq!(parse(&long[..V1_MAX - 1]), Ok(Parsed::Incomplete));
}

#[test]
fn v2_ipv4_ipv6_local_and_unspec() {
    for header in [
        proxied("192.0.2.1:51000", "198.51.100.7:443"),
        proxied("[2001:db8::1]:1", "[::1]:65535"),
        ProxyHeader::Local,
    ] {
        let mut bytes = Vec::new();
        encode_v2(&header, &mut bytes);
        let len = bytes.len();
        bytes.extend_from_slice(b"client bytes");
        assert_eq!(parse(&bytes), complete(header, len));
        for end in 1..len {
            assert_eq!(parse(&bytes[..end]), Ok(Parsed::Incomplete), "{end} bytes");
        }
    }
    // LOCAL with addresses: they are ignored.
    let mut local = Vec::new();
    encode_v2(&proxied("192.0.2.1:1", "192.0.2.2:2"), &mut local);
    local[12] = 0x20;
    assert_eq!(parse(&local), complete(ProxyHeader::Local, 28));
    // PROXY over UNSPEC and unix: no IP address to take.
    for family in [0x00, 0x31] {
        let mut bytes = V2_SIGNATURE.to_vec();
        bytes.extend_from_slice(&[0x21, family, 0, 4, 1, 2, 3, 4]);
        assert_eq!(parse(&bytes), complete(ProxyHeader::Local, 20));
    }
}

#[test]
fn v2_tlvs_are_skipped() {
    let mut bytes = Vec::new();
    encode_v2(&proxied("192.0.2.1:1", "192.0.2.2:2"), &mut bytes);
    bytes[15] = 12 + 7; // a 7-byte TLV after the addresses
    bytes.extend_from_slice(&[0x04, 0, 4, 0, 0, 0, 0]);
    assert_eq!(
        parse(&bytes),
        complete(proxied("192.0.2.1:1", "192.0.2.2:2"), 35)
    );
}

#[test]
fn v2_errors() {
    let with = |byte12: u8, byte13: u8, len: u16| {
        let mut bytes = V2_SIGNATURE.to_vec();
        bytes.extend_from_slice(&[byte12, byte13]);
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.resize(16 + usize::from(len), 0);
        parse(&bytes)
    };
    assert_eq!(with(0x11, 0x11, 12), Err(ProxyError::V2Version(1)));
    assert_eq!(with(0x22, 0x11, 12), Err(ProxyError::V2Command(2)));
    assert_eq!(with(0x21, 0x12, 12), Err(ProxyError::V2Family(0x12)));
    assert_eq!(with(0x21, 0x41, 12), Err(ProxyError::V2Family(0x41)));
    let short = ProxyError::V2Length {
        needed: 36,
        got: 12,
    };
    assert_eq!(with(0x21, 0x21, 12), Err(short));
    assert_eq!(
        with(0x21, 0x11, (V2_MAX - 16) as u16),
        complete(proxied("0.0.0.0:0", "0.0.0.0:0"), V2_MAX)
    );
    assert_eq!(
        with(0x21, 0x11, (V2_MAX - 15) as u16),
        Err(ProxyError::TooLong)
    );
    assert_eq!(with(0x21, 0x11, u16::MAX), Err(ProxyError::TooLong));
}

#[test]
fn what_begins_a_header() {
    assert_eq!(begins_header(b"GET / HTTP/1.1\r\n"), Some(false));
    assert_eq!(begins_header(b"P"), None);
    assert_eq!(begins_header(b"PROXY"), None);
    assert_eq!(begins_header(b"PROXY "), Some(true));
    assert_eq!(begins_header(b"PROXY nonsense\r\n"), Some(true));
    assert_eq!(begins_header(b"PROXIMA"), Some(false));
    assert_eq!(begins_header(&V2_SIGNATURE[..11]), None);
    assert_eq!(begins_header(&V2_SIGNATURE), Some(true));
    assert_eq!(begins_header(b"\r\n\r\nX"), Some(false));
    assert_eq!(begins_header(b"hello\n"), Some(false));
}

#[test]
fn v1_encoding_parses_back() {
    for header in [
        proxied("192.0.2.1:51000", "198.51.100.7:443"),
        proxied("[2001:db8::1]:0", "[::1]:65535"),
        ProxyHeader::Local,
    ] {
        let mut bytes = Vec::new();
        encode_v1(&header, &mut bytes);
        assert_eq!(parse(&bytes), complete(header, bytes.len()));
    }
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
    ]
}

fn header() -> impl Strategy<Value = ProxyHeader> {
    prop_oneof![
        Just(ProxyHeader::Local),
        (socket_addr(), socket_addr()).prop_map(|(source, destination)| {
            ProxyHeader::Proxied {
                source,
                destination,
            }
        }),
    ]
}

/// What a v2 round trip gives back: mixed families travel as IPv6.
fn as_sent(header: ProxyHeader) -> ProxyHeader {
    match header {
        ProxyHeader::Proxied {
            source,
            destination,
        } if source.is_ipv4() != destination.is_ipv4() => {
            let v6 = |a: SocketAddr| match a.ip() {
                IpAddr::V4(v4) => SocketAddr::new(v4.to_ipv6_mapped().into(), a.port()),
                IpAddr::V6(_) => a,
            };
            ProxyHeader::Proxied {
                source: v6(source),
                destination: v6(destination),
            }
        }
        other => other,
    }
}

proptest! {
    #[test]
    fn any_bytes_never_panic_and_a_length_is_within_them(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(Parsed::Complete { len, .. }) = parse(&bytes) {
            prop_assert!(len <= bytes.len() && len <= V2_MAX);
        }
        let _ = begins_header(&bytes);
    }

    #[test]
    fn bytes_after_a_signature_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..600), v2 in any::<bool>()) {
        let mut bytes = if v2 { V2_SIGNATURE.to_vec() } else { V1_PREFIX.to_vec() };
        bytes.extend_from_slice(&tail);
        if let Ok(Parsed::Complete { len, .. }) = parse(&bytes) {
            prop_assert!(len <= bytes.len());
            for end in 1..len {
                prop_assert_eq!(parse(&bytes[..end]), Ok(Parsed::Incomplete));
            }
        }
    }

    #[test]
    fn v1_lines_of_any_fields_never_panic(fields in proptest::collection::vec("[ -~\r\n]{0,20}", 0..8)) {
        let line = format!("PROXY {}\r\n", fields.join(" "));
        if let Ok(Parsed::Complete { len, .. }) = parse(line.as_bytes()) {
            for end in 1..len {
                prop_assert_eq!(parse(&line.as_bytes()[..end]), Ok(Parsed::Incomplete));
            }
        }
    }

    #[test]
    fn v2_round_trips(header in header(), tail in proptest::collection::vec(any::<u8>(), 0..32)) {
        let mut bytes = Vec::new();
        encode_v2(&header, &mut bytes);
        let len = bytes.len();
        bytes.extend_from_slice(&tail);
        prop_assert_eq!(parse(&bytes), Ok(Parsed::Complete { header: as_sent(header), len }));
    }

    #[test]
    fn v1_round_trips_within_its_family(header in header()) {
        let same_family = match header {
            ProxyHeader::Proxied { source, destination } => source.is_ipv4() == destination.is_ipv4(),
            ProxyHeader::Local => true,
        };
        prop_assume!(same_family);
        let mut bytes = Vec::new();
        encode_v1(&header, &mut bytes);
        prop_assert!(bytes.len() <= V1_MAX);
        prop_assert_eq!(parse(&bytes), Ok(Parsed::Complete { header, len: bytes.len() }));
    }
}
