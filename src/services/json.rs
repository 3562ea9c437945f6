//! The JSON message service: newline-delimited JSON objects, echoed back
//! re-encoded (compact, keys sorted); a line that is not a JSON object
//! gets a JSON error line instead of silence.

use std::collections::HashMap;
use std::ops::Range;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::codec::{
    describe_json_error, JsonEncodeSteps, JsonLines, JsonStep, JsonSteps, NdjsonError,
};
use crate::service::{CloseReason, ConnContext, ConnId, Refusal, ShardContext, TcpService};

/// Output gathered before it is handed to the connection.
const OUT_SLICE: usize = 16 * 1024;

/// Lines from this long on are parsed a slice at a time, the connection
/// yielding the loop between slices; shorter ones in one go.
const STEP_FROM: usize = 64 * 1024;

/// Input parsed per slice of a long line: a few milliseconds of work.
const STEP_BUDGET: usize = 256 * 1024;

/// Reply bytes encoded per slice of a long line's reply.
const ENCODE_BUDGET: usize = 256 * 1024;

/// The connection timer that resumes reading a half-parsed long line.
const RESUME_STEPPING: u64 = 1;

/// The connection timer that resumes encoding a long line's reply.
const RESUME_ENCODING: u64 = 2;

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
#[derive(Debug)]
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
    /// The connections whose reply to a long line is being encoded, a
    /// slice per turn (at most one each, freed on close): their reading
    /// stays paused until it is all sent, so later replies keep their
    /// order. A slice waits while the connection's output is near its
    /// soft limit, so the reply is held as a value, not as bytes.
    encoding: HashMap<ConnId, JsonEncodeSteps>,
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
            encoding: HashMap::new(),
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
        if self.encoding.contains_key(&id) {
            return 0; // offered again once the reply is out
        }
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
            let before = steps.parsed();
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
            match replies.admit(conn, parsed) {
                Admitted::Echo(message) => {
                    consumed += used;
                    // The reply is about as long as the line: encode it a
                    // slice per turn too, with what is left of this turn's
                    // budget first, after the replies before it.
                    replies.echoed += 1;
                    replies.flush(conn);
                    let encoder = JsonEncodeSteps::new(Value::Object(message));
                    let budget = STEP_BUDGET.saturating_sub(steps.parsed() - before);
                    if !self.encode_reply(conn, encoder, budget) {
                        break consumed;
                    }
                }
                Admitted::Answered => consumed += used,
                Admitted::Closed => break data.len(),
            }
        };
        replies.finish(conn);
        if decoder.is_scanning() {
            self.scanning.insert(id, decoder);
        }
        done
    }

    fn on_timer(&mut self, conn: &mut ConnContext<'_>, key: u64) {
        let id = conn.id();
        match key {
            RESUME_STEPPING => {
                conn.resume_reading_of(id);
            }
            RESUME_ENCODING => self.resume_encoding(conn),
            _ => {}
        }
    }

    fn on_drained(&mut self, conn: &mut ConnContext<'_>) {
        self.resume_encoding(conn);
    }

    fn on_close(&mut self, _shard: &mut ShardContext<'_>, id: ConnId, _reason: CloseReason) {
        self.scanning.remove(&id);
        self.stepping.remove(&id);
        self.encoding.remove(&id);
    }
}

impl JsonEcho {
    fn resume_encoding(&mut self, conn: &mut ConnContext<'_>) {
        if let Some(encoder) = self.encoding.remove(&conn.id()) {
            self.encode_reply(conn, encoder, ENCODE_BUDGET);
        }
    }

    /// Sends the next slice of a reply, of about `budget` bytes (none if
    /// 0), then a timer due next tick brings the following one; while the
    /// connection's pending output is near its soft limit it waits for it
    /// to drain instead. Once the reply is out, reads the connection
    /// again and returns true; until then it is kept, reading paused.
    fn encode_reply(
        &mut self,
        conn: &mut ConnContext<'_>,
        mut encoder: JsonEncodeSteps,
        budget: usize,
    ) -> bool {
        let id = conn.id();
        let buffered = conn.write_buffered();
        if buffered > 0 && buffered + ENCODE_BUDGET > conn.output_soft_limit() {
            if !conn.notify_drained(id) {
                conn.arm_timer(Duration::ZERO, RESUME_ENCODING);
            }
        } else if budget > 0 {
            let mut out = Vec::with_capacity(budget.min(ENCODE_BUDGET) + 1);
            let done = encoder.step(&mut out, budget);
            if done {
                out.push(b'\n');
            }
            conn.send(&out);
            if done {
                conn.resume_reading_of(id); // if it was paused for this reply
                return true;
            }
            conn.arm_timer(Duration::ZERO, RESUME_ENCODING);
        } else {
            conn.arm_timer(Duration::ZERO, RESUME_ENCODING);
        }
        self.encoding.insert(id, encoder);
        conn.pause_reading();
        false
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

/// What became of one line.
enum Admitted {
    /// A message within the rate: echo it (counted as echoed by the caller).
    Echo(Message),
    /// An error line was written.
    Answered,
    /// An error line was written, and the strike closed the connection.
    Closed,
}

impl Replies {
    /// Answers one line: its echo, or an error line (striking the peer).
    /// False if that closed the connection.
    fn answer(&mut self, conn: &mut ConnContext<'_>, parsed: Result<Message, String>) -> bool {
        match self.admit(conn, parsed) {
            Admitted::Echo(message) => {
                encode_line(&message, &mut self.out);
                self.echoed += 1;
                true
            }
            Admitted::Answered => true,
            Admitted::Closed => false,
        }
    }

    /// Counts one line and answers it unless it is a message to echo.
    fn admit(&mut self, conn: &mut ConnContext<'_>, parsed: Result<Message, String>) -> Admitted {
        // Error lines can outweigh the input that caused them (a buffer of
        // one-byte bad lines): hand output over in slices so this scratch
        // stays small; the connection's output limit bounds the rest.
        if self.out.len() >= OUT_SLICE {
            self.flush(conn);
        }
        let (error, detail, strike) = match parsed {
            Ok(message) => {
                self.decoded += 1;
                if conn.take_message_token() {
                    return Admitted::Echo(message);
                }
                ("over the message rate", None, "over the message rate")
            }
            Err(reason) => ("invalid message", Some(reason), "invalid JSON message"),
        };
        let max = None;
        encode_line(&ErrorLine { error, detail, max }, &mut self.out);
        match conn.strike(strike) {
            true => Admitted::Closed, // banned: the connection is closing
            false => Admitted::Answered,
        }
    }

    /// Hands what is gathered to the connection.
    fn flush(&mut self, conn: &mut ConnContext<'_>) {
        conn.send(&self.out);
        self.out.clear();
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
        self.flush(conn);
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
