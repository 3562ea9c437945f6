//! `LineCodec::decode` on arbitrary bytes, with the limit taken from the
//! first two input bytes. Checks the documented contract of every answer,
//! then decodes the rest the way a service does (skip `used`, repeat).

#![no_main]

use libfuzzer_sys::fuzz_target;
use sockloop::codec::{LineCodec, LineError};

fn check(codec: LineCodec, data: &[u8]) -> Option<usize> {
    let max = codec.max_line;
    let window = &data[..data.len().min(max)];
    let newline = window.iter().position(|&b| b == b'\n');
    match codec.decode(data) {
        Ok(Some((line, used))) => {
            assert!(used > 0, "used 0");
            assert!(used <= data.len(), "used {used} > len {}", data.len());
            assert!(used <= max, "used {used} > max {max}");
            assert_eq!(data[used - 1], b'\n', "a line ends in its newline");
            assert_eq!(Some(used - 1), newline, "the first newline ends the line");
            assert!(!line.contains(&b'\n'), "newline inside the line");
            // The line is the front of the input, minus `\n` or `\r\n`.
            assert!(data.starts_with(line));
            let crlf = used >= 2 && data[used - 2] == b'\r';
            assert_eq!(line.len(), used - 1 - usize::from(crlf));
            Some(used)
        }
        Ok(None) => {
            assert_eq!(newline, None, "a newline within the limit was not found");
            assert!(data.is_empty() || data.len() < max, "Ok(None) at the limit");
            None
        }
        Err(e) => {
            assert_eq!(e, LineError::TooLong { max });
            assert_eq!(e.used(), None);
            assert_eq!(newline, None, "TooLong with a newline within the limit");
            assert!(!data.is_empty() && data.len() >= max);
            None
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((limit, data)) = input.split_first_chunk::<2>() else {
        return;
    };
    let codec = LineCodec::new(usize::from(u16::from_le_bytes(*limit)));
    let mut rest = data;
    while let Some(used) = check(codec, rest) {
        rest = &rest[used..];
    }
    // A huge limit only ever waits for the newline.
    let _ = check(LineCodec::new(usize::MAX), data);
});
