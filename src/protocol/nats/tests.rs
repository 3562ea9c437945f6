//! The server-operation parser: each operation, each error, and the
//! properties (any split of a valid stream parses the same; no input
//! panics).

use proptest::prelude::*;

use super::*;

fn limits() -> Limits {
    Limits {
        max_control_line: 64,
        max_info: 256,
        max_payload: 32,
    }
}

fn one(input: &[u8]) -> Result<Option<(ServerOp, usize)>, ParseError> {
    parse_server_op(input, &limits())
}

fn msg(subject: &str, sid: u64, reply_to: Option<&str>, payload: &[u8]) -> ServerOp {
    ServerOp::Msg(Msg {
        subject: subject.into(),
        sid,
        reply_to: reply_to.map(Into::into),
        headers: None,
        payload: payload.to_vec(),
    })
}

#[test]
fn control_operations() {
    assert_eq!(one(b"PING\r\n"), Ok(Some((ServerOp::Ping, 6))));
    assert_eq!(one(b"pong\r\nX"), Ok(Some((ServerOp::Pong, 6))));
    assert_eq!(one(b"+OK\r\n"), Ok(Some((ServerOp::Ok, 5))));
    assert_eq!(
        one(b"-ERR 'Unknown Protocol Operation'\r\n"),
        Ok(Some((
            ServerOp::Err("Unknown Protocol Operation".into()),
            35
        )))
    );
    assert_eq!(
        one(b"-ERR\r\n"),
        Ok(Some((ServerOp::Err(String::new()), 6)))
    );
    assert_eq!(one(b"PING x\r\n"), Err(ParseError::BadArguments("PING")));
    assert_eq!(one(b"+OK 1\r\n"), Err(ParseError::BadArguments("+OK")));
}

#[test]
fn info() {
    let wire = br#"INFO {"server_id":"S1","version":"2.10.1","proto":1,"max_payload":1048576,"headers":true,"port":4222,"connect_urls":["10.0.0.1:4222"]}"#;
    let mut wire = wire.to_vec();
    wire.extend_from_slice(b"\r\n");
    let (op, used) = one(&wire).unwrap().unwrap();
    assert_eq!(used, wire.len());
    let ServerOp::Info(info) = op else {
        panic!("{op:?}")
    };
    assert_eq!(
        *info,
        ServerInfo {
            server_id: "S1".into(),
            version: "2.10.1".into(),
            proto: 1,
            max_payload: 1_048_576,
            headers: true,
            auth_required: false,
            tls_required: false,
            connect_urls: vec!["10.0.0.1:4222".into()],
        }
    );
    assert_eq!(one(b"INFO {\"a\":\r\n"), Err(ParseError::BadInfo));
    assert_eq!(one(b"INFO []\r\n"), Err(ParseError::BadInfo));
    // INFO has its own, larger limit.
    let long = format!("INFO {{\"server_id\":\"{}\"}}\r\n", "s".repeat(200));
    assert!(matches!(
        one(long.as_bytes()),
        Ok(Some((ServerOp::Info(_), _)))
    ));
    assert_eq!(
        one(&[b"INFO ".as_slice(), &[b' '; 300]].concat()),
        Err(ParseError::ControlLineTooLong { max: 256 })
    );
}

#[test]
fn messages() {
    assert_eq!(
        one(b"MSG a.b 1 5\r\nhello\r\n"),
        Ok(Some((msg("a.b", 1, None, b"hello"), 20)))
    );
    assert_eq!(
        one(b"msg\ta.b  12\t_INBOX.x 0\r\n\r\n"),
        Ok(Some((msg("a.b", 12, Some("_INBOX.x"), b""), 26)))
    );
    // The payload is bytes, CRLF and all.
    assert_eq!(
        one(b"MSG a 1 4\r\n\r\n\r\n\r\n"),
        Ok(Some((msg("a", 1, None, b"\r\n\r\n"), 17)))
    );
    assert_eq!(
        one(b"HMSG a 2 12 14\r\nNATS/1.0\r\n\r\nhi\r\n"),
        Ok(Some((
            ServerOp::Msg(Msg {
                subject: "a".into(),
                sid: 2,
                reply_to: None,
                headers: Some(b"NATS/1.0\r\n\r\n".to_vec()),
                payload: b"hi".to_vec(),
            }),
            32
        )))
    );
}

#[test]
fn incomplete_is_none() {
    let wire = b"MSG a.b 1 5\r\nhello\r\n";
    for end in 0..wire.len() {
        assert_eq!(one(&wire[..end]), Ok(None), "{end}");
    }
}

#[test]
fn errors() {
    let cases: &[(&[u8], ParseError)] = &[
        (b"PING\n", ParseError::BadLineEnding),
        (b"\n", ParseError::BadLineEnding),
        (b"NOPE\r\n", ParseError::UnknownOp),
        (b"\r\n", ParseError::UnknownOp),
        (b"PUB a 1\r\n", ParseError::UnknownOp),
        (b"MSG a 1\r\n", ParseError::BadArguments("MSG")),
        (b"MSG a 1 r x 2\r\n", ParseError::BadArguments("MSG")),
        (b"HMSG a 1 2\r\n", ParseError::BadArguments("HMSG")),
        (b"MSG a..b 1 0\r\n\r\n", ParseError::BadSubject),
        (b"MSG a 1 b..c 0\r\n\r\n", ParseError::BadSubject),
        (b"MSG a.* 1 0\r\n\r\n", ParseError::BadSubject),
        (b"MSG a x 0\r\n\r\n", ParseError::BadSid),
        (b"MSG a -1 0\r\n\r\n", ParseError::BadSid),
        (b"MSG a 1 -0\r\n", ParseError::BadLength),
        (b"MSG a 1 +3\r\n", ParseError::BadLength),
        (b"MSG a 1 99999999999999999999\r\n", ParseError::BadLength),
        (b"HMSG a 1 5 4\r\n", ParseError::BadLength),
        (b"MSG a 1 2\r\nhiXY", ParseError::MissingPayloadEnd),
        (b"MSG a 1 0\r\n\nX", ParseError::MissingPayloadEnd),
        (b"MSG \xff 1 0\r\n\r\n", ParseError::NotUtf8),
        (
            b"MSG a 1 33\r\n",
            ParseError::PayloadTooLarge { len: 33, max: 32 },
        ),
        (
            b"HMSG a 1 1 33\r\n",
            ParseError::PayloadTooLarge { len: 33, max: 32 },
        ),
    ];
    for (wire, error) in cases {
        assert_eq!(
            one(wire),
            Err(*error),
            "{:?}",
            String::from_utf8_lossy(wire)
        );
    }
    // 64 bytes without a newline: over the limit; 63: maybe not yet.
    assert_eq!(one(&[b'x'; 63]), Ok(None));
    assert_eq!(
        one(&[b'x'; 64]),
        Err(ParseError::ControlLineTooLong { max: 64 })
    );
    let mut long = b"MSG a 1 0".to_vec();
    long.resize(64, b' ');
    long.extend_from_slice(b"\r\n\r\n");
    assert_eq!(one(&long), Err(ParseError::ControlLineTooLong { max: 64 }));
}

/// Parses `wire` fed in chunks of the given sizes the way a connection
/// does: keep what is unparsed, append the next chunk, parse all.
fn feed(wire: &[u8], chunks: &[usize]) -> Result<Vec<ServerOp>, ParseError> {
    let (mut buffer, mut ops, mut offset) = (Vec::new(), Vec::new(), 0);
    let mut sizes = chunks.iter().cycle();
    while offset < wire.len() {
        let n = (*sizes.next().unwrap()).min(wire.len() - offset);
        buffer.extend_from_slice(&wire[offset..offset + n]);
        offset += n;
        let mut used = 0;
        while let Some((op, n)) = parse_server_op(&buffer[used..], &limits())? {
            assert!(n > 0);
            ops.push(op);
            used += n;
        }
        buffer.drain(..used);
    }
    assert!(buffer.is_empty(), "left over: {buffer:?}");
    Ok(ops)
}

fn token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_~-]{1,6}"
}

fn subject() -> impl Strategy<Value = String> {
    prop::collection::vec(token(), 1..4).prop_map(|t| t.join("."))
}

fn op() -> impl Strategy<Value = (Vec<u8>, ServerOp)> {
    prop_oneof![
        Just((b"PING\r\n".to_vec(), ServerOp::Ping)),
        Just((b"PONG\r\n".to_vec(), ServerOp::Pong)),
        Just((b"+OK\r\n".to_vec(), ServerOp::Ok)),
        "[a-z ]{0,20}".prop_map(|text| (
            format!("-ERR '{text}'\r\n").into_bytes(),
            ServerOp::Err(text)
        )),
        (1u64..1 << 40).prop_map(|max| (
            format!("INFO {{\"max_payload\":{max}}}\r\n").into_bytes(),
            ServerOp::Info(Box::new(ServerInfo {
                max_payload: max,
                ..ServerInfo::default()
            }))
        )),
        (
            subject(),
            any::<u32>(),
            prop::option::of(subject()),
            prop::collection::vec(any::<u8>(), 0..=32)
        )
            .prop_map(|(subject, sid, reply, payload)| {
                let mut wire = format!("MSG {subject} {sid} ").into_bytes();
                if let Some(reply) = &reply {
                    wire.extend_from_slice(format!("{reply} ").as_bytes());
                }
                wire.extend_from_slice(format!("{}\r\n", payload.len()).as_bytes());
                wire.extend_from_slice(&payload);
                wire.extend_from_slice(b"\r\n");
                let op = msg(&subject, sid.into(), reply.as_deref(), &payload);
                (wire, op)
            }),
    ]
}

proptest! {
    #[test]
    fn any_split_parses_the_same(
        ops in prop::collection::vec(op(), 0..20),
        chunks in prop::collection::vec(1usize..40, 1..10),
    ) {
        let wire: Vec<u8> = ops.iter().flat_map(|(w, _)| w.clone()).collect();
        let expected: Vec<ServerOp> = ops.into_iter().map(|(_, op)| op).collect();
        prop_assert_eq!(feed(&wire, &[wire.len().max(1)]), Ok(expected.clone()));
        prop_assert_eq!(feed(&wire, &chunks), Ok(expected));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(Some((_, used))) = parse_server_op(&bytes, &limits()) {
            prop_assert!(used > 0 && used <= bytes.len());
        }
    }

    #[test]
    fn mutated_streams_never_panic(
        ops in prop::collection::vec(op(), 1..8),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut wire: Vec<u8> = ops.iter().flat_map(|(w, _)| w.clone()).collect();
        let i = at.index(wire.len());
        wire[i] = byte;
        let mut rest = &wire[..];
        while let Ok(Some((_, used))) = parse_server_op(rest, &limits()) {
            prop_assert!(used > 0);
            rest = &rest[used..];
        }
    }
}
