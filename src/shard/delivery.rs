//! What a shard does with what its mailbox holds: the control word first
//! (shut down, stop), then mail up to a budget: connections handed over by
//! another shard to adopt, and messages for a service.
//!
//! The mailbox itself (bounded queue, control word, waker) is `mailbox.rs`.

use super::context::ShardContext;
use super::mailbox::{Control, Mail, ServiceRef};
use super::token::Slot;
use super::Shard;
use crate::service::CloseReason;

/// Mail read per wake before the shard's own sockets get a turn.
const MAIL_BUDGET: usize = 1024;

impl Shard {
    /// Acts on the control word, then on the mail waiting, up to a budget:
    /// other shards may post as fast as this one reads, and its own sockets
    /// must not starve. Mail left over is read again before the next poll.
    pub(super) fn read_mailbox(&mut self) {
        match self.mailbox.control() {
            Control::Run => {}
            Control::Shutdown => self.begin_shutdown(),
            Control::Stop => {
                self.begin_shutdown();
                self.close_all(CloseReason::Shutdown);
            }
        }
        for _ in 0..MAIL_BUDGET {
            let Some(mail) = self.mailbox.next() else {
                return;
            };
            match mail {
                Mail::Adopt {
                    listener,
                    stream,
                    peer,
                    admission,
                } => {
                    self.res.stats.adopted.incr();
                    if self.draining {
                        // Dropping it closes it, as a closed listener would.
                        self.res.gate.release(admission);
                        continue;
                    }
                    let stream = mio::net::TcpStream::from_std(stream);
                    self.open(listener, stream, peer, admission);
                }
                Mail::Message {
                    service,
                    from,
                    payload,
                } => self.deliver(service, from, &payload),
            }
        }
        self.revisit.push(Slot::Waker.token());
    }

    fn deliver(&mut self, service: ServiceRef, from: usize, payload: &[u8]) {
        match service {
            ServiceRef::Tcp(i) => {
                let mut cx = ShardContext::new(&mut self.conns, &mut self.res, service);
                self.services[i].on_message(&mut cx, from, payload);
            }
            ServiceRef::Udp(i) => {
                if let Some(endpoint) = self.udp.get_mut(i) {
                    endpoint.on_message(i, from, payload, &mut self.res);
                }
            }
        }
    }
}
