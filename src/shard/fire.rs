//! What the shard does when timers come due.

use super::conn::live;
use super::context::{ConnContext, ShardContext};
use super::deadline::TimerTarget;
use super::mailbox::ServiceRef;
use super::Shard;
use crate::service::CloseReason;

impl Shard {
    /// Acts on every timer that is due at this turn's `now`.
    pub(super) fn fire_timers(&mut self) {
        let mut fired = std::mem::take(&mut self.fired);
        self.res.timers.expire(&mut fired);
        for (_, target) in fired.drain(..) {
            self.res.trace.timer_fired(&target);
            match target {
                TimerTarget::Deadline(token) => {
                    let Some(key) = live(&self.conns, token) else {
                        continue;
                    };
                    let (now_ms, conn) = (self.res.timers.now_ms(), &mut self.conns[key]);
                    match conn.state.deadlines.fired(now_ms, &self.res.limits) {
                        Some(reason) => {
                            log::debug!("closing {}: {reason:?}", conn.state.peer);
                            self.close(key, reason);
                        }
                        None => self.settle(key), // moved later since it was armed
                    }
                }
                TimerTarget::ConnService {
                    conn,
                    key: timer_key,
                } => {
                    let Some(key) = live(&self.conns, conn) else {
                        continue; // closed meanwhile: the timer dies with it
                    };
                    let service = &mut self.services[self.conns[key].service as usize];
                    let mut cx = ConnContext::new(key, &mut self.conns, &mut self.res);
                    service.on_timer(&mut cx, timer_key);
                    self.settle(key);
                }
                TimerTarget::TcpService { service, key } => {
                    let mut cx =
                        ShardContext::new(&mut self.conns, &mut self.res, ServiceRef::Tcp(service));
                    self.services[service].on_shard_timer(&mut cx, key);
                }
                TimerTarget::UdpService { socket, key } => {
                    if let Some(endpoint) = self.udp.get_mut(socket) {
                        endpoint.on_timer(socket, key, &mut self.res);
                    }
                }
                TimerTarget::ResumeAccept(listener) => {
                    self.tcp[listener].paused = false;
                    // Connections that queued meanwhile sent no new edge.
                    self.accept_ready(listener);
                }
                TimerTarget::Drain => self.close_all(CloseReason::Shutdown),
            }
        }
        self.fired = fired;
    }
}
