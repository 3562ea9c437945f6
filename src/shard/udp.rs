//! A UDP socket on the loop: batched receive, service dispatch, batched
//! replies through a bounded send queue.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mio::net::UdpSocket;

use crate::config::ServerConfig;
use crate::limit::{Source, SourceRates};
use crate::metrics::{RudpTotals, ShardStats};
use crate::net::udp_batch::{RecvBatch, SendQueue};
use crate::service::{TimerId, UdpService};
use crate::shard::deadline::TimerTarget;
use crate::shard::mailbox::{ServiceRef, Shards};
use crate::shard::Resources;

/// One bound UDP socket with its service and reply queue.
pub(crate) struct UdpEndpoint {
    pub(crate) socket: UdpSocket,
    service: Box<dyn UdpService>,
    queue: SendQueue,
    /// Datagram rates per source, if limited.
    rates: Option<SourceRates>,
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
            let now = res.timers.now();
            for datagram in batch.iter() {
                if datagram.truncated {
                    res.stats.udp_dropped_truncated.incr();
                    continue;
                }
                if let Some(rates) = self.rates.as_mut() {
                    if res.gate.trusts(datagram.from.ip()) {
                        res.stats.udp_trusted.incr();
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
                let mut out = DatagramContext {
                    queue: &mut self.queue,
                    res,
                    index,
                    reply_budget: Some(ReplyBudget {
                        sender: datagram.from,
                        received: datagram.data.len(),
                        left: datagram.data.len(),
                    }),
                };
                self.service
                    .on_datagram(&mut out, datagram.from, datagram.data);
            }
            let mut out = DatagramContext {
                queue: &mut self.queue,
                res,
                index,
                reply_budget: None,
            };
            self.service.on_batch_end(&mut out);
            self.flush(&res.stats);
            if received < config.udp_batch {
                return false; // a short batch means the socket is drained
            }
        }
        true
    }

    /// Runs the service's timer `key`, then sends what it queued.
    pub(crate) fn on_timer(&mut self, index: usize, key: u64, res: &mut Resources) {
        let mut out = DatagramContext {
            queue: &mut self.queue,
            res,
            index,
            reply_budget: None,
        };
        self.service.on_timer(&mut out, key);
        self.flush(&res.stats);
    }

    /// The server is shutting down: the service says goodbye, then what it
    /// queued is sent.
    pub(crate) fn shut_down(&mut self, index: usize, res: &mut Resources) {
        let mut out = DatagramContext {
            queue: &mut self.queue,
            res,
            index,
            reply_budget: None,
        };
        self.service.on_shutdown(&mut out);
        self.flush(&res.stats);
    }

    /// Hands a message from another shard to the service.
    pub(crate) fn on_message(
        &mut self,
        index: usize,
        from: usize,
        msg: &[u8],
        res: &mut Resources,
    ) {
        let mut out = DatagramContext {
            queue: &mut self.queue,
            res,
            index,
            reply_budget: None,
        };
        self.service.on_message(&mut out, from, msg);
        self.flush(&res.stats);
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

/// What a [`UdpService`] can do while handling a datagram or a timer.
pub struct DatagramContext<'a> {
    queue: &'a mut SendQueue,
    res: &'a mut Resources,
    /// Which of the shard's UDP sockets (and services) this is.
    index: usize,
    /// While handling a datagram from an unverified sender: what may still
    /// go back to it (anti-amplification).
    reply_budget: Option<ReplyBudget>,
}

/// The bytes a datagram's sender may still be sent while it is handled.
struct ReplyBudget {
    sender: SocketAddr,
    /// The size of its datagram: the most it may be sent in all.
    received: usize,
    /// What is left of `received` after the replies queued so far.
    left: usize,
}

impl DatagramContext<'_> {
    /// Sends `data` to `to` from this socket. Replies are batched and sent
    /// after the current receive batch; if the reply queue is full the
    /// datagram is dropped and counted (UDP promises no delivery, and an
    /// unbounded queue would let a flood exhaust memory).
    ///
    /// Anti-amplification: while handling a datagram, what is sent back to
    /// its sender totals at most that datagram's size, since its source
    /// address may be forged; beyond, replies are dropped and counted
    /// (`udp_dropped_amplification`). A service that has proven the address
    /// (a handshake) lifts this with [`sender_verified`](Self::sender_verified).
    /// A drop is logged at info, at most once per source per 10 s with the
    /// count held back in between, since a service whose replies vanish
    /// this way is otherwise hard to diagnose.
    pub fn send_to(&mut self, to: SocketAddr, data: &[u8]) {
        if let Some(budget) = self.reply_budget.as_mut() {
            if budget.sender == to {
                if data.len() > budget.left {
                    self.res.stats.udp_dropped_amplification.incr();
                    let what = format_args!(
                        "udp reply of {} bytes to {to} dropped (anti-amplification): \
                         replies to an unverified sender may total at most the {} bytes \
                         it sent; a service that has proven the address lifts this with \
                         DatagramContext::sender_verified",
                        data.len(),
                        budget.received,
                    );
                    let now = self.res.timers.now();
                    let source = Source::from(to.ip());
                    let suppressor = &mut self.res.amplification;
                    super::log_per_source(suppressor, now, log::Level::Info, source, what);
                    return;
                }
                budget.left -= data.len();
            }
        }
        if self.queue.push(to, data).is_err() {
            self.res.stats.udp_dropped_queue_full.incr();
        }
    }

    /// Moves this socket's share of the shard's rudp metrics from what its
    /// service reported last to `now`, so several rudp sockets sum.
    pub(crate) fn report_rudp(&mut self, last: RudpTotals, now: RudpTotals) {
        let stats = &self.res.stats;
        stats.rudp_peers.shift(last.peers, now.peers);
        stats
            .rudp_retransmissions
            .shift(last.retransmissions, now.retransmissions);
    }

    /// The sender of the datagram being handled has proven its address:
    /// replies to it may be larger than what it sent.
    pub fn sender_verified(&mut self) {
        self.reply_budget = None;
    }

    /// Calls [`UdpService::on_timer`] with `key` after `after` (within one
    /// timer tick): e.g. to expire per-peer state.
    pub fn arm_timer(&mut self, after: Duration, key: u64) -> TimerId {
        let socket = self.index;
        TimerId(
            self.res
                .timers
                .arm_after(after, TimerTarget::UdpService { socket, key }),
        )
    }

    /// Cancels a timer; false if it already fired or was cancelled.
    pub fn cancel_timer(&mut self, timer: TimerId) -> bool {
        self.res.timers.wheel.cancel(timer.0).is_some()
    }

    /// The time of this loop turn: services take time from here rather
    /// than reading a clock.
    pub fn now(&self) -> std::time::Instant {
        self.res.timers.now()
    }

    /// The index of the shard this socket is served by.
    pub fn shard(&self) -> usize {
        self.res.postbox.shard
    }

    /// Posts `message` to this service on other shards (see
    /// [`UdpService::on_message`]). A shard whose inbox is full misses it,
    /// counted as `mailbox_dropped`; returns how many shards it reached.
    pub fn post(&mut self, to: Shards, message: &Arc<[u8]>) -> usize {
        self.res
            .postbox
            .post(ServiceRef::Udp(self.index), to, message)
    }
}
