//! A shard's inbox: a bounded channel plus a `mio::Waker`, so other threads
//! can reach a loop that is blocked in `poll`.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use mio::Waker;

/// What other threads can ask of a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    /// Close listeners, flush connections, close them by the drain deadline.
    Shutdown,
    /// Close everything now.
    Stop,
}

/// Messages waiting beyond this are refused; commands are rare, so a full
/// inbox means the shard is wedged and more commands would not help.
const CAPACITY: usize = 64;

/// The sending side, cloneable across threads.
#[derive(Debug, Clone)]
pub(crate) struct MailboxSender {
    tx: SyncSender<Command>,
    waker: Arc<Waker>,
}

impl MailboxSender {
    /// Posts without blocking; false if the inbox is full or the shard gone.
    pub(crate) fn post(&self, command: Command) -> bool {
        match self.tx.try_send(command) {
            Ok(()) => self.waker.wake().is_ok(),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }
}

/// Makes a mailbox whose waker wakes `poll`'s loop with the waker token.
pub(crate) fn mailbox(waker: Waker) -> (MailboxSender, Receiver<Command>) {
    let (tx, rx) = mpsc::sync_channel(CAPACITY);
    let sender = MailboxSender {
        tx,
        waker: Arc::new(waker),
    };
    (sender, rx)
}
