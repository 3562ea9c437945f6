//! What a chat server says first, and what it tells about the port: the
//! JSON chat's text prompt, the protobuf chat's prompt as a `System`
//! message, a refusal, or something that is no chat at all.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::protocol::chat::{decode_message, ChatMessage, Encoding, SYSTEM};

use super::escape;

/// What JSON members are greeted with, before the username.
pub(super) const PROMPT: &[u8] = crate::protocol::chat::PROMPT.as_bytes();
/// How long [`ChatClient::connect`](super::ChatClient::connect) waits for
/// the server's first words (and then for its welcome).
pub const GREETING_TIMEOUT: Duration = Duration::from_secs(3);
/// The most greeting bytes looked at: a prompt or a refusal is far
/// shorter, so more than this is not a chat server.
pub(super) const GREETING_MAX: usize = 4096;
/// Bytes of a foreign greeting quoted in the error.
const EXCERPT: usize = 32;

/// Why [`ChatClient::connect`](super::ChatClient::connect) found no chat
/// member's seat at the other end. It is carried inside the `io::Error`
/// it returns: `error.get_ref()` and `downcast_ref::<GreetingError>()`.
#[derive(Debug, Clone, PartialEq)]
pub enum GreetingError {
    /// The port is a chat in the other encoding, this one (kind
    /// `InvalidData`).
    WrongEncoding(Encoding),
    /// The server sent this `System` message instead of a prompt, e.g.
    /// `error: the server is full; try again later` (kind
    /// `ConnectionRefused`).
    Refused(ChatMessage),
    /// Nothing recognisable arrived within [`GREETING_TIMEOUT`] (kind
    /// `TimedOut`): an echo or a json port says nothing first.
    NoPrompt(SocketAddr),
    /// The server sent bytes that are no chat's: their first bytes,
    /// escaped (kind `InvalidData`).
    NotChat(String),
    /// The server closed the connection without a word (kind
    /// `UnexpectedEof`).
    Closed,
}

impl fmt::Display for GreetingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GreetingError::WrongEncoding(Encoding::Json) => {
                f.write_str("this port speaks JSON, not protobuf")
            }
            GreetingError::WrongEncoding(Encoding::Protobuf) => {
                f.write_str("this port speaks protobuf, not JSON")
            }
            GreetingError::Refused(message) => {
                write!(f, "the server refused: {}", escape(&message.content))
            }
            GreetingError::NoPrompt(addr) => write!(
                f,
                "no chat prompt arrived within {} s: {addr} may not be a chat port",
                GREETING_TIMEOUT.as_secs()
            ),
            GreetingError::NotChat(excerpt) => {
                write!(f, "not a chat server: it sent \"{excerpt}\"")
            }
            GreetingError::Closed => {
                f.write_str("server closed the connection before the chat prompt")
            }
        }
    }
}

impl std::error::Error for GreetingError {}

impl From<GreetingError> for std::io::Error {
    fn from(e: GreetingError) -> std::io::Error {
        use std::io::ErrorKind;
        let kind = match e {
            GreetingError::WrongEncoding(_) | GreetingError::NotChat(_) => ErrorKind::InvalidData,
            GreetingError::Refused(_) => ErrorKind::ConnectionRefused,
            GreetingError::NoPrompt(_) => ErrorKind::TimedOut,
            GreetingError::Closed => ErrorKind::UnexpectedEof,
        };
        std::io::Error::new(kind, e)
    }
}

/// What the first bytes from a server are.
#[derive(Debug, PartialEq)]
pub(super) enum Greeting {
    /// A chat's prompt in this encoding, `used` bytes long.
    Prompt(Encoding, usize),
    /// A `System` message that is not the prompt (a refusal).
    System(ChatMessage),
    /// Could still become a greeting.
    Incomplete,
    /// No chat speaks like this.
    Foreign,
}

/// Recognises the greeting at the front of `bytes`.
pub(super) fn classify(bytes: &[u8]) -> Greeting {
    if bytes.starts_with(PROMPT) {
        return Greeting::Prompt(Encoding::Json, PROMPT.len());
    }
    if PROMPT.starts_with(bytes) {
        return Greeting::Incomplete;
    }
    // A JSON chat's refusal is a message line; a protobuf frame starts
    // with its length, and no short one is 123 (`{`) bytes long.
    if bytes[0] == b'{' {
        return match decode_message(Encoding::Json, GREETING_MAX, bytes) {
            Ok(Some((message, _))) if message.from == SYSTEM => Greeting::System(message),
            Ok(None) => Greeting::Incomplete,
            _ => Greeting::Foreign,
        };
    }
    match decode_message(Encoding::Protobuf, GREETING_MAX, bytes) {
        Ok(Some((message, used))) if message.from == SYSTEM => {
            match message.content.as_bytes() == PROMPT {
                true => Greeting::Prompt(Encoding::Protobuf, used),
                false => Greeting::System(message),
            }
        }
        Ok(None) => Greeting::Incomplete,
        _ => Greeting::Foreign,
    }
}

/// The first bytes of a foreign greeting, escaped for one line.
pub(super) fn excerpt(bytes: &[u8]) -> String {
    let mut out = bytes[..bytes.len().min(EXCERPT)].escape_ascii().to_string();
    if bytes.len() > EXCERPT {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::LengthDelimited;

    fn system(content: &str) -> ChatMessage {
        ChatMessage {
            from: SYSTEM.into(),
            content: content.into(),
            ..ChatMessage::default()
        }
    }

    #[test]
    fn the_json_prompt_and_its_prefixes() {
        let mut bytes = PROMPT.to_vec();
        bytes.extend_from_slice(b"more");
        assert_eq!(classify(&bytes), Greeting::Prompt(Encoding::Json, 21));
        for cut in 1..PROMPT.len() {
            assert_eq!(classify(&PROMPT[..cut]), Greeting::Incomplete);
        }
    }

    #[test]
    fn the_protobuf_prompt_and_its_prefixes() {
        let mut wire = Vec::new();
        let prompt = std::str::from_utf8(PROMPT).unwrap();
        LengthDelimited::encode(&system(prompt), &mut wire).unwrap();
        let whole = wire.len();
        for cut in 1..whole {
            assert_eq!(classify(&wire[..cut]), Greeting::Incomplete, "{cut}");
        }
        wire.push(0);
        assert_eq!(classify(&wire), Greeting::Prompt(Encoding::Protobuf, whole));
    }

    #[test]
    fn refusals_in_either_encoding() {
        let refusal = system("error: the server is full; try again later");
        let mut wire = Vec::new();
        LengthDelimited::encode(&refusal, &mut wire).unwrap();
        assert_eq!(classify(&wire), Greeting::System(refusal.clone()));
        let line = b"{\"from\":\"System\",\"content\":\"error: the server is full; try again later\",\"time\":\"\"}\n";
        assert_eq!(classify(line), Greeting::System(refusal));
        assert_eq!(classify(&line[..20]), Greeting::Incomplete);
    }

    #[test]
    fn anything_else_is_foreign() {
        assert_eq!(
            classify(b"{\"error\":\"the server is full\"}\n"),
            Greeting::Foreign
        );
        assert_eq!(
            classify(b"{\"from\":\"ann\",\"content\":\"hi\"}\n"),
            Greeting::Foreign
        );
        assert_eq!(classify(b"\x03abc"), Greeting::Foreign, "not a ChatMessage");
        // Text reads as a protobuf frame's length ('E' = 69) until that
        // many bytes are in: the deadline or the close decides it then.
        assert_eq!(classify(b"Enter your name"), Greeting::Incomplete);
        // A frame that decodes but is no System message.
        let mut wire = Vec::new();
        LengthDelimited::encode(&ChatMessage::default(), &mut wire).unwrap();
        assert_eq!(classify(&wire), Greeting::Foreign);
    }

    #[test]
    fn excerpts_are_short_and_escaped() {
        assert_eq!(excerpt(b"HTTP/1.1 400\r\n"), "HTTP/1.1 400\\r\\n");
        assert_eq!(excerpt(&[b'a'; 40]), format!("{}...", "a".repeat(32)));
        assert_eq!(excerpt(b"\x1b[2J\""), "\\x1b[2J\\\"");
    }
}
