//! The chat session as a whole: four members (JSON and protobuf) sending
//! arbitrary bytes in arbitrary chunks, closing at arbitrary times.
//! `sockloop::services::chat::fuzzing::chat_session` checks that input is
//! used up to at most one frame and that everything sent to a member
//! decodes in its encoding.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sockloop::services::chat::fuzzing::chat_session(data);
});
