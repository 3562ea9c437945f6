//! The article's JSON message server (4.2): each line is a JSON `Message
//! {from, content, time}`; it is printed and echoed back re-encoded.
//!
//! ```sh
//! cargo run --example json_server                   # 127.0.0.1:9301, the article's port
//! nc 127.0.0.1 9301                                 # then: {"from":"ann","content":"hi","time":"12:00"}
//! cargo run --example json_server -- 127.0.0.1:0    # any free port
//! ```
//!
//! It prints `listening on tcp ADDR` once bound and `Received: MESSAGE`
//! per message. A line that is not a message gets `{"error":"..."}` and
//! a strike against its source address (enough strikes ban it; loopback
//! is trusted, so from there it is only logged); the connection goes on.
//!
//! # Framing, then parsing
//!
//! The Go server hands the socket to `json.NewDecoder`, which reads as
//! much as it likes, with no size limit: one client sending an endless
//! object makes it buffer without bound. Here framing comes first: a
//! message is one line of at most `MAX_LINE` bytes, found by `LineCodec`
//! in the bytes the shard read into the connection's buffer. Only a whole
//! line is parsed, once, into a validated struct; a longer one is
//! refused before any parsing and the connection is closed.

use serde::{Deserialize, Serialize};
use sockloop::codec::LineCodec;
use sockloop::service::{ConnContext, TcpService};
use sockloop::Server;

/// Longest line, `\n` included.
const MAX_LINE: usize = 4096;

/// The article's message.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Message {
    from: String,
    content: String,
    time: String,
}

struct JsonServer {
    codec: LineCodec,
}

impl TcpService for JsonServer {
    fn on_data(&mut self, conn: &mut ConnContext<'_>, data: &[u8]) -> usize {
        let (mut used, mut replies) = (0, Vec::new());
        loop {
            match self.codec.decode(&data[used..]) {
                Ok(Some((line, n))) => {
                    used += n;
                    match serde_json::from_slice::<Message>(line) {
                        Ok(message) => {
                            println!("Received: {message:?}");
                            serde_json::to_writer(&mut replies, &message).expect("in memory");
                        }
                        Err(e) => {
                            let error = serde_json::json!({ "error": e.to_string() });
                            serde_json::to_writer(&mut replies, &error).expect("in memory");
                            // Too many strikes and the source is banned.
                            conn.strike("invalid JSON message");
                        }
                    }
                    replies.push(b'\n');
                }
                Ok(None) => break, // a partial line waits for the next read
                Err(_) => {
                    let error = format!("{{\"error\":\"line too long\",\"max\":{MAX_LINE}}}\n");
                    replies.extend_from_slice(error.as_bytes());
                    conn.close();
                    used = data.len();
                    break;
                }
            }
        }
        conn.send(&replies); // one write answers every line of this read
        used
    }
}

fn main() -> Result<(), sockloop::Error> {
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:9301".into());
    let Ok(addr) = addr.parse() else {
        eprintln!("usage: json_server [ADDR]   e.g. 127.0.0.1:9301");
        std::process::exit(2);
    };
    let server = Server::builder()
        .tcp(addr, || JsonServer {
            codec: LineCodec::new(MAX_LINE),
        })
        .build()?;
    println!("listening on tcp {}", server.tcp_addrs()[0]);
    server.run()
}
