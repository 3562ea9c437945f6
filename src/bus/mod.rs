//! The bus between processes: a NATS client, sans-IO.
//!
//! - [`Connection`]: one NATS connection as a state machine (dial,
//!   handshake, pings, reconnect with backoff and jitter over several
//!   servers, subscriptions restored, a bounded publication queue);
//!   the wire format is [`protocol::nats`](crate::protocol::nats).
//! - [`chat`]: the chat over the bus: envelopes, presence, rosters and
//!   names across processes.
//!
//! Nothing here touches a socket or a clock. A driver (the loop, or a
//! test's blocking `TcpStream`) dials on [`Event::Dial`], feeds
//! [`Connection::handle_input`], writes [`Connection::poll_transmit`] and
//! calls [`Connection::handle_timeout`] at [`Connection::poll_timeout`].

pub mod chat;
mod config;
mod connection;
mod url;

#[cfg(test)]
mod tests;

pub use config::BusConfig;
pub use connection::{
    BusCounters, BusError, Connection, Event, PublishError, SubscribeError, MAX_PAYLOAD_CEILING,
};
pub use url::{ServerUrl, DEFAULT_PORT};
