//! Codecs: bytes on the stream to frames and back. Pure: no I/O, no clock.
//!
//! Every decoder works on the slice a [`TcpService::on_data`] call receives:
//! everything received and not yet consumed. It looks at the front of the
//! slice only and answers one of three ways:
//!
//! - `Ok(Some((frame, used)))`: one frame, which (with anything skipped in
//!   front of it) took the first `used` bytes. Consume them and call again
//!   on the rest: one read may carry many frames.
//! - `Ok(None)`: the frame at the front is not complete yet. Consume
//!   nothing; the core offers the same bytes again with the next read.
//! - `Err(e)`: the bytes at the front are bad. If `e.used()` is `Some(n)`,
//!   the bad frame is exactly `n` bytes long: skip them and go on. If it is
//!   `None` the stream cannot be resynchronised: close the connection.
//!
//! A decoder never copies the buffer and never waits for more bytes than its
//! limit: an oversized frame is an error as soon as its size is known.
//! `Ok(Some)` always reports `used > 0`, so a decode loop always advances.
//!
//! ```
//! # #[cfg(feature = "services")] { // NdjsonCodec comes with the `services` feature
//! use sockloop::codec::NdjsonCodec;
//! use sockloop::protocol::chat::ChatLine;
//!
//! /// What a service's `on_data` does with its input: returns bytes consumed.
//! fn on_data(codec: &NdjsonCodec<ChatLine>, data: &[u8], got: &mut Vec<ChatLine>) -> usize {
//!     let mut consumed = 0;
//!     loop {
//!         match codec.decode(&data[consumed..]) {
//!             Ok(Some((msg, used))) => {
//!                 got.push(msg);
//!                 consumed += used;
//!             }
//!             Ok(None) => return consumed, // partial line stays buffered
//!             Err(e) => match e.used() {
//!                 Some(used) => consumed += used, // skip the bad line only
//!                 None => return consumed,        // real code: close the connection
//!             },
//!         }
//!     }
//! }
//!
//! let codec = NdjsonCodec::new(1024);
//! let mut got = Vec::new();
//! let data = b"{\"content\":\"a\"}\nnot json\n{\"content\":\"b\"}\n{\"con";
//! assert_eq!(on_data(&codec, data, &mut got), data.len() - 5);
//! assert_eq!(got.len(), 2);
//! # }
//! ```
//!
//! [`TcpService::on_data`]: crate::service::TcpService::on_data

mod decoder;
#[cfg(feature = "services")]
mod json_encode_steps;
#[cfg(feature = "services")]
mod json_error;
#[cfg(feature = "services")]
mod json_lines;
#[cfg(feature = "services")]
mod json_steps;
#[cfg(feature = "services")]
mod length;
mod line;
#[cfg(feature = "services")]
mod ndjson;

/// Kept for compatibility: the chat's JSON line lives in
/// [`protocol::chat`](crate::protocol::chat) now.
#[cfg(feature = "services")]
pub use crate::protocol::chat::ChatLine;
pub use decoder::{drive, BadFrame, Decoder, Flow};
#[cfg(feature = "services")]
pub use json_encode_steps::JsonEncodeSteps;
#[cfg(feature = "services")]
pub use json_error::{describe_json_error, MAX_DEPTH as MAX_JSON_DEPTH};
#[cfg(feature = "services")]
pub use json_lines::JsonLines;
#[cfg(feature = "services")]
pub use json_steps::{JsonStep, JsonSteps};
#[cfg(feature = "services")]
pub use length::{FrameError, LengthDelimited, MAX_VARINT_LEN};
pub use line::{LineCodec, LineError};
#[cfg(feature = "services")]
pub use ndjson::{NdjsonCodec, NdjsonError};

#[cfg(all(test, feature = "services"))]
mod proptests;
