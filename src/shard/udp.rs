//! A UDP socket on the loop: batched receive, service dispatch, batched
//! replies through a bounded send queue.

use std::io;

use mio::net::UdpSocket;

use crate::config::ServerConfig;
use crate::limit::{Source, SourceRates};
use crate::net::udp_batch::{RecvBatch, SendQueue};
use crate::service::{DatagramContext, UdpService};
use crate::shard::Resources;

/// One bound UDP socket with its service and reply queue.
pub(crate) struct ServedUdpSocket {
    pub(crate) socket: UdpSocket,
    service: Box<dyn UdpService>,
    queue: SendQueue,
    /// Datagram rates per source, if limited.
    rates: Option<SourceRates>,
}

impl ServedUdpSocket {
    pub(crate) fn new(
        socket: UdpSocket,
        service: Box<dyn UdpService>,
        config: &ServerConfig,
    ) -> Self {
        ServedUdpSocket {
            socket,
            service,
            queue: SendQueue::new(config.udp_queue_datagrams, config.udp_queue_bytes),
            rates: config
                .udp_rate
                .map(|rate| SourceRates::new(rate, config.sources.max_sources)),
        }
    }

    /// Receives batches until the socket is drained or the per-event budget
    /// of batches is spent (then returns true: revisit before polling).
    /// Replies are flushed after each batch, so one receive syscall is
    /// followed by one send syscall for the whole batch. `index` is this
    /// socket's place among the shard's UDP sockets.
    pub(crate) fn read_ready(
        &mut self,
        index: usize,
        batch: &mut RecvBatch,
        res: &mut Resources,
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
            res.stats.udp_in.add(received as u64);
            res.trace.udp_batch("recvmmsg", received);
            let now = res.timers.now();
            // Counted once per batch: a locked add per datagram is what the
            // per-datagram path can least afford.
            let mut trusted = 0;
            for datagram in batch.iter() {
                if datagram.truncated {
                    res.stats.udp_dropped_truncated.incr();
                    continue;
                }
                if let Some(rates) = self.rates.as_mut() {
                    if res.gate.trusts(datagram.from.ip()) {
                        trusted += 1;
                    } else if !rates.take(datagram.from.ip(), now) {
                        res.stats.udp_dropped_rate.incr();
                        let source = Source::from(datagram.from.ip());
                        let what = format_args!(
                            "datagrams over {} from this address, dropped (--udp-rate, or --trusted to exempt a network)",
                            rates.rate()
                        );
                        super::warn_suspicious(res, source, what);
                        continue;
                    }
                }
                let sender = Some((datagram.from, datagram.data.len()));
                let mut out = DatagramContext::new(&mut self.queue, res, index, sender);
                self.service
                    .on_datagram(&mut out, datagram.from, datagram.data);
            }
            if trusted > 0 {
                res.stats.udp_trusted.add(trusted);
            }
            let mut out = DatagramContext::new(&mut self.queue, res, index, None);
            self.service.on_batch_end(&mut out);
            self.flush(res);
            if received < config.udp_batch {
                return false; // a short batch means the socket is drained
            }
        }
        true
    }

    /// Runs the service's timer `key`, then sends what it queued.
    pub(crate) fn on_timer(&mut self, index: usize, key: u64, res: &mut Resources) {
        let mut out = DatagramContext::new(&mut self.queue, res, index, None);
        self.service.on_timer(&mut out, key);
        self.flush(res);
    }

    /// The server is shutting down: the service says goodbye, then what it
    /// queued is sent.
    pub(crate) fn shut_down(&mut self, index: usize, res: &mut Resources) {
        let mut out = DatagramContext::new(&mut self.queue, res, index, None);
        self.service.on_shutdown(&mut out);
        self.flush(res);
    }

    /// Hands a message from another shard to the service.
    pub(crate) fn on_message(
        &mut self,
        index: usize,
        from: usize,
        msg: &[u8],
        res: &mut Resources,
    ) {
        let mut out = DatagramContext::new(&mut self.queue, res, index, None);
        self.service.on_message(&mut out, from, msg);
        self.flush(res);
    }

    /// Sends queued replies until the queue is empty or the socket is full.
    pub(crate) fn flush(&mut self, res: &Resources) {
        if self.queue.is_empty() {
            return;
        }
        let (outcome, stats) = (self.queue.flush(&self.socket), &res.stats);
        res.trace.udp_batch("sendmmsg", outcome.sent);
        stats.udp_out.add(outcome.sent as u64);
        stats.udp_send_errors.add(outcome.dropped_errors as u64);
    }
}
