//! How shards and other threads reach a shard: a bounded inbox for mail
//! (handed-off connections, service messages) plus a control word for
//! shutdown, both behind one `mio::Waker`.
//!
//! Control is kept out of the inbox on purpose: a shutdown must get through
//! even when the inbox is full of broadcast traffic.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use mio::Waker;

use crate::metrics::ShardStats;

/// Mail a shard may receive.
#[derive(Debug)]
pub(crate) enum Mail {
    /// A connection accepted by another shard, to be served here (the
    /// handoff mode, where only shard 0 listens).
    Adopt {
        listener: usize,
        stream: std::net::TcpStream,
        peer: SocketAddr,
        /// Its place in the admission counts, released when it closes.
        admission: crate::shard::gate::Pass,
    },
    /// A message from a service on shard `from` to the same service here.
    Message {
        service: ServiceRef,
        from: usize,
        payload: Arc<[u8]>,
    },
}

/// Which of a shard's services a message is for: services are numbered per
/// transport, in the order their listeners were added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServiceRef {
    Tcp(usize),
    Udp(usize),
}

/// What a shard has been asked to do, in increasing force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Control {
    Run = 0,
    /// Close listeners, flush connections, close them by the drain deadline.
    Shutdown = 1,
    /// Close everything now.
    Stop = 2,
}

/// The sending side of one shard's mailbox; cheap to clone across threads.
#[derive(Debug, Clone)]
pub(crate) struct MailboxSender {
    tx: SyncSender<Mail>,
    control: Arc<AtomicU8>,
    waker: Arc<Waker>,
}

impl MailboxSender {
    /// Delivers `mail` without blocking; gives it back if the inbox is full
    /// or the shard gone.
    pub(crate) fn post(&self, mail: Mail) -> Result<(), Mail> {
        match self.tx.try_send(mail) {
            Ok(()) => {
                // A failed wake means the shard's poller is gone: it is
                // shutting down and the mail no longer matters.
                let _ = self.waker.wake();
                Ok(())
            }
            Err(TrySendError::Full(mail) | TrySendError::Disconnected(mail)) => Err(mail),
        }
    }

    /// Raises the shard's control state to `control` (never lowers it).
    pub(crate) fn request(&self, control: Control) {
        self.control.fetch_max(control as u8, Ordering::AcqRel);
        let _ = self.waker.wake();
    }
}

/// The receiving side, owned by the shard.
#[derive(Debug)]
pub(crate) struct Mailbox {
    rx: Receiver<Mail>,
    control: Arc<AtomicU8>,
}

impl Mailbox {
    /// The next mail, if any.
    pub(crate) fn next(&self) -> Option<Mail> {
        self.rx.try_recv().ok()
    }

    /// The control state requested so far.
    pub(crate) fn control(&self) -> Control {
        match self.control.load(Ordering::Acquire) {
            0 => Control::Run,
            1 => Control::Shutdown,
            _ => Control::Stop,
        }
    }
}

/// Makes a mailbox whose waker wakes the shard's `poll`, holding at most
/// `capacity` mail (`ServerConfig::mailbox_capacity`): beyond, broadcast
/// traffic is refused (dropped and counted, or kept by its service to
/// retry), and a handoff is served by the shard that accepted it.
pub(crate) fn mailbox(waker: Waker, capacity: usize) -> (MailboxSender, Mailbox) {
    let (tx, rx) = mpsc::sync_channel(capacity);
    let control = Arc::new(AtomicU8::new(Control::Run as u8));
    let sender = MailboxSender {
        tx,
        control: Arc::clone(&control),
        waker: Arc::new(waker),
    };
    (sender, Mailbox { rx, control })
}

/// A shard's way to post to its peers: every shard's mailbox, its own
/// place among them, and its counters for what could not be delivered.
#[derive(Debug)]
pub(crate) struct Postbox {
    pub(crate) shard: usize,
    pub(crate) peers: Arc<[MailboxSender]>,
    pub(crate) stats: Arc<ShardStats>,
}

/// Which shards a service message goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shards {
    /// The shard with this index (0-based, below the shard count).
    One(usize),
    /// Every shard, this one included.
    All,
    /// Every shard but this one.
    Others,
}

impl Postbox {
    pub(crate) fn new(shard: usize, peers: Arc<[MailboxSender]>, stats: Arc<ShardStats>) -> Self {
        Postbox {
            shard,
            peers,
            stats,
        }
    }

    /// Posts `payload` to `service` on the chosen shards. A full inbox drops
    /// the message and counts it: a slow shard must not stall the sender's
    /// loop. Returns how many shards it reached.
    pub(crate) fn post(&self, service: ServiceRef, to: Shards, payload: &Arc<[u8]>) -> usize {
        let targets = (0..self.peers.len()).filter(|&i| match to {
            Shards::One(shard) => i == shard,
            Shards::All => true,
            Shards::Others => i != self.shard,
        });
        let mut delivered = 0;
        for i in targets {
            let mail = Mail::Message {
                service,
                from: self.shard,
                payload: Arc::clone(payload),
            };
            match self.peers[i].post(mail) {
                Ok(()) => delivered += 1,
                Err(_) => self.stats.mailbox_dropped.incr(),
            }
        }
        delivered
    }

    /// Posts `payload` to `service` on shard `to`; false, and nothing
    /// counted, if its inbox is full (or `to` is no shard).
    pub(crate) fn try_post(&self, service: ServiceRef, to: usize, payload: &Arc<[u8]>) -> bool {
        let Some(peer) = self.peers.get(to) else {
            return false;
        };
        let mail = Mail::Message {
            service,
            from: self.shard,
            payload: Arc::clone(payload),
        };
        peer.post(mail).is_ok()
    }
}
