//! The chat's two encodings: newline-delimited JSON (the classic tutorial's
//! clients work unchanged) and varint-delimited protobuf `ChatMessage`s.
//!
//! Members of both kinds share rooms, so a message is held as one
//! [`ChatMessage`] and encoded at most once per encoding, however many
//! members receive it.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::codec::{ChatLine, FrameError, LengthDelimited, LineCodec, NdjsonCodec, NdjsonError};
use crate::proto::chat::ChatMessage;

/// How a member's connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// One line per message: the username line first, then
    /// `{"from","content","time"}` objects.
    Json,
    /// `ChatMessage` records behind a varint length, the username in the
    /// first record's `content`.
    Protobuf,
}

/// What arrived at the front of a member's input.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Inbound {
    /// A complete frame's text (the username, or a message's content) and
    /// the bytes it used.
    Text(String, usize),
    /// The frame is not complete yet.
    Incomplete,
    /// A complete frame that is not a valid message: reply, skip `used`.
    Bad { reason: String, used: usize },
    /// The stream cannot be followed any more (a line or frame over the
    /// limit): reply and close.
    Fatal(String),
}

/// Decodes the frame at the front of `data`. `naming`: the member has not
/// sent its username yet, which JSON members send as a bare line.
pub(crate) fn decode(encoding: Encoding, naming: bool, max_frame: usize, data: &[u8]) -> Inbound {
    match encoding {
        Encoding::Json if naming => match LineCodec::new(max_frame).decode(data) {
            Ok(Some((line, used))) => match std::str::from_utf8(line) {
                Ok(name) => Inbound::Text(name.to_owned(), used),
                Err(_) => Inbound::Bad {
                    reason: "the username is not UTF-8".into(),
                    used,
                },
            },
            Ok(None) => Inbound::Incomplete,
            Err(e) => Inbound::Fatal(e.to_string()),
        },
        Encoding::Json => match NdjsonCodec::<ChatLine>::new(max_frame).decode(data) {
            Ok(Some((line, used))) => Inbound::Text(line.content, used),
            Ok(None) => Inbound::Incomplete,
            Err(NdjsonError::Invalid { used, reason }) => Inbound::Bad { reason, used },
            Err(e @ NdjsonError::TooLong { .. }) => Inbound::Fatal(e.to_string()),
        },
        Encoding::Protobuf => match LengthDelimited::new(max_frame).decode::<ChatMessage>(data) {
            Ok(Some((message, used))) => Inbound::Text(message.content, used),
            Ok(None) => Inbound::Incomplete,
            Err(FrameError::Invalid { used, reason }) => Inbound::Bad { reason, used },
            Err(e) => Inbound::Fatal(e.to_string()),
        },
    }
}

/// A message on its way to members, encoded lazily once per encoding.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) message: ChatMessage,
    json: Option<Vec<u8>>,
    protobuf: Option<Vec<u8>>,
}

/// The JSON members' view of a message: the tutorial's three fields.
#[derive(Serialize)]
struct JsonLine<'a> {
    from: &'a str,
    content: &'a str,
    time: &'a str,
}

impl Outgoing {
    pub(crate) fn new(message: ChatMessage) -> Outgoing {
        Outgoing {
            message,
            json: None,
            protobuf: None,
        }
    }

    /// The message as `encoding` puts it on the wire.
    pub(crate) fn bytes(&mut self, encoding: Encoding) -> &[u8] {
        let message = &self.message;
        match encoding {
            Encoding::Json => self.json.get_or_insert_with(|| {
                let line = JsonLine {
                    from: &message.from,
                    content: &message.content,
                    time: &message.time,
                };
                let mut out = Vec::with_capacity(48 + message.content.len());
                // Strings always serialise; JSON escapes keep it one line.
                let _ = serde_json::to_writer(&mut out, &line);
                out.push(b'\n');
                out
            }),
            Encoding::Protobuf => self.protobuf.get_or_insert_with(|| {
                let mut out = Vec::new();
                // A Vec grows as needed, so encoding cannot fail.
                let _ = LengthDelimited::encode(message, &mut out);
                out
            }),
        }
    }
}

/// `time` as the chat shows it: `HH:MM:SS`, UTC.
pub(crate) fn clock_time(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let of_day = secs % 86_400;
    format!(
        "{:02}:{:02}:{:02}",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn message(content: &str) -> ChatMessage {
        ChatMessage {
            from: "ann".into(),
            content: content.into(),
            time: "01:02:03".into(),
            room: "lobby".into(),
        }
    }

    #[test]
    fn json_username_line_then_messages() {
        let data = b"ann\r\n{\"content\":\"hi\",\"from\":\"forged\"}\n";
        let name = decode(Encoding::Json, true, 64, data);
        assert_eq!(name, Inbound::Text("ann".into(), 5));
        let rest = &data[5..];
        let msg = decode(Encoding::Json, false, 64, rest);
        assert_eq!(msg, Inbound::Text("hi".into(), rest.len()));
        assert_eq!(
            decode(Encoding::Json, false, 64, b"{\"con"),
            Inbound::Incomplete
        );
    }

    #[test]
    fn json_errors() {
        let bad = decode(Encoding::Json, false, 64, b"{nope\n");
        assert!(matches!(bad, Inbound::Bad { used: 6, .. }), "{bad:?}");
        let bad = decode(Encoding::Json, true, 64, b"\xff\xfe\n");
        assert!(matches!(bad, Inbound::Bad { used: 3, .. }), "{bad:?}");
        let long = [b'a'; 64];
        for naming in [true, false] {
            let fatal = decode(Encoding::Json, naming, 64, &long);
            assert!(matches!(fatal, Inbound::Fatal(_)), "{fatal:?}");
        }
    }

    #[test]
    fn protobuf_frames() {
        let mut wire = Vec::new();
        LengthDelimited::encode(&message("hi"), &mut wire).unwrap();
        for cut in 0..wire.len() {
            let got = decode(Encoding::Protobuf, false, 64, &wire[..cut]);
            assert_eq!(got, Inbound::Incomplete);
        }
        let whole = decode(Encoding::Protobuf, true, 64, &wire);
        assert_eq!(whole, Inbound::Text("hi".into(), wire.len()));
        // A complete frame whose string claims more bytes than it holds.
        let truncated = [0x04, 0x12, 0x05, b'h', b'i'];
        let bad = decode(Encoding::Protobuf, false, 64, &truncated);
        assert!(matches!(bad, Inbound::Bad { used: 5, .. }), "{bad:?}");
        let too_large = decode(Encoding::Protobuf, false, 64, &[65]);
        assert!(matches!(too_large, Inbound::Fatal(_)), "{too_large:?}");
    }

    #[test]
    fn outgoing_in_both_encodings() {
        let mut out = Outgoing::new(message("a \"quote\"\n"));
        let json = out.bytes(Encoding::Json).to_vec();
        let want = "{\"from\":\"ann\",\"content\":\"a \\\"quote\\\"\\n\",\"time\":\"01:02:03\"}\n";
        assert_eq!(String::from_utf8(json).unwrap(), want);
        let proto = out.bytes(Encoding::Protobuf).to_vec();
        let codec = LengthDelimited::new(1024);
        let back: ChatMessage = codec.decode(&proto).unwrap().unwrap().0;
        assert_eq!(back, out.message);
    }

    #[test]
    fn clock_time_is_utc_hh_mm_ss() {
        let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(clock_time(at(0)), "00:00:00");
        assert_eq!(clock_time(at(86_399)), "23:59:59");
        assert_eq!(clock_time(at(86_400 * 365 + 3_723)), "01:02:03");
        assert_eq!(clock_time(UNIX_EPOCH - Duration::from_secs(5)), "00:00:00");
    }
}
