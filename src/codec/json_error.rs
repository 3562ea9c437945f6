//! Plain descriptions of why a line is not valid JSON.
//!
//! `serde_json`'s messages are written for Rust programmers and some
//! mislead a peer: a lone high surrogate escape (`"\ud800"`) is reported as
//! "unexpected end of hex escape", a lone low one as a "lone *leading*
//! surrogate", invalid UTF-8 as an "invalid unicode code point", and the
//! wrong top-level type as "invalid type: sequence, expected a map at
//! line 1 column 0". [`describe`] turns an error on one line into a text
//! that says what is wrong in JSON's terms and where, as a column: the
//! 1-based byte position in the line (byte offset + 1), which is what
//! `serde_json` counts too.

/// Nesting `serde_json` accepts: 127 levels; the 128th is refused.
pub const MAX_DEPTH: usize = 127;

/// What is wrong with `line` (one line, without its terminator), given
/// the error `serde_json` returned for it, and at which column.
///
/// ```
/// use sockloop::codec::describe_json_error;
///
/// let line = br#"{"a":"\ud800"}"#;
/// let error = serde_json::from_slice::<serde_json::Value>(line).unwrap_err();
/// assert_eq!(
///     describe_json_error(line, &error),
///     r"lone surrogate escape \ud800 at column 7: a high surrogate must be followed by a low one (\udc00-\udfff)"
/// );
/// ```
pub fn describe_json_error(line: &[u8], error: &serde_json::Error) -> String {
    let text = error.to_string();
    let what = match text.rfind(" at line ") {
        Some(at) => &text[..at],
        None => &text,
    };
    let column = error.column();
    let at = column.saturating_sub(1); // the byte serde_json stopped at
    if let Some(rest) = what.strip_prefix("EOF while parsing ") {
        let thing = match rest {
            "a string" => "the string is closed",
            "an object" => "the object is closed",
            "a list" => "the array is closed",
            _ => "the value is complete",
        };
        return format!("incomplete JSON: the line ends at column {column} before {thing}");
    }
    match what {
        "invalid unicode code point" => {
            if let Err(e) = std::str::from_utf8(line) {
                let bad = e.valid_up_to();
                return format!(
                    "invalid UTF-8 at column {} (byte 0x{:02x}): messages must be UTF-8",
                    bad + 1,
                    line[bad]
                );
            }
        }
        "unexpected end of hex escape" | "lone leading surrogate in hex escape" => {
            if let Some(lone) = lone_surrogate(line) {
                return lone;
            }
        }
        "control character (\\u0000-\\u001F) found while parsing a string" => {
            if let Some(&byte) = line.get(at) {
                let escaped = match byte {
                    b'\t' => "\\t".to_owned(),
                    b'\n' => "\\n".to_owned(),
                    b'\r' => "\\r".to_owned(),
                    _ => format!("\\u{byte:04x}"),
                };
                return format!(
                    "control character U+{byte:04X} in a string at column {column}: \
                     write it escaped, as {escaped}"
                );
            }
        }
        "invalid escape" => {
            return format!(
                "invalid escape in a string at column {column}: after a backslash come \
                 only \" \\ / b f n r t or u and four hex digits"
            );
        }
        "trailing characters" => {
            return format!("data after the JSON value at column {column}: one object per line");
        }
        "recursion limit exceeded" => {
            return format!("nested more than {MAX_DEPTH} levels deep at column {column}");
        }
        "key must be a string" => {
            return format!("an object key must be a string, at column {column}");
        }
        _ => {}
    }
    if let Some(got) = what
        .strip_prefix("invalid type: ")
        .and_then(|rest| rest.strip_suffix(", expected a map"))
    {
        // The top level is not an object: point at where it starts.
        let start = line.iter().position(|b| !b" \t\r".contains(b)).unwrap_or(0);
        let kind = match got.split(' ').next() {
            Some("sequence") => "an array",
            Some("integer" | "floating") => "a number",
            Some("string") => "a string",
            Some("boolean") => "a boolean",
            Some("null") => "null",
            _ => got,
        };
        return format!("expected a JSON object, got {kind} at column {}", start + 1);
    }
    format!("{what} at column {column}")
}

/// The first `\u` escape in a string of `line` that is half of a
/// surrogate pair without its other half, described.
fn lone_surrogate(line: &[u8]) -> Option<String> {
    let mut in_string = false;
    let mut pending_high: Option<(usize, u16)> = None; // column, value
    let mut i = 0;
    while i < line.len() {
        let byte = line[i];
        if !in_string {
            in_string = byte == b'"';
            i += 1;
            continue;
        }
        let escape = (byte == b'\\' && line.get(i + 1) == Some(&b'u'))
            .then(|| line.get(i + 2..i + 6))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u16::from_str_radix(hex, 16).ok());
        match (escape, pending_high) {
            (Some(0xDC00..=0xDFFF), Some(_)) => pending_high = None, // a pair
            (Some(low @ 0xDC00..=0xDFFF), None) => {
                return Some(format!(
                    "lone surrogate escape \\u{low:04x} at column {}: a low surrogate must \
                     follow a high one (\\ud800-\\udbff)",
                    i + 1
                ));
            }
            (_, Some((column, high))) => return Some(lone_high(high, column)),
            (Some(high @ 0xD800..=0xDBFF), None) => pending_high = Some((i + 1, high)),
            _ => {}
        }
        if escape.is_some() {
            i += 6;
        } else if byte == b'\\' {
            i += 2; // any other escape, e.g. \" which does not end the string
        } else {
            in_string = byte != b'"';
            i += 1;
        }
    }
    pending_high.map(|(column, high)| lone_high(high, column))
}

fn lone_high(high: u16, column: usize) -> String {
    format!(
        "lone surrogate escape \\u{high:04x} at column {column}: a high surrogate \
         must be followed by a low one (\\udc00-\\udfff)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value};

    fn object_error(line: &[u8]) -> String {
        let error = serde_json::from_slice::<Map<String, Value>>(line).unwrap_err();
        describe_json_error(line, &error)
    }

    #[test]
    fn each_case_says_what_and_where() {
        let lone_high = |hex: &str, column: usize| {
            format!(
                "lone surrogate escape \\u{hex} at column {column}: a high surrogate must be \
                 followed by a low one (\\udc00-\\udfff)"
            )
        };
        let lone_low = |hex: &str, column: usize| {
            format!(
                "lone surrogate escape \\u{hex} at column {column}: a low surrogate must \
                 follow a high one (\\ud800-\\udbff)"
            )
        };
        let cases: [(&[u8], String); 22] = [
            (br#"{"a":"\ud800"}"#, lone_high("d800", 7)),
            (br#"{"a":"\udbffx"}"#, lone_high("dbff", 7)),
            (br#"{"a":"\ud800\ud800"}"#, lone_high("d800", 7)),
            (br#"{"a":"\ud800\u0041"}"#, lone_high("d800", 7)),
            (br#"{"\ud800":1}"#, lone_high("d800", 3)),
            (
                br#"{"a":"\"\\\ud83d\ude00","b":"\udc00"}"#,
                lone_low("dc00", 30),
            ),
            (br#"{"a":"\udfff"}"#, lone_low("dfff", 7)),
            (
                b"{\"a\":\"\xff\"}",
                "invalid UTF-8 at column 7 (byte 0xff): messages must be UTF-8".into(),
            ),
            (
                b"{\"\xc3\":1}",
                "invalid UTF-8 at column 3 (byte 0xc3): messages must be UTF-8".into(),
            ),
            (
                b"{\"a\":\"x\x01y\"}",
                "control character U+0001 in a string at column 8: write it escaped, as \\u0001"
                    .into(),
            ),
            (
                b"{\"a\":\"x\ty\"}",
                "control character U+0009 in a string at column 8: write it escaped, as \\t".into(),
            ),
            (
                br#"{"a":1} x"#,
                "data after the JSON value at column 9: one object per line".into(),
            ),
            (
                br#"{"a":1}{"b":2}"#,
                "data after the JSON value at column 8: one object per line".into(),
            ),
            (
                b"  [1,2]",
                "expected a JSON object, got an array at column 3".into(),
            ),
            (
                b"42",
                "expected a JSON object, got a number at column 1".into(),
            ),
            (
                b"-1.5",
                "expected a JSON object, got a number at column 1".into(),
            ),
            (
                br#""s""#,
                "expected a JSON object, got a string at column 1".into(),
            ),
            (
                b"true",
                "expected a JSON object, got a boolean at column 1".into(),
            ),
            (
                b"null",
                "expected a JSON object, got null at column 1".into(),
            ),
            (
                br#"{"a":"\q"}"#,
                "invalid escape in a string at column 8: after a backslash come only \" \\ / b \
                 f n r t or u and four hex digits"
                    .into(),
            ),
            (
                br#"{1:2}"#,
                "an object key must be a string, at column 2".into(),
            ),
            (br#"{"a":1,}"#, "trailing comma at column 8".into()),
        ];
        for (line, want) in cases {
            assert_eq!(
                object_error(line),
                want,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn incomplete_lines_say_what_is_left_open() {
        let cases: [(&[u8], &str); 4] = [
            (br#"{"a":"#, "the value is complete"),
            (br#"{"a":"xy"#, "the string is closed"),
            (br#"{"a":1"#, "the object is closed"),
            (br#"{"a":[1"#, "the array is closed"),
        ];
        for (line, thing) in cases {
            let want = format!(
                "incomplete JSON: the line ends at column {} before {thing}",
                line.len()
            );
            assert_eq!(object_error(line), want);
        }
    }

    #[test]
    fn nesting_past_the_limit_points_at_the_first_level_too_deep() {
        let nested = |levels: usize| {
            let mut line = b"{\"a\":".to_vec();
            line.extend(std::iter::repeat_n(b'[', levels - 1));
            line.extend(std::iter::repeat_n(b']', levels - 1));
            line.push(b'}');
            line
        };
        assert!(serde_json::from_slice::<Map<String, Value>>(&nested(MAX_DEPTH)).is_ok());
        // Level 128 opens at byte 5 + 126 = 131: column 132.
        assert_eq!(
            object_error(&nested(MAX_DEPTH + 1)),
            "nested more than 127 levels deep at column 132"
        );
        assert_eq!(
            object_error(&nested(10_000)),
            "nested more than 127 levels deep at column 132"
        );
    }

    #[test]
    fn other_errors_keep_serde_jsons_words_with_a_column() {
        assert_eq!(object_error(b"nope"), "expected ident at column 2");
        assert_eq!(
            object_error(br#"{"a":1e400}"#),
            "number out of range at column 10"
        );
        assert_eq!(object_error(br#"{"a" 1}"#), "expected `:` at column 6");
    }
}
