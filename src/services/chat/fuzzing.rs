//! The chat session as a whole, for the `chat_session` fuzz target: only
//! compiled under cargo-fuzz (`--cfg fuzzing`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use super::directory::Directory;
use super::room::{Counted, Outbox, Rooms};
use super::ChatConfig;
use crate::codec::{LengthDelimited, NdjsonCodec};
use crate::protocol::chat::{ChatLine, ChatMessage, Encoding, PROMPT};
use crate::service::ConnId;

#[derive(Default)]
struct Recorder {
    sent: HashMap<ConnId, Vec<u8>>,
    closed: Vec<ConnId>,
    /// A notice timer was asked for and has not fired.
    timer: bool,
}

impl Outbox for Recorder {
    fn send(&mut self, to: ConnId, bytes: &[u8]) {
        self.sent.entry(to).or_default().extend_from_slice(bytes);
    }
    fn close(&mut self, id: ConnId) {
        self.closed.push(id);
    }
    fn shards(&self) -> (usize, usize) {
        (0, 1) // one shard: nothing is posted
    }
    fn post_to(&mut self, _shard: usize, _message: &Arc<[u8]>) -> bool {
        true
    }
    fn pause(&mut self, _id: ConnId) {}
    fn resume(&mut self, _id: ConnId) {}
    fn arm_retry(&mut self, _after: Duration) {}
    fn count(&mut self, _what: Counted) {}
    fn take_token(&mut self, id: ConnId) -> bool {
        id.0 % 3 != 0 // some members are over the rate
    }
    fn strike(&mut self, id: ConnId, _why: &str) -> bool {
        id.0 % 5 == 4 // and some get banned at their first strike
    }
    fn arm_timer(&mut self, _after: Duration) {
        self.timer = true;
    }
}

/// Drives four members (two JSON, two protobuf) with `data`: each step is
/// a member byte, a length byte, and that many input bytes; a member byte
/// with the top bit set closes that member. Checks that input is used up
/// to at most one frame and that everything sent decodes in the member's
/// encoding.
pub fn chat_session(data: &[u8]) {
    let config = ChatConfig {
        max_frame: 256,
        max_content: 64,
        max_errors: 3,
        // Rooms of two or more batch their notices; a length byte with
        // the top bit set fires the notice timer, if armed.
        notice_batch_from: 2,
        notice_interval: Duration::from_secs(1),
    };
    let mut rooms = Rooms::new(config, Arc::new(Directory::default()));
    let mut out = Recorder::default();
    let encodings = [
        Encoding::Json,
        Encoding::Protobuf,
        Encoding::Json,
        Encoding::Protobuf,
    ];
    let mut pending: Vec<Vec<u8>> = vec![Vec::new(); 4];
    for (i, &encoding) in encodings.iter().enumerate() {
        rooms.open(&mut out, ConnId(i as u64), encoding);
    }
    let mut now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut rest = data;
    while let [member, len, tail @ ..] = rest {
        let index = usize::from(member & 3);
        let id = ConnId(index as u64);
        let take = usize::from(*len).min(tail.len());
        let (chunk, after) = tail.split_at(take);
        rest = after;
        now += Duration::from_millis(u64::from(*len));
        if len & 0x80 != 0 && std::mem::take(&mut out.timer) {
            rooms.timer(&mut out, now);
        }
        if member & 0x80 != 0 {
            rooms.closed(&mut out, id, now);
            continue;
        }
        let buffer = &mut pending[index];
        buffer.extend_from_slice(chunk);
        let used = rooms.input(&mut out, id, buffer, now);
        assert!(used <= buffer.len(), "used {used} of {}", buffer.len());
        buffer.drain(..used);
        assert!(
            buffer.len() < config.max_frame + 10,
            "{} bytes held",
            buffer.len()
        );
    }
    for (id, bytes) in out.sent {
        check_output(encodings[id.0 as usize], &bytes);
    }
}

/// Everything sent to a member is whole frames of its encoding (JSON: the
/// prompt, then lines).
fn check_output(encoding: Encoding, bytes: &[u8]) {
    let mut rest = bytes;
    match encoding {
        Encoding::Json => {
            rest = rest.strip_prefix(PROMPT.as_bytes()).unwrap_or(rest);
            let codec = NdjsonCodec::<ChatLine>::new(1 << 20);
            while !rest.is_empty() {
                let prompt = PROMPT.as_bytes();
                if let Some(after) = rest.strip_prefix(prompt) {
                    rest = after; // a bad username draws the prompt again
                    continue;
                }
                let (_, used) = codec.decode(rest).unwrap().expect("a whole line");
                rest = &rest[used..];
            }
        }
        Encoding::Protobuf => {
            let codec = LengthDelimited::new(1 << 20);
            while !rest.is_empty() {
                let (_, used) = codec
                    .decode::<ChatMessage>(rest)
                    .unwrap()
                    .expect("a whole frame");
                rest = &rest[used..];
            }
        }
    }
}
