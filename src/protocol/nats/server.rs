//! What the server sends, parsed from the front of a byte buffer: one
//! operation and the bytes it used, `None` while it is incomplete, or a
//! [`ParseError`] after which the stream cannot be followed (close the
//! connection).
//!
//! ```text
//! INFO {json}␍␊
//! MSG <subject> <sid> [reply-to] <#bytes>␍␊<payload>␍␊
//! HMSG <subject> <sid> [reply-to] <#header bytes> <#total bytes>␍␊<headers><payload>␍␊
//! PING␍␊  PONG␍␊  +OK␍␊  -ERR <'text'>␍␊
//! ```
//!
//! Operation names are case-insensitive; fields are separated by runs of
//! spaces or tabs. A control line must end in `␍␊`.

use std::fmt;

use serde::Deserialize;

use super::subject::valid_subject;

/// The server's `INFO`: the fields this client uses (the rest are ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ServerInfo {
    /// The server's unique id.
    pub server_id: String,
    /// The server's version, e.g. `2.10.1`.
    pub version: String,
    /// The protocol version the server speaks (1: async INFO supported).
    pub proto: i64,
    /// Largest payload the server accepts in a `PUB` (bytes).
    pub max_payload: u64,
    /// Whether the server supports headers (`HPUB`/`HMSG`).
    pub headers: bool,
    /// Whether the server wants credentials in `CONNECT` (this client
    /// has none to give: the server will refuse it).
    pub auth_required: bool,
    /// Whether the server wants TLS (this client speaks plain TCP).
    pub tls_required: bool,
    /// Other servers of the cluster a client may reconnect to.
    pub connect_urls: Vec<String>,
}

/// A message delivered to a subscription (`MSG` or `HMSG`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    /// The subject it was published to.
    pub subject: String,
    /// The subscription it was delivered to (this client's sids are
    /// numbers; a non-numeric sid is a [`ParseError::BadSid`]).
    pub sid: u64,
    /// Where the publisher wants replies.
    pub reply_to: Option<String>,
    /// The raw header block of an `HMSG` (`NATS/1.0␍␊...␍␊␍␊`).
    pub headers: Option<Vec<u8>>,
    /// The payload.
    pub payload: Vec<u8>,
}

/// One operation from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOp {
    /// `INFO`: sent on connect, and again when the cluster changes.
    Info(Box<ServerInfo>),
    /// `MSG` or `HMSG`.
    Msg(Msg),
    /// `PING`: answer with `PONG`.
    Ping,
    /// `PONG`: the answer to this client's `PING`.
    Pong,
    /// `+OK`: a verbose-mode acknowledgement.
    Ok,
    /// `-ERR`: the server's error text, without its quotes.
    Err(String),
}

/// Bounds on what the server may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest control line, `␍␊` included (4 KiB, the server's own
    /// default `max_control_line`), for every operation but `INFO`.
    pub max_control_line: usize,
    /// Longest `INFO` line (64 KiB: a cluster's `connect_urls` can be long).
    pub max_info: usize,
    /// Largest payload (headers included) of a message (1 MiB, the
    /// server's default; a client takes the server's `max_payload`).
    pub max_payload: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_control_line: 4096,
            max_info: 64 * 1024,
            max_payload: 1024 * 1024,
        }
    }
}

/// Why the bytes at the front of the input are not a server operation.
/// All are fatal to the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParseError {
    /// No `␍␊` within the limit (`max` bytes).
    ControlLineTooLong {
        /// The limit that applied.
        max: usize,
    },
    /// A control line ending in a bare `␊`.
    BadLineEnding,
    /// Not one of the server's operations.
    UnknownOp,
    /// The operation has the wrong number or kind of fields.
    BadArguments(&'static str),
    /// A `MSG` subject or reply subject that is not a valid subject.
    BadSubject,
    /// A sid that is not a decimal number.
    BadSid,
    /// A byte count that is not a decimal number, or header bytes over
    /// the total.
    BadLength,
    /// A payload over [`Limits::max_payload`].
    PayloadTooLarge {
        /// Declared length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// The payload is not followed by `␍␊`.
    MissingPayloadEnd,
    /// An `INFO` whose JSON does not parse.
    BadInfo,
    /// A control line that is not UTF-8.
    NotUtf8,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::ControlLineTooLong { max } => {
                write!(f, "control line over {max} bytes")
            }
            ParseError::BadLineEnding => f.write_str("control line not ended by CRLF"),
            ParseError::UnknownOp => f.write_str("unknown operation"),
            ParseError::BadArguments(op) => write!(f, "bad arguments to {op}"),
            ParseError::BadSubject => f.write_str("invalid subject"),
            ParseError::BadSid => f.write_str("invalid sid"),
            ParseError::BadLength => f.write_str("invalid byte count"),
            ParseError::PayloadTooLarge { len, max } => {
                write!(f, "payload of {len} bytes over {max}")
            }
            ParseError::MissingPayloadEnd => f.write_str("payload not followed by CRLF"),
            ParseError::BadInfo => f.write_str("INFO is not valid JSON"),
            ParseError::NotUtf8 => f.write_str("control line is not UTF-8"),
        }
    }
}

impl std::error::Error for ParseError {}

/// Parses the operation at the front of `input`: `Ok(Some((op, used)))`,
/// `Ok(None)` while incomplete (within the limits), or the error.
///
/// ```
/// use sockloop::protocol::nats::{parse_server_op, Limits, ServerOp};
///
/// let wire = b"MSG chat.lobby 7 5\r\nhello\r\nPING\r\n";
/// let (op, used) = parse_server_op(wire, &Limits::default())?.unwrap();
/// match op {
///     ServerOp::Msg(msg) => assert_eq!((msg.sid, &msg.payload[..]), (7, &b"hello"[..])),
///     other => panic!("{other:?}"),
/// }
/// assert_eq!(parse_server_op(&wire[used..], &Limits::default())?, Some((ServerOp::Ping, 6)));
/// assert_eq!(parse_server_op(b"PI", &Limits::default())?, None);
/// # Ok::<(), sockloop::protocol::nats::ParseError>(())
/// ```
pub fn parse_server_op(
    input: &[u8],
    limits: &Limits,
) -> Result<Option<(ServerOp, usize)>, ParseError> {
    let max_line = if starts_with_ignore_case(input, b"INFO") {
        limits.max_info
    } else {
        limits.max_control_line
    };
    let Some(newline) = input.iter().take(max_line).position(|&b| b == b'\n') else {
        return if input.len() >= max_line {
            Err(ParseError::ControlLineTooLong { max: max_line })
        } else {
            Ok(None)
        };
    };
    if newline == 0 || input[newline - 1] != b'\r' {
        return Err(ParseError::BadLineEnding);
    }
    let line = std::str::from_utf8(&input[..newline - 1]).map_err(|_| ParseError::NotUtf8)?;
    let body = newline + 1;
    let (op, rest) = split_op(line);
    let done = |op| Ok(Some((op, body)));
    let bare = |name, op| match rest.is_empty() {
        true => done(op),
        false => Err(ParseError::BadArguments(name)),
    };
    match op.to_ascii_uppercase().as_str() {
        "PING" => bare("PING", ServerOp::Ping),
        "PONG" => bare("PONG", ServerOp::Pong),
        "+OK" => bare("+OK", ServerOp::Ok),
        "-ERR" => done(ServerOp::Err(unquote(rest).to_owned())),
        "INFO" if !rest.starts_with('{') => Err(ParseError::BadInfo),
        "INFO" => {
            let info: ServerInfo = serde_json::from_str(rest).map_err(|_| ParseError::BadInfo)?;
            done(ServerOp::Info(Box::new(info)))
        }
        "MSG" => msg(input, body, rest, false, limits),
        "HMSG" => msg(input, body, rest, true, limits),
        _ => Err(ParseError::UnknownOp),
    }
}

/// A `MSG` or `HMSG` whose control line's fields are `args`.
fn msg(
    input: &[u8],
    body: usize,
    args: &str,
    with_headers: bool,
    limits: &Limits,
) -> Result<Option<(ServerOp, usize)>, ParseError> {
    let (op, counts) = if with_headers {
        ("HMSG", 2)
    } else {
        ("MSG", 1)
    };
    let fields: Vec<&str> = fields(args).collect();
    if fields.len() != 2 + counts && fields.len() != 3 + counts {
        return Err(ParseError::BadArguments(op));
    }
    let (subject, sid) = (fields[0], fields[1]);
    let reply_to = (fields.len() == 3 + counts).then(|| fields[2]);
    let lengths = &fields[fields.len() - counts..];
    let total = number(lengths[counts - 1]).ok_or(ParseError::BadLength)?;
    let header_len = if with_headers {
        number(lengths[0])
            .filter(|&h| h <= total)
            .ok_or(ParseError::BadLength)?
    } else {
        0
    };
    if total > limits.max_payload as u64 {
        return Err(ParseError::PayloadTooLarge {
            len: total,
            max: limits.max_payload,
        });
    }
    if !valid_subject(subject) || reply_to.is_some_and(|r| !valid_subject(r)) {
        return Err(ParseError::BadSubject);
    }
    let sid = number(sid).ok_or(ParseError::BadSid)?;
    let (total, header_len) = (total as usize, header_len as usize);
    let end = body + total;
    if input.len() < end + 2 {
        return Ok(None);
    }
    if &input[end..end + 2] != b"\r\n" {
        return Err(ParseError::MissingPayloadEnd);
    }
    let msg = Msg {
        subject: subject.to_owned(),
        sid,
        reply_to: reply_to.map(str::to_owned),
        headers: with_headers.then(|| input[body..body + header_len].to_vec()),
        payload: input[body + header_len..end].to_vec(),
    };
    Ok(Some((ServerOp::Msg(msg), end + 2)))
}

/// The operation name and the rest of the line (leading blanks trimmed).
fn split_op(line: &str) -> (&str, &str) {
    let line = line.trim_start_matches(blank);
    match line.find(blank) {
        Some(at) => (&line[..at], line[at..].trim_matches(blank)),
        None => (line, ""),
    }
}

fn blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn fields(args: &str) -> impl Iterator<Item = &str> {
    args.split(blank).filter(|f| !f.is_empty())
}

/// A decimal number of at most 19 digits (no sign, no blanks).
fn number(text: &str) -> Option<u64> {
    let digits = !text.is_empty() && text.len() <= 19 && text.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| text.parse().ok()).flatten()
}

/// `'text'` as `text`; anything else as it is.
fn unquote(text: &str) -> &str {
    text.strip_prefix('\'')
        .and_then(|t| t.strip_suffix('\''))
        .unwrap_or(text)
}

fn starts_with_ignore_case(input: &[u8], prefix: &[u8]) -> bool {
    input.len() >= prefix.len() && input[..prefix.len()].eq_ignore_ascii_case(prefix)
}
