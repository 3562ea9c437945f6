//! Clients for sockloop's services.

pub mod chat;
pub mod rudp;
