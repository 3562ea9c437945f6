//! Property tests for every codec: incremental decoding through a simulated
//! read buffer equals the original messages, and no input panics.

use proptest::prelude::*;

use super::{JsonEncodeSteps, JsonStep, JsonSteps, LengthDelimited, LineCodec, NdjsonCodec};
use crate::protocol::chat::{ChatLine, ChatMessage};

/// Feeds `wire` in chunks of the given sizes the way the core does: keep
/// the unconsumed bytes, append the next chunk, decode all whole frames.
fn feed<T>(
    wire: &[u8],
    chunks: &[usize],
    mut decode: impl FnMut(&[u8]) -> Option<(T, usize)>,
) -> Vec<T> {
    let mut buffer = Vec::new();
    let mut got = Vec::new();
    let mut offset = 0;
    let mut sizes = chunks.iter().cycle();
    while offset < wire.len() {
        let n = (*sizes.next().unwrap()).min(wire.len() - offset);
        buffer.extend_from_slice(&wire[offset..offset + n]);
        offset += n;
        let mut consumed = 0;
        while let Some((frame, used)) = decode(&buffer[consumed..]) {
            assert!(used > 0);
            got.push(frame);
            consumed += used;
        }
        buffer.drain(..consumed);
    }
    assert!(buffer.is_empty(), "bytes left over: {buffer:?}");
    got
}

fn chunks() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..40, 1..20)
}

fn chat_line() -> impl Strategy<Value = ChatLine> {
    (".{0,8}", ".{0,40}", "[0-9:]{0,8}").prop_map(|(from, content, time)| ChatLine {
        from,
        content,
        time,
    })
}

fn chat_message() -> impl Strategy<Value = ChatMessage> {
    (".{0,8}", ".{0,200}", "[0-9:]{0,8}", ".{0,8}").prop_map(|(from, content, time, room)| {
        ChatMessage {
            from,
            content,
            time,
            room,
        }
    })
}

proptest! {
    #[test]
    fn lines_survive_any_chunking(
        lines in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..50), 0..20)
            .prop_map(|ls| ls.into_iter().map(|mut l| {
                // Encodable lines: no `\n`, no trailing `\r`.
                l.retain(|&b| b != b'\n');
                while l.last() == Some(&b'\r') { l.pop(); }
                l
            }).collect::<Vec<_>>()),
        crlf in any::<bool>(),
        sizes in chunks(),
    ) {
        let mut wire = Vec::new();
        for l in &lines {
            if crlf {
                wire.extend_from_slice(l);
                wire.extend_from_slice(b"\r\n");
            } else {
                LineCodec::encode(l, &mut wire);
            }
        }
        let codec = LineCodec::new(52); // the longest line plus CRLF fits exactly
        let got = feed(&wire, &sizes, |d| codec.decode(d).unwrap().map(|(l, n)| (l.to_vec(), n)));
        prop_assert_eq!(got, lines);
    }

    #[test]
    fn ndjson_survives_any_chunking(
        msgs in prop::collection::vec(chat_line(), 0..20),
        blank in any::<bool>(),
        sizes in chunks(),
    ) {
        let mut wire = Vec::new();
        for m in &msgs {
            if blank {
                wire.extend_from_slice(b" \r\n");
            }
            NdjsonCodec::encode(m, &mut wire).unwrap();
        }
        let codec = NdjsonCodec::<ChatLine>::new(4096);
        let got = feed(&wire, &sizes, |d| codec.decode(d).unwrap());
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn length_delimited_survives_any_chunking(
        msgs in prop::collection::vec(chat_message(), 0..20),
        sizes in chunks(),
    ) {
        let mut wire = Vec::new();
        for m in &msgs {
            LengthDelimited::encode(m, &mut wire).unwrap();
        }
        let codec = LengthDelimited::new(4096);
        let got = feed(&wire, &sizes, |d| codec.decode::<ChatMessage>(d).unwrap());
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..300), max in 0usize..400) {
        // Drive each decoder as a service would: skip what errors say to skip.
        let line = LineCodec::new(max);
        let mut rest = &data[..];
        while let Ok(Some((l, used))) = line.decode(rest) {
            prop_assert!(used > 0 && used <= max && l.len() < used);
            rest = &rest[used..];
        }

        let ndjson = NdjsonCodec::<ChatLine>::new(max);
        let mut rest = &data[..];
        loop {
            let used = match ndjson.decode(rest) {
                Ok(Some((_, used))) => used,
                Ok(None) => break,
                Err(e) => match e.used() { Some(used) => used, None => break },
            };
            prop_assert!(used > 0 && used <= rest.len());
            rest = &rest[used..];
        }

        let length = LengthDelimited::new(max);
        let mut rest = &data[..];
        loop {
            let used = match length.decode::<ChatMessage>(rest) {
                Ok(Some((_, used))) => used,
                Ok(None) => break,
                Err(e) => match e.used() { Some(used) => used, None => break },
            };
            prop_assert!(used > 0 && used <= rest.len());
            rest = &rest[used..];
        }
    }

    #[test]
    fn random_values_never_panic(data in prop::collection::vec(any::<u8>(), 0..200)) {
        // Untyped JSON and a hostile length prefix on arbitrary bodies.
        let _ = NdjsonCodec::<serde_json::Value>::new(256).decode(&data);
        let _ = LengthDelimited::new(usize::MAX).decode::<ChatMessage>(&data);
    }
}

/// Any JSON value, numbers of every kind and strings needing escapes
/// included.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (0u64..1000).prop_map(Value::from),
        any::<f64>().prop_map(Value::from), // NaN and infinities become null
        "(.|[\"\\\\\u{0}-\u{1f}\u{7f}])*{0,6}".prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::from),
            prop::collection::vec(("[a-c\"\\\\é]{0,3}", inner), 0..8)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// `line` through [`JsonSteps`] in slices of `budget` bytes.
fn step_through(line: &[u8], budget: usize) -> Option<serde_json::Value> {
    let mut steps = JsonSteps::new();
    loop {
        match steps.step(line, budget) {
            JsonStep::Pending => {}
            JsonStep::Done(value) => return Some(value),
            JsonStep::Failed => return None,
        }
    }
}

proptest! {
    #[test]
    fn json_steps_build_what_serde_json_builds(
        value in json_value(),
        pretty in any::<bool>(),
        // Duplicate keys: serde_json keeps the last.
        duplicate in any::<bool>(),
    ) {
        let mut line = match pretty {
            true => serde_json::to_vec_pretty(&value).unwrap(),
            false => serde_json::to_vec(&value).unwrap(),
        };
        if duplicate && line.first() == Some(&b'{') && line.len() > 2 {
            line.splice(1..1, b"\"a\":[1],\"b\":2,".iter().copied());
        }
        let reference = serde_json::from_slice::<serde_json::Value>(&line).unwrap();
        for budget in [1, 7, 64, usize::MAX] {
            prop_assert_eq!(step_through(&line, budget), Some(reference.clone()));
        }
    }

    #[test]
    fn json_steps_fail_exactly_when_serde_json_does(
        value in json_value(),
        cut in any::<prop::sample::Index>(),
        edits in prop::collection::vec(
            (any::<prop::sample::Index>(), prop::sample::select(
                b"{}[]:,\"\\ -+.eE0123456789tfnulx\t\r\xff\x00".to_vec())),
            0..3,
        ),
        truncate in any::<bool>(),
    ) {
        let mut line = serde_json::to_vec(&value).unwrap();
        for (at, byte) in edits {
            let at = at.index(line.len());
            line[at] = byte;
        }
        if truncate {
            line.truncate(cut.index(line.len() + 1));
        }
        let reference = serde_json::from_slice::<serde_json::Value>(&line).ok();
        for budget in [1, 7, 64] {
            prop_assert_eq!(step_through(&line, budget), reference.clone());
        }
    }
}

/// `value` through [`JsonEncodeSteps`] in slices of `budget` bytes.
fn encode_through(value: serde_json::Value, budget: usize) -> Vec<u8> {
    let mut encoder = JsonEncodeSteps::new(value);
    let mut out = Vec::new();
    while !encoder.step(&mut out, budget) {}
    out
}

proptest! {
    #[test]
    fn json_encode_steps_write_what_serde_json_writes(value in json_value()) {
        let reference = serde_json::to_vec(&value).unwrap();
        for budget in [1, 7, 64, usize::MAX] {
            prop_assert_eq!(encode_through(value.clone(), budget), reference.clone());
        }
    }
}
