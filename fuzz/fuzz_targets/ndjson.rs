//! `NdjsonCodec::decode` on arbitrary bytes, untyped (`serde_json::Value`)
//! and typed (`ChatLine`), with the limit taken from the first two input
//! bytes. Checks the bounds of `used` on every answer, then decodes the
//! rest the way a service does; `ChatLine`s must survive encode + decode.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sockloop::codec::{NdjsonCodec, NdjsonError};
use sockloop::protocol::chat::ChatLine;

/// One decode: `Some(used)` when the caller may skip `used` bytes and go on.
fn check<T, F>(codec: NdjsonCodec<T>, data: &[u8], on_message: &mut F) -> Option<usize>
where
    T: DeserializeOwned + Serialize,
    F: FnMut(T),
{
    let max = codec.max_line();
    match codec.decode(data) {
        Ok(Some((message, used))) => {
            assert!(used > 0, "used 0");
            assert!(used <= data.len(), "used {used} > len {}", data.len());
            // `used` ends on the message line's newline (blank lines before
            // it are folded in, so it may exceed `max`).
            assert_eq!(data[used - 1], b'\n');
            on_message(message);
            Some(used)
        }
        Ok(None) => None,
        Err(e) => {
            match e {
                NdjsonError::Invalid { used, .. } => {
                    assert!(used > 0, "Invalid used 0");
                    assert!(
                        used <= data.len(),
                        "Invalid used {used} > len {}",
                        data.len()
                    );
                    assert_eq!(data[used - 1], b'\n');
                    assert_eq!(e.used(), Some(used));
                }
                NdjsonError::TooLong { max: m } => {
                    assert_eq!(m, max);
                    assert_eq!(e.used(), None);
                    assert!(data.len() >= max);
                }
            }
            e.used()
        }
    }
}

fn decode_all<T, F>(codec: NdjsonCodec<T>, data: &[u8], mut on_message: F)
where
    T: DeserializeOwned + Serialize,
    F: FnMut(T),
{
    let mut rest = data;
    while let Some(used) = check(codec, rest, &mut on_message) {
        rest = &rest[used..];
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((limit, data)) = input.split_first_chunk::<2>() else {
        return;
    };
    let max = usize::from(u16::from_le_bytes(*limit));

    decode_all(NdjsonCodec::<serde_json::Value>::new(max), data, |_| {});

    decode_all(NdjsonCodec::<ChatLine>::new(max), data, |msg| {
        let mut wire = Vec::new();
        NdjsonCodec::encode(&msg, &mut wire).expect("a ChatLine always encodes");
        assert_eq!(wire.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        let again = NdjsonCodec::<ChatLine>::new(usize::MAX).decode(&wire);
        assert_eq!(
            again,
            Ok(Some((msg, wire.len()))),
            "encode + decode changed it"
        );
    });
});
