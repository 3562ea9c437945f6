//! Protocols: what goes on the wire, shared by the services that serve it
//! and the clients that speak it. Pure: bytes in, validated messages out,
//! and back; no sockets, no rooms, no connection state.
//!
//! - [`chat`]: the chat's messages, its two encodings (JSON lines and
//!   varint-delimited protobuf), its prompt and its clock format.
//! - [`nats`]: the NATS client protocol (the bus between processes).

pub mod chat;
pub mod nats;
