//! A custom protocol: for every line received, reply with its length.
//!
//! Shows the service contract: `on_data` sees everything not yet consumed
//! and returns how much it used; a partial line stays buffered until the
//! rest arrives. `LineCodec` does the framing, and bounds it: a line can
//! never need more than `MAX_LINE` bytes of buffer.
//!
//! ```sh
//! cargo run --example line_length                   # then: nc 127.0.0.1 7101
//! cargo run --example line_length -- 127.0.0.1:0    # any free port
//! ```

use sockloop::codec::LineCodec;
use sockloop::service::{CloseReason, ConnContext, ConnId, ShardContext, TcpService};
use sockloop::Server;

/// Longest line, its `\n` (or `\r\n`) included.
const MAX_LINE: usize = 1024;

struct LineLength {
    codec: LineCodec,
    /// Lines measured by this value: there is one value per shard, so
    /// this counts one shard's lines (examples/shared_state.rs shares
    /// state between shards).
    lines: u64,
}

impl TcpService for LineLength {
    fn on_open(&mut self, conn: &mut ConnContext<'_>) {
        conn.send(b"send me lines; \"quit\" to leave\n");
    }

    fn on_data(&mut self, conn: &mut ConnContext<'_>, data: &[u8]) -> usize {
        let mut consumed = 0;
        let mut replies = Vec::new();
        loop {
            match self.codec.decode(&data[consumed..]) {
                Ok(Some((line, used))) => {
                    consumed += used;
                    let line = line.trim_ascii();
                    if line == b"quit" {
                        LineCodec::encode(b"bye", &mut replies);
                        conn.close();
                        break;
                    }
                    self.lines += 1;
                    LineCodec::encode(line.len().to_string().as_bytes(), &mut replies);
                }
                Ok(None) => break, // the rest of the line comes with a later read
                Err(e) => {
                    // No newline within MAX_LINE: the line's end cannot be
                    // found without unbounded buffering, so say why and close.
                    LineCodec::encode(format!("error: {e}").as_bytes(), &mut replies);
                    conn.close();
                    consumed = data.len();
                    break;
                }
            }
        }
        conn.send(&replies); // one write for everything this read answered
        consumed
    }

    fn on_close(&mut self, _shard: &mut ShardContext<'_>, id: ConnId, reason: CloseReason) {
        println!(
            "{id:?} closed ({reason:?}); this shard has measured {} lines",
            self.lines
        );
    }
}

fn main() -> Result<(), sockloop::Error> {
    let addr = std::env::args().nth(1);
    let addr = addr.as_deref().unwrap_or("127.0.0.1:7101");
    let Ok(addr) = addr.parse() else {
        eprintln!("usage: line_length [ADDR]   e.g. 127.0.0.1:7101");
        std::process::exit(2);
    };
    let server = Server::builder()
        .tcp(addr, || LineLength {
            codec: LineCodec::new(MAX_LINE),
            lines: 0,
        })
        .build()?;
    println!(
        "line-length on tcp {}; Ctrl-C to stop",
        server.tcp_addrs()[0]
    );
    server.run()
}
