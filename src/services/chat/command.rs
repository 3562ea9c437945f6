//! What a member's message asks for: words for the room, or a `/command`.

/// One member message, understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command<'a> {
    /// Text for the room (`//text` sends `/text`).
    Say(&'a str),
    /// `/join ROOM`: move to `ROOM`, creating it if need be.
    Join(&'a str),
    /// `/leave`: back to the lobby.
    Leave,
    /// `/list`: who is in this room.
    List,
    /// `/rooms`: the rooms and how many are in each.
    Rooms,
    /// `/quit`: say goodbye and close.
    Quit,
    /// `/help`: the commands.
    Help,
    /// A `/word` that is none of the above, or one with a bad argument
    /// (the whole content; the chat does not send it back).
    Unknown(&'a str),
}

/// The help text members get for `/help` and in the welcome.
pub(crate) const HELP: &str =
    "commands: /join ROOM, /leave, /list, /rooms, /quit, /help (//text sends /text)";

impl<'a> Command<'a> {
    pub(crate) fn parse(content: &'a str) -> Command<'a> {
        let Some(command) = content.strip_prefix('/') else {
            return Command::Say(content);
        };
        if command.starts_with('/') {
            return Command::Say(command);
        }
        let mut words = command.split_whitespace();
        let (verb, argument, extra) = (words.next(), words.next(), words.next());
        match (verb, argument, extra) {
            (Some("join"), Some(room), None) => Command::Join(room),
            (Some("leave"), None, _) => Command::Leave,
            (Some("list"), None, _) => Command::List,
            (Some("rooms"), None, _) => Command::Rooms,
            (Some("quit"), None, _) => Command::Quit,
            (Some("help"), None, _) => Command::Help,
            _ => Command::Unknown(content),
        }
    }
}

/// Room names: 1 to 32 of `A-Z a-z 0-9 _ - .`, so they print safely.
pub(crate) fn valid_room(room: &str) -> bool {
    (1..=32).contains(&room.len())
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Usernames: trimmed, 1 to 32 bytes, no control characters, nothing
/// invisible (see [`names::check`](super::names::check)).
pub(crate) fn valid_name(name: &str) -> bool {
    super::names::check(name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_command() {
        let cases = [
            ("hello", Command::Say("hello")),
            ("", Command::Say("")),
            ("//join x", Command::Say("/join x")),
            ("/join den", Command::Join("den")),
            ("/join  den ", Command::Join("den")),
            ("/join", Command::Unknown("/join")),
            ("/join a b", Command::Unknown("/join a b")),
            ("/leave", Command::Leave),
            ("/list", Command::List),
            ("/rooms", Command::Rooms),
            ("/quit", Command::Quit),
            ("/help", Command::Help),
            ("/list x", Command::Unknown("/list x")),
            ("/dance", Command::Unknown("/dance")),
            ("/", Command::Unknown("/")),
        ];
        for (content, want) in cases {
            assert_eq!(Command::parse(content), want, "{content:?}");
        }
    }

    #[test]
    fn names_and_rooms() {
        assert!(valid_room("den") && valid_room("a.b_c-9") && valid_room(&"r".repeat(32)));
        assert!(!valid_room("") && !valid_room("a b") && !valid_room(&"r".repeat(33)));
        assert!(!valid_room("caf\u{e9}") && !valid_room("\u{1b}[2J"));
        assert!(valid_name("Ann Lee") && valid_name("z\u{fc}rich") && valid_name(&"n".repeat(32)));
        assert!(!valid_name("") && !valid_name(&"n".repeat(33)) && !valid_name("a\u{1b}[2J"));
    }
}
