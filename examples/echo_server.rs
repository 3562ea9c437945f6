//! The smallest sockloop server: TCP and UDP echo.
//!
//! ```sh
//! cargo run --example echo_server        # then: nc 127.0.0.1 7100
//! ```

use sockloop::{services::Echo, Server};

fn main() -> Result<(), sockloop::Error> {
    let addr = "127.0.0.1:7100".parse().unwrap();
    let server = Server::builder()
        .tcp(addr, || Echo)
        .udp(addr, || Echo)
        .build()?;
    println!("echo on tcp {addr} and udp {addr}; Ctrl-C to stop");
    server.run()
}
