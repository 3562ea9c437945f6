//! Protobuf messages, generated from `proto/*.proto` by `build.rs`.

#![allow(missing_docs)]

/// The chat room's messages (`proto/chat.proto`).
pub mod chat {
    include!(concat!(env!("OUT_DIR"), "/sockloop.chat.rs"));
}
