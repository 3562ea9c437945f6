//! Admission: what a connection must pass right after `accept`, before it
//! gets a slot or any memory. Shared by every shard.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::service::Refusal;

/// The server-wide connection count and its cap.
#[derive(Debug)]
pub(crate) struct Gate {
    open: AtomicUsize,
    max_conns: usize,
}

impl Gate {
    pub(crate) fn new(max_conns: Option<usize>) -> Gate {
        Gate {
            open: AtomicUsize::new(0),
            max_conns: max_conns.unwrap_or(usize::MAX),
        }
    }

    /// Lets a connection from `ip` in, counting it, or says why not.
    pub(crate) fn admit(&self, _ip: IpAddr) -> Result<(), Refusal> {
        // Optimistic: count it, and take it back if that went past the cap.
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max_conns {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::ServerFull);
        }
        Ok(())
    }

    /// A connection admitted from `ip` closed.
    pub(crate) fn release(&self, _ip: IpAddr) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}
