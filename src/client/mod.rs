//! Clients for sockloop's services.

pub mod bench;
pub mod chat;
pub mod rudp;
