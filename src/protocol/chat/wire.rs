//! The chat's two encodings on a stream: newline-delimited JSON (the
//! classic tutorial's clients work unchanged) and varint-delimited protobuf
//! `ChatMessage`s. Decoding looks at the front of the input the way the
//! [codecs](crate::codec) do: a message and the bytes it used, `None` for
//! an incomplete frame, or a [`DecodeError`].

use std::fmt;

use super::{json, ChatLine, ChatMessage, Encoding};
use crate::codec::{FrameError, LengthDelimited, LineCodec, LineError, NdjsonCodec, NdjsonError};

/// Why the frame at the front of the input is not a message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DecodeError {
    /// A complete frame that is not a message: bad JSON, a protobuf body
    /// that does not decode, a username that is not UTF-8. Skip `used`
    /// bytes and go on.
    Invalid {
        /// Bytes the bad frame occupied at the front of the input.
        used: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// `max` bytes arrived without a newline (JSON): the stream cannot be
    /// followed any more.
    NoNewline {
        /// The limit on a line, terminator included.
        max: usize,
    },
    /// A protobuf frame declares more than `max` body bytes (`len` is a
    /// lower bound when the prefix was incomplete): the stream cannot be
    /// followed any more.
    TooLarge {
        /// Declared body length (or a lower bound of it).
        len: u64,
        /// The limit on a body.
        max: usize,
    },
    /// A protobuf length prefix over 10 bytes or 64 bits.
    BadVarint,
}

impl DecodeError {
    /// How many bytes to skip to get past the bad frame; `None`: the
    /// stream cannot be resynchronised, close the connection.
    ///
    /// ```
    /// use sockloop::protocol::chat::DecodeError;
    ///
    /// assert_eq!(DecodeError::Invalid { used: 3, reason: String::new() }.used(), Some(3));
    /// assert_eq!(DecodeError::NoNewline { max: 64 }.used(), None);
    /// ```
    pub fn used(&self) -> Option<usize> {
        match self {
            DecodeError::Invalid { used, .. } => Some(*used),
            DecodeError::NoNewline { .. } | DecodeError::TooLarge { .. } => None,
            DecodeError::BadVarint => None,
        }
    }
}

impl crate::codec::BadFrame for DecodeError {
    fn used(&self) -> Option<usize> {
        DecodeError::used(self)
    }
}

/// The codecs' own words, so a member is told what it always was.
impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Invalid { reason, .. } => write!(f, "invalid message: {reason}"),
            DecodeError::NoNewline { max } => write!(f, "no newline within {max} bytes"),
            DecodeError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the {max}-byte limit")
            }
            DecodeError::BadVarint => f.write_str("length prefix over 10 bytes or 64 bits"),
        }
    }
}

impl std::error::Error for DecodeError {}

impl From<LineError> for DecodeError {
    fn from(e: LineError) -> DecodeError {
        match e {
            LineError::TooLong { max } => DecodeError::NoNewline { max },
        }
    }
}

impl From<NdjsonError> for DecodeError {
    fn from(e: NdjsonError) -> DecodeError {
        match e {
            NdjsonError::Invalid { used, reason } => DecodeError::Invalid { used, reason },
            NdjsonError::TooLong { max } => DecodeError::NoNewline { max },
        }
    }
}

impl From<FrameError> for DecodeError {
    fn from(e: FrameError) -> DecodeError {
        match e {
            FrameError::Invalid { used, reason } => DecodeError::Invalid { used, reason },
            FrameError::TooLarge { len, max } => DecodeError::TooLarge { len, max },
            FrameError::BadVarint => DecodeError::BadVarint,
        }
    }
}

/// What the front of `data` holds: a message and the bytes it used, or
/// `None` if it is not complete yet. `max_frame` bounds a JSON line
/// (terminator included) or a protobuf body. JSON messages carry no `room`.
pub fn decode_message(
    encoding: Encoding,
    max_frame: usize,
    data: &[u8],
) -> Result<Option<(ChatMessage, usize)>, DecodeError> {
    match encoding {
        Encoding::Json => {
            let decoded = NdjsonCodec::<ChatLine>::new(max_frame).decode(data)?;
            Ok(decoded.map(|(line, used)| (line.into(), used)))
        }
        Encoding::Protobuf => Ok(LengthDelimited::new(max_frame).decode(data)?),
    }
}

/// The username a new member sends first, from the front of `data`, and
/// the bytes it used: JSON members send a bare line, protobuf members a
/// message whose `content` is the name. Not trimmed or checked: that is
/// the service's business.
pub fn decode_name(
    encoding: Encoding,
    max_frame: usize,
    data: &[u8],
) -> Result<Option<(String, usize)>, DecodeError> {
    match encoding {
        Encoding::Json => match LineCodec::new(max_frame).decode(data)? {
            Some((line, used)) => match std::str::from_utf8(line) {
                Ok(name) => Ok(Some((name.to_owned(), used))),
                Err(_) => Err(DecodeError::Invalid {
                    used,
                    reason: "the username is not UTF-8".into(),
                }),
            },
            None => Ok(None),
        },
        Encoding::Protobuf => {
            let decoded = decode_message(encoding, max_frame, data)?;
            Ok(decoded.map(|(message, used)| (message.content, used)))
        }
    }
}

/// Appends `message` as `encoding` puts it on the wire: one JSON line
/// (without `room`), or one length-delimited protobuf record.
pub fn encode(encoding: Encoding, message: &ChatMessage, out: &mut Vec<u8>) {
    match encoding {
        Encoding::Json => json::encode(message, out),
        // A Vec grows as needed, so encoding cannot fail.
        Encoding::Protobuf => {
            let _ = LengthDelimited::encode(message, out);
        }
    }
}

/// A message from `ann` in `lobby` at 01:02:03: the tests' fixture.
#[cfg(test)]
pub(crate) fn sample(content: &str) -> ChatMessage {
    ChatMessage {
        from: "ann".into(),
        content: content.into(),
        time: "01:02:03".into(),
        room: "lobby".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::sample as message;

    fn text(content: &str) -> ChatMessage {
        ChatMessage {
            content: content.into(),
            ..ChatMessage::default()
        }
    }

    #[test]
    fn json_username_line_then_messages() {
        let data = b"ann\r\n{\"content\":\"hi\",\"from\":\"forged\"}\n";
        let name = decode_name(Encoding::Json, 64, data);
        assert_eq!(name, Ok(Some(("ann".into(), 5))));
        let rest = &data[5..];
        let msg = decode_message(Encoding::Json, 64, rest);
        let forged = ChatMessage {
            from: "forged".into(),
            ..text("hi")
        };
        assert_eq!(msg, Ok(Some((forged, rest.len()))));
        assert_eq!(decode_message(Encoding::Json, 64, b"{\"con"), Ok(None));
        assert_eq!(decode_name(Encoding::Json, 64, b"an"), Ok(None));
    }

    #[test]
    fn json_errors() {
        let bad = decode_message(Encoding::Json, 64, b"{nope\n");
        assert!(
            matches!(bad, Err(DecodeError::Invalid { used: 6, .. })),
            "{bad:?}"
        );
        let bad = decode_name(Encoding::Json, 64, b"\xff\xfe\n");
        let not_utf8 = DecodeError::Invalid {
            used: 3,
            reason: "the username is not UTF-8".into(),
        };
        assert_eq!(bad, Err(not_utf8));
        let long = [b'a'; 64];
        let fatal = decode_name(Encoding::Json, 64, &long);
        assert_eq!(fatal, Err(DecodeError::NoNewline { max: 64 }));
        let fatal = decode_message(Encoding::Json, 64, &long);
        assert_eq!(fatal, Err(DecodeError::NoNewline { max: 64 }));
    }

    #[test]
    fn protobuf_frames() {
        let mut wire = Vec::new();
        LengthDelimited::encode(&message("hi"), &mut wire).unwrap();
        for cut in 0..wire.len() {
            let got = decode_message(Encoding::Protobuf, 64, &wire[..cut]);
            assert_eq!(got, Ok(None));
            assert_eq!(decode_name(Encoding::Protobuf, 64, &wire[..cut]), Ok(None));
        }
        let whole = decode_name(Encoding::Protobuf, 64, &wire);
        assert_eq!(whole, Ok(Some(("hi".into(), wire.len()))));
        let whole = decode_message(Encoding::Protobuf, 64, &wire);
        assert_eq!(whole, Ok(Some((message("hi"), wire.len()))));
        // A complete frame whose string claims more bytes than it holds.
        let truncated = [0x04, 0x12, 0x05, b'h', b'i'];
        let bad = decode_message(Encoding::Protobuf, 64, &truncated);
        assert!(
            matches!(bad, Err(DecodeError::Invalid { used: 5, .. })),
            "{bad:?}"
        );
        let too_large = decode_message(Encoding::Protobuf, 64, &[65]);
        assert_eq!(too_large, Err(DecodeError::TooLarge { len: 65, max: 64 }));
        let bad_varint = decode_message(Encoding::Protobuf, usize::MAX, &[0xff; 11]);
        assert_eq!(bad_varint, Err(DecodeError::BadVarint));
    }

    #[test]
    fn errors_say_what_the_codecs_say() {
        let cases = [
            (
                DecodeError::from(NdjsonError::Invalid {
                    used: 1,
                    reason: "x".into(),
                }),
                "invalid message: x",
            ),
            (
                DecodeError::from(LineError::TooLong { max: 8 }),
                "no newline within 8 bytes",
            ),
            (
                DecodeError::from(NdjsonError::TooLong { max: 8 }),
                "no newline within 8 bytes",
            ),
            (
                DecodeError::from(FrameError::TooLarge { len: 9, max: 8 }),
                "frame of 9 bytes exceeds the 8-byte limit",
            ),
            (
                DecodeError::from(FrameError::BadVarint),
                "length prefix over 10 bytes or 64 bits",
            ),
        ];
        for (error, said) in cases {
            assert_eq!(error.to_string(), said);
        }
        let invalid = FrameError::Invalid {
            used: 4,
            reason: "y".into(),
        };
        assert_eq!(
            DecodeError::from(invalid.clone()).to_string(),
            invalid.to_string()
        );
        assert_eq!(DecodeError::from(invalid).used(), Some(4));
        assert_eq!(DecodeError::BadVarint.used(), None);
    }

    #[test]
    fn encode_in_both_encodings() {
        let sent = message("a \"quote\"\n");
        let mut json = Vec::new();
        encode(Encoding::Json, &sent, &mut json);
        let want = "{\"from\":\"ann\",\"content\":\"a \\\"quote\\\"\\n\",\"time\":\"01:02:03\"}\n";
        assert_eq!(String::from_utf8(json.clone()).unwrap(), want);
        let got = decode_message(Encoding::Json, 1024, &json);
        let without_room = ChatMessage {
            room: String::new(),
            ..sent.clone()
        };
        assert_eq!(got, Ok(Some((without_room, json.len()))));
        let mut proto = Vec::new();
        encode(Encoding::Protobuf, &sent, &mut proto);
        let codec = LengthDelimited::new(1024);
        let back: ChatMessage = codec.decode(&proto).unwrap().unwrap().0;
        assert_eq!(back, sent);
        assert_eq!(proto[0] as usize, proto.len() - 1, "one-byte length prefix");
    }
}
