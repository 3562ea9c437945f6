//! Newline-delimited JSON: one typed message per line.

use std::fmt;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::line::{LineCodec, LineError};

/// Decodes and encodes messages of type `T` as one JSON value per line
/// (NDJSON), over a [`LineCodec`].
///
/// Blank lines (empty or only spaces, tabs and `\r`) are skipped. A line
/// that is not a valid `T` is an [`NdjsonError::Invalid`] that says how
/// many bytes to skip, so one bad line does not wedge the stream.
///
/// ```
/// use sockloop::codec::NdjsonCodec;
/// use sockloop::protocol::chat::ChatLine;
///
/// let codec = NdjsonCodec::<ChatLine>::new(4096);
/// let mut out = Vec::new();
/// NdjsonCodec::encode(&ChatLine { content: "hi".into(), ..Default::default() }, &mut out)?;
/// let (msg, used) = codec.decode(&out)?.expect("a whole line");
/// assert_eq!((msg.content.as_str(), used), ("hi", out.len()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct NdjsonCodec<T> {
    line: LineCodec,
    // fn() -> T: the codec holds no T, so it is Send, Sync and Copy for any T.
    _message: PhantomData<fn() -> T>,
}

impl<T> NdjsonCodec<T> {
    /// A codec for lines of at most `max_line` bytes, terminator included
    /// (see [`LineCodec::max_line`]).
    ///
    /// ```
    /// use sockloop::codec::NdjsonCodec;
    /// use sockloop::protocol::chat::ChatLine;
    ///
    /// let codec: NdjsonCodec<ChatLine> = NdjsonCodec::new(4096);
    /// assert_eq!(codec.max_line(), 4096);
    /// ```
    pub const fn new(max_line: usize) -> Self {
        NdjsonCodec {
            line: LineCodec::new(max_line),
            _message: PhantomData,
        }
    }

    /// The most bytes one line may occupy, terminator included.
    ///
    /// ```
    /// use sockloop::codec::NdjsonCodec;
    ///
    /// assert_eq!(NdjsonCodec::<serde_json::Value>::new(10).max_line(), 10);
    /// ```
    pub const fn max_line(&self) -> usize {
        self.line.max_line
    }
}

impl<T: DeserializeOwned + Serialize> NdjsonCodec<T> {
    /// Decodes the message at the front of `data`, and how many bytes it
    /// used: its line, terminator, and any blank lines before it.
    ///
    /// `Ok(None)`: no complete non-blank line yet (blank lines in front of
    /// an incomplete one are not consumed; they are skipped again, cheaply,
    /// on the next call). Errors: [`NdjsonError::Invalid`] for a line that
    /// is not one valid `T` (skip `used` bytes and go on),
    /// [`NdjsonError::TooLong`] as soon as a line passes `max_line` bytes.
    ///
    /// ```
    /// use sockloop::codec::{NdjsonCodec, NdjsonError};
    /// use sockloop::protocol::chat::ChatLine;
    ///
    /// let codec = NdjsonCodec::<ChatLine>::new(4096);
    /// let data = b"\r\n{oops\n{\"content\":\"hi\"}\n";
    /// let used = match codec.decode(data) {
    ///     Err(NdjsonError::Invalid { used, .. }) => used, // the blank line and `{oops`
    ///     other => panic!("{other:?}"),
    /// };
    /// let (msg, n) = codec.decode(&data[used..]).unwrap().unwrap();
    /// assert_eq!((msg.content.as_str(), used + n), ("hi", data.len()));
    /// ```
    pub fn decode(&self, data: &[u8]) -> Result<Option<(T, usize)>, NdjsonError> {
        let mut skipped = 0; // blank lines already passed, always <= data.len()
        loop {
            let (line, used) = match self.line.decode(&data[skipped..]) {
                Ok(Some((line, used))) => (line, skipped + used),
                Ok(None) => return Ok(None),
                Err(LineError::TooLong { max }) => return Err(NdjsonError::TooLong { max }),
            };
            if line.iter().all(|&b| matches!(b, b' ' | b'\t' | b'\r')) {
                skipped = used;
                continue;
            }
            // from_slice rejects trailing data, bad UTF-8 and nesting deeper
            // than 128 levels (no stack overflow on hostile input).
            return match serde_json::from_slice(line) {
                Ok(message) => Ok(Some((message, used))),
                Err(e) => Err(NdjsonError::Invalid {
                    used,
                    reason: e.to_string(),
                }),
            };
        }
    }

    /// Appends `message` as compact JSON and a `\n` to `out`.
    ///
    /// JSON escapes control characters inside strings, so the output is
    /// always exactly one line. Fails only if `T`'s `Serialize` does (e.g. a
    /// map with non-string keys); `out` is then left as it was.
    ///
    /// ```
    /// use sockloop::codec::NdjsonCodec;
    /// use sockloop::protocol::chat::ChatLine;
    ///
    /// let mut out = Vec::new();
    /// let msg = ChatLine { from: "a".into(), content: "hi".into(), time: "12:00:00".into() };
    /// NdjsonCodec::encode(&msg, &mut out)?;
    /// assert_eq!(out, b"{\"from\":\"a\",\"content\":\"hi\",\"time\":\"12:00:00\"}\n");
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn encode(message: &T, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        let start = out.len();
        match serde_json::to_writer(&mut *out, message) {
            Ok(()) => {
                out.push(b'\n');
                Ok(())
            }
            Err(e) => {
                out.truncate(start); // drop a half-written value
                Err(e)
            }
        }
    }
}

// Manual impls: derives would demand T: Debug/Clone/Copy for no reason.
impl<T> fmt::Debug for NdjsonCodec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NdjsonCodec")
            .field("max_line", &self.line.max_line)
            .finish()
    }
}

impl<T> Clone for NdjsonCodec<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for NdjsonCodec<T> {}

/// Why [`NdjsonCodec::decode`] failed.
///
/// ```
/// use sockloop::codec::{NdjsonCodec, NdjsonError};
///
/// let codec = NdjsonCodec::<serde_json::Value>::new(8);
/// assert!(matches!(codec.decode(b"nope\n"), Err(NdjsonError::Invalid { used: 5, .. })));
/// assert_eq!(codec.decode(b"[1,2,3,4,5]"), Err(NdjsonError::TooLong { max: 8 }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NdjsonError {
    /// A complete line that is not one valid message. Skip `used` bytes
    /// (the line, its terminator and blank lines before it) and go on.
    Invalid {
        /// Bytes the bad line occupied at the front of the input.
        used: usize,
        /// serde_json's description, with line and column.
        reason: String,
    },
    /// `max` bytes arrived without a newline: the stream cannot be
    /// resynchronised.
    TooLong {
        /// The codec's `max_line`.
        max: usize,
    },
}

impl NdjsonError {
    /// How many bytes to skip to get past the bad line, if known.
    ///
    /// ```
    /// use sockloop::codec::NdjsonError;
    ///
    /// let bad = NdjsonError::Invalid { used: 7, reason: "expected value".into() };
    /// assert_eq!(bad.used(), Some(7));
    /// assert_eq!(NdjsonError::TooLong { max: 9 }.used(), None); // close instead
    /// ```
    pub fn used(&self) -> Option<usize> {
        match self {
            NdjsonError::Invalid { used, .. } => Some(*used),
            NdjsonError::TooLong { .. } => None,
        }
    }
}

impl fmt::Display for NdjsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NdjsonError::Invalid { reason, .. } => write!(f, "invalid message: {reason}"),
            NdjsonError::TooLong { max } => write!(f, "no newline within {max} bytes"),
        }
    }
}

impl std::error::Error for NdjsonError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::chat::ChatLine;

    fn chat(content: &str) -> ChatLine {
        ChatLine {
            from: "u".into(),
            content: content.into(),
            time: "01:02:03".into(),
        }
    }

    #[test]
    fn split_at_every_byte() {
        let codec = NdjsonCodec::<ChatLine>::new(256);
        let mut wire = b"\n \r\n".to_vec(); // blank lines are folded into `used`
        NdjsonCodec::encode(&chat("héllo"), &mut wire).unwrap();
        for cut in 0..wire.len() {
            assert_eq!(codec.decode(&wire[..cut]), Ok(None), "cut {cut}");
        }
        assert_eq!(codec.decode(&wire), Ok(Some((chat("héllo"), wire.len()))));
    }

    #[test]
    fn many_messages_crlf_and_blank_lines() {
        let codec = NdjsonCodec::<ChatLine>::new(256);
        let data = b"{\"content\":\"a\"}\r\n\n\t\n{\"content\":\"b\"}\n{\"content\":\"c\"}\r\n\n";
        let mut rest = &data[..];
        let mut got = Vec::new();
        while let Some((msg, used)) = codec.decode(rest).unwrap() {
            got.push(msg.content);
            rest = &rest[used..];
        }
        assert_eq!(got, ["a", "b", "c"]);
        assert_eq!(rest, b"\n"); // a trailing blank line waits for the next message
    }

    #[test]
    fn invalid_line_is_skipped_then_next_decodes() {
        let codec = NdjsonCodec::<ChatLine>::new(256);
        for bad in [
            &b"{\"content\":\"x\"\n"[..],                 // truncated object
            b"[1,2]\n",                                   // wrong type
            b"{\"content\":\"a\"} {\"content\":\"b\"}\n", // two values on a line
            b"\"\xff\xfe\"\n",                            // not UTF-8
            b"\n\n{\n",                                   // blank lines count toward `used`
        ] {
            let mut data = bad.to_vec();
            data.extend_from_slice(b"{\"content\":\"ok\"}\n");
            let used = match codec.decode(&data) {
                Err(e @ NdjsonError::Invalid { .. }) => e.used().unwrap(),
                other => panic!("{bad:?}: {other:?}"),
            };
            assert_eq!(used, bad.len(), "{bad:?}");
            let (msg, n) = codec.decode(&data[used..]).unwrap().unwrap();
            assert_eq!((msg.content.as_str(), used + n), ("ok", data.len()));
        }
    }

    #[test]
    fn limit_exactly_and_one_over() {
        let mut line = Vec::new();
        NdjsonCodec::encode(&chat("x"), &mut line).unwrap();
        let exact = NdjsonCodec::<ChatLine>::new(line.len());
        assert_eq!(exact.decode(&line), Ok(Some((chat("x"), line.len()))));
        let under = NdjsonCodec::<ChatLine>::new(line.len() - 1);
        let too_long = Err(NdjsonError::TooLong {
            max: line.len() - 1,
        });
        // Raised once max_line bytes are in, before the newline arrives.
        assert_eq!(under.decode(&line[..line.len() - 1]), too_long);
        assert_eq!(under.decode(&line[..line.len() - 2]), Ok(None));
        // Blank lines in front do not count against a line's limit.
        let mut padded = b"\n\n\n".to_vec();
        padded.extend_from_slice(&line);
        assert_eq!(exact.decode(&padded), Ok(Some((chat("x"), padded.len()))));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let codec = NdjsonCodec::<serde_json::Value>::new(1 << 16);
        let mut data = vec![b'['; 10_000];
        data.push(b'\n');
        assert!(matches!(
            codec.decode(&data),
            Err(NdjsonError::Invalid { used: 10_001, .. })
        ));
    }

    #[test]
    fn failed_encode_leaves_output_alone() {
        use std::collections::BTreeMap;
        let mut out = b"kept".to_vec();
        let bad: BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
        assert!(NdjsonCodec::encode(&bad, &mut out).is_err());
        assert_eq!(out, b"kept");
    }
}
