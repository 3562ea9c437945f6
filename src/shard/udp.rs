//! A UDP socket on the loop: batched receive, service dispatch, batched
//! replies through a bounded send queue.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::time::Instant;

use mio::net::UdpSocket;

use crate::config::ServerConfig;
use crate::limit::{Rate, Source, SourceRates};
use crate::net::gso::{self, Offload, OffloadMode};
use crate::net::udp_batch::{RecvBatch, SendQueue};
use crate::service::{DatagramContext, UdpService};
use crate::shard::context::Received;
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
            for (slot, from, data, truncated) in batch.iter_slots() {
                if truncated {
                    res.stats.udp_dropped_truncated.incr();
                    continue;
                }
                let slot = Some(slot);
                self.deliver(index, res, now, Received { from, data, slot }, &mut trust);
            }
            self.end_batch(index, res, trust.trusted, Some(&mut *batch));
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
                for data in gso::split(&buf[..got.len], got.segment) {
                    received += 1;
                    let datagram = Received {
                        from: &got.from,
                        data,
                        slot: None,
                    };
                    self.deliver(index, res, now, datagram, &mut trust);
                }
            }
            if received == 0 {
                break;
            }
            res.stats.udp_in.add(received);
            res.trace.udp_batch("recvmsg (GRO)", received as usize);
            self.end_batch(index, res, trust.trusted, None);
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
    /// rate (`trust` counts those exempt). Inlined: it runs per datagram.
    #[inline(always)]
    fn deliver(
        &mut self,
        index: usize,
        res: &mut Resources,
        now: Instant,
        received: Received<'_>,
        trust: &mut BatchTrust,
    ) {
        if let Some(rates) = self.rates.as_mut() {
            let from = received.from;
            if !trust.trusts(&res.gate, from) && !rates.take(from.ip(), now) {
                over_rate(res, from.ip(), rates.rate());
                return;
            }
        }
        let mut out = DatagramContext::new(&mut self.queue, res, index, Some(received));
        self.service
            .on_datagram(&mut out, *received.from, received.data);
    }

    /// After a batch: the service's batch end, then its replies sent
    /// (`batch`: the receive batch their slot entries name, if any).
    fn end_batch(
        &mut self,
        index: usize,
        res: &mut Resources,
        trusted: u64,
        batch: Option<&mut RecvBatch>,
    ) {
        // Counted once per batch: a locked add per datagram is what the
        // per-datagram path can least afford.
        if trusted > 0 {
            res.stats.udp_trusted.add(trusted);
        }
        let mut out = DatagramContext::new(&mut self.queue, res, index, None);
        self.service.on_batch_end(&mut out);
        self.send_queued(res, batch);
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
        self.send_queued(res, None);
    }

    /// `flush`, with the receive batch that slot entries name: what the
    /// socket does not take is copied out of it before it is reused.
    fn send_queued(&mut self, res: &Resources, batch: Option<&mut RecvBatch>) {
        if self.queue.is_empty() {
            return;
        }
        let outcome = match (self.offload.as_mut(), batch) {
            // A socket with offload receives through its own buffer: its
            // queue never names slots.
            (Some((offload, _)), _) => offload.flush(&mut self.queue, self.socket.as_fd()),
            (None, Some(batch)) => self.queue.flush_batch(&self.socket, batch),
            (None, None) => self.queue.flush(&self.socket),
        };
        res.trace.udp_batch("sendmmsg", outcome.sent);
        let stats = &res.stats;
        stats.udp_out.add(outcome.sent as u64);
        stats.udp_send_errors.add(outcome.dropped_errors as u64);
    }
}

/// A datagram from `ip` was over `rate` and dropped: counted and logged
/// (per source, suppressed).
#[cold]
#[inline(never)]
fn over_rate(res: &mut Resources, ip: IpAddr, rate: Rate) {
    res.stats.udp_dropped_rate.incr();
    let what = format_args!(
        "datagrams over {rate} from this address, dropped (--udp-rate, or --trusted to exempt a network)"
    );
    super::warn_suspicious(res, Source::from(ip), what);
}

/// Trust verdicts within one receive batch: the last source checked is
/// remembered, since a batch mostly holds runs from one address (a busy
/// client, a flood), and the exempt datagrams are counted for one add at
/// the batch's end.
#[derive(Default)]
struct BatchTrust {
    /// The last source checked, and its verdict.
    last: Option<IpAddr>,
    verdict: bool,
    trusted: u64,
}

impl BatchTrust {
    fn trusts(&mut self, gate: &Gate, from: &SocketAddr) -> bool {
        // Matched by hand: comparing `Option<IpAddr>`s costs several times
        // this, per datagram.
        let same = match (from, &self.last) {
            (SocketAddr::V4(a), Some(IpAddr::V4(b))) => a.ip() == b,
            (SocketAddr::V6(a), Some(IpAddr::V6(b))) => a.ip() == b,
            _ => false,
        };
        if !same {
            self.verdict = gate.trusts(from.ip());
            self.last = Some(from.ip());
        }
        self.trusted += u64::from(self.verdict);
        self.verdict
    }
}
