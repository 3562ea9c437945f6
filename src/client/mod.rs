//! Clients for sockloop's services.

pub mod chat;
