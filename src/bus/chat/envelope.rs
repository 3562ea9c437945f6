//! What one process tells the others, as JSON on the bus: messages on
//! `sockloop.chat.room.<room>`, presence on `sockloop.chat.presence`.
//! Decoding validates every field the way the chat validates its members'
//! input, so a bad peer costs a counter, not a crash.

use serde::{Deserialize, Serialize};

use crate::services::chat::command::valid_room;
use crate::services::chat::names::check;

/// Subject prefix of the rooms; the room's escaped name follows.
pub const ROOM_PREFIX: &str = "sockloop.chat.room.";
/// What a process subscribes to for every room (room tokens are one
/// token, see [`room_subject`]).
pub const ROOMS_FILTER: &str = "sockloop.chat.room.*";
/// Joins, leaves and heartbeats.
pub const PRESENCE: &str = "sockloop.chat.presence";

/// Longest message content carried (16 KiB: over the chat's 2 KiB
/// default, so only a misbehaving peer meets it).
pub const MAX_CONTENT: usize = 16 * 1024;

/// One envelope. `origin` is the sending process's random 64-bit id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Envelope {
    /// A member's message to a room.
    Message {
        /// The sending process.
        origin: u64,
        /// The origin's message counter: strictly increasing, so each
        /// sender's messages (a subsequence) are too, and a gap in it is
        /// a lost message.
        seq: u64,
        /// The member who sent it.
        from: String,
        /// The room.
        room: String,
        /// The text.
        content: String,
        /// `HH:MM:SS` as stamped by the origin.
        time: String,
    },
    /// A member of `origin` joined `room` (leaving the one it was in).
    Join {
        /// The member's process.
        origin: u64,
        /// The member.
        name: String,
        /// The room.
        room: String,
    },
    /// A member of `origin` left `room` (or the chat).
    Leave {
        /// The member's process.
        origin: u64,
        /// The member.
        name: String,
        /// The room.
        room: String,
    },
    /// Who is on `origin` now (one of several parts when many are):
    /// `[room, name]` pairs.
    Heartbeat {
        /// The process.
        origin: u64,
        /// `[room, name]` of its members.
        members: Vec<(String, String)>,
    },
}

impl Envelope {
    /// The process it came from.
    pub fn origin(&self) -> u64 {
        match self {
            Envelope::Message { origin, .. }
            | Envelope::Join { origin, .. }
            | Envelope::Leave { origin, .. }
            | Envelope::Heartbeat { origin, .. } => *origin,
        }
    }

    /// The JSON bytes.
    pub fn encode(&self) -> Vec<u8> {
        // Strings and integers always serialize.
        serde_json::to_vec(self).expect("envelope serializes")
    }

    /// Parses and validates: names as the chat checks them, rooms as it
    /// names them, content within [`MAX_CONTENT`].
    pub fn decode(bytes: &[u8]) -> Option<Envelope> {
        let envelope: Envelope = serde_json::from_slice(bytes).ok()?;
        let member = |name: &str, room: &str| check(name).is_ok() && valid_room(room);
        let valid = match &envelope {
            Envelope::Message {
                from,
                room,
                content,
                time,
                ..
            } => member(from, room) && content.len() <= MAX_CONTENT && time.len() <= 16,
            Envelope::Join { name, room, .. } | Envelope::Leave { name, room, .. } => {
                member(name, room)
            }
            Envelope::Heartbeat { members, .. } => members.iter().all(|(r, n)| member(n, r)),
        };
        valid.then_some(envelope)
    }
}

/// The subject of `room`'s messages: [`ROOM_PREFIX`] and the room as one
/// subject token, `[A-Za-z0-9_-]` as they are and every other byte as
/// `~XX` (lowercase hex), so `.` cannot split it and the mapping is
/// reversible.
///
/// ```
/// use sockloop::bus::chat::room_subject;
///
/// assert_eq!(room_subject("lobby"), "sockloop.chat.room.lobby");
/// assert_eq!(room_subject("a.b~c"), "sockloop.chat.room.a~2eb~7ec");
/// ```
pub fn room_subject(room: &str) -> String {
    let mut subject = String::with_capacity(ROOM_PREFIX.len() + room.len());
    subject.push_str(ROOM_PREFIX);
    for byte in room.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
            subject.push(byte as char);
        } else {
            subject.push_str(&format!("~{byte:02x}"));
        }
    }
    subject
}

/// The room a subject names, if it is one of [`room_subject`]'s.
pub fn subject_room(subject: &str) -> Option<String> {
    let token = subject.strip_prefix(ROOM_PREFIX)?;
    let mut bytes = Vec::with_capacity(token.len());
    let mut rest = token.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'~' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            bytes.push(b);
            rest = tail;
        } else {
            return None;
        }
    }
    String::from_utf8(bytes).ok().filter(|r| !r.is_empty())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::protocol::nats::valid_subject;

    #[test]
    fn envelopes_round_trip_and_validate() {
        let message = Envelope::Message {
            origin: u64::MAX,
            seq: 7,
            from: "ann".into(),
            room: "lobby".into(),
            content: "hi".into(),
            time: "12:00:00".into(),
        };
        let wire = message.encode();
        assert_eq!(
            String::from_utf8(wire.clone()).unwrap(),
            r#"{"kind":"message","origin":18446744073709551615,"seq":7,"from":"ann","room":"lobby","content":"hi","time":"12:00:00"}"#
        );
        assert_eq!(Envelope::decode(&wire), Some(message));
        let beat = Envelope::Heartbeat {
            origin: 1,
            members: vec![("lobby".into(), "ann".into())],
        };
        assert_eq!(
            String::from_utf8(beat.encode()).unwrap(),
            r#"{"kind":"heartbeat","origin":1,"members":[["lobby","ann"]]}"#
        );
        for bad in [
            r#"{"kind":"join","origin":1,"name":"","room":"lobby"}"#,
            r#"{"kind":"join","origin":1,"name":"a\u200bb","room":"lobby"}"#,
            r#"{"kind":"join","origin":1,"name":"ann","room":"a b"}"#,
            r#"{"kind":"join","origin":1,"name":"ann","room":"lobby","x":1}"#,
            r#"{"kind":"leave","origin":-1,"name":"ann","room":"lobby"}"#,
            r#"{"kind":"heartbeat","origin":1,"members":[["lobby",""]]}"#,
            r#"{"kind":"shout","origin":1}"#,
            "not json",
        ] {
            assert_eq!(Envelope::decode(bad.as_bytes()), None, "{bad}");
        }
        let long = Envelope::Message {
            origin: 1,
            seq: 1,
            from: "ann".into(),
            room: "lobby".into(),
            content: "x".repeat(MAX_CONTENT + 1),
            time: String::new(),
        };
        assert_eq!(Envelope::decode(&long.encode()), None);
    }

    #[test]
    fn odd_subjects_are_not_rooms() {
        for bad in [
            "sockloop.chat.room.",
            "sockloop.chat.room.~",
            "sockloop.chat.room.~zz",
            "sockloop.chat.room.a.b",
            "sockloop.chat.room.~ff",
            "other.lobby",
        ] {
            assert_eq!(subject_room(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn room_subjects_are_one_token_and_reversible(room in "\\PC{1,32}") {
            let subject = room_subject(&room);
            prop_assert!(valid_subject(&subject));
            prop_assert_eq!(subject.matches('.').count(), 3);
            prop_assert_eq!(subject_room(&subject), Some(room));
        }
    }
}
