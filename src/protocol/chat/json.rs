//! The chat's JSON lines: [`ChatLine`], what a line parses into, and the
//! line a [`ChatMessage`] is written as.

use serde::{Deserialize, Serialize};

use super::ChatMessage;

/// One chat message as JSON members send and receive it, one per line:
/// `{"from":"a","content":"hi","time":"12:00:00"}`.
///
/// Clients may omit `from` and `time` (the server sets both) and may add
/// fields of their own (ignored); `content` is required.
///
/// ```
/// use sockloop::codec::NdjsonCodec;
/// use sockloop::protocol::chat::ChatLine;
///
/// let codec = NdjsonCodec::<ChatLine>::new(4096);
/// let (msg, _) = codec.decode(b"{\"content\":\"hi\",\"x\":1}\n").unwrap().unwrap();
/// assert_eq!((msg.from.as_str(), msg.content.as_str(), msg.time.as_str()), ("", "hi", ""));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChatLine {
    /// Sender's username; the server overwrites whatever a client sent.
    ///
    /// ```
    /// let line = sockloop::protocol::chat::ChatLine { from: "System".into(), ..Default::default() };
    /// assert_eq!(line.from, "System");
    /// ```
    #[serde(default)]
    pub from: String,
    /// Message text.
    ///
    /// ```
    /// let line = sockloop::protocol::chat::ChatLine { content: "hi".into(), ..Default::default() };
    /// assert_eq!(line.content, "hi");
    /// ```
    pub content: String,
    /// Server wall-clock time as `HH:MM:SS`.
    ///
    /// ```
    /// let line = sockloop::protocol::chat::ChatLine { time: "12:00:00".into(), ..Default::default() };
    /// assert_eq!(line.time, "12:00:00");
    /// ```
    #[serde(default)]
    pub time: String,
}

impl From<ChatLine> for ChatMessage {
    /// The message a JSON line carries; JSON members see no `room`.
    fn from(line: ChatLine) -> ChatMessage {
        ChatMessage {
            from: line.from,
            content: line.content,
            time: line.time,
            room: String::new(),
        }
    }
}

/// The JSON members' view of a message: the tutorial's three fields, in
/// [`ChatLine`]'s order, borrowed.
#[derive(Serialize)]
struct JsonLine<'a> {
    from: &'a str,
    content: &'a str,
    time: &'a str,
}

/// Appends `message` as one JSON line (`room` is left out). Strings always
/// serialise, and JSON escapes keep it one line.
pub(super) fn encode(message: &ChatMessage, out: &mut Vec<u8>) {
    let line = JsonLine {
        from: &message.from,
        content: &message.content,
        time: &message.time,
    };
    out.reserve(48 + message.content.len());
    // Writing strings into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &line);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{NdjsonCodec, NdjsonError};

    const WIRE: &[u8] = b"{\"from\":\"a\",\"content\":\"hi\",\"time\":\"12:00:00\"}\n";

    #[test]
    fn round_trips_byte_for_byte() {
        let codec = NdjsonCodec::<ChatLine>::new(1024);
        let (msg, used) = codec.decode(WIRE).unwrap().unwrap();
        assert_eq!(used, WIRE.len());
        let want = ChatLine {
            from: "a".into(),
            content: "hi".into(),
            time: "12:00:00".into(),
        };
        assert_eq!(msg, want);
        let mut out = Vec::new();
        NdjsonCodec::encode(&msg, &mut out).unwrap();
        assert_eq!(out, WIRE);
    }

    #[test]
    fn defaults_unknown_fields_and_required_content() {
        let codec = NdjsonCodec::<ChatLine>::new(1024);
        let data = b"{\"room\":\"r\",\"content\":\"x\",\"extra\":{\"a\":[1]}}\n";
        let want = ChatLine {
            content: "x".into(),
            ..ChatLine::default()
        };
        assert_eq!(codec.decode(data), Ok(Some((want, data.len()))));
        for bad in [
            &b"{\"from\":\"a\"}\n"[..],
            b"{\"content\":null}\n",
            b"{\"content\":1}\n",
        ] {
            match codec.decode(bad) {
                Err(NdjsonError::Invalid { used, .. }) => assert_eq!(used, bad.len()),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_message_is_written_as_its_chat_line() {
        let message = ChatMessage {
            from: "a".into(),
            content: "hi".into(),
            time: "12:00:00".into(),
            room: "lobby".into(),
        };
        let mut out = b"x".to_vec();
        encode(&message, &mut out);
        assert_eq!(&out[1..], WIRE);
        let codec = NdjsonCodec::<ChatLine>::new(1024);
        let (line, _) = codec.decode(WIRE).unwrap().unwrap();
        let back = ChatMessage {
            room: String::new(),
            ..message
        };
        assert_eq!(ChatMessage::from(line), back);
    }

    #[test]
    fn escapes_keep_one_message_per_line() {
        let msg = ChatLine {
            content: "two\nlines\r\u{0}\"".into(),
            ..ChatLine::default()
        };
        let mut out = Vec::new();
        NdjsonCodec::encode(&msg, &mut out).unwrap();
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        let codec = NdjsonCodec::<ChatLine>::new(1024);
        assert_eq!(codec.decode(&out), Ok(Some((msg, out.len()))));
    }
}
