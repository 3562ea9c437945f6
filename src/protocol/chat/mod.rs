//! The chat's wire format, one home for the service (`sockloop serve`'s
//! `chat` and `chat-proto`), the TCP client and the LAN chat.
//!
//! A message is one [`ChatMessage`] (generated from `proto/chat.proto`),
//! whatever the encoding:
//!
//! - [`Encoding::Json`]: one JSON object per line,
//!   `{"from","content","time"}` ([`ChatLine`] is how it is parsed);
//!   the username is a bare line;
//! - [`Encoding::Protobuf`]: `ChatMessage` records behind a varint length;
//!   the username is the first record's `content`.
//!
//! The server greets with [`PROMPT`] (JSON: the bare text; protobuf: a
//! [`SYSTEM`] message), speaks as [`SYSTEM`] and stamps messages with
//! [`clock`] (`HH:MM:SS`, UTC).
//!
//! ```
//! use sockloop::protocol::chat::{decode_message, encode, ChatMessage, Encoding};
//!
//! let hi = ChatMessage { from: "ann".into(), content: "hi".into(), ..Default::default() };
//! let mut wire = Vec::new();
//! encode(Encoding::Json, &hi, &mut wire);
//! assert_eq!(wire, b"{\"from\":\"ann\",\"content\":\"hi\",\"time\":\"\"}\n");
//! assert_eq!(decode_message(Encoding::Json, 1024, &wire), Ok(Some((hi, wire.len()))));
//! ```

mod json;
mod wire;

use std::time::{SystemTime, UNIX_EPOCH};

pub use json::ChatLine;
#[cfg(test)]
pub(crate) use wire::sample;
pub use wire::{decode_message, decode_name, encode, DecodeError};

/// The generated protobuf code (`build.rs`: prost-build over
/// `proto/chat.proto`).
#[allow(missing_docs)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/sockloop.chat.rs"));
}

pub use generated::ChatMessage;

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

/// What a new member is greeted with: JSON members get the bare text (no
/// newline: the tutorial's prompt), protobuf members a [`SYSTEM`] message
/// with it as `content`.
pub const PROMPT: &str = "Enter your username: ";

/// Who the server's own messages come from (no member may take the name).
pub const SYSTEM: &str = "System";

/// `time` as the chat shows it: `HH:MM:SS`, UTC (a time before 1970 shows
/// as `00:00:00`).
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
///
/// let t = UNIX_EPOCH + Duration::from_secs(3_723);
/// assert_eq!(sockloop::protocol::chat::clock(t), "01:02:03");
/// ```
pub fn clock(time: SystemTime) -> String {
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

    #[test]
    fn clock_is_utc_hh_mm_ss() {
        let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(clock(at(0)), "00:00:00");
        assert_eq!(clock(at(86_399)), "23:59:59");
        assert_eq!(clock(at(86_400 * 365 + 3_723)), "01:02:03");
        assert_eq!(clock(UNIX_EPOCH - Duration::from_secs(5)), "00:00:00");
    }
}
