//! Sockets and bytes: everything below the loop that touches the OS.

pub mod buffer;
pub mod socket;
#[allow(unsafe_code)]
pub mod sys;
pub mod tls;
pub mod udp_batch;
