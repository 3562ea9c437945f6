//! `protocol::nats::parse_server_op` on arbitrary bytes, the way a
//! connection reads a stream: parse operations off the front until one is
//! incomplete or an error. Never panics, always makes progress, never
//! hands out a payload over the limit, and parses the same again.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sockloop::protocol::nats::{parse_server_op, Limits, ServerOp};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_control_line: 256,
        max_info: 1024,
        max_payload: 512,
    };
    let mut ops = Vec::new();
    let mut rest = data;
    while let Ok(Some((op, used))) = parse_server_op(rest, &limits) {
        assert!(used > 0 && used <= rest.len());
        if let ServerOp::Msg(msg) = &op {
            let headers = msg.headers.as_ref().map_or(0, Vec::len);
            assert!(headers + msg.payload.len() <= limits.max_payload);
        }
        ops.push((op, used));
        rest = &rest[used..];
    }
    // Parsing the same bytes again, one operation at a time from the
    // start, gives the same operations: parsing has no hidden state.
    let mut at = 0;
    for (op, used) in ops {
        assert_eq!(parse_server_op(&data[at..], &limits), Ok(Some((op, used))));
        at += used;
    }
});
