//! A UDP socket on the loop: batched receive, service dispatch, batched
//! replies through a bounded send queue.

use std::io;
use std::net::SocketAddr;

use mio::net::UdpSocket;

use crate::config::ServerConfig;
use crate::metrics::ShardStats;
use crate::net::udp_batch::{RecvBatch, SendQueue};
use crate::service::UdpService;

/// One bound UDP socket with its service and reply queue.
pub(crate) struct UdpEndpoint {
    pub(crate) socket: UdpSocket,
    service: Box<dyn UdpService>,
    queue: SendQueue,
}

impl UdpEndpoint {
    pub(crate) fn new(
        socket: UdpSocket,
        service: Box<dyn UdpService>,
        config: &ServerConfig,
    ) -> Self {
        UdpEndpoint {
            socket,
            service,
            queue: SendQueue::new(config.udp_queue_datagrams, config.udp_queue_bytes),
        }
    }

    /// Receives batches until the socket is drained or the per-event budget
    /// of batches is spent (then returns true: revisit before polling).
    /// Replies are flushed after each batch, so one receive syscall is
    /// followed by one send syscall for the whole batch.
    pub(crate) fn read_ready(
        &mut self,
        batch: &mut RecvBatch,
        stats: &ShardStats,
        config: &ServerConfig,
    ) -> bool {
        for _ in 0..config.udp_recv_batches {
            let received = match batch.recv(&self.socket) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("udp {:?}: receive failed: {e}", self.socket.local_addr());
                    return false;
                }
            };
            stats.udp_in.add(received as u64);
            for datagram in batch.iter() {
                if datagram.truncated {
                    stats.udp_dropped_truncated.incr();
                    continue;
                }
                let mut out = DatagramContext {
                    queue: &mut self.queue,
                    stats,
                };
                self.service
                    .on_datagram(&mut out, datagram.from, datagram.data);
            }
            self.flush(stats);
            if received < config.udp_batch {
                return false; // a short batch means the socket is drained
            }
        }
        true
    }

    /// Sends queued replies until the queue is empty or the socket is full.
    pub(crate) fn flush(&mut self, stats: &ShardStats) {
        if self.queue.is_empty() {
            return;
        }
        let outcome = self.queue.flush(&self.socket);
        stats.udp_out.add(outcome.sent as u64);
        stats.udp_send_errors.add(outcome.dropped_errors as u64);
    }
}

/// What a [`UdpService`] can do while handling a datagram.
pub struct DatagramContext<'a> {
    queue: &'a mut SendQueue,
    stats: &'a ShardStats,
}

impl DatagramContext<'_> {
    /// Sends `data` to `to` from the socket the datagram arrived on. Replies
    /// are batched and sent after the current receive batch; if the reply
    /// queue is full the datagram is dropped and counted (UDP promises no
    /// delivery, and an unbounded queue would let a flood exhaust memory).
    pub fn send_to(&mut self, to: SocketAddr, data: &[u8]) {
        if self.queue.push(to, data).is_err() {
            self.stats.udp_dropped_queue_full.incr();
        }
    }
}
