//! The reliable echo's policy, sans-IO: every message a peer delivers is
//! sent back to it, reliably and in order.
//!
//! An echo that does not fit the peer's send window waits (one per peer)
//! and the peer is held: its messages stay in its receive window, which
//! fills and slows the peer down. Nothing queues without bound. The `rudp`
//! service drives it from the event loop; the simulations in `sim` drive it
//! over a lossy link with a virtual clock.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::{Endpoint, Event, SendError};

/// The echo policy over an [`Endpoint`].
#[derive(Debug)]
pub struct EchoCore {
    endpoint: Endpoint,
    /// Echoes waiting for room in their peer's send window.
    waiting: HashMap<SocketAddr, Vec<u8>>,
}

impl EchoCore {
    /// An echo over `endpoint`.
    pub fn new(endpoint: Endpoint) -> EchoCore {
        EchoCore {
            endpoint,
            waiting: HashMap::new(),
        }
    }

    /// The endpoint, for its counters.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The endpoint, for its inputs and outputs.
    pub fn endpoint_mut(&mut self) -> &mut Endpoint {
        &mut self.endpoint
    }

    /// Turns delivered messages into echoes; `seen` observes each message.
    /// Call after feeding the endpoint input, before polling its output.
    pub fn pump(&mut self, mut seen: impl FnMut(SocketAddr, &Event)) {
        let waiting: Vec<SocketAddr> = self.waiting.keys().copied().collect();
        for peer in waiting {
            let Some(message) = self.waiting.remove(&peer) else {
                continue;
            };
            match self.endpoint.send_vec(peer, message) {
                Err((SendError::WindowFull, message)) => {
                    self.waiting.insert(peer, message);
                }
                _ => self.endpoint.hold(peer, false),
            }
        }
        while let Some((peer, event)) = self.endpoint.poll_event() {
            seen(peer, &event);
            match event {
                // The message's own buffer goes back: no copy.
                Event::Message(message) => {
                    if let Err((SendError::WindowFull, message)) =
                        self.endpoint.send_vec(peer, message)
                    {
                        self.waiting.insert(peer, message);
                        self.endpoint.hold(peer, true);
                    }
                }
                Event::Closed(_) => {
                    self.waiting.remove(&peer);
                }
                Event::Connected => {}
            }
        }
    }
}
