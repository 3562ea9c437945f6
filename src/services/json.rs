//! The JSON message service: newline-delimited JSON objects, echoed back
//! re-encoded (compact, keys sorted); a line that is not a JSON object
//! gets a JSON error line instead of silence.

use std::collections::HashMap;
use std::ops::Range;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::codec::{describe_json_error, JsonLines, JsonStep, JsonSteps, NdjsonError};
use crate::service::{CloseReason, ConnContext, ConnId, Refusal, ShardContext, TcpService};

/// Output gathered before it is handed to the connection.
const OUT_SLICE: usize = 16 * 1024;

/// Lines from this long on are parsed a slice at a time, the connection
/// yielding the loop between slices; shorter ones in one go.
const STEP_FROM: usize = 64 * 1024;

/// Input parsed per slice of a long line: a few milliseconds of work.
const STEP_BUDGET: usize = 256 * 1024;

/// The connection timer that resumes reading a half-parsed long line.
const RESUME_STEPPING: u64 = 1;

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
    /// The connections with a long line parsed part way (at most one
    /// each, freed on close): their reading is paused until a timer due
    /// next tick resumes it, so the shard serves the others in between.
    stepping: HashMap<ConnId, Stepping>,
}

impl JsonEcho {
    /// Lines longer than `max_line` bytes (terminator included) get an
    /// error and close the connection: without a newline in sight there is
    /// no way to find the next message.
    pub fn new(max_line: usize) -> JsonEcho {
        JsonEcho {
            max_line,
            scanning: HashMap::new(),
            stepping: HashMap::new(),
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
        let mut replies = Replies::default();
        let mut consumed = 0;
        // A long line left half parsed by the last call comes first.
        let mut resumed = self.stepping.remove(&id);
        let done = loop {
            let (mut steps, span, used) = match resumed.take() {
                // Offered the same input again (it was held, unconsumed).
                Some(held) if held.used <= data.len() => (held.steps, held.span, held.used),
                _ => match decoder.next_line(&data[consumed..]) {
                    Ok(None) => break consumed,
                    Ok(Some((span, used))) if span.len() >= STEP_FROM => {
                        (JsonSteps::new(), span, used)
                    }
                    Ok(Some((span, used))) => {
                        let line = &data[consumed..][span];
                        let parsed =
                            serde_json::from_slice(line).map_err(|e| describe_json_error(line, &e));
                        match replies.answer(conn, parsed) {
                            true => consumed += used,
                            false => break data.len(),
                        }
                        continue;
                    }
                    Err(e) => {
                        replies.answer_too_long(conn, e);
                        break data.len();
                    }
                },
            };
            let line = &data[consumed..][span.clone()];
            let parsed = match steps.step(line, STEP_BUDGET) {
                JsonStep::Pending => {
                    // Let the shard's other connections have this turn:
                    // stop reading, and read (the held input first) again
                    // when the timer fires, on a later turn.
                    self.stepping.insert(id, Stepping { steps, span, used });
                    conn.pause_reading();
                    conn.arm_timer(Duration::ZERO, RESUME_STEPPING);
                    break consumed;
                }
                JsonStep::Done(Value::Object(message)) => Ok(message),
                // Rare, and bounded by the line limit: serde_json parses the
                // line again, for its error text.
                // (Should the two ever disagree, serde_json's answer wins.)
                JsonStep::Done(_) | JsonStep::Failed => {
                    serde_json::from_slice(line).map_err(|e| describe_json_error(line, &e))
                }
            };
            match replies.answer(conn, parsed) {
                true => consumed += used,
                false => break data.len(),
            }
        };
        replies.finish(conn);
        if decoder.is_scanning() {
            self.scanning.insert(id, decoder);
        }
        done
    }

    fn on_timer(&mut self, conn: &mut ConnContext<'_>, key: u64) {
        if key == RESUME_STEPPING {
            let id = conn.id();
            conn.resume_reading_of(id);
        }
    }

    fn on_close(&mut self, _shard: &mut ShardContext<'_>, id: ConnId, _reason: CloseReason) {
        self.scanning.remove(&id);
        self.stepping.remove(&id);
    }
}

/// A long line parsed part way, waiting for the connection's next turn.
#[derive(Debug, Clone)]
struct Stepping {
    steps: JsonSteps,
    /// Where the line lies in the held input, and the bytes it takes.
    span: Range<usize>,
    used: usize,
}

/// What one `on_data` call answers, gathered and handed over in slices.
#[derive(Default)]
struct Replies {
    out: Vec<u8>,
    decoded: u64,
    echoed: u64,
}

impl Replies {
    /// Answers one line: its echo, or an error line (striking the peer).
    /// False if that closed the connection.
    fn answer(&mut self, conn: &mut ConnContext<'_>, parsed: Result<Message, String>) -> bool {
        // Error lines can outweigh the input that caused them (a buffer of
        // one-byte bad lines): hand output over in slices so this scratch
        // stays small; the connection's output limit bounds the rest.
        if self.out.len() >= OUT_SLICE {
            conn.send(&self.out);
            self.out.clear();
        }
        let (error, detail, strike) = match parsed {
            Ok(message) => {
                self.decoded += 1;
                if conn.take_message_token() {
                    encode_line(&message, &mut self.out);
                    self.echoed += 1;
                    return true;
                }
                ("over the message rate", None, "over the message rate")
            }
            Err(reason) => ("invalid message", Some(reason), "invalid JSON message"),
        };
        let max = None;
        encode_line(&ErrorLine { error, detail, max }, &mut self.out);
        !conn.strike(strike) // banned: the connection is closing
    }

    /// Answers a line over the limit, and closes: without a newline in
    /// sight the next message cannot be found.
    fn answer_too_long(&mut self, conn: &mut ConnContext<'_>, error: NdjsonError) {
        let max = match error {
            NdjsonError::TooLong { max } => Some(max),
            NdjsonError::Invalid { .. } => None,
        };
        let line = ErrorLine {
            error: "line too long",
            detail: None,
            max,
        };
        encode_line(&line, &mut self.out);
        conn.send(&self.out);
        self.out.clear();
        conn.strike("line too long");
        conn.close();
    }

    fn finish(self, conn: &mut ConnContext<'_>) {
        conn.send(&self.out);
        conn.count_frames(self.decoded, self.echoed);
    }
}

/// Appends `value` as one compact JSON line. Maps of JSON values and the
/// error line always serialise, so there is no error to report.
fn encode_line(value: &impl Serialize, out: &mut Vec<u8>) {
    if serde_json::to_writer(&mut *out, value).is_ok() {
        out.push(b'\n');
    }
}
