//! Newline-terminated lines.

use std::fmt;

/// Splits a stream into lines ending in `\n`; a `\r` before the `\n` is
/// dropped too, so CRLF peers (telnet, netcat on Windows) work unchanged.
///
/// `max_line` bounds a line as it sits in the buffer, terminator included,
/// so one line never needs more than `max_line` bytes of read buffer.
///
/// ```
/// use sockloop::codec::LineCodec;
///
/// let codec = LineCodec::new(64);
/// assert_eq!(codec.decode(b"hello\r\nrest"), Ok(Some((&b"hello"[..], 7))));
/// assert_eq!(codec.decode(b"hel"), Ok(None)); // wait for the newline
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LineCodec {
    /// Most bytes one line may occupy, its `\r\n` or `\n` included.
    ///
    /// ```
    /// use sockloop::codec::LineCodec;
    ///
    /// let codec = LineCodec { max_line: 3 };
    /// assert!(codec.decode(b"ab\n").is_ok()); // exactly 3 bytes: fits
    /// assert!(codec.decode(b"abc").is_err()); // 3 bytes, no newline: can't fit
    /// ```
    pub max_line: usize,
}

impl LineCodec {
    /// A codec for lines of at most `max_line` bytes, terminator included.
    ///
    /// ```
    /// use sockloop::codec::LineCodec;
    ///
    /// assert_eq!(LineCodec::new(80).max_line, 80);
    /// ```
    pub const fn new(max_line: usize) -> Self {
        LineCodec { max_line }
    }

    /// Decodes the line at the front of `data`: the line without its `\n`
    /// (or `\r\n`), and how many bytes it used, terminator included.
    ///
    /// `Ok(None)`: no newline yet. [`LineError::TooLong`] as soon as
    /// `max_line` bytes are buffered with no newline among them, so the
    /// caller never buffers more to find out. Scans at most `max_line`
    /// bytes per call.
    ///
    /// ```
    /// use sockloop::codec::{LineCodec, LineError};
    ///
    /// let codec = LineCodec::new(8);
    /// let data = b"a\n\nb\n";
    /// assert_eq!(codec.decode(data), Ok(Some((&b"a"[..], 2))));
    /// assert_eq!(codec.decode(&data[2..]), Ok(Some((&b""[..], 1)))); // empty line
    /// assert_eq!(codec.decode(b"12345678"), Err(LineError::TooLong { max: 8 }));
    /// ```
    pub fn decode<'a>(&self, data: &'a [u8]) -> Result<Option<(&'a [u8], usize)>, LineError> {
        // Only the first max_line bytes can hold this line's newline.
        let window = data.get(..self.max_line).unwrap_or(data);
        match window.iter().position(|&b| b == b'\n') {
            Some(newline) => {
                let line = &window[..newline];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                Ok(Some((line, newline + 1)))
            }
            None if !data.is_empty() && data.len() >= self.max_line => {
                Err(LineError::TooLong { max: self.max_line })
            }
            None => Ok(None),
        }
    }

    /// Appends `line` and a `\n` to `out`.
    ///
    /// `line` should not contain `\n` (the peer would see two lines) nor end
    /// in `\r` (the peer's decoder would drop it).
    ///
    /// ```
    /// use sockloop::codec::LineCodec;
    ///
    /// let mut out = Vec::new(); // e.g. the connection's output batch
    /// LineCodec::encode(b"hi", &mut out);
    /// assert_eq!(out, b"hi\n");
    /// ```
    pub fn encode(line: &[u8], out: &mut Vec<u8>) {
        out.reserve(line.len() + 1);
        out.extend_from_slice(line);
        out.push(b'\n');
    }
}

/// Why [`LineCodec::decode`] failed.
///
/// ```
/// use sockloop::codec::{LineCodec, LineError};
///
/// let err = LineCodec::new(4).decode(b"abcdef").unwrap_err();
/// assert_eq!(err, LineError::TooLong { max: 4 });
/// assert_eq!(err.used(), None); // no end to skip to: close the connection
/// assert_eq!(err.to_string(), "no newline within 4 bytes");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LineError {
    /// `max` bytes arrived without a newline. The line's end is unknown, so
    /// the stream cannot be resynchronised.
    TooLong {
        /// The codec's `max_line`.
        max: usize,
    },
}

impl LineError {
    /// How many bytes to skip to get past the bad input, if that is known:
    /// always `None` for a line error.
    ///
    /// ```
    /// use sockloop::codec::LineError;
    ///
    /// assert_eq!(LineError::TooLong { max: 1 }.used(), None);
    /// ```
    pub fn used(&self) -> Option<usize> {
        match self {
            LineError::TooLong { .. } => None,
        }
    }
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::TooLong { max } => write!(f, "no newline within {max} bytes"),
        }
    }
}

impl std::error::Error for LineError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_at_every_byte() {
        let codec = LineCodec::new(64);
        for wire in [&b"hello world\n"[..], b"hello world\r\n", b"\n", b"\r\n"] {
            let want = wire.strip_suffix(b"\n").unwrap();
            let want = want.strip_suffix(b"\r").unwrap_or(want);
            for cut in 0..wire.len() {
                assert_eq!(codec.decode(&wire[..cut]), Ok(None), "{wire:?} cut {cut}");
            }
            assert_eq!(codec.decode(wire), Ok(Some((want, wire.len()))));
        }
    }

    #[test]
    fn many_lines_in_one_buffer() {
        let codec = LineCodec::new(16);
        let mut data = &b"one\r\ntwo\n\nthree\r\n\r\nfour"[..];
        let mut got = Vec::new();
        while let Some((line, used)) = codec.decode(data).unwrap() {
            got.push(line.to_vec());
            data = &data[used..];
        }
        assert_eq!(got, [&b"one"[..], b"two", b"", b"three", b""]);
        assert_eq!(data, b"four");
    }

    #[test]
    fn limit_exactly_and_one_over() {
        let codec = LineCodec::new(5);
        // 5 bytes with the terminator: fits, with either terminator.
        assert_eq!(codec.decode(b"abcd\n"), Ok(Some((&b"abcd"[..], 5))));
        assert_eq!(codec.decode(b"abc\r\n"), Ok(Some((&b"abc"[..], 5))));
        // 4 bytes, no newline: a newline may still come.
        assert_eq!(codec.decode(b"abcd"), Ok(None));
        assert_eq!(codec.decode(b"abc\r"), Ok(None));
        // 5 bytes, no newline: fails before any further byte arrives.
        let too_long = Err(LineError::TooLong { max: 5 });
        assert_eq!(codec.decode(b"abcde"), too_long);
        assert_eq!(codec.decode(b"abcd\r"), too_long);
        assert_eq!(codec.decode(b"abcde\n"), too_long);
        assert_eq!(codec.decode(b"abcd\r\n"), too_long);
        // The limit is per line: a long buffer of short lines is fine.
        assert_eq!(codec.decode(b"ab\nabcdefgh"), Ok(Some((&b"ab"[..], 3))));
    }

    #[test]
    fn degenerate_limits() {
        assert_eq!(LineCodec::new(0).decode(b""), Ok(None));
        assert_eq!(
            LineCodec::new(0).decode(b"\n"),
            Err(LineError::TooLong { max: 0 })
        );
        assert_eq!(LineCodec::new(1).decode(b"\n"), Ok(Some((&b""[..], 1))));
        assert_eq!(
            LineCodec::new(1).decode(b"a"),
            Err(LineError::TooLong { max: 1 })
        );
        assert_eq!(LineCodec::new(usize::MAX).decode(b"a"), Ok(None));
    }

    #[test]
    fn only_the_last_cr_is_dropped() {
        let codec = LineCodec::new(16);
        assert_eq!(codec.decode(b"a\r\r\n"), Ok(Some((&b"a\r"[..], 4))));
        assert_eq!(codec.decode(b"\ra\n"), Ok(Some((&b"\ra"[..], 3))));
    }

    #[test]
    fn encode_round_trips() {
        let mut out = Vec::new();
        LineCodec::encode(b"x", &mut out);
        LineCodec::encode(b"", &mut out);
        assert_eq!(out, b"x\n\n");
        let codec = LineCodec::new(2);
        assert_eq!(codec.decode(&out), Ok(Some((&b"x"[..], 2))));
        assert_eq!(codec.decode(&out[2..]), Ok(Some((&b""[..], 1))));
    }
}
