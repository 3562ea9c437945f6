//! A UDP socket on the loop: batched receive, service dispatch, batched
//! replies through a bounded send queue.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::Instant;

use mio::net::UdpSocket;

use crate::config::ServerConfig;
use crate::limit::{Source, SourceRates};
use crate::net::gso::{self, Offload, OffloadMode};
use crate::net::udp_batch::{RecvBatch, SendQueue};
use crate::service::{DatagramContext, UdpService};
use crate::shard::gate::Gate;
use crate::shard::Resources;

/// One bound UDP socket with its service and reply queue.
pub(crate) struct ServedUdpSocket {
    pub(crate) socket: UdpSocket,
    service: Box<dyn UdpService>,
    queue: SendQueue,
    /// Datagram rates per source, if limited.
    rates: Option<SourceRates>,
    /// For a service that asks for it: segmented sends, and coalesced
    /// receives into this socket's own buffer.
    offload: Option<(Offload, Box<[u8]>)>,
}

impl ServedUdpSocket {
    pub(crate) fn new(
        socket: UdpSocket,
        service: Box<dyn UdpService>,
        config: &ServerConfig,
    ) -> Self {
        let offload = service.offload().then(|| {
            let offload = Offload::enable(socket.as_fd(), OffloadMode::from_env());
            (offload, vec![0; gso::GRO_BUFFER].into_boxed_slice())
        });
        ServedUdpSocket {
            socket,
            offload,
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
        if self.offload.is_some() {
            return self.read_coalesced(index, res, config);
        }
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
            let mut trust = BatchTrust::default();
            for datagram in batch.iter() {
                if datagram.truncated {
                    res.stats.udp_dropped_truncated.incr();
                    continue;
                }
                self.deliver(index, res, now, (datagram.from, datagram.data), &mut trust);
            }
            self.end_batch(index, res, trust.trusted);
            if received < config.udp_batch {
                return false; // a short batch means the socket is drained
            }
        }
        true
    }

    /// `read_ready` with offload: each receive is one datagram or a run of
    /// them from one peer (GRO), cut apart here; a batch is up to
    /// `udp_batch` receives.
    fn read_coalesced(&mut self, index: usize, res: &mut Resources, config: &ServerConfig) -> bool {
        let Some((_, buf)) = self.offload.as_mut() else {
            return false;
        };
        let mut buf = std::mem::take(buf);
        let mut more = true;
        for _ in 0..config.udp_recv_batches {
            let (mut received, mut trust) = (0, BatchTrust::default());
            for _ in 0..config.udp_batch {
                let got = match gso::recv_segments(self.socket.as_fd(), &mut buf, false) {
                    Ok(got) => got,
                    Err(e) => {
                        if e.kind() != io::ErrorKind::WouldBlock {
                            log::warn!("udp {:?}: receive failed: {e}", self.socket.local_addr());
                        }
                        more = false;
                        break;
                    }
                };
                if got.truncated {
                    // Longer than any UDP payload fits: never in practice.
                    res.stats.udp_dropped_truncated.incr();
                    continue;
                }
                let now = res.timers.now();
                for datagram in gso::split(&buf[..got.len], got.segment) {
                    received += 1;
                    self.deliver(index, res, now, (got.from, datagram), &mut trust);
                }
            }
            if received == 0 {
                break;
            }
            res.stats.udp_in.add(received);
            res.trace.udp_batch("recvmsg (GRO)", received as usize);
            self.end_batch(index, res, trust.trusted);
            if !more {
                break;
            }
        }
        if let Some((_, slot)) = self.offload.as_mut() {
            *slot = buf;
        }
        more
    }

    /// Hands one datagram to the service, unless its source is over its
    /// rate (`trust` counts those exempt).
    fn deliver(
        &mut self,
        index: usize,
        res: &mut Resources,
        now: Instant,
        (from, data): (SocketAddr, &[u8]),
        trust: &mut BatchTrust,
    ) {
        if let Some(rates) = self.rates.as_mut() {
            if trust.trusts(&res.gate, from.ip()) {
            } else if !rates.take(from.ip(), now) {
                res.stats.udp_dropped_rate.incr();
                let source = Source::from(from.ip());
                let what = format_args!(
                    "datagrams over {} from this address, dropped (--udp-rate, or --trusted to exempt a network)",
                    rates.rate()
                );
                super::warn_suspicious(res, source, what);
                return;
            }
        }
        let sender = Some((from, data.len()));
        let mut out = DatagramContext::new(&mut self.queue, res, index, sender);
        self.service.on_datagram(&mut out, from, data);
    }

    /// After a batch: the service's batch end, then its replies sent.
    fn end_batch(&mut self, index: usize, res: &mut Resources, trusted: u64) {
        // Counted once per batch: a locked add per datagram is what the
        // per-datagram path can least afford.
        if trusted > 0 {
            res.stats.udp_trusted.add(trusted);
        }
        let mut out = DatagramContext::new(&mut self.queue, res, index, None);
        self.service.on_batch_end(&mut out);
        self.flush(res);
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
        let outcome = match self.offload.as_mut() {
            Some((offload, _)) => offload.flush(&mut self.queue, self.socket.as_fd()),
            None => self.queue.flush(&self.socket),
        };
        res.trace.udp_batch("sendmmsg", outcome.sent);
        let stats = &res.stats;
        stats.udp_out.add(outcome.sent as u64);
        stats.udp_send_errors.add(outcome.dropped_errors as u64);
    }
}

/// Trust verdicts within one receive batch: the last source checked is
/// remembered, since a batch mostly holds runs from one address (a busy
/// client, a flood), and the exempt datagrams are counted for one add at
/// the batch's end.
#[derive(Default)]
struct BatchTrust {
    last: Option<(std::net::IpAddr, bool)>,
    trusted: u64,
}

impl BatchTrust {
    fn trusts(&mut self, gate: &Gate, ip: std::net::IpAddr) -> bool {
        let verdict = match self.last {
            Some((seen, verdict)) if seen == ip => verdict,
            _ => gate.trusts(ip),
        };
        self.last = Some((ip, verdict));
        self.trusted += u64::from(verdict);
        verdict
    }
}
