//! Protobuf records behind a varint length prefix (prost's "length
//! delimited" format, as `encode_length_delimited` writes it).

use std::fmt;

use prost::Message;

/// The longest a varint length prefix may be: 10 bytes carry 64 bits.
///
/// ```
/// use sockloop::codec::{FrameError, LengthDelimited, MAX_VARINT_LEN};
///
/// let codec = LengthDelimited::new(usize::MAX);
/// let overlong = [0x80; MAX_VARINT_LEN + 1];
/// assert_eq!(codec.decode_header(&overlong), Err(FrameError::BadVarint));
/// ```
pub const MAX_VARINT_LEN: usize = 10;

/// Frames protobuf messages as `varint(len) ++ body`.
///
/// `max_frame` bounds the body. A larger declared length is refused as soon
/// as the prefix shows it, before any body byte is awaited or allocated.
/// Keep `max_frame + MAX_VARINT_LEN` within the connection's read buffer,
/// or a legal frame could never fit in it.
///
/// ```
/// use sockloop::codec::LengthDelimited;
/// use sockloop::protocol::chat::ChatMessage;
///
/// let codec = LengthDelimited::new(4096);
/// let msg = ChatMessage { content: "hi".into(), ..Default::default() };
/// let mut wire = Vec::new();
/// LengthDelimited::encode(&msg, &mut wire)?;
/// assert_eq!(codec.decode::<ChatMessage>(&wire[..2])?, None); // body not here yet
/// assert_eq!(codec.decode(&wire)?, Some((msg, wire.len())));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LengthDelimited {
    /// Largest body accepted, in bytes (the prefix not included).
    ///
    /// ```
    /// use sockloop::codec::{FrameError, LengthDelimited};
    ///
    /// let codec = LengthDelimited { max_frame: 127 };
    /// assert_eq!(codec.decode_header(&[0x7f]), Ok(Some((127, 1))));
    /// assert_eq!(codec.decode_header(&[0x80, 0x01]), Err(FrameError::TooLarge { len: 128, max: 127 }));
    /// ```
    pub max_frame: usize,
}

impl LengthDelimited {
    /// A codec for bodies of at most `max_frame` bytes.
    ///
    /// ```
    /// use sockloop::codec::LengthDelimited;
    ///
    /// assert_eq!(LengthDelimited::new(1 << 16).max_frame, 65536);
    /// ```
    pub const fn new(max_frame: usize) -> Self {
        LengthDelimited { max_frame }
    }

    /// Reads the length prefix at the front of `data`: `(body_len,
    /// prefix_len)`, or `Ok(None)` while the prefix is incomplete.
    ///
    /// Useful on its own to skip or forward a frame without decoding it.
    /// Errors: [`FrameError::TooLarge`] as soon as the prefix (even a
    /// partial one) exceeds `max_frame`; [`FrameError::BadVarint`] for a
    /// prefix over 10 bytes or 64 bits. Both end the stream.
    ///
    /// ```
    /// use sockloop::codec::LengthDelimited;
    ///
    /// let codec = LengthDelimited::new(1 << 20);
    /// assert_eq!(codec.decode_header(&[0xac, 0x02, 0xff]), Ok(Some((300, 2))));
    /// assert_eq!(codec.decode_header(&[0xac]), Ok(None)); // continuation bit set
    /// ```
    pub fn decode_header(&self, data: &[u8]) -> Result<Option<(usize, usize)>, FrameError> {
        let max = u64::try_from(self.max_frame).unwrap_or(u64::MAX);
        let mut len: u64 = 0;
        for (i, &byte) in data.iter().take(MAX_VARINT_LEN).enumerate() {
            // The 10th byte holds bit 63 only: anything more overflows u64
            // (or, with the continuation bit, makes an 11-byte varint).
            if i == MAX_VARINT_LEN - 1 && byte > 1 {
                return Err(FrameError::BadVarint);
            }
            len |= u64::from(byte & 0x7f) << (7 * i);
            // Later bytes only add bits: refuse as soon as the bound is passed.
            if len > max {
                return Err(FrameError::TooLarge {
                    len,
                    max: self.max_frame,
                });
            }
            if byte & 0x80 == 0 {
                return match usize::try_from(len) {
                    Ok(body) => Ok(Some((body, i + 1))),
                    // Unreachable since len <= max_frame, but never panic.
                    Err(_) => Err(FrameError::TooLarge {
                        len,
                        max: self.max_frame,
                    }),
                };
            }
        }
        Ok(None) // fewer than 10 bytes, all with the continuation bit
    }

    /// Decodes the frame at the front of `data`: the message and the bytes
    /// the frame used (prefix + body).
    ///
    /// `Ok(None)` until the whole body is buffered. Errors:
    /// [`FrameError::Invalid`] for a complete body that is not a valid `M`
    /// (skip `used` bytes and go on), [`FrameError::TooLarge`] and
    /// [`FrameError::BadVarint`] as in [`decode_header`](Self::decode_header).
    ///
    /// ```
    /// use sockloop::codec::{FrameError, LengthDelimited};
    /// use sockloop::protocol::chat::ChatMessage;
    ///
    /// let codec = LengthDelimited::new(64);
    /// // A 2-byte body holding field 1 as a varint: the wrong wire type.
    /// let data = [0x02, 0x08, 0x01, 0x00];
    /// let err = codec.decode::<ChatMessage>(&data).unwrap_err();
    /// assert!(matches!(err, FrameError::Invalid { used: 3, .. }));
    /// // An empty body is a valid message with every field at its default.
    /// assert_eq!(codec.decode(&data[3..]), Ok(Some((ChatMessage::default(), 1))));
    /// ```
    pub fn decode<M: Message + Default>(
        &self,
        data: &[u8],
    ) -> Result<Option<(M, usize)>, FrameError> {
        let Some((len, start)) = self.decode_header(data)? else {
            return Ok(None);
        };
        // start <= data.len(), and end is only formed once it fits in data.
        let rest = &data[start..];
        if rest.len() < len {
            return Ok(None);
        }
        let used = start + len;
        match M::decode(&rest[..len]) {
            Ok(message) => Ok(Some((message, used))),
            Err(e) => Err(FrameError::Invalid {
                used,
                reason: e.to_string(),
            }),
        }
    }

    /// Appends `message` with its varint length prefix to `out`.
    ///
    /// Fails only if `out` cannot hold it, which a `Vec` always can (prost
    /// checks capacity first, so nothing is written then).
    ///
    /// ```
    /// use sockloop::codec::LengthDelimited;
    /// use sockloop::protocol::chat::ChatMessage;
    ///
    /// let mut out = Vec::new();
    /// let msg = ChatMessage { content: "hi".into(), ..Default::default() };
    /// LengthDelimited::encode(&msg, &mut out)?;
    /// assert_eq!(out, [4, 0x12, 2, b'h', b'i']); // len 4: tag 2 (string), len 2, "hi"
    /// # Ok::<(), prost::EncodeError>(())
    /// ```
    pub fn encode<M: Message>(message: &M, out: &mut Vec<u8>) -> Result<(), prost::EncodeError> {
        message.encode_length_delimited(out)
    }
}

/// Why [`LengthDelimited::decode`] failed.
///
/// ```
/// use sockloop::codec::{FrameError, LengthDelimited};
///
/// let codec = LengthDelimited::new(500);
/// let err = codec.decode_header(&[0xe8, 0x07]).unwrap_err(); // 1000 bytes declared
/// assert_eq!(err, FrameError::TooLarge { len: 1000, max: 500 });
/// assert_eq!(err.used(), None); // the stream is lost: close the connection
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FrameError {
    /// The declared body length exceeds `max`. Raised from the prefix
    /// alone, so `len` is a lower bound when the prefix was incomplete.
    TooLarge {
        /// Declared body length (or a lower bound of it).
        len: u64,
        /// The codec's `max_frame`.
        max: usize,
    },
    /// The length prefix is longer than 10 bytes or overflows 64 bits.
    BadVarint,
    /// A complete frame whose body is not a valid message. Skip `used`
    /// bytes (prefix + body) and go on.
    Invalid {
        /// Bytes the bad frame occupied at the front of the input.
        used: usize,
        /// prost's description of the problem.
        reason: String,
    },
}

impl FrameError {
    /// How many bytes to skip to get past the bad frame, if known.
    ///
    /// ```
    /// use sockloop::codec::FrameError;
    ///
    /// assert_eq!(FrameError::Invalid { used: 3, reason: String::new() }.used(), Some(3));
    /// assert_eq!(FrameError::BadVarint.used(), None);
    /// ```
    pub fn used(&self) -> Option<usize> {
        match self {
            FrameError::Invalid { used, .. } => Some(*used),
            FrameError::TooLarge { .. } | FrameError::BadVarint => None,
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the {max}-byte limit")
            }
            FrameError::BadVarint => f.write_str("length prefix over 10 bytes or 64 bits"),
            FrameError::Invalid { reason, .. } => write!(f, "invalid message: {reason}"),
        }
    }
}

impl std::error::Error for FrameError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::chat::ChatMessage;

    fn chat(content: &str) -> ChatMessage {
        ChatMessage {
            from: "u".into(),
            content: content.into(),
            time: "01:02:03".into(),
            room: "r".into(),
        }
    }

    fn varint(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::encode_varint(v, &mut out);
        // Cross-check prost's writer against the textbook loop.
        let mut ours = Vec::new();
        while v >= 0x80 {
            ours.push((v as u8) | 0x80);
            v >>= 7;
        }
        ours.push(v as u8);
        assert_eq!(out, ours);
        out
    }

    #[test]
    fn split_at_every_byte() {
        let codec = LengthDelimited::new(1024);
        let msg = chat(&"x".repeat(200)); // body > 127: a 2-byte prefix
        let mut wire = Vec::new();
        LengthDelimited::encode(&msg, &mut wire).unwrap();
        for cut in 0..wire.len() {
            assert_eq!(
                codec.decode::<ChatMessage>(&wire[..cut]),
                Ok(None),
                "cut {cut}"
            );
        }
        assert_eq!(codec.decode(&wire), Ok(Some((msg, wire.len()))));
    }

    #[test]
    fn many_frames_in_one_buffer() {
        let codec = LengthDelimited::new(1024);
        let msgs = [
            chat("a"),
            ChatMessage::default(),
            chat(""),
            chat(&"é".repeat(100)),
        ];
        let mut wire = Vec::new();
        for m in &msgs {
            LengthDelimited::encode(m, &mut wire).unwrap();
        }
        wire.push(0x05); // the start of a next frame
        let mut rest = &wire[..];
        let mut got = Vec::new();
        while let Some((m, used)) = codec.decode::<ChatMessage>(rest).unwrap() {
            got.push(m);
            rest = &rest[used..];
        }
        assert_eq!(got, msgs);
        assert_eq!(rest, [0x05]);
    }

    #[test]
    fn varint_edges() {
        let codec = LengthDelimited::new(usize::MAX);
        for (len, prefix) in [(0, 1), (127, 1), (128, 2), (16383, 2), (16384, 3)] {
            let wire = varint(len);
            assert_eq!(wire.len(), prefix);
            assert_eq!(codec.decode_header(&wire), Ok(Some((len as usize, prefix))));
            // Truncated prefix: need more, never an error.
            for cut in 0..prefix {
                assert_eq!(codec.decode_header(&wire[..cut]), Ok(None));
            }
        }
        // Largest 10-byte varint (u64::MAX) parses; it is then just too large here.
        let max = varint(u64::MAX);
        assert_eq!(max.len(), MAX_VARINT_LEN);
        let bounded = LengthDelimited::new(1 << 20);
        let too_large = bounded.decode_header(&max);
        assert!(matches!(
            too_large,
            Err(FrameError::TooLarge { max: 1_048_576, .. })
        ));
        // Non-canonical but legal padding, as prost accepts it.
        assert_eq!(codec.decode_header(&[0x80, 0x80, 0x00]), Ok(Some((0, 3))));
    }

    #[test]
    fn bad_varints() {
        let codec = LengthDelimited::new(usize::MAX);
        // 11 bytes: continuation bit on the 10th.
        let mut eleven = vec![0x80; 10];
        eleven.push(0x00);
        assert_eq!(codec.decode_header(&eleven), Err(FrameError::BadVarint));
        // Detected at the 10th byte, before an 11th arrives.
        assert_eq!(
            codec.decode_header(&eleven[..10]),
            Err(FrameError::BadVarint)
        );
        assert_eq!(codec.decode_header(&eleven[..9]), Ok(None));
        // 10 bytes whose last one carries bits beyond 64.
        let mut overflow = vec![0xff; 9];
        overflow.push(0x02);
        assert_eq!(codec.decode_header(&overflow), Err(FrameError::BadVarint));
        assert!(codec.decode::<ChatMessage>(&overflow).is_err());
    }

    #[test]
    fn max_frame_exactly_and_one_over() {
        let max = 300;
        let codec = LengthDelimited::new(max);
        // At the limit: waits for the body, then decodes (a string field sized to fit).
        let msg = ChatMessage {
            content: "y".repeat(max - 3),
            ..Default::default()
        };
        let mut wire = Vec::new();
        LengthDelimited::encode(&msg, &mut wire).unwrap();
        assert_eq!(codec.decode_header(&wire), Ok(Some((max, 2))));
        assert_eq!(codec.decode::<ChatMessage>(&wire[..2]), Ok(None));
        assert_eq!(codec.decode(&wire), Ok(Some((msg, max + 2))));
        // One over: refused from the 2-byte prefix alone, no body needed.
        let over = varint(max as u64 + 1);
        let err = Err(FrameError::TooLarge {
            len: max as u64 + 1,
            max,
        });
        assert_eq!(codec.decode::<ChatMessage>(&over), err);
        // A partial prefix already past the limit is refused too.
        let codec = LengthDelimited::new(100);
        let err = codec.decode_header(&[0xff]);
        assert_eq!(err, Err(FrameError::TooLarge { len: 127, max: 100 }));
        assert_eq!(
            LengthDelimited::new(0)
                .decode_header(&[0x01])
                .unwrap_err()
                .used(),
            None
        );
    }

    #[test]
    fn invalid_body_is_skipped_then_next_decodes() {
        let codec = LengthDelimited::new(64);
        let mut data = vec![
            0x04, 0x12, 0x05, b'h', b'i', // string claims 5 bytes, body has 2
            0x03, 0x12, 0x01, 0xff, // field 2 is not UTF-8
            0x01, 0x07, // tag with wire type 7
        ];
        let bad_lens = [5, 4, 2];
        LengthDelimited::encode(&chat("ok"), &mut data).unwrap();
        let mut rest = &data[..];
        for want in bad_lens {
            let err = codec.decode::<ChatMessage>(rest).unwrap_err();
            assert!(matches!(err, FrameError::Invalid { .. }), "{err}");
            assert_eq!(err.used(), Some(want), "{err}");
            rest = &rest[want..];
        }
        assert_eq!(codec.decode(rest), Ok(Some((chat("ok"), rest.len()))));
    }
}
