//! Subjects: dot-separated tokens, no whitespace. `*` (one token) and `>`
//! (the rest, last token only) are wildcards a subscription may use and a
//! publication may not.

/// Longest subject accepted (bytes); far over what the chat uses, well
/// under the control-line limit.
pub const MAX_SUBJECT: usize = 1024;

/// Whether `subject` may be published to: 1 to [`MAX_SUBJECT`] bytes of
/// non-empty dot-separated tokens without whitespace, control characters
/// or wildcard tokens.
///
/// ```
/// use sockloop::protocol::nats::{valid_subject, valid_filter};
///
/// assert!(valid_subject("sockloop.chat.room.lobby"));
/// assert!(!valid_subject("a..b") && !valid_subject("a b") && !valid_subject("a.*"));
/// assert!(valid_filter("sockloop.chat.room.*") && valid_filter("sockloop.>"));
/// assert!(!valid_filter("a.>.b") && !valid_filter("a.b*"));
/// ```
pub fn valid_subject(subject: &str) -> bool {
    tokens(subject).is_some_and(|mut t| t.all(|token| token != "*" && token != ">"))
}

/// Whether `filter` may be subscribed to: a subject whose tokens may be
/// `*`, and whose last token may be `>`.
pub fn valid_filter(filter: &str) -> bool {
    let Some(tokens) = tokens(filter) else {
        return false;
    };
    let mut tokens = tokens.peekable();
    while let Some(token) = tokens.next() {
        if token == ">" && tokens.peek().is_some() {
            return false;
        }
        let wild = token == "*" || token == ">";
        if !wild && token.contains(['*', '>']) {
            return false;
        }
    }
    true
}

/// The tokens, if the subject is well formed apart from wildcards.
fn tokens(subject: &str) -> Option<std::str::Split<'_, char>> {
    let bad = |c: char| c.is_whitespace() || c.is_control();
    let ok = (1..=MAX_SUBJECT).contains(&subject.len())
        && !subject.contains(bad)
        && subject.split('.').all(|token| !token.is_empty());
    ok.then(|| subject.split('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects() {
        for good in ["a", "a.b", "FOO.bar-1_x", "sockloop.chat.room.~e2~82~ac"] {
            assert!(valid_subject(good), "{good}");
            assert!(valid_filter(good), "{good}");
        }
        for bad in [
            "", ".", "a.", ".a", "a..b", "a b", "a\tb", "a\r\nb", "a\u{0}",
        ] {
            assert!(!valid_subject(bad), "{bad:?}");
            assert!(!valid_filter(bad), "{bad:?}");
        }
        assert!(!valid_subject(&"a".repeat(MAX_SUBJECT + 1)));
        assert!(valid_subject(&"a".repeat(MAX_SUBJECT)));
    }

    #[test]
    fn wildcards() {
        for filter in ["*", ">", "a.*", "a.*.c", "a.>", "*.>"] {
            assert!(valid_filter(filter), "{filter}");
            assert!(!valid_subject(filter), "{filter}");
        }
        for bad in [">.a", "a.>.b", "a*", "a.b>", "a.*b"] {
            assert!(!valid_filter(bad), "{bad}");
        }
        // A token merely containing a wildcard character is not a
        // wildcard, but the server refuses it in a filter; publishing to
        // it is allowed by the protocol.
        assert!(valid_subject("a*"));
    }
}
