//! The NATS client protocol, sans-IO: the server's operations parsed from
//! bytes into validated structs ([`parse_server_op`]), the client's
//! operations encoded to bytes ([`Connect`], [`encode_pub`], ...), and the
//! subject rules. No sockets and no connection state: the connection's
//! state machine is [`bus::Connection`](crate::bus::Connection).
//!
//! The protocol is text: a control line ending in `␍␊`, and for messages a
//! payload of a declared length after it (docs.nats.io, "Client
//! Protocol"). This client never sends headers (`HPUB`) and never asks
//! for them, but parses an `HMSG` if a server sends one.

mod client;
mod server;
mod subject;

#[cfg(test)]
mod tests;

pub use client::{encode_pub, encode_sub, encode_unsub, pub_len, Connect, PING, PONG};
pub use server::{parse_server_op, Limits, Msg, ParseError, ServerInfo, ServerOp};
pub use subject::{valid_filter, valid_subject, MAX_SUBJECT};
