//! One trait for the decoders and one loop that drives them.

use std::fmt;

use super::line::{LineCodec, LineError};
#[cfg(feature = "services")]
use super::ndjson::{NdjsonCodec, NdjsonError};
#[cfg(feature = "services")]
use super::FrameError;

/// A decoder of frames from the front of a stream's unconsumed bytes, with
/// the contract of the [module docs](crate::codec): `Ok(Some((frame,
/// used)))` with `used > 0`, `Ok(None)` for "not complete yet", or an
/// error that says whether the bad bytes can be skipped.
///
/// `decode` takes `&mut self` so a decoder may remember work between
/// calls (how far it scanned a long line, as [`JsonLines`](super::JsonLines)
/// does); such a decoder must be offered, next time, the same unconsumed
/// bytes it saw last time, plus what arrived since: exactly what a
/// [`TcpService::on_data`](crate::service::TcpService::on_data) gets.
/// The stateless codecs ([`LineCodec`], [`NdjsonCodec`]) implement it too.
pub trait Decoder {
    /// One decoded frame; may borrow from the input (a [`LineCodec`] line).
    type Frame<'a>;
    /// Why the bytes at the front are not a frame.
    type Error: BadFrame;

    /// Decodes the frame at the front of `data`.
    fn decode<'a>(
        &mut self,
        data: &'a [u8],
    ) -> Result<Option<(Self::Frame<'a>, usize)>, Self::Error>;
}

/// A decoding error: shown to the peer, and either skippable or the end of
/// the stream.
pub trait BadFrame: fmt::Display {
    /// `Some(n)`: the bad frame is the next `n` bytes; skip them and go on.
    /// `None`: the stream cannot be resynchronised; close the connection.
    fn used(&self) -> Option<usize>;
}

/// What the caller of [`drive`] wants after acting on one frame or error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Decode the next frame.
    Continue,
    /// The connection is closing: stop, and count everything as used.
    Close,
    /// Stop after this frame: the rest stays unconsumed, to be offered
    /// again once the service takes input again (it paused reading).
    Pause,
}

/// The decode loop every framed service writes: decodes frame after frame
/// from `data`, hands each frame or error to `act`, and returns how many
/// bytes were consumed, ready to be returned from `on_data`.
///
/// - A frame: `act(Ok(frame))`, then on to the next.
/// - A skippable error ([`BadFrame::used`] is `Some`): `act(Err(e))`, the
///   bad bytes are skipped, then on to the next.
/// - An error that ends the stream (`used` is `None`): `act(Err(e))`
///   (which should reply and close the connection), then all of `data`
///   counts as consumed: nothing after it can be followed.
/// - `act` returning [`Flow::Close`]: all of `data` counts as consumed;
///   [`Flow::Pause`]: what follows the frame stays unconsumed.
/// - An incomplete frame: returns what was consumed before it; the rest
///   is offered again with the next read.
///
/// ```
/// use sockloop::codec::{drive, Flow, LineCodec};
///
/// let mut lines = Vec::new();
/// let consumed = drive(&mut LineCodec::new(16), b"one\ntwo\r\nthr", |line| {
///     lines.push(line.unwrap().to_vec());
///     Flow::Continue
/// });
/// assert_eq!((lines, consumed), (vec![b"one".to_vec(), b"two".to_vec()], 9));
/// ```
pub fn drive<'d, D: Decoder>(
    decoder: &mut D,
    data: &'d [u8],
    mut act: impl FnMut(Result<D::Frame<'d>, D::Error>) -> Flow,
) -> usize {
    let mut consumed = 0;
    loop {
        let (flow, used) = match decoder.decode(&data[consumed..]) {
            Ok(Some((frame, used))) => (act(Ok(frame)), Some(used)),
            Ok(None) => return consumed,
            Err(e) => {
                let used = e.used();
                (act(Err(e)), used)
            }
        };
        match (flow, used) {
            (Flow::Close, _) | (_, None) => return data.len(),
            (Flow::Pause, Some(used)) => return consumed + used,
            // Never spin on a decoder that breaks the contract.
            (Flow::Continue, Some(0)) => return consumed,
            (Flow::Continue, Some(used)) => consumed += used,
        }
    }
}

impl Decoder for LineCodec {
    type Frame<'a> = &'a [u8];
    type Error = LineError;

    fn decode<'a>(&mut self, data: &'a [u8]) -> Result<Option<(&'a [u8], usize)>, LineError> {
        LineCodec::decode(self, data)
    }
}

#[cfg(feature = "services")]
impl<T: serde::de::DeserializeOwned + serde::Serialize> Decoder for NdjsonCodec<T> {
    type Frame<'a> = T;
    type Error = NdjsonError;

    fn decode(&mut self, data: &[u8]) -> Result<Option<(T, usize)>, NdjsonError> {
        NdjsonCodec::decode(self, data)
    }
}

impl BadFrame for LineError {
    fn used(&self) -> Option<usize> {
        LineError::used(self)
    }
}

#[cfg(feature = "services")]
impl BadFrame for NdjsonError {
    fn used(&self) -> Option<usize> {
        NdjsonError::used(self)
    }
}

#[cfg(feature = "services")]
impl BadFrame for FrameError {
    fn used(&self) -> Option<usize> {
        FrameError::used(self)
    }
}

#[cfg(all(test, feature = "services"))]
mod tests {
    use super::*;

    #[test]
    fn skippable_errors_are_skipped_and_fatal_ones_consume_everything() {
        let mut codec = NdjsonCodec::<serde_json::Value>::new(8);
        let mut seen = Vec::new();
        let data = b"1\nnope\n2\n[1,2,3,4,5]";
        let consumed = drive(&mut codec, data, |got| {
            seen.push(got.map_err(|e| e.used()));
            Flow::Continue
        });
        assert_eq!(consumed, data.len());
        assert_eq!(seen, [Ok(1.into()), Err(Some(5)), Ok(2.into()), Err(None)]);
    }

    #[test]
    fn close_consumes_everything_and_partial_frames_stay() {
        let mut codec = LineCodec::new(64);
        let mut calls = 0;
        assert_eq!(
            drive(&mut codec, b"a\nb\nc\n", |_| {
                calls += 1;
                Flow::Close
            }),
            6
        );
        assert_eq!(calls, 1);
        assert_eq!(drive(&mut codec, b"a\nb", |_| Flow::Continue), 2);
        assert_eq!(drive(&mut codec, b"", |_| Flow::Continue), 0);
    }

    #[test]
    fn pause_leaves_what_follows_the_frame() {
        let mut codec = LineCodec::new(64);
        let mut seen = Vec::new();
        let consumed = drive(
            &mut codec,
            b"one
two
three
",
            |line| {
                seen.push(line.unwrap().to_vec());
                match seen.len() {
                    2 => Flow::Pause,
                    _ => Flow::Continue,
                }
            },
        );
        assert_eq!(consumed, 8);
        assert_eq!(seen, [b"one".to_vec(), b"two".to_vec()]);
    }
}
