//! How connections end: one at a time ([`Shard::close`]: counted, logged,
//! buffers returned, admission released, the service told), all at once,
//! or drained at shutdown (input discarded, output flushed, then FIN).

use std::io;

use super::conn::Flags;
use super::context::ShardContext;
use super::deadline::TimerTarget;
use super::mailbox::ServiceRef;
use super::{outbound, Shard};
use crate::service::{CloseReason, ConnId};

impl Shard {
    pub(super) fn close(&mut self, key: usize, reason: CloseReason) {
        self.close_with(key, reason, None);
    }

    /// Closes connection `key`; `error` is what a connection that never
    /// connected tells its service (derived from `reason` if `None`).
    pub(super) fn close_with(&mut self, key: usize, reason: CloseReason, error: Option<io::Error>) {
        let mut conn = self.conns.remove(key);
        // A reset for a peer that did not read (its unsent bytes freed at
        // once), close_notify for a TLS peer otherwise.
        let mut sent = 0;
        conn.transport.before_close(reason, &mut sent);
        if sent > 0 {
            self.res.stats.tcp_bytes_out.add(sent as u64);
        }
        let token = conn.token(key);
        self.res.trace.close(token, &conn.state.peer, reason);
        if let Some(timer) = conn.state.deadlines.timer {
            self.res.trace.timer_cancelled(token);
            self.res.timers.cancel_deadline(timer);
        }
        for buf in [conn.state.read_buf.take(), conn.state.write_buf.take()]
            .into_iter()
            .flatten()
        {
            self.res.pool.give(*buf);
        }
        let stats = &self.res.stats;
        if conn.state.connecting() {
            stats.outbound_failed.incr();
            stats.conns_open.decr();
            if let Some(admission) = conn.state.take_pass() {
                self.res.gate.release(admission);
            }
            let error = error.unwrap_or_else(|| outbound::failure(reason));
            log::debug!("connecting to {}: {error}", conn.state.peer);
            let service = ServiceRef::Tcp(usize::from(conn.service));
            let mut cx = ShardContext::new(&mut self.conns, &mut self.res, service);
            let service = &mut self.services[usize::from(conn.service)];
            return service.on_connect_failed(&mut cx, ConnId(token.0 as u64), error);
        }
        match reason {
            CloseReason::PeerClosed => stats.closed_peer.incr(),
            CloseReason::Error => stats.closed_error.incr(),
            CloseReason::Service => stats.closed_service.incr(),
            CloseReason::ReadBufferFull => stats.closed_read_buffer_full.incr(),
            CloseReason::Shutdown => stats.closed_shutdown.incr(),
            CloseReason::IdleTimeout => stats.closed_idle_timeout.incr(),
            CloseReason::FrameTimeout => stats.closed_frame_timeout.incr(),
            CloseReason::WriteTimeout => stats.closed_write_timeout.incr(),
            CloseReason::OutputHardLimit => stats.closed_output_hard.incr(),
            CloseReason::OutputSoftLimit => stats.closed_output_soft.incr(),
            // Only a connecting connection has this deadline (above).
            CloseReason::ConnectTimeout => stats.closed_error.incr(),
        }
        let awaiting_header = conn.state.flags.any(Flags::PROXY_PENDING)
            && self.config.proxy_from.contains(conn.state.peer.ip());
        if awaiting_header && reason == CloseReason::FrameTimeout {
            stats.proxy_timeouts.incr();
        }
        // Last, so whoever sees the gauge fall also sees why.
        stats.conns_open.decr();
        if let Some(admission) = conn.state.take_pass() {
            self.res.gate.release(admission);
        }
        match reason {
            // A slow consumer losing its connection is news for the operator.
            CloseReason::OutputHardLimit | CloseReason::OutputSoftLimit => {
                log::info!(
                    "closed {}: output backlog over its limit ({reason:?})",
                    conn.state.peer
                );
            }
            _ => log::trace!("closed {} ({reason:?})", conn.state.peer),
        }
        if awaiting_header {
            return; // its service never heard of it
        }
        let service = ServiceRef::Tcp(usize::from(conn.service));
        let mut cx = ShardContext::new(&mut self.conns, &mut self.res, service);
        let service = &mut self.services[usize::from(conn.service)];
        service.on_close(&mut cx, ConnId(token.0 as u64), reason);
        // Dropping the stream closes the descriptor, which also removes it
        // from the poll set: no `deregister` syscall needed.
    }

    pub(super) fn close_all(&mut self, reason: CloseReason) {
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.close(key, reason);
        }
    }

    /// Closes listeners and UDP sockets, and turns every connection to
    /// draining: input is discarded, output flushed, then FIN; the peer's
    /// EOF (or the drain deadline) closes it. Reading on while draining,
    /// rather than closing with unread input, avoids a reset that could
    /// destroy echoes the peer has not read yet.
    pub(super) fn begin_shutdown(&mut self) {
        if self.draining {
            return;
        }
        self.draining = true;
        let drain = self.config.drain_timeout;
        self.res.timers.arm_after(drain, TimerTarget::Drain);
        for endpoint in &mut self.tcp {
            if let Some(mut listener) = endpoint.listener.take() {
                let _ = self.poll.registry().deregister(&mut listener);
            }
        }
        for (index, endpoint) in self.udp.iter_mut().enumerate() {
            endpoint.shut_down(index, &mut self.res);
        }
        self.udp.clear();
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.conns[key].state.flags.set(Flags::DRAINING);
            self.read(key);
            self.settle(key);
        }
        log::debug!("draining {} connections", self.conns.len());
    }
}
