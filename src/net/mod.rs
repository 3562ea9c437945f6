//! Sockets and bytes: everything below the loop that touches the OS.

pub mod buffer;
pub mod gso;
mod host_limits;
pub(crate) mod peer_addr;
pub mod pipe;
pub mod proxy_header;
mod recv_batch;
mod send_queue;
pub mod socket;
#[allow(unsafe_code)]
pub(crate) mod sys;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(not(feature = "tls"))]
#[path = "tls_off.rs"]
pub(crate) mod tls;
pub mod udp_batch;

pub use host_limits::HostLimits;
pub use sys::raise_nofile_limit;
