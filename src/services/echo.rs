//! Echo: every byte (TCP) or datagram (UDP) goes back unchanged.

use std::net::SocketAddr;

use crate::service::{ConnContext, DatagramContext, TcpService, UdpService};

/// The echo service, for TCP and UDP.
///
/// ```no_run
/// use sockloop::{services::Echo, Server};
///
/// let server = Server::builder()
///     .tcp("127.0.0.1:7000".parse().unwrap(), || Echo)
///     .udp("127.0.0.1:7000".parse().unwrap(), || Echo)
///     .build()?;
/// server.run()?;
/// # Ok::<(), sockloop::Error>(())
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

impl TcpService for Echo {
    fn on_data(&mut self, conn: &mut ConnContext<'_>, data: &[u8]) -> usize {
        conn.send(data);
        data.len()
    }

    fn echoes(&self) -> bool {
        true
    }
}

impl UdpService for Echo {
    fn on_datagram(&mut self, out: &mut DatagramContext<'_>, _from: SocketAddr, _data: &[u8]) {
        // What arrived goes back from the receive buffer, not copied.
        out.send_back();
    }
}
