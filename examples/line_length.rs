//! A custom protocol: for every line received, reply with its length.
//!
//! Shows the service contract: `on_data` sees everything not yet consumed
//! and returns how much it used; a partial line stays buffered until the
//! rest arrives.
//!
//! ```sh
//! cargo run --example line_length        # then: nc 127.0.0.1 7101
//! ```

use sockloop::service::{CloseReason, ConnContext, ConnId, ShardContext, TcpService};
use sockloop::Server;

#[derive(Default)]
struct LineLength {
    lines: u64,
}

impl TcpService for LineLength {
    fn on_open(&mut self, conn: &mut ConnContext<'_>) {
        conn.send(b"send me lines; \"quit\" to leave\n");
    }

    fn on_data(&mut self, conn: &mut ConnContext<'_>, data: &[u8]) -> usize {
        let mut consumed = 0;
        while let Some(end) = data[consumed..].iter().position(|&b| b == b'\n') {
            let line = data[consumed..consumed + end].trim_ascii();
            consumed += end + 1;
            if line == b"quit" {
                conn.send(b"bye\n");
                conn.close();
                break;
            }
            self.lines += 1;
            conn.send(format!("{}\n", line.len()).as_bytes());
        }
        consumed
    }

    fn on_close(&mut self, _shard: &mut ShardContext<'_>, id: ConnId, reason: CloseReason) {
        println!("{id:?} closed ({reason:?}); {} lines so far", self.lines);
    }
}

fn main() -> Result<(), sockloop::Error> {
    let server = Server::builder()
        .tcp("127.0.0.1:7101".parse().unwrap(), LineLength::default)
        .build()?;
    println!(
        "line-length on tcp {}; Ctrl-C to stop",
        server.tcp_addrs()[0]
    );
    server.run()
}
