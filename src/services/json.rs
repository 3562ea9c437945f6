//! The JSON message service: newline-delimited JSON objects, echoed back
//! re-encoded (compact, keys sorted); a line that is not a JSON object
//! gets a JSON error line instead of silence.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::codec::{NdjsonCodec, NdjsonError};
use crate::service::{ConnContext, Refusal, TcpService};

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
#[derive(Debug, Clone, Copy)]
pub struct JsonEcho {
    codec: NdjsonCodec<Message>,
}

impl JsonEcho {
    /// Lines longer than `max_line` bytes (terminator included) get an
    /// error and close the connection: without a newline in sight there is
    /// no way to find the next message.
    pub fn new(max_line: usize) -> JsonEcho {
        JsonEcho {
            codec: NdjsonCodec::new(max_line),
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
        let mut consumed = 0;
        let (mut decoded, mut echoed) = (0, 0);
        let mut out = Vec::new();
        loop {
            // Error lines can outweigh the input that caused them (a buffer
            // of one-byte bad lines): hand output over in slices so this
            // scratch stays small; the connection's output limit bounds
            // the rest.
            if out.len() >= OUT_SLICE {
                conn.send(&out);
                out.clear();
            }
            match self.codec.decode(&data[consumed..]) {
                Ok(Some((message, used))) => {
                    consumed += used;
                    decoded += 1;
                    if conn.take_message_token() {
                        encode_line(&message, &mut out);
                        echoed += 1;
                        continue;
                    }
                    let error = ErrorLine {
                        error: "over the message rate",
                        detail: None,
                        max: None,
                    };
                    encode_line(&error, &mut out);
                    if conn.strike("over the message rate") {
                        break; // banned: the connection is closing
                    }
                }
                Ok(None) => break,
                Err(NdjsonError::Invalid { used, reason }) => {
                    consumed += used;
                    let error = ErrorLine {
                        error: "invalid message",
                        detail: Some(reason),
                        max: None,
                    };
                    encode_line(&error, &mut out);
                    if conn.strike("invalid JSON message") {
                        break;
                    }
                }
                Err(NdjsonError::TooLong { max }) => {
                    let error = ErrorLine {
                        error: "line too long",
                        detail: None,
                        max: Some(max),
                    };
                    encode_line(&error, &mut out);
                    conn.send(&out);
                    conn.strike("line too long");
                    conn.close();
                    return data.len();
                }
            }
        }
        conn.send(&out);
        conn.count_frames(decoded, echoed);
        consumed
    }
}

/// Appends `value` as one compact JSON line. Maps of JSON values and the
/// error line always serialise, so there is no error to report.
fn encode_line(value: &impl Serialize, out: &mut Vec<u8>) {
    if serde_json::to_writer(&mut *out, value).is_ok() {
        out.push(b'\n');
    }
}
