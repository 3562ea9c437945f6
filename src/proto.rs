//! Kept for compatibility: the protobuf messages, generated from
//! `proto/*.proto` by `build.rs`, live with their protocols in
//! [`protocol`](crate::protocol) now.

/// The chat room's messages (`proto/chat.proto`), kept for compatibility:
/// see [`protocol::chat`](crate::protocol::chat).
pub mod chat {
    pub use crate::protocol::chat::ChatMessage;
}
