//! Newline-delimited JSON that scans a long line once, however many reads
//! it takes to arrive, and explains its errors plainly.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;

use serde::de::DeserializeOwned;

use super::decoder::Decoder;
use super::json_error::describe_json_error;
use super::ndjson::NdjsonError;

/// Decodes one JSON value of type `T` per line, like [`NdjsonCodec`]
/// (same framing, blank lines, limit and error variants), with two
/// differences:
///
/// - **It remembers how far it scanned.** A line that arrives over many
///   reads is searched for its newline once in all (O(n)), not once per
///   read from its start (O(n²): 200 reads of 64 KiB for a 13 MB line, each
///   rescanning megabytes, the loop's other connections waiting). So the
///   decoder belongs to one connection, and each call must be offered the
///   bytes the last call left unconsumed, plus what arrived since (what
///   `on_data` gets). Offered anything shorter, it starts over.
/// - **Its error texts say what is wrong in JSON's terms, and at which
///   column** (see [`describe_json_error`]).
///
/// [`decode`](Decoder::decode) parses the complete line in one call
/// (`serde_json` cannot resume); [`next_line`](JsonLines::next_line) frames
/// it only, for a caller that parses a long line a slice at a time with
/// [`JsonSteps`](super::JsonSteps), as the json service does.
///
/// ```
/// use sockloop::codec::{Decoder, JsonLines, NdjsonError};
///
/// let mut decoder = JsonLines::<serde_json::Value>::new(1024);
/// let mut data = b"{\"a\":".to_vec();
/// assert_eq!(decoder.decode(&data), Ok(None)); // scanned 5 bytes, remembered
/// data.extend_from_slice(b"1}\n{\"a\":\"\\ud800\"}\n");
/// let (value, used) = decoder.decode(&data)?.unwrap(); // scans from byte 5 on
/// assert_eq!((value, used), (serde_json::json!({"a": 1}), 8));
/// let error = decoder.decode(&data[used..]).unwrap_err();
/// assert_eq!(error, NdjsonError::Invalid {
///     used: 15,
///     reason: r"lone surrogate escape \ud800 at column 7: a high surrogate must be followed by a low one (\udc00-\udfff)".into(),
/// });
/// # Ok::<(), NdjsonError>(())
/// ```
///
/// [`NdjsonCodec`]: super::NdjsonCodec
pub struct JsonLines<T> {
    max_line: usize,
    /// Where the line being scanned starts (after blank lines not yet
    /// consumed) in the input the last call saw.
    line_start: usize,
    /// Bytes of that input already searched: `line_start..scanned` holds
    /// no newline.
    scanned: usize,
    _message: PhantomData<fn() -> T>,
}

impl<T> JsonLines<T> {
    /// A decoder for lines of at most `max_line` bytes, terminator
    /// included, with nothing scanned yet.
    pub const fn new(max_line: usize) -> Self {
        JsonLines {
            max_line,
            line_start: 0,
            scanned: 0,
            _message: PhantomData,
        }
    }

    /// The most bytes one line may occupy, terminator included.
    pub const fn max_line(&self) -> usize {
        self.max_line
    }

    /// True if the decoder remembers a partly scanned line: keep it for
    /// the connection's next call. False: it holds nothing a fresh one
    /// would not.
    ///
    /// ```
    /// use sockloop::codec::{Decoder, JsonLines};
    ///
    /// let mut decoder = JsonLines::<serde_json::Value>::new(64);
    /// assert!(!decoder.is_scanning());
    /// decoder.decode(b"[1,").unwrap();
    /// assert!(decoder.is_scanning());
    /// ```
    pub const fn is_scanning(&self) -> bool {
        self.scanned > 0
    }

    /// Frames the next non-blank line without parsing it: its span in
    /// `data` (terminator excluded) and the bytes it used, blank lines
    /// before it included. Same framing, limit and resumption as
    /// [`decode`](Decoder::decode), for a caller that parses the line its
    /// own way (a long one a slice at a time, see [`JsonSteps`]).
    ///
    /// ```
    /// use sockloop::codec::JsonLines;
    ///
    /// let mut lines = JsonLines::<serde_json::Value>::new(64);
    /// assert_eq!(lines.next_line(b"\n[1]\r\n[2"), Ok(Some((1..4, 6))));
    /// assert_eq!(lines.next_line(b"[2"), Ok(None));
    /// ```
    ///
    /// [`JsonSteps`]: super::JsonSteps
    pub fn next_line(&mut self, data: &[u8]) -> Result<Option<(Range<usize>, usize)>, NdjsonError> {
        // Resume where the last call stopped, unless the input shrank (then
        // it is not the same input: start over).
        let (mut start, mut pos) = match self.scanned <= data.len() {
            true => (self.line_start, self.scanned),
            false => (0, 0),
        };
        self.line_start = 0;
        self.scanned = 0;
        loop {
            // Only the first max_line bytes of the line can hold its newline.
            let window_end = data.len().min(start.saturating_add(self.max_line));
            let newline = data
                .get(pos..window_end)
                .and_then(|window| window.iter().position(|&b| b == b'\n'));
            let Some(newline) = newline.map(|i| pos + i) else {
                if data.len() > start && data.len() - start >= self.max_line {
                    return Err(NdjsonError::TooLong { max: self.max_line });
                }
                self.line_start = start;
                self.scanned = data.len();
                return Ok(None);
            };
            let used = newline + 1;
            let end = match data[start..newline].ends_with(b"\r") {
                true => newline - 1,
                false => newline,
            };
            if data[start..end]
                .iter()
                .all(|&b| matches!(b, b' ' | b'\t' | b'\r'))
            {
                (start, pos) = (used, used); // a blank line: skip it
                continue;
            }
            return Ok(Some((start..end, used)));
        }
    }
}

impl<T: DeserializeOwned> Decoder for JsonLines<T> {
    type Frame<'a> = T;
    type Error = NdjsonError;

    fn decode(&mut self, data: &[u8]) -> Result<Option<(T, usize)>, NdjsonError> {
        let Some((span, used)) = self.next_line(data)? else {
            return Ok(None);
        };
        let line = &data[span];
        match serde_json::from_slice(line) {
            Ok(message) => Ok(Some((message, used))),
            Err(e) => Err(NdjsonError::Invalid {
                used,
                reason: describe_json_error(line, &e),
            }),
        }
    }
}

// Manual impls: derives would demand T: Debug/Clone for no reason.
impl<T> fmt::Debug for JsonLines<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonLines")
            .field("max_line", &self.max_line)
            .field("line_start", &self.line_start)
            .field("scanned", &self.scanned)
            .finish()
    }
}

impl<T> Clone for JsonLines<T> {
    fn clone(&self) -> Self {
        JsonLines {
            _message: PhantomData,
            ..*self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::NdjsonCodec;
    use serde_json::Value;

    /// Feeds `wire` in pieces of `step` bytes, as the loop offers it, and
    /// collects the outcomes (errors by their `used`).
    fn feed(wire: &[u8], step: usize, max: usize) -> Vec<Result<(Value, usize), Option<usize>>> {
        let mut decoder = JsonLines::<Value>::new(max);
        let (mut got, mut start, mut end) = (Vec::new(), 0, 0);
        while end < wire.len() {
            end = (end + step).min(wire.len());
            loop {
                match decoder.decode(&wire[start..end]) {
                    Ok(Some((value, used))) => {
                        got.push(Ok((value, used)));
                        start += used;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        got.push(Err(e.used()));
                        match e.used() {
                            Some(used) => start += used,
                            None => return got,
                        }
                    }
                }
            }
        }
        got
    }

    #[test]
    fn agrees_with_ndjson_codec_at_every_split() {
        let wire = b"\n{\"a\":1}\r\n \n[1,2]\nnope\n\"s\"\n{\"b\":[true,null]}\n\n{\"tail\":";
        let mut reference = Vec::new();
        let (codec, mut rest) = (NdjsonCodec::<Value>::new(32), &wire[..]);
        loop {
            match codec.decode(rest) {
                Ok(Some((value, used))) => {
                    reference.push(Ok((value, used)));
                    rest = &rest[used..];
                }
                Ok(None) => break,
                Err(e) => {
                    reference.push(Err(e.used()));
                    rest = &rest[e.used().unwrap()..];
                }
            }
        }
        assert_eq!(reference.len(), 5);
        for step in 1..=wire.len() {
            assert_eq!(feed(wire, step, 32), reference, "step {step}");
        }
    }

    #[test]
    fn the_limit_is_the_ndjson_codecs() {
        for max in [1, 2, 5, 8, 9, 10] {
            for wire in [
                &b"[1,2,3]\n"[..],
                b"\n\n[1]\r\n",
                b"12345678",
                b"[1]\n[22]\n",
            ] {
                let mut reference = Vec::new();
                let (codec, mut rest) = (NdjsonCodec::<Value>::new(max), wire);
                loop {
                    match codec.decode(rest) {
                        Ok(Some((v, used))) => {
                            reference.push(Ok((v, used)));
                            rest = &rest[used..];
                        }
                        Ok(None) => break,
                        Err(e) => {
                            reference.push(Err(e.used()));
                            match e.used() {
                                Some(used) => rest = &rest[used..],
                                None => break,
                            }
                        }
                    }
                }
                for step in 1..=wire.len() {
                    assert_eq!(
                        feed(wire, step, max),
                        reference,
                        "{wire:?} max {max} step {step}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_long_line_is_scanned_once_across_reads() {
        let mut decoder = JsonLines::<Value>::new(1 << 20);
        let mut data = b"{\"a\":\"".to_vec();
        data.resize(100_000, b'x');
        assert_eq!(decoder.decode(&data[..50_000]), Ok(None));
        assert_eq!((decoder.line_start, decoder.scanned), (0, 50_000));
        assert_eq!(decoder.decode(&data), Ok(None));
        assert_eq!(decoder.scanned, 100_000);
        // Input shorter than what was scanned is not the same input.
        assert_eq!(
            decoder.decode(b"{}\n"),
            Ok(Some((serde_json::json!({}), 3)))
        );
        assert!(!decoder.is_scanning());
    }
}
