//! `LengthDelimited::decode::<ChatMessage>` on arbitrary bytes. The first
//! input byte picks the limit (its low bit set: unlimited; otherwise the
//! next two bytes). Checks the bounds of `used` and the header, decodes the
//! rest the way a service does, and re-encodes every message it decoded.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sockloop::codec::{FrameError, LengthDelimited, MAX_VARINT_LEN};
use sockloop::protocol::chat::ChatMessage;

/// One decode: `Some(used)` when the caller may skip `used` bytes and go on.
fn check(codec: LengthDelimited, data: &[u8]) -> Option<usize> {
    let max = codec.max_frame;
    let header = codec.decode_header(data);
    match &header {
        Ok(Some((len, prefix))) => {
            assert!(*len <= max);
            assert!((1..=MAX_VARINT_LEN).contains(prefix) && *prefix <= data.len());
        }
        Ok(None) => {
            assert!(
                data.len() < MAX_VARINT_LEN,
                "Ok(None) with 10 prefix bytes in"
            );
            assert!(data.iter().all(|&b| b & 0x80 != 0));
        }
        Err(FrameError::TooLarge { len, max: m }) => assert!(*len > *m as u64 && *m == max),
        Err(FrameError::BadVarint) => {}
        Err(e @ FrameError::Invalid { .. }) => panic!("decode_header said {e:?}"),
    }
    match codec.decode::<ChatMessage>(data) {
        Ok(Some((message, used))) => {
            let Ok(Some((len, prefix))) = header else {
                panic!("a frame without a header: {header:?}");
            };
            assert!(used > 0, "used 0");
            assert!(used <= data.len(), "used {used} > len {}", data.len());
            assert_eq!(
                Some(used),
                prefix.checked_add(len),
                "used is not prefix + body"
            );
            assert!(len <= max);
            // Whatever decodes re-encodes, and that decodes to the same message.
            let mut wire = Vec::new();
            LengthDelimited::encode(&message, &mut wire).expect("a Vec always has room");
            let again = LengthDelimited::new(usize::MAX).decode::<ChatMessage>(&wire);
            assert_eq!(
                again,
                Ok(Some((message, wire.len()))),
                "re-encoding changed it"
            );
            Some(used)
        }
        Ok(None) => {
            match header {
                Ok(None) => {}
                Ok(Some((len, prefix))) => assert!(data.len() - prefix < len),
                other => panic!("Ok(None) but the header said {other:?}"),
            }
            None
        }
        Err(e) => {
            match (&e, &header) {
                (FrameError::Invalid { used, .. }, Ok(Some((len, prefix)))) => {
                    assert_eq!(Some(*used), prefix.checked_add(*len));
                    assert!(*used > 0 && *used <= data.len(), "Invalid used {used}");
                    assert_eq!(e.used(), Some(*used));
                }
                (FrameError::Invalid { .. }, other) => panic!("Invalid but header {other:?}"),
                (_, Err(h)) => {
                    assert_eq!(&e, h);
                    assert_eq!(e.used(), None);
                }
                (_, other) => panic!("{e:?} but the header said {other:?}"),
            }
            e.used()
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let (max, mut data) = match (mode & 1, rest.split_first_chunk::<2>()) {
        (1, _) => (usize::MAX, rest),
        (_, Some((limit, data))) => (usize::from(u16::from_le_bytes(*limit)), data),
        (_, None) => return,
    };
    let codec = LengthDelimited::new(max);
    while let Some(used) = check(codec, data) {
        data = &data[used..];
    }
});
