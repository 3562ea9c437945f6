//! The JSON message service: newline-delimited JSON objects, echoed back
//! re-encoded (compact, keys sorted); a line that is not a JSON object
//! gets a JSON error line instead of silence.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::codec::{drive, Flow, JsonLines, NdjsonError};
use crate::service::{CloseReason, ConnContext, ConnId, Refusal, ShardContext, TcpService};

/// Output gathered before it is handed to the connection.
const OUT_SLICE: usize = 16 * 1024;

/// A message is one JSON object on one line.
type Message = Map<String, Value>;

/// The reply to a line that is not a message: `error` first, so a reader
/// sees what went wrong before the details.
#[derive(Serialize)]
struct ErrorLine {
    error: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max: Option<usize>,
}

/// The `json` service.
///
/// ```
/// use sockloop::{services::JsonEcho, Server};
/// use std::io::{BufRead, BufReader, Write};
///
/// let server = Server::builder()
///     .tcp("127.0.0.1:0".parse().unwrap(), || JsonEcho::new(64 * 1024))
///     .build()?;
/// let addr = server.tcp_addrs()[0];
/// let handle = server.handle();
/// let running = std::thread::spawn(move || server.run());
///
/// let mut client = std::net::TcpStream::connect(addr)?;
/// client.write_all(b"{ \"to\": \"all\",  \"n\": 1 }\nnot json\n")?;
/// let mut replies = BufReader::new(client).lines();
/// assert_eq!(replies.next().unwrap()?, r#"{"n":1,"to":"all"}"#);
/// assert!(replies.next().unwrap()?.starts_with(r#"{"error":"invalid message""#));
///
/// handle.stop();
/// running.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct JsonEcho {
    max_line: usize,
    /// The decoders of the connections whose last call left a partly
    /// scanned line (so a long line is scanned once, not once per read);
    /// the others need none. At most one per connection of the shard.
    scanning: HashMap<ConnId, JsonLines<Message>>,
}

impl JsonEcho {
    /// Lines longer than `max_line` bytes (terminator included) get an
    /// error and close the connection: without a newline in sight there is
    /// no way to find the next message.
    pub fn new(max_line: usize) -> JsonEcho {
        JsonEcho {
            max_line,
            scanning: HashMap::new(),
        }
    }
}

impl TcpService for JsonEcho {
    /// `{"error":"the server is full"}` and the like, on one line.
    fn refusal(&self, _listener: usize, reason: Refusal) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let error = ErrorLine {
            error: reason.reason(),
            detail: None,
            max: None,
        };
        encode_line(&error, &mut out);
        Some(out)
    }

    fn on_data(&mut self, conn: &mut ConnContext<'_>, data: &[u8]) -> usize {
        let id = conn.id();
        let mut decoder =
            (self.scanning.remove(&id)).unwrap_or_else(|| JsonLines::new(self.max_line));
        let (mut decoded, mut echoed) = (0, 0);
        let mut out = Vec::new();
        let consumed = drive(&mut decoder, data, |frame| {
            // Error lines can outweigh the input that caused them (a buffer
            // of one-byte bad lines): hand output over in slices so this
            // scratch stays small; the connection's output limit bounds
            // the rest.
            if out.len() >= OUT_SLICE {
                conn.send(&out);
                out.clear();
            }
            let (error, detail, max, strike) = match frame {
                Ok(message) => {
                    decoded += 1;
                    if conn.take_message_token() {
                        encode_line(&message, &mut out);
                        echoed += 1;
                        return Flow::Continue;
                    }
                    ("over the message rate", None, None, "over the message rate")
                }
                Err(NdjsonError::Invalid { reason, .. }) => (
                    "invalid message",
                    Some(reason),
                    None,
                    "invalid JSON message",
                ),
                Err(NdjsonError::TooLong { max }) => {
                    ("line too long", None, Some(max), "line too long")
                }
            };
            encode_line(&ErrorLine { error, detail, max }, &mut out);
            if max.is_some() {
                // No newline in sight: the next message cannot be found.
                conn.send(&out);
                out.clear();
                conn.strike(strike);
                conn.close();
                return Flow::Close;
            }
            match conn.strike(strike) {
                true => Flow::Close, // banned: the connection is closing
                false => Flow::Continue,
            }
        });
        conn.send(&out);
        conn.count_frames(decoded, echoed);
        if decoder.is_scanning() {
            self.scanning.insert(id, decoder);
        }
        consumed
    }

    fn on_close(&mut self, _shard: &mut ShardContext<'_>, id: ConnId, _reason: CloseReason) {
        self.scanning.remove(&id);
    }
}

/// Appends `value` as one compact JSON line. Maps of JSON values and the
/// error line always serialise, so there is no error to report.
fn encode_line(value: &impl Serialize, out: &mut Vec<u8>) {
    if serde_json::to_writer(&mut *out, value).is_ok() {
        out.push(b'\n');
    }
}
